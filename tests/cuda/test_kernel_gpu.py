"""The fused CUDA kernels against the PyTorch reference, on fresh random inputs (needs a GPU and cupy).

Every output buffer the backend allocates starts as NaN (torch.empty / empty_like are patched), so a
kernel that leaves any element unwritten fails. Tolerances: relative RMS error 1e-2 for bf16 inputs
(a CPU emulation of the kernel's rounding points gives 1e-3 .. 4e-3 on these inputs).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from ttt_engine.ops.ttt import LinearState, MLPState, ttt_scan
from ttt_engine.ops.ttt.dispatch import ENV_BACKEND, ScanCall, choose_backend
from ttt_engine.ops.ttt.reference import ttt_scan_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        importlib.util.find_spec("cupy") is None, reason="needs cupy (pip install cupy-cuda13x)"
    ),
]

BF16_RTOL = 1e-2
SHAPES = [(1, 1, 64), (2, 3, 200), (1, 4, 1000), (3, 2, 130)]


def _arch() -> int:
    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor


def _skip_unless_supported(kind: str) -> None:
    """Every forward kernel runs on sm_80+ (TTT-MLP: the cluster kernel on sm_90, the no-cluster one
    before it or where TTT_STUDIO_TTT_CUDA_VARIANT=sm80 forces it, as tools/gpu/run_checks.sh does)."""
    if _arch() < 80:
        pytest.skip(f"the {kind} kernels need sm_80+ (bf16 mma.sync, cp.async), device is sm_{_arch()}")


@pytest.fixture(autouse=True)
def _nan_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty / empty_like return NaN-filled floating tensors (a kernel must write every output)."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(empty_like(*a, **kw)))


@pytest.fixture(autouse=True)
def _exact_fp32_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference must run true fp32 matmuls (no TF32) to be the yardstick."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BACKEND, raising=False)


def make_inputs(kind: str, b: int, h: int, length: int, *, eta_scale: float = 0.05, seed: int = 0):
    """Inputs shaped as the layer prepares them: unit-norm q, k; v near k; small per-token eta."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    d, f = 64, (256 if kind == "mlp" else 64)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device="cuda")

    q = F.normalize(randn(b, h, length, d), dim=-1).bfloat16()
    k = F.normalize(randn(b, h, length, d), dim=-1)
    v = (k + randn(b, h, length, d) / 8).bfloat16()
    k = k.bfloat16()
    eta = torch.rand(b, h, length, generator=gen, device="cuda") * eta_scale
    ln_w, ln_b = 1 + 0.1 * randn(h, d), 0.1 * randn(h, d)
    if kind == "mlp":
        state = MLPState(
            0.02 * randn(b, h, d, f),
            0.01 * randn(b, h, 1, f),
            0.02 * randn(b, h, f, d),
            0.01 * randn(b, h, 1, d),
        )
    else:
        state = LinearState(0.02 * randn(b, h, d, d), 0.01 * randn(b, h, 1, d))
    return q, k, v, eta, ln_w, ln_b, state


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float(), want.float()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def reference(kind: str, q, k, v, eta, ln_w, ln_b, state):
    pad = (-q.shape[2]) % 64
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    out, final = ttt_scan_reference(kind, q, k, v, F.pad(eta, (0, pad)), ln_w, ln_b, state, 64)
    return out[:, :, : out.shape[2] - pad], final


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-H{h}-L{n}" for b, h, n in SHAPES])
@torch.no_grad()
def test_kernel_matches_reference(kind: str, shape: tuple[int, int, int]) -> None:
    _skip_unless_supported(kind)
    inputs = make_inputs(kind, *shape, seed=sum(shape))
    out, final = ttt_scan(kind, *inputs, backend="cuda")
    ref_out, ref_final = reference(kind, *inputs)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype == torch.bfloat16
    assert torch.isfinite(out).all(), "kernel left NaN (unwritten) outputs"
    assert rel_err(out, ref_out) < BF16_RTOL, f"out rel err {rel_err(out, ref_out):.2e}"
    for name, got, want, init in zip(
        ("w1", "b1", "w2", "b2"), final.tensors(), ref_final.tensors(), inputs[-1].tensors()
    ):
        assert got.shape == want.shape and got.dtype == want.dtype == torch.float32, name
        assert torch.isfinite(got).all(), f"state.{name} has NaN"
        assert rel_err(got, want) < BF16_RTOL, f"state.{name} rel err {rel_err(got, want):.2e}"
        # the update itself, not only the (exact) initial state, must match
        assert rel_err(got - init, want - init) < 2 * BF16_RTOL, f"state.{name} update rel err"


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@torch.no_grad()
def test_long_sequence_does_not_drift(kind: str) -> None:
    _skip_unless_supported(kind)
    inputs = make_inputs(kind, 1, 2, 64 * 300 + 17, seed=7)
    out, final = ttt_scan(kind, *inputs, backend="cuda")
    ref_out, ref_final = reference(kind, *inputs)
    assert rel_err(out, ref_out) < BF16_RTOL
    for got, want in zip(final.tensors(), ref_final.tensors()):
        assert rel_err(got, want) < BF16_RTOL


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@torch.no_grad()
def test_deterministic_and_stream_ordered(kind: str) -> None:
    _skip_unless_supported(kind)
    inputs = make_inputs(kind, 2, 2, 64 * 5, seed=3)
    out1, final1 = ttt_scan(kind, *inputs, backend="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out2, final2 = ttt_scan(kind, *inputs, backend="cuda")
        out2 = out2 + 0  # consumed on the side stream: wrong ordering would read a partial result
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)
    for a, b in zip(final1.tensors(), final2.tensors()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@torch.no_grad()
def test_checkpoints_are_intermediate_states(kind: str) -> None:
    from cuda.backend import scan_forward  # noqa: PLC0415

    _skip_unless_supported(kind)
    every, n_mb = 3, 8
    q, k, v, eta, ln_w, ln_b, state = make_inputs(kind, 1, 2, 64 * n_mb, seed=11)
    _, final, ckpt = scan_forward(kind, q, k, v, eta, ln_w, ln_b, state, checkpoint_every=every)
    assert ckpt is not None and ckpt.every == every
    n_ckpt = -(-n_mb // every)
    for c in range(n_ckpt):
        stop = 64 * every * c
        if stop == 0:
            want = [t.float() for t in state.tensors()]
        else:
            _, ref = ttt_scan_reference(
                kind, q[:, :, :stop], k[:, :, :stop], v[:, :, :stop], eta[:, :, :stop], ln_w, ln_b, state, 64
            )
            want = list(ref.tensors())
        for got, ref_t in zip(ckpt.state.tensors(), want):
            assert got.shape[2] == n_ckpt
            assert rel_err(got[:, :, c], ref_t) < BF16_RTOL, f"checkpoint {c}"


@torch.no_grad()
def test_auto_dispatch_on_gpu() -> None:
    dev = torch.device("cuda", torch.cuda.current_device())
    call = ScanCall("linear", dev, torch.bfloat16, 64, 64, 64, False)
    assert choose_backend(call, "auto").name == "cuda"
    assert (
        choose_backend(ScanCall("linear", dev, torch.float32, 64, 64, 64, False), "auto").name == "reference"
    )
    # training calls: the kernels where the backward kernel fits this device (tests/cuda/test_kernel_bwd_gpu.py)
    from cuda import backend  # noqa: PLC0415

    train = ScanCall("linear", dev, torch.bfloat16, 64, 64, 64, True)
    expected = "cuda" if backend.unsupported_reason(train) is None else "reference"
    assert choose_backend(train, "auto").name == expected


def test_fp32_inputs_use_the_reference() -> None:
    """fp32 calls keep fp32 accuracy (1e-4) because auto dispatch sends them to the reference."""
    inputs = list(make_inputs("linear", 1, 2, 130, seed=5))
    inputs[:3] = [t.float() for t in inputs[:3]]
    with torch.no_grad():
        out, _ = ttt_scan("linear", *inputs)
        ref_out, _ = reference("linear", *inputs)
    assert rel_err(out, ref_out) < 1e-4


def test_loader_shared_memory_matches_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from cuda import loader  # noqa: PLC0415

    for table, variant in ((loader.KERNELS, "sm90"), (loader.NO_CLUSTER_KERNELS, "sm80")):
        monkeypatch.setenv(loader.ENV_VARIANT, variant)
        for (kind, dtype), spec in table.items():
            if _arch() < spec.min_arch:
                continue
            kernel = loader.load_kernel(kind, dtype, torch.device("cuda", torch.cuda.current_device()))
            assert kernel.spec == spec
            assert kernel.smem_bytes == spec.smem_bytes  # load_kernel also raises on a mismatch
