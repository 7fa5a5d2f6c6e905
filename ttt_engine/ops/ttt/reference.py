"""Reference TTT scans in plain PyTorch: the specification every fast backend is tested against.

Non-causal mini-batch gradient descent (ttt-mlp.md section 1): every token of mini-batch i is read out
with the state after mini-batch i's update. All math runs in float32 (or float64 when given float64);
outputs come back in the input dtype.

Inputs (already prepared by the layer):
    q, k:    [B, H, L, D]  L2-normalised queries/keys (RoPE applied where wanted)
    v:       [B, H, L, D]  pre-normalised targets, V := K + LN(V - K)
    eta:     [B, H, L]     per-token inner learning rate (0 on padding tokens)
    ln_w/b:  [H, D]        inner LayerNorm parameters
L must be a multiple of the mini-batch size (the public op pads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from .inner_grads import gelu_tanh, gelu_tanh_bwd, inner_layer_norm, ln_fused_l2_bwd
from .state import LinearState, MLPState

Step = Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, ...]]]


def mlp_step_primal(q, k, v, eta, ln_w, ln_b, w1, b1, w2, b2):
    """One TTT-MLP mini-batch: update the state, then read out with it. Shapes: [B,H,b,*]."""
    target = v - k
    z1 = k @ w1 + b1  # [B,H,b,F]
    x2 = gelu_tanh(z1)
    z2 = x2 @ w2 + b2  # [B,H,b,D]
    g2 = ln_fused_l2_bwd(z2, target, ln_w, ln_b)
    g1 = (g2 @ w2.transpose(-1, -2)) * gelu_tanh_bwd(z1)
    e = eta.unsqueeze(-1)  # [B,H,b,1]
    w1 = w1 - k.transpose(-1, -2) @ (e * g1)
    b1 = b1 - (e * g1).sum(dim=-2, keepdim=True)
    w2 = w2 - x2.transpose(-1, -2) @ (e * g2)
    b2 = b2 - (e * g2).sum(dim=-2, keepdim=True)
    out = q + inner_layer_norm(gelu_tanh(q @ w1 + b1) @ w2 + b2, ln_w, ln_b)
    return out, (w1, b1, w2, b2)


def mlp_step_dual(q, k, v, eta, ln_w, ln_b, w1, b1, w2, b2):
    """The same mini-batch in dual form: the read-out uses Q K^T instead of the updated weights."""
    target = v - k
    z1 = k @ w1 + b1
    x2 = gelu_tanh(z1)
    z2 = x2 @ w2 + b2
    g2 = ln_fused_l2_bwd(z2, target, ln_w, ln_b)
    g1 = (g2 @ w2.transpose(-1, -2)) * gelu_tanh_bwd(z1)
    eg1 = eta.unsqueeze(-1) * g1
    eg2 = eta.unsqueeze(-1) * g2
    b1_new = b1 - eg1.sum(dim=-2, keepdim=True)
    b2_new = b2 - eg2.sum(dim=-2, keepdim=True)
    z1_bar = q @ w1 - (q @ k.transpose(-1, -2)) @ eg1 + b1_new  # [B,H,b,F]
    x2_bar = gelu_tanh(z1_bar)
    z2_bar = x2_bar @ w2 - (x2_bar @ x2.transpose(-1, -2)) @ eg2 + b2_new
    out = q + inner_layer_norm(z2_bar, ln_w, ln_b)
    w1_new = w1 - k.transpose(-1, -2) @ eg1
    w2_new = w2 - x2.transpose(-1, -2) @ eg2
    return out, (w1_new, b1_new, w2_new, b2_new)


def linear_step_primal(q, k, v, eta, ln_w, ln_b, w1, b1):
    """One TTT-Linear mini-batch: f(x) = x + LN(x W + b)."""
    g = ln_fused_l2_bwd(k @ w1 + b1, v - k, ln_w, ln_b)
    eg = eta.unsqueeze(-1) * g
    w1 = w1 - k.transpose(-1, -2) @ eg
    b1 = b1 - eg.sum(dim=-2, keepdim=True)
    return q + inner_layer_norm(q @ w1 + b1, ln_w, ln_b), (w1, b1)


def linear_step_dual(q, k, v, eta, ln_w, ln_b, w1, b1):
    """TTT-Linear mini-batch in dual form."""
    g = ln_fused_l2_bwd(k @ w1 + b1, v - k, ln_w, ln_b)
    eg = eta.unsqueeze(-1) * g
    b1_new = b1 - eg.sum(dim=-2, keepdim=True)
    z_bar = q @ w1 - (q @ k.transpose(-1, -2)) @ eg + b1_new
    w1_new = w1 - k.transpose(-1, -2) @ eg
    return q + inner_layer_norm(z_bar, ln_w, ln_b), (w1_new, b1_new)


STEPS: dict[tuple[str, str], Step] = {
    ("mlp", "primal"): mlp_step_primal,
    ("mlp", "dual"): mlp_step_dual,
    ("linear", "primal"): linear_step_primal,
    ("linear", "dual"): linear_step_dual,
}

_compiled: dict[tuple[str, str], Step] = {}


def _get_step(kind: str, form: str, compile_step: bool) -> Step:
    step = STEPS[(kind, form)]
    if not compile_step:
        return step
    if (kind, form) not in _compiled:
        # dynamic=None: a second shape (another batch size or length) compiles one graph with that dim symbolic
        _compiled[(kind, form)] = torch.compile(step, dynamic=None, fullgraph=True)
    return _compiled[(kind, form)]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def ttt_scan_reference(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    state: MLPState | LinearState,
    mini_batch_size: int,
    *,
    form: str = "dual",
    checkpoint_group: int = 0,
    compile_step: bool = False,
) -> tuple[torch.Tensor, MLPState | LinearState]:
    """Scan all mini-batches of one sequence. Returns (out [B,H,L,D] in q's dtype, final state in fp32).

    checkpoint_group > 0 recomputes groups of that many mini-batches in the backward pass (training
    memory: one state per group instead of one per mini-batch).
    """
    batch, heads, length, dim = q.shape
    n_mb = length // mini_batch_size
    cdt = _compute_dtype(q)
    step = _get_step(kind, form, compile_step)

    def split(x: torch.Tensor) -> torch.Tensor:
        # [B,H,L,...] -> [n_mb, B,H,b,...]
        x = x.to(cdt).reshape(batch, heads, n_mb, mini_batch_size, *x.shape[3:])
        return x.movedim(2, 0)

    qs, ks, vs, etas = split(q), split(k), split(v), split(eta)
    ln_w = ln_weight.to(cdt).reshape(heads, 1, dim)
    ln_b = ln_bias.to(cdt).reshape(heads, 1, dim)
    carry = tuple(t.to(cdt) for t in state.tensors())

    def run_group(start: int, stop: int, *carry_in: torch.Tensor):
        outs, carry_g = [], carry_in
        for i in range(start, stop):
            out_i, carry_g = step(qs[i], ks[i], vs[i], etas[i], ln_w, ln_b, *carry_g)
            outs.append(out_i)
        return (torch.stack(outs), *carry_g)

    use_ckpt = checkpoint_group > 0 and torch.is_grad_enabled()
    group = checkpoint_group if use_ckpt else n_mb
    chunks = []
    for start in range(0, n_mb, group):
        stop = min(start + group, n_mb)
        if use_ckpt:
            res = checkpoint(run_group, start, stop, *carry, use_reentrant=False)
        else:
            res = run_group(start, stop, *carry)
        chunks.append(res[0])
        carry = tuple(res[1:])

    stacked = chunks[0] if len(chunks) == 1 else torch.cat(chunks)  # [n_mb, B,H,b,D]
    out = stacked.movedim(0, 2).reshape(batch, heads, length, dim).to(q.dtype)
    final = MLPState(*carry) if kind == "mlp" else LinearState(*carry)
    return out, final
