"""The closed-form inner gradients equal torch.autograd of the inner loss (float64, tight tolerance)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttt_engine.ops.ttt.inner_grads import (
    gelu_tanh,
    gelu_tanh_bwd,
    inner_layer_norm,
    ln_fused_l2_bwd,
)
from ttt_engine.ops.ttt.reference import STEPS

TOL = {"rtol": 1e-10, "atol": 1e-12}


def test_gelu_tanh_matches_torch() -> None:
    x = torch.randn(1000, dtype=torch.float64) * 4
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), **TOL)


def test_gelu_tanh_bwd_equals_autograd() -> None:
    x = (torch.randn(1000, dtype=torch.float64) * 4).requires_grad_()
    (grad,) = torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)
    # the constants are the paper's 8-10 significant digits, so the match is to ~1e-9
    torch.testing.assert_close(gelu_tanh_bwd(x.detach()), grad, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("d", [16, 64])
def test_ln_fused_l2_bwd_equals_autograd(d: int) -> None:
    h = 3
    z = torch.randn(2, h, 8, d, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, h, 8, d, dtype=torch.float64)
    w = torch.rand(h, 1, d, dtype=torch.float64) + 0.5
    b = torch.randn(h, 1, d, dtype=torch.float64)
    loss = 0.5 * ((inner_layer_norm(z, w, b) - target) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(ln_fused_l2_bwd(z.detach(), target, w, b), grad, **TOL)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_state_update_equals_autograd_step(kind: str) -> None:
    """One mini-batch: the closed-form update equals W - autograd(sum_t eta_t * l_t)."""
    bsz, h, mb, d = 2, 2, 8, 16
    f = 4 * d if kind == "mlp" else d
    g = torch.Generator().manual_seed(1)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    q, k, v = (F.normalize(rnd(bsz, h, mb, d), dim=-1) for _ in range(3))
    eta = torch.rand(bsz, h, mb, generator=g, dtype=torch.float64) * 0.1
    ln_w = rnd(h, 1, d, scale=0.1) + 1
    ln_b = rnd(h, 1, d, scale=0.1)
    if kind == "mlp":
        state = [
            rnd(bsz, h, d, f, scale=0.3),
            rnd(bsz, h, 1, f, scale=0.1),
            rnd(bsz, h, f, d, scale=0.3),
            rnd(bsz, h, 1, d, scale=0.1),
        ]
    else:
        state = [rnd(bsz, h, d, d, scale=0.3), rnd(bsz, h, 1, d, scale=0.1)]

    params = [p.clone().requires_grad_() for p in state]
    if kind == "mlp":
        z2 = F.gelu(k @ params[0] + params[1], approximate="tanh") @ params[2] + params[3]
    else:
        z2 = k @ params[0] + params[1]
    per_token = 0.5 * ((inner_layer_norm(z2, ln_w, ln_b) - (v - k)) ** 2).sum(-1)  # [B,H,b]
    grads = torch.autograd.grad((eta * per_token).sum(), params)
    expected = [p.detach() - gr for p, gr in zip(params, grads)]

    _, new_state = STEPS[(kind, "primal")](q, k, v, eta, ln_w, ln_b, *state)
    # the GELU-backward constants carry ~9 significant digits: that bounds the match
    for got, want in zip(new_state, expected):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
