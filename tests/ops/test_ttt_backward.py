"""The manual backward (backward.py) equals torch.autograd of the reference scan, piece by piece and whole."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttt_engine.ops.ttt import LinearState, MLPState
from ttt_engine.ops.ttt.backward import (
    TTTScanFunction,
    gelu_tanh_bwd2,
    ln_fused_l2_bwd_vjp,
    ttt_scan_manual,
)
from ttt_engine.ops.ttt.inner_grads import gelu_tanh_bwd, ln_fused_l2_bwd
from ttt_engine.ops.ttt.reference import ttt_scan_reference

F64_TOL = 1e-9  # relative; the MLP's gelu' uses the paper's rounded constant (~1e-11 from autograd's)


def make_inputs(kind, b, h, length, d, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    q = F.normalize(rnd(b, h, length, d), dim=-1)
    k = F.normalize(rnd(b, h, length, d), dim=-1)
    v = k + rnd(b, h, length, d, scale=0.5)
    # large enough learning rates that the state really moves (gradients through the updates matter)
    eta = torch.rand(b, h, length, generator=g, dtype=dtype) * 0.5
    ln_w, ln_b = 1 + rnd(h, d, scale=0.1), rnd(h, d, scale=0.1)
    if kind == "mlp":
        f = 4 * d
        state = [rnd(b, h, d, f, scale=0.3), rnd(b, h, 1, f, scale=0.1)]
        state += [rnd(b, h, f, d, scale=0.3), rnd(b, h, 1, d, scale=0.1)]
    else:
        state = [rnd(b, h, d, d, scale=0.3), rnd(b, h, 1, d, scale=0.1)]
    return [q, k, v, eta, ln_w, ln_b], state


def run_scan(fn, kind, inputs, state, mbs, group, *, state_grad, final_grad, seed=1):
    """Pad like ttt_scan (zero tokens, eta 0), scan, take a random linear loss, return (out, grads)."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    init = [t.clone().requires_grad_(state_grad) for t in state]
    q, k, v, eta, ln_w, ln_b = leaves
    length = q.shape[2]
    pad = (-length) % mbs
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    cls = MLPState if kind == "mlp" else LinearState
    out, final = fn(kind, q, k, v, F.pad(eta, (0, pad)), ln_w, ln_b, cls(*init), mbs, checkpoint_group=group)
    out = out[:, :, :length]
    g = torch.Generator().manual_seed(seed)
    # loss weights drawn in float64 whatever the dtype, so float32 and float64 runs share one loss
    loss = (out * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)).sum()
    if final_grad:
        for t in final.tensors():
            loss = loss + (t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum()
    wrt = leaves + (init if state_grad else [])
    return out.detach(), [t.detach() for t in final.tensors()], torch.autograd.grad(loss, wrt)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


NAMES = ["q", "k", "v", "eta", "ln_w", "ln_b", "s0", "s1", "s2", "s3"]
# (b, h, length, head_dim, mini_batch, group): several groups with a partial last one, padding, group 0
CASES = [
    (1, 1, 16, 8, 16, 1),
    (2, 3, 80, 8, 16, 2),
    (1, 2, 100, 8, 16, 3),
    (2, 1, 61, 4, 8, 0),
    (1, 2, 96, 16, 16, 4),
]


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("case", CASES, ids=["B{}-H{}-L{}-D{}-mb{}-g{}".format(*c) for c in CASES])
@pytest.mark.parametrize(
    ("state_grad", "final_grad"), [(True, True), (False, False)], ids=["dstate", "out-only"]
)
def test_manual_backward_equals_autograd(kind, case, state_grad, final_grad) -> None:
    b, h, length, d, mbs, group = case
    inputs, state = make_inputs(kind, b, h, length, d, seed=length)
    ref = run_scan(
        ttt_scan_reference, kind, inputs, state, mbs, group, state_grad=state_grad, final_grad=final_grad
    )
    got = run_scan(
        ttt_scan_manual, kind, inputs, state, mbs, group, state_grad=state_grad, final_grad=final_grad
    )
    torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
    for a, want in zip(got[1], ref[1]):
        torch.testing.assert_close(a, want, rtol=1e-12, atol=1e-12)
    assert len(got[2]) == len(ref[2]) == 6 + (len(state) if state_grad else 0)
    for name, a, want in zip(NAMES, got[2], ref[2]):
        assert a.shape == want.shape and a.dtype == want.dtype, name
        assert want.norm() > 0, f"d{name} is zero: the case does not exercise it"
        assert rel(a, want) < F64_TOL, f"d{name}: rel err {rel(a, want):.2e}"


def test_gelu_tanh_bwd2_equals_autograd() -> None:
    x = (torch.randn(2000, dtype=torch.float64) * 4).requires_grad_()
    (grad,) = torch.autograd.grad(gelu_tanh_bwd(x).sum(), x)
    torch.testing.assert_close(gelu_tanh_bwd2(x.detach()), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [8, 64])
def test_ln_fused_l2_bwd_vjp_equals_autograd(d: int) -> None:
    h = 3
    z = torch.randn(2, h, 5, d, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, h, 5, d, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(h, 1, d, dtype=torch.float64) + 0.5).requires_grad_()
    bias = torch.randn(h, 1, d, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, h, 5, d, dtype=torch.float64)
    grads = torch.autograd.grad((ln_fused_l2_bwd(z, target, w, bias) * u).sum(), (z, target, w, bias))
    dz, dt, dw, db = ln_fused_l2_bwd_vjp(z.detach(), target.detach(), w.detach(), bias.detach(), u)
    torch.testing.assert_close(dz, grads[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dt, grads[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dw.sum(0), grads[2], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(db.sum(0), grads[3], rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_gradcheck_tiny(kind) -> None:
    inputs, state = make_inputs(kind, 1, 1, 6, 4, seed=5)
    leaves = [t.clone().requires_grad_() for t in inputs + state]

    def fn(*xs):
        return TTTScanFunction.apply(kind, 2, 2, "dual", False, *xs)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_float32_agrees_with_float64_autograd(kind) -> None:
    """float32 manual gradients vs the float64 reference's autograd: RMS relative error < 1e-4."""
    inputs, state = make_inputs(kind, 2, 2, 72, 16, seed=9)
    want = run_scan(ttt_scan_reference, kind, inputs, state, 16, 2, state_grad=True, final_grad=True)
    inputs32 = [t.float() for t in inputs]
    state32 = [t.float() for t in state]
    got = run_scan(ttt_scan_manual, kind, inputs32, state32, 16, 2, state_grad=True, final_grad=True)
    assert got[0].dtype == torch.float32
    for name, a, w in zip(NAMES, got[2], want[2]):
        assert a.dtype == torch.float32, name
        assert rel(a.double(), w) < 1e-4, f"d{name}: rel err {rel(a.double(), w):.2e}"


def test_only_checkpoints_are_saved() -> None:
    """The autograd node keeps the inputs and one state per group, nothing per mini-batch."""
    inputs, state = make_inputs("mlp", 1, 2, 112, 8, seed=2)  # 7 mini-batches of 16, groups of 3
    leaves = [t.clone().requires_grad_() for t in inputs]
    out, _ = ttt_scan_manual("mlp", *leaves, MLPState(*state), 16, checkpoint_group=3)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 6 + 4
    assert [tuple(t.shape) for t in saved[6:]] == [(3, *s.shape) for s in state]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "rnn"}, "kind: expected 'mlp' or 'linear', got 'rnn'"),
        ({"length": 20}, "seq_len must be a positive multiple of 16"),
        ({"checkpoint_group": -1}, "checkpoint_group: expected >= 0, got -1"),
    ],
    ids=["kind", "length", "group"],
)
def test_bad_arguments_are_named(kwargs, match) -> None:
    inputs, state = make_inputs("linear", 1, 1, kwargs.get("length", 32), 4)
    with pytest.raises(ValueError, match=match):
        ttt_scan_manual(
            kwargs.get("kind", "linear"),
            *inputs,
            LinearState(*state),
            16,
            checkpoint_group=kwargs.get("checkpoint_group", 1),
        )
