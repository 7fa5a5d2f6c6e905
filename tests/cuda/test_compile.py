"""Every CUDA source compiles for each architecture we claim (sm_80, sm_86, sm_89, sm_90) with nvcc and
with NVRTC as the loader feeds it; the kernels that keep state in registers do not spill; every kernel's
shared memory fits the per-block limit of each architecture it runs on, with headroom.

No GPU needed, and no CUDA toolkit: nvcc comes from NVIDIA's wheels in the dev extra (nvidia-cuda-nvcc,
nvidia-nvvm, nvidia-cuda-crt and nvidia-cuda-runtime's headers; it uses the system's g++ as its host
compiler), libnvrtc from the nvidia-cuda-nvrtc wheel, so both sets of checks run in CI. The compiles run
in parallel (module fixtures) and write cubins to a temp dir.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nvrtc_lib
import pytest

from cuda import loader

CUDA_DIR = Path(loader.__file__).resolve().parent
SOURCES = sorted(p.name for p in CUDA_DIR.glob("*.cu"))
ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
# opt-in shared memory per block (CUDA C++ Programming Guide, technical specifications per compute capability)
SMEM_PER_BLOCK = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024}
MIN_SMEM_HEADROOM = 4 * 1024  # bytes every kernel leaves under the limit of each architecture it runs on


def _find_nvcc() -> str | None:
    """The dev extra's nvcc (site-packages/nvidia/cu13/bin: the version CI compiles with), else the
    toolkit's on PATH or in /usr/local/cuda."""
    spec = importlib.util.find_spec("nvidia")
    for root in list(spec.submodule_search_locations or []) if spec is not None else []:
        wheel_nvcc = Path(root) / "cu13" / "bin" / "nvcc"
        if wheel_nvcc.is_file():
            return str(wheel_nvcc)
    toolkit = Path("/usr/local/cuda/bin/nvcc")
    return shutil.which("nvcc") or (str(toolkit) if toolkit.exists() else None)


NVCC = _find_nvcc()
needs_nvcc = pytest.mark.skipif(
    NVCC is None, reason="needs nvcc: pip install -e '.[dev]' (NVIDIA's nvcc wheels) or a CUDA toolkit 12.4+"
)

ALL_SPECS = {
    spec.function: spec
    for table in (
        loader.KERNELS,
        loader.NO_CLUSTER_KERNELS,
        loader.BACKWARD_KERNELS,
        loader.NO_CLUSTER_BACKWARD_KERNELS,
    )
    for spec in table.values()
}
# where each kernel runs (the backend's rule: compute capability >= min_arch and shared memory fits)
CLAIMS = {
    "ttt_mlp_fwd_bf16": ("sm_90",),  # thread-block clusters
    "ttt_mlp_fwd_sm80_bf16": ARCHS,  # before Hopper by default; on Hopper when forced
    "ttt_linear_fwd_bf16": ARCHS,
    "ttt_mlp_bwd_bf16": ("sm_90",),
    "ttt_mlp_bwd_sm80_bf16": ARCHS,  # as the no-cluster forward
    "ttt_linear_bwd_bf16": ("sm_80", "sm_90"),  # 150.5 KB: over the 99 KB of sm_86 / sm_89
}
CLAIMED = [(name, arch) for name, archs in sorted(CLAIMS.items()) for arch in archs]
# kernels whose fp32 state (or state gradient) lives in registers: a spill would put it in local memory
STATE_IN_REGISTERS = set(ALL_SPECS)
# Where a kernel runs only when forced and spills there: the no-cluster TTT-MLP backward on Hopper
# (TTT_STUDIO_TTT_CUDA_VARIANT=sm80, for the GPU checks; Hopper trains on the cluster kernel). ptxas 13.0
# allocates sm_90 differently and spills ~140 B of the 255 registers it fills on sm_80 / 86 / 89 without any
# (test_forced_no_cluster_backward_spills_on_hopper records it).
SPILLS_WHERE_FORCED = {("ttt_mlp_bwd_sm80_bf16", "sm_90")}
NO_SPILL = [c for c in CLAIMED if c not in SPILLS_WHERE_FORCED]


def _arch_number(arch: str) -> int:
    return int(arch.removeprefix("sm_"))


def _ptxas_entries(log: str) -> dict[str, str]:
    """ptxas -v output split per entry function."""
    parts = re.split(r"Compiling entry function '([^']+)'", log)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _spill_bytes(entry: str) -> int:
    """Spill stores + loads in one entry function's ptxas report."""
    found = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", entry)
    assert found, f"no spill line in the ptxas report:\n{entry}"
    return int(found.group(1)) + int(found.group(2))


def _assert_no_spill(log: str, name: str, arch: str, compiler: str) -> None:
    entries = _ptxas_entries(log)
    assert name in entries, f"{name} not in the ptxas report of {compiler} for {arch}: {sorted(entries)}"
    assert _spill_bytes(entries[name]) == 0, f"{name} spills on {arch} ({compiler}):\n{entries[name]}"


