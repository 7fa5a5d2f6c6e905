"""Closed-form pieces of the inner model's gradient (ttt-mlp.md section 1).

These are the formulas the fused kernel implements; the reference scan uses them too, and the tests
check them against torch.autograd of the inner loss.
"""

from __future__ import annotations

import torch

# tanh-GELU constants: sqrt(2/pi) and 3 * 0.044715 * sqrt(2/pi)
SQRT_2_OVER_PI = 0.7978845608028654
GELU_CUBIC = 0.044715
GELU_BWD_CUBIC = 0.1070322243

# epsilon of the inner LayerNorm (forward and fused backward), as in the paper's code
INNER_LN_EPS = 1e-8


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh approximation of GELU (same as torch's approximate="tanh")."""
    return 0.5 * x * (1.0 + torch.tanh(SQRT_2_OVER_PI * x * (1.0 + GELU_CUBIC * x * x)))


def gelu_tanh_bwd(x: torch.Tensor) -> torch.Tensor:
    """d gelu_tanh(x) / dx, elementwise."""
    t = torch.tanh(SQRT_2_OVER_PI * x * (1.0 + GELU_CUBIC * x * x))
    return 0.5 * x * ((1.0 - t * t) * (SQRT_2_OVER_PI + GELU_BWD_CUBIC * x * x)) + 0.5 * (1.0 + t)


def inner_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-head LayerNorm over the last dim with biased variance.

    x: [..., D]; weight, bias broadcastable to x (e.g. [H, 1, D] against [B, H, b, D]).
    """
    mu = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mu) / torch.sqrt(var + INNER_LN_EPS) * weight + bias


def ln_fused_l2_bwd(
    z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Gradient of 0.5 * ||LN(z) - target||^2 with respect to z, row by row.

    z, target: [..., D]; weight, bias broadcastable. Returns [..., D].
    """
    d = z.shape[-1]
    mu = z.mean(dim=-1, keepdim=True)
    var = z.var(dim=-1, keepdim=True, unbiased=False)
    std = torch.sqrt(var + INNER_LN_EPS)
    xhat = (z - mu) / std
    y = weight * xhat + bias
    g = (y - target) * weight
    return (d * g - g.sum(dim=-1, keepdim=True) - xhat * (g * xhat).sum(dim=-1, keepdim=True)) / (d * std)
