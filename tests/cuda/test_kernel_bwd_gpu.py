"""Training through the CUDA kernels: gradients of the forward + backward kernels against torch.autograd
of the PyTorch reference, on fresh random inputs (needs a GPU and cupy).

Every buffer the backend allocates with torch.empty starts as NaN, so a kernel that leaves any gradient
element unwritten fails. Tolerance: relative RMS error 1e-2 for bf16 inputs (the kernels' own code run
on the CPU by tests/cuda/kernel_emu.h gives 2e-3 .. 7e-3 on inputs like these).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_kernel_gpu import SHAPES, make_inputs, reference, rel_err

from ttt_engine.ops.ttt import LinearState, MLPState, ttt_scan
from ttt_engine.ops.ttt.dispatch import ENV_BACKEND, ScanCall, choose_backend

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        importlib.util.find_spec("cupy") is None, reason="needs cupy (pip install cupy-cuda13x)"
    ),
]

BF16_RTOL = 1e-2
NAMES = ["q", "k", "v", "eta", "ln_w", "ln_b", "w1", "b1", "w2", "b2"]


def _arch() -> int:
    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor


def _skip_unless_supported(kind: str) -> None:
    if kind == "mlp" and _arch() < 90:
        pytest.skip(f"TTT-MLP kernels need sm_90 thread-block clusters, device is sm_{_arch()}")
    from cuda import backend  # noqa: PLC0415

    dev = torch.device("cuda", torch.cuda.current_device())
    hidden = 256 if kind == "mlp" else 64
    reason = backend.unsupported_reason(ScanCall(kind, dev, torch.bfloat16, 64, hidden, 64, True))
    if reason is not None:
        pytest.skip(f"this device cannot train on the kernels: {reason}")


@pytest.fixture(autouse=True)
def _nan_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(empty_like(*a, **kw)))


@pytest.fixture(autouse=True)
def _exact_fp32_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    monkeypatch.delenv("TTT_STUDIO_TTT_CUDA_TRAINING", raising=False)


def grads_of(fn, inputs, d_out, d_final):
    """(out, gradients of sum(out * d_out) + sum(final * d_final) w.r.t. every input) for fn(*inputs)."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs[:6]]
    init = [t.detach().clone().requires_grad_() for t in inputs[6].tensors()]
    cls = MLPState if isinstance(inputs[6], MLPState) else LinearState
    out, final = fn(*leaves, cls(*init))
    loss = (out.float() * d_out).sum() + sum((t * d).sum() for t, d in zip(final.tensors(), d_final))
    return out.detach(), torch.autograd.grad(loss, leaves + init)


def cotangents(inputs, seed: int):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = inputs[0]
    d_out = torch.randn(q.shape, generator=gen, device="cuda").bfloat16().float()
    d_final = [torch.randn(t.shape, generator=gen, device="cuda") for t in inputs[6].tensors()]
    return d_out, d_final


def reference_fn(kind):
    def fn(q, k, v, eta, ln_w, ln_b, state):
        return reference(kind, q.float(), k.float(), v.float(), eta, ln_w, ln_b, state)

    return fn


def assert_grads_close(grads, ref_grads, inputs, rtol: float) -> None:
    for name, got, want, leaf in zip(NAMES, grads, ref_grads, [*inputs[:6], *inputs[6].tensors()]):
        assert got.shape == want.shape and got.dtype == leaf.dtype, name
        assert torch.isfinite(got).all(), f"d{name} has NaN (unwritten)"
        assert rel_err(got, want) < rtol, f"d{name}: rel err {rel_err(got, want):.2e}"


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-H{h}-L{n}" for b, h, n in SHAPES])
def test_kernel_gradients_match_reference(kind: str, shape: tuple[int, int, int]) -> None:
    _skip_unless_supported(kind)
    inputs = make_inputs(kind, *shape, seed=sum(shape) + 1)
    d_out, d_final = cotangents(inputs, seed=sum(shape))

    def kernel(q, k, v, eta, ln_w, ln_b, state):
        return ttt_scan(kind, q, k, v, eta, ln_w, ln_b, state, backend="cuda")

    out, grads = grads_of(kernel, inputs, d_out, d_final)
    ref_out, ref_grads = grads_of(reference_fn(kind), inputs, d_out, d_final)
    assert rel_err(out, ref_out) < BF16_RTOL
    assert_grads_close(grads, ref_grads, inputs, BF16_RTOL)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("group", [1, 3])
