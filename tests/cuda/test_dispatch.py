"""Backend choice around the CUDA kernels, on CPU: fallback, refusal with a reason, the env switch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cuda import backend as cuda_backend
from cuda import loader
from ttt_engine.ops.ttt import MLPState, ttt_scan
from ttt_engine.ops.ttt.dispatch import ENV_BACKEND, ScanCall, choose_backend
from ttt_engine.ops.ttt.reference import ttt_scan_reference

REPO = Path(__file__).resolve().parents[2]


def _mlp_inputs(b: int = 1, h: int = 2, length: int = 70, d: int = 64, f: int = 256):
    q = torch.nn.functional.normalize(torch.randn(b, h, length, d), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(b, h, length, d), dim=-1)
    v = k + 0.1 * torch.randn(b, h, length, d)
    eta = 0.02 * torch.rand(b, h, length)
    ln_w, ln_b = torch.ones(h, d), torch.zeros(h, d)
    state = MLPState(
        0.02 * torch.randn(b, h, d, f),
        torch.zeros(b, h, 1, f),
        0.02 * torch.randn(b, h, f, d),
        torch.zeros(b, h, 1, d),
    )
    return q, k, v, eta, ln_w, ln_b, state


def _call(**overrides) -> ScanCall:
    fields = {
        "kind": "mlp",
        "device": torch.device("cuda", 0),
        "dtype": torch.bfloat16,
        "head_dim": 64,
        "hidden": 256,
        "mini_batch_size": 64,
        "requires_grad": False,
    }
    fields.update(overrides)
    return ScanCall(**fields)


def test_cpu_tensors_fall_back_to_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    args = _mlp_inputs()
    call = _call(device=torch.device("cpu"), dtype=torch.float32)
    assert choose_backend(call, "auto").name == "reference"
    out, final = ttt_scan("mlp", *args)
    q, k, v, eta, ln_w, ln_b, state = args
    pad = (-q.shape[2]) % 64
    padded = [torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v)]
    ref_out, ref_final = ttt_scan_reference(
        "mlp", *padded, torch.nn.functional.pad(eta, (0, pad)), ln_w, ln_b, state, 64
    )
    torch.testing.assert_close(out, ref_out[:, :, : q.shape[2]])
    for got, want in zip(final.tensors(), ref_final.tensors()):
        torch.testing.assert_close(got, want)


def test_cuda_requested_on_cpu_raises_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    # the CUDA backend registers itself on the first CUDA call; register it here so its reason shows
    monkeypatch.setattr("ttt_engine.ops.ttt.dispatch._fast_backends", [cuda_backend.BACKEND])
    with pytest.raises(ValueError, match="backend='cuda'.*needs CUDA tensors, got device cpu"):
        ttt_scan("mlp", *_mlp_inputs(), backend="cuda")


def test_env_forces_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BACKEND, "reference")
    monkeypatch.setattr("ttt_engine.ops.ttt.dispatch._fast_backends", [cuda_backend.BACKEND])
    assert choose_backend(_call(), "cuda").name == "reference"
    out, _ = ttt_scan("mlp", *_mlp_inputs(), backend="cuda")  # would raise without the env switch
    assert out.shape == (1, 2, 70, 64)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"device": torch.device("cpu")}, "needs CUDA tensors, got device cpu"),
        ({"head_dim": 32}, "head_dim 64 only, got 32"),
        ({"mini_batch_size": 16}, "mini_batch_size 64 only, got 16"),
        ({"hidden": 128}, "mlp hidden size 256 only, got 128"),
        ({"kind": "linear", "hidden": 256}, "linear hidden size 64 only, got 256"),
        ({"dtype": torch.float32}, "bf16 inputs only, got torch.float32"),
        ({"dtype": torch.float32, "requires_grad": True}, "bf16 inputs only, got torch.float32"),
    ],
    ids=["cpu", "head_dim", "mini_batch", "mlp_hidden", "linear_hidden", "fp32", "fp32-grad"],
)
def test_unsupported_reasons(overrides: dict, expected: str) -> None:
    reason = cuda_backend.unsupported_reason(_call(**overrides))
    assert reason is not None and expected in reason


def test_reason_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_backend, "_cupy_available", lambda: False)
    assert (
        cuda_backend.unsupported_reason(_call())
        == "cupy not installed (pip install 'ttt-studio[gpu]', i.e. cupy-cuda13x)"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_reason_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_backend, "_cupy_available", lambda: True)
    assert cuda_backend.unsupported_reason(_call()) == "torch has no CUDA device"


def _simulated_gpu(monkeypatch: pytest.MonkeyPatch, arch: int, smem_optin: int) -> None:
    """Make the backend believe a device of compute capability `arch` with `smem_optin` B is present."""
    monkeypatch.setattr(cuda_backend, "_cupy_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loader, "device_arch", lambda device: arch)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device: SimpleNamespace(shared_memory_per_block_optin=smem_optin),
    )


def test_training_uses_the_kernels_on_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cuda_backend.ENV_TRAINING, raising=False)
    _simulated_gpu(monkeypatch, 90, 232448)
    for kind, hidden in (("mlp", 256), ("linear", 64)):
        for grad in (False, True):
            assert (
                cuda_backend.unsupported_reason(_call(kind=kind, hidden=hidden, requires_grad=grad)) is None
            )


def test_training_refused_where_the_backward_kernel_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """sm_86 (99 KB of shared memory per block): TTT-Linear inference runs, its backward (150 KB) does not;
    TTT-MLP trains on the no-cluster backward (94.75 KB)."""
    monkeypatch.delenv(cuda_backend.ENV_TRAINING, raising=False)
    _simulated_gpu(monkeypatch, 86, 101376)
    assert cuda_backend.unsupported_reason(_call(kind="linear", hidden=64)) is None
    reason = cuda_backend.unsupported_reason(_call(kind="linear", hidden=64, requires_grad=True))
    smem = loader.BACKWARD_KERNELS[("linear", torch.bfloat16)].smem_bytes
    assert reason == (
        f"training: the linear backward kernel needs {smem} B of shared memory per block, device allows 101376 B"
    )
    assert cuda_backend.unsupported_reason(_call()) is None  # TTT-MLP inference: the no-cluster kernel
    assert cuda_backend.unsupported_reason(_call(requires_grad=True)) is None  # and its training


# (compute capability, shared memory per block): A100, RTX 30xx / A40, RTX 40xx / L40S, H100
GPUS = [(80, 167936), (86, 101376), (89, 101376), (90, 232448)]


@pytest.mark.parametrize(("arch", "smem"), GPUS, ids=[f"sm_{a}" for a, _ in GPUS])
def test_mlp_forward_variant_follows_compute_capability(
    monkeypatch: pytest.MonkeyPatch, arch: int, smem: int
) -> None:
    """Before Hopper the TTT-MLP forward and backward run the no-cluster kernels; Hopper keeps the cluster
    kernels."""
    monkeypatch.delenv(loader.ENV_VARIANT, raising=False)
    _simulated_gpu(monkeypatch, arch, smem)
    assert cuda_backend.unsupported_reason(_call()) is None
    assert cuda_backend.unsupported_reason(_call(requires_grad=True)) is None  # TTT-MLP training everywhere
    spec = loader.select_spec("mlp", torch.bfloat16, arch)
    assert spec.source == ("ttt_mlp_fwd.cu" if arch >= 90 else "ttt_mlp_fwd_sm80.cu")
    assert spec.smem_bytes <= smem
    bwd = loader.select_spec("mlp", torch.bfloat16, arch, backward=True)
    assert bwd.source == ("ttt_mlp_bwd.cu" if arch >= 90 else "ttt_mlp_bwd_sm80.cu")
    assert bwd.smem_bytes <= smem
    # the linear kernels have one variant each
    assert loader.select_spec("linear", torch.bfloat16, arch).source == "ttt_linear_fwd.cu"
    assert loader.select_spec("linear", torch.bfloat16, arch, backward=True).source == "ttt_linear_bwd.cu"


def test_variant_env_forces_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """TTT_STUDIO_TTT_CUDA_VARIANT=sm80 runs the no-cluster kernel on Hopper (the GPU checks use it);
    =sm90 on an sm_86 device is refused with the reason; a bad value is named."""
    _simulated_gpu(monkeypatch, 90, 232448)
    monkeypatch.setenv(loader.ENV_VARIANT, "sm80")
    assert loader.select_spec("mlp", torch.bfloat16, 90).source == "ttt_mlp_fwd_sm80.cu"
    assert loader.select_spec("mlp", torch.bfloat16, 90, backward=True).source == "ttt_mlp_bwd_sm80.cu"
    assert cuda_backend.unsupported_reason(_call(requires_grad=True)) is None
    _simulated_gpu(monkeypatch, 86, 101376)
    monkeypatch.setenv(loader.ENV_VARIANT, "sm90")
    assert cuda_backend.unsupported_reason(_call()) == (
        "mlp kernel ttt_mlp_fwd.cu needs sm_90+ (got sm_86; TTT_STUDIO_TTT_CUDA_VARIANT=sm90 forces it)"
    )
    monkeypatch.setenv(loader.ENV_VARIANT, "ampere")
    assert cuda_backend.unsupported_reason(_call()) == (
        "TTT_STUDIO_TTT_CUDA_VARIANT='ampere': expected one of auto, sm80, sm90"
    )
    with pytest.raises(ValueError, match="expected one of auto, sm80, sm90"):
        loader.select_spec("mlp", torch.bfloat16, 90)


def test_training_switch_keeps_training_on_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    _simulated_gpu(monkeypatch, 90, 232448)
    monkeypatch.setenv(cuda_backend.ENV_TRAINING, "0")
    reason = cuda_backend.unsupported_reason(_call(requires_grad=True))
    assert reason is not None and "CUDA training switched off by TTT_STUDIO_TTT_CUDA_TRAINING=0" in reason
    assert cuda_backend.unsupported_reason(_call()) is None  # inference is not affected
    monkeypatch.setattr("ttt_engine.ops.ttt.dispatch._fast_backends", [cuda_backend.BACKEND])
    monkeypatch.setattr("ttt_engine.ops.ttt.dispatch._probed", True)  # restored after the test
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    assert choose_backend(_call(requires_grad=True), "auto").name == "reference"
    assert choose_backend(_call(), "auto").name == "cuda"


def test_run_with_grad_refuses_cpu_with_reason() -> None:
    q, k, v, eta, ln_w, ln_b, state = _mlp_inputs(length=64)
    q.requires_grad_()
    with pytest.raises(ValueError, match="cannot train on this call: needs CUDA tensors, got device cpu"):
        cuda_backend.run("mlp", q, k, v, eta, ln_w, ln_b, state, 64)


def test_scan_forward_refuses_cpu() -> None:
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        cuda_backend.scan_forward("mlp", *_mlp_inputs(length=64))


def test_import_is_light() -> None:
    """Importing the package and the backend pulls in neither cupy nor a CUDA context."""
    code = (
        "import sys, cuda, cuda.backend, cuda.loader; assert 'cupy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_nvidia_cuda_namespace_still_importable() -> None:
    """Our `cuda` package must not hide NVIDIA's cuda.* namespace packages (CuPy imports cuda.pathfinder)."""
    pytest.importorskip("cuda.pathfinder", reason="cuda-pathfinder not installed")
    import cuda  # noqa: PLC0415

    assert Path(cuda.__file__).resolve().parent == Path(loader.__file__).resolve().parent
    assert len(cuda.__path__) >= 2


def test_kernel_source_inlines_headers() -> None:
    tables = (
        loader.KERNELS,
        loader.NO_CLUSTER_KERNELS,
        loader.BACKWARD_KERNELS,
        loader.NO_CLUSTER_BACKWARD_KERNELS,
    )
    specs = [spec for table in tables for spec in table.values()]
    for spec in specs:
        text = loader.kernel_source(spec.source)
        assert "#include" not in "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("//")
        )
        assert "mma.sync.aligned.m16n8k16" in text  # from ttt_common.cuh
        assert 'extern "C" __global__' in text and spec.function in text and spec.smem_query in text


def test_kernel_source_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.cu"):
        loader.kernel_source("nope.cu")