def test_sources_found() -> None:
    assert {
        "ttt_mlp_fwd.cu",
        "ttt_mlp_fwd_sm80.cu",
        "ttt_linear_fwd.cu",
        "ttt_mlp_bwd.cu",
        "ttt_mlp_bwd_sm80.cu",
        "ttt_linear_bwd.cu",
    } <= set(SOURCES)
    assert {spec.source for spec in ALL_SPECS.values()} <= set(SOURCES)


def test_claims_follow_the_backends_rule() -> None:
    """CLAIMS (what the compile checks cover) is exactly where the backend lets each kernel run."""
    for name, spec in ALL_SPECS.items():
        runs = tuple(
            a for a in ARCHS if _arch_number(a) >= spec.min_arch and spec.smem_bytes <= SMEM_PER_BLOCK[a]
        )
        assert CLAIMS[name] == runs, name


@pytest.mark.parametrize(("name", "arch"), CLAIMED)
def test_shared_memory_fits_with_headroom(name: str, arch: str) -> None:
    """Shared memory of each kernel (sizeof its Smem, mirrored in loader; checked against the source by
    test_shared_memory_sizes_match_loader) leaves MIN_SMEM_HEADROOM under the architecture's limit."""
    spare = SMEM_PER_BLOCK[arch] - ALL_SPECS[name].smem_bytes
    assert spare >= MIN_SMEM_HEADROOM, f"{name} on {arch}: {spare} B spare"


# ---- nvcc ----------------------------------------------------------------------------------------------


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


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES)
def test_nvcc_compiles(nvcc_builds, source: str, arch: str) -> None:
    result = nvcc_builds[(source, arch)]
    assert result.returncode == 0, f"nvcc -arch={arch} {source} failed:\n{result.stderr}"
    assert "warning" not in result.stderr.lower(), f"nvcc warnings for {source} on {arch}:\n{result.stderr}"


@needs_nvcc
@pytest.mark.parametrize(("name", "arch"), NO_SPILL)
def test_state_kernels_do_not_spill_nvcc(nvcc_builds, name: str, arch: str) -> None:
    result = nvcc_builds[(ALL_SPECS[name].source, arch)]
    assert result.returncode == 0, result.stderr
    _assert_no_spill(result.stderr, name, arch, "nvcc")


@needs_nvcc
@pytest.mark.parametrize(("name", "arch"), sorted(SPILLS_WHERE_FORCED))
def test_forced_no_cluster_backward_spills_on_hopper(nvcc_builds, name: str, arch: str) -> None:
    """The stated exception holds (and is dropped from SPILLS_WHERE_FORCED once it no longer does)."""
    result = nvcc_builds[(ALL_SPECS[name].source, arch)]
    assert result.returncode == 0, result.stderr
    assert _spill_bytes(_ptxas_entries(result.stderr)[name]) > 0


# Register headroom: each kernel, its __launch_bounds__ removed, compiled with -maxrregcount=cap, still
# does not spill, so a compiler needing 255 - cap more registers than nvcc 13 still fits.
REGISTER_CAPS = {
    "ttt_mlp_fwd_sm80_bf16": 224,
    "ttt_linear_fwd_bf16": 224,
    "ttt_linear_bwd_bf16": 240,
    "ttt_mlp_bwd_bf16": 240,
}
# ttt_mlp_fwd.cu (sm_90) has none: besides its 64-register state it keeps gelu'(Z1) (32 registers) from
# the forward of mini-batch i + 1 to its gradient in the next iteration; it spills under any cap below
# 255 (test_cluster_mlp_forward_needs_every_register). ttt_mlp_fwd_sm80.cu keeps Z1 in shared memory.
# ttt_mlp_bwd_sm80.cu has none either: its fp32 state gradient takes 128 registers (half the register file
# for all of F: the budget of its design header) and phase 1 holds the forward's 128-register state; capped
# at 240 it spills (test_no_cluster_mlp_backward_needs_every_register).
NO_REGISTER_HEADROOM = "ttt_mlp_fwd_bf16"
NO_REGISTER_HEADROOM_SM80 = "ttt_mlp_bwd_sm80_bf16"
_LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\s*\([^)]*\)")


