"""Every CUDA source compiles for sm_80 and sm_90 with nvcc, and with NVRTC as the loader feeds it.

No GPU needed. The nvcc builds run in parallel (one module fixture) and write cubins to a temp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cuda import loader

CUDA_DIR = Path(loader.__file__).resolve().parent
SOURCES = sorted(p.name for p in CUDA_DIR.glob("*.cu"))
ARCHS = ("sm_80", "sm_90")
NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None
)

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit not installed)")

# kernels whose fp32 state (or state gradient) lives in registers: a spill would put it in local memory
STATE_IN_REGISTERS = ("ttt_mlp_fwd_bf16", "ttt_linear_fwd_bf16", "ttt_mlp_bwd_bf16", "ttt_linear_bwd_bf16")
ALL_SPECS = {
    **{("forward", kind): spec for (kind, _), spec in loader.KERNELS.items()},
    **{("backward", kind): spec for (kind, _), spec in loader.BACKWARD_KERNELS.items()},
}


def _nvcc(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NVCC, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def nvcc_builds(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("cubins")
    jobs = {
        (src, arch): [
            f"-arch={arch}",
            "-std=c++17",
            "-cubin",
            "-Xptxas",
            "-v",
            "-o",
            str(out / f"{src}.{arch}.cubin"),
            str(CUDA_DIR / src),
        ]
        for src in SOURCES
        for arch in ARCHS
    }
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(_nvcc, args) for key, args in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


def test_sources_found() -> None:
    assert {"ttt_mlp_fwd.cu", "ttt_linear_fwd.cu", "ttt_mlp_bwd.cu", "ttt_linear_bwd.cu"} <= set(SOURCES)
    assert {spec.source for spec in ALL_SPECS.values()} <= set(SOURCES)


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES)
def test_nvcc_compiles(nvcc_builds, source: str, arch: str) -> None:
    result = nvcc_builds[(source, arch)]
    assert result.returncode == 0, f"nvcc -arch={arch} {source} failed:\n{result.stderr}"
    assert "warning" not in result.stderr.lower(), f"nvcc warnings for {source} on {arch}:\n{result.stderr}"


def _ptxas_entries(stderr: str) -> dict[str, str]:
    """ptxas -v output split per entry function."""
    parts = re.split(r"Compiling entry function '([^']+)'", stderr)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@needs_nvcc
@pytest.mark.parametrize("source", SOURCES)
def test_state_kernels_do_not_spill_on_sm90(nvcc_builds, source: str) -> None:
    result = nvcc_builds[(source, "sm_90")]
    assert result.returncode == 0, result.stderr
    entries = _ptxas_entries(result.stderr)
    checked = [name for name in entries if name in STATE_IN_REGISTERS]
    assert checked, f"no state kernel found in the ptxas report of {source}: {sorted(entries)}"
    for name in checked:
        assert "0 bytes spill stores, 0 bytes spill loads" in entries[name], (
            f"{name} spills:\n{entries[name]}"
        )


@needs_nvcc
def test_shared_memory_sizes_match_loader(tmp_path: Path) -> None:
    """The loader's mirrored shared-memory sizes equal sizeof(Smem) of each kernel (host-side sizeof)."""
    prog = tmp_path / "sizes.cu"
    prog.write_text(
        "#include <cstdio>\n"
        f'#include "{CUDA_DIR / "ttt_mlp_fwd.cu"}"\n'
        f'#include "{CUDA_DIR / "ttt_linear_fwd.cu"}"\n'
        f'#include "{CUDA_DIR / "ttt_mlp_bwd.cu"}"\n'
        f'#include "{CUDA_DIR / "ttt_linear_bwd.cu"}"\n'
        'int main() { std::printf("%zu %zu %zu %zu\\n", sizeof(ttt::mlp::Smem), sizeof(ttt::linear::Smem),'
        " sizeof(ttt::mlp_bwd::Smem), sizeof(ttt::linear_bwd::Smem)); }\n"
    )
    exe = tmp_path / "sizes"
    built = _nvcc(["-std=c++17", "-arch=sm_90", f"-I{CUDA_DIR}", "-o", str(exe), str(prog)])
    if built.returncode != 0:
        pytest.fail(f"host size probe did not build:\n{built.stderr}")
    mlp, linear, mlp_bwd, linear_bwd = (
        int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    )
    assert mlp == loader.KERNELS[("mlp", torch.bfloat16)].smem_bytes
    assert linear == loader.KERNELS[("linear", torch.bfloat16)].smem_bytes
    assert mlp_bwd == loader.BACKWARD_KERNELS[("mlp", torch.bfloat16)].smem_bytes
    assert linear_bwd == loader.BACKWARD_KERNELS[("linear", torch.bfloat16)].smem_bytes


def _nvrtc():
    """cupy's NVRTC binding with libnvrtc loaded, or None when either is missing."""
    try:
        import cupy  # noqa: F401, PLC0415
        from cupy_backends.cuda.libs import nvrtc  # noqa: PLC0415
    except Exception:  # noqa: BLE001  (cupy absent or broken: the test is skipped)
        return None
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib  # noqa: PLC0415

        load_nvidia_dynamic_lib("nvrtc")
    except Exception:  # noqa: BLE001  (pathfinder absent: rely on the system's library path)
        pass
    try:
        nvrtc.getVersion()
    except Exception:  # noqa: BLE001
        return None
    return nvrtc


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("key", sorted(ALL_SPECS), ids=[f"{d}-{k}" for d, k in sorted(ALL_SPECS)])
def test_nvrtc_compiles_loader_source(key: tuple[str, str], arch: str) -> None:
    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("NVRTC not available (cupy or libnvrtc missing)")
    spec = ALL_SPECS[key]
    source = loader.kernel_source(spec.source)
    prog = nvrtc.createProgram(source, spec.source, [], [])
    try:
        # the options CuPy's RawModule passes: ours, -ftz=true, and -arch from the device
        nvrtc.compileProgram(prog, [*loader.NVRTC_OPTIONS, "-ftz=true", f"-arch={arch}"])
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"NVRTC failed for {spec.source} on {arch}: {err}\n{nvrtc.getProgramLog(prog)}")
    assert len(nvrtc.getCUBIN(prog)) > 0