def test_checkpoint_groups(kind: str, group: int) -> None:
    """Groups of 1 and 3 mini-batches (7 mini-batches: a partial last group) give the same gradients."""
    from cuda import backend  # noqa: PLC0415

    _skip_unless_supported(kind)
    inputs = make_inputs(kind, 1, 2, 64 * 7, seed=group)
    d_out, d_final = cotangents(inputs, seed=5)

    def kernel(q, k, v, eta, ln_w, ln_b, state):
        return backend.run(kind, q, k, v, eta, ln_w, ln_b, state, 64, checkpoint_group=group)

    _, grads = grads_of(kernel, inputs, d_out, d_final)
    _, ref_grads = grads_of(reference_fn(kind), inputs, d_out, d_final)
    assert_grads_close(grads, ref_grads, inputs, BF16_RTOL)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_long_sequence_gradients_do_not_drift(kind: str) -> None:
    """41 mini-batches in groups of 16: the reverse recursion stays close (2e-2: a 41-step bf16 chain)."""
    _skip_unless_supported(kind)
    inputs = make_inputs(kind, 1, 2, 64 * 40 + 17, seed=9)
    d_out, d_final = cotangents(inputs, seed=9)

    def kernel(q, k, v, eta, ln_w, ln_b, state):
        return ttt_scan(kind, q, k, v, eta, ln_w, ln_b, state, backend="cuda")

    _, grads = grads_of(kernel, inputs, d_out, d_final)
    _, ref_grads = grads_of(reference_fn(kind), inputs, d_out, d_final)
    assert_grads_close(grads, ref_grads, inputs, 2 * BF16_RTOL)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_backward_is_deterministic(kind: str) -> None:
    _skip_unless_supported(kind)
    inputs = make_inputs(kind, 2, 2, 64 * 5, seed=3)
    d_out, d_final = cotangents(inputs, seed=3)

    def kernel(q, k, v, eta, ln_w, ln_b, state):
        return ttt_scan(kind, q, k, v, eta, ln_w, ln_b, state, backend="cuda")

    _, first = grads_of(kernel, inputs, d_out, d_final)
    _, second = grads_of(kernel, inputs, d_out, d_final)
    for name, a, b in zip(NAMES, first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"d{name} differs between runs")


def test_training_dispatch_on_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_unless_supported("linear")
    dev = torch.device("cuda", torch.cuda.current_device())
    train = ScanCall("linear", dev, torch.bfloat16, 64, 64, 64, True)
    assert choose_backend(train, "auto").name == "cuda"
    assert (
        choose_backend(ScanCall("linear", dev, torch.float32, 64, 64, 64, True), "auto").name == "reference"
    )
    monkeypatch.setenv("TTT_STUDIO_TTT_CUDA_TRAINING", "0")
    assert choose_backend(train, "auto").name == "reference"
    with pytest.raises(ValueError, match="CUDA training switched off"):
        choose_backend(train, "cuda")


def test_fp32_training_uses_the_reference() -> None:
    """fp32 inputs keep fp32 accuracy (1e-4) in training too: auto dispatch sends them to the reference."""
    inputs = list(make_inputs("linear", 1, 2, 130, seed=5))
    inputs[:3] = [t.float() for t in inputs[:3]]
    d_out, d_final = cotangents(inputs, seed=6)

    def auto(q, k, v, eta, ln_w, ln_b, state):
        return ttt_scan("linear", q, k, v, eta, ln_w, ln_b, state)

    _, grads = grads_of(auto, inputs, d_out, d_final)
    _, ref_grads = grads_of(reference_fn("linear"), inputs, d_out, d_final)
    assert_grads_close(grads, ref_grads, inputs, 1e-4)