@pytest.fixture(scope="module")
def capped_builds(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("capped")
    caps = {**REGISTER_CAPS, NO_REGISTER_HEADROOM: 240, NO_REGISTER_HEADROOM_SM80: 240}
    jobs = {}
    for name, arch in CLAIMED:
        if name not in caps or (name == NO_REGISTER_HEADROOM_SM80 and arch != "sm_86"):
            continue
        source = out / f"{name}.{arch}.cu"
        source.write_text(_LAUNCH_BOUNDS.sub("", loader.kernel_source(ALL_SPECS[name].source)))
        cubin = out / f"{name}.{arch}.cubin"
        jobs[(name, arch)] = [f"-arch={arch}", "-std=c++17", "-cubin", f"-maxrregcount={caps[name]}"]
        jobs[(name, arch)] += ["-Xptxas", "-v", "-o", str(cubin), str(source)]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(_nvcc, args) for key, args in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


@needs_nvcc
@pytest.mark.parametrize(("name", "arch"), [c for c in CLAIMED if c[0] in REGISTER_CAPS])
def test_register_headroom(capped_builds, name: str, arch: str) -> None:
    result = capped_builds[(name, arch)]
    assert result.returncode == 0, result.stderr
    _assert_no_spill(result.stderr, name, arch, f"nvcc -maxrregcount={REGISTER_CAPS[name]}")


@needs_nvcc
def test_cluster_mlp_forward_needs_every_register(capped_builds) -> None:
    """The stated reason ttt_mlp_fwd.cu has no register headroom holds: capped at 240 it spills."""
    entries = _ptxas_entries(capped_builds[(NO_REGISTER_HEADROOM, "sm_90")].stderr)
    assert _spill_bytes(entries[NO_REGISTER_HEADROOM]) > 0


@needs_nvcc
def test_no_cluster_mlp_backward_needs_every_register(capped_builds) -> None:
    """The stated reason ttt_mlp_bwd_sm80.cu has no register headroom holds: capped at 240 it spills."""
    entries = _ptxas_entries(capped_builds[(NO_REGISTER_HEADROOM_SM80, "sm_86")].stderr)
    assert _spill_bytes(entries[NO_REGISTER_HEADROOM_SM80]) > 0


@needs_nvcc
def test_shared_memory_sizes_match_loader(tmp_path: Path) -> None:
    """The loader's mirrored shared-memory sizes equal sizeof(Smem) of each kernel (host-side sizeof)."""
    structs = {
        "ttt_mlp_fwd.cu": "ttt::mlp::Smem",
        "ttt_mlp_fwd_sm80.cu": "ttt::mlp80::Smem",
        "ttt_linear_fwd.cu": "ttt::linear::Smem",
        "ttt_mlp_bwd.cu": "ttt::mlp_bwd::Smem",
        "ttt_mlp_bwd_sm80.cu": "ttt::mlp80_bwd::Smem",
        "ttt_linear_bwd.cu": "ttt::linear_bwd::Smem",
    }
    prog = tmp_path / "sizes.cu"
    prog.write_text(
        "#include <cstdio>\n"
        + "".join(f'#include "{CUDA_DIR / src}"\n' for src in structs)
        + "int main() {\n"
        + "".join(f'  std::printf("%zu\\n", sizeof({struct}));\n' for struct in structs.values())
        + "}\n"
    )
    exe = tmp_path / "sizes"
    built = _nvcc(["-std=c++17", "-arch=sm_90", f"-I{CUDA_DIR}", "-o", str(exe), str(prog)])
    if built.returncode != 0:
        pytest.fail(f"host size probe did not build:\n{built.stderr}")
    printed = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    sizes = dict(zip(structs, (int(x) for x in printed)))
    for spec in ALL_SPECS.values():
        assert sizes[spec.source] == spec.smem_bytes, spec.source


# ---- NVRTC (the loader's compiler) -------------------------------------------------------------------

NVRTC = nvrtc_lib.load()
needs_nvrtc = pytest.mark.skipif(
    NVRTC is None, reason="needs libnvrtc (pip install nvidia-cuda-nvrtc, in the dev extra)"
)


@pytest.fixture(scope="module")
def nvrtc_builds() -> dict[tuple[str, str], nvrtc_lib.Compiled]:
    """Each claimed (kernel, arch) compiled as cuda/loader.py does, with ptxas's report (threads: ctypes
    releases the GIL while NVRTC compiles)."""

    def build(name: str, arch: str) -> nvrtc_lib.Compiled:
        spec = ALL_SPECS[name]
        # the options CuPy's RawModule passes: ours, -ftz=true, and -arch from the device; plus the report
        options = [*loader.NVRTC_OPTIONS, "-ftz=true", f"-arch={arch}", "-Xptxas", "-v"]
        return nvrtc_lib.compile_source(NVRTC, loader.kernel_source(spec.source), spec.source, options)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(build, *key) for key in NO_SPILL}
        return {key: f.result() for key, f in futures.items()}


@needs_nvrtc
@pytest.mark.slow  # 17 NVRTC compiles, about 2 min of CPU in all
@pytest.mark.parametrize(("name", "arch"), NO_SPILL)
def test_nvrtc_compiles_without_spills(nvrtc_builds, name: str, arch: str) -> None:
    result = nvrtc_builds[(name, arch)]
    major, minor = nvrtc_lib.version(NVRTC)
    assert result.ok, f"NVRTC {major}.{minor} failed for {name} on {arch}:\n{result.log}"
    assert result.cubin_bytes > 0
    _assert_no_spill(result.log, name, arch, f"NVRTC {major}.{minor}")
