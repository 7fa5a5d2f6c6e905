"""Manual backward of the TTT scan in plain PyTorch: the algorithm the CUDA backward kernels implement.

The forward (reference.py) saves only the state before every `group`-th mini-batch. The backward walks
the groups from last to first; for each it recomputes the states of the group from its checkpoint
(`*_update`: the state update alone, no read-out) and then runs the reverse steps of the group.

Reverse step j (j = n, n-1, ..., 0, n = number of mini-batches) works with ONE state, S_j (the state
before mini-batch j, i.e. after update j-1), because both users of S_j are handled together:
    read-out of mini-batch j-1:  out_{j-1} = Q_{j-1} + LN(f(Q_{j-1}; S_j))        (j >= 1)
    update of mini-batch j:      S_{j+1}  = S_j - eta_j * grad l(S_j; K_j, V_j)    (j < n)
    dS_j = readout_backward(S_j) + update_backward(S_j, dS_{j+1})
with dS_n starting from dL/d(final state). This is the same fusion as the forward kernels (the
read-out of mini-batch i-1 shares a pass with the forward of mini-batch i: both read S_i), and it is
why a kernel keeps one state, one dState (fp32 accumulators) and bf16 copies of both on chip.

Per reverse step, what is recomputed and what is carried (MLP; Linear is the same without the hidden
layer):
    carried:     dS_{j+1} (fp32) from step j+1;  S_j from the group's recompute (kernels: bf16 copy of W
                 for the matmuls + fp32 biases, written to a scratch buffer during the recompute)
    recomputed:  Z1 = K W1 + b1, X2 = gelu(Z1), Z2 = X2 W2 + b2, g2 = LNL2'(Z2, V - K), G1 = g2 W2^T,
                 g1 = G1 * gelu'(Z1) (update half);  Zq1 = Q W1 + b1, Xq2, Zq2 (read-out half)
    never saved: no per-token activation of the forward is kept; memory is one state per group.

dtypes: everything runs in float32, or float64 when q is float64 (like the reference); gradients come
back in each input's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .inner_grads import (
    GELU_BWD_CUBIC,
    GELU_CUBIC,
    INNER_LN_EPS,
    SQRT_2_OVER_PI,
    gelu_tanh,
    gelu_tanh_bwd,
    ln_fused_l2_bwd,
)
from .reference import _compute_dtype, _get_step
from .state import LinearState, MLPState

Tensors = tuple[torch.Tensor, ...]

# ------------------------------------------------------------------------------------------------
# element-wise and row-wise pieces


def gelu_tanh_bwd2(x: torch.Tensor) -> torch.Tensor:
    """d/dx of gelu_tanh_bwd(x) (its formula as written, with the rounded cubic constant)."""
    t = torch.tanh(SQRT_2_OVER_PI * x * (1.0 + GELU_CUBIC * x * x))
    dt = (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x)  # d tanh(s(x)) / dx
    poly = SQRT_2_OVER_PI + GELU_BWD_CUBIC * x * x
    return (
        0.5 * (1.0 - t * t) * poly
        - x * t * dt * poly
        + 0.5 * x * (1.0 - t * t) * (2.0 * GELU_BWD_CUBIC * x)
        + 0.5 * dt
    )


def _row_norm(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(xhat, std) of the inner LayerNorm: biased variance, eps inside the sqrt. z: [..., D]."""
    mu = z.mean(dim=-1, keepdim=True)
    std = torch.sqrt(z.var(dim=-1, keepdim=True, unbiased=False) + INNER_LN_EPS)
    return (z - mu) / std, std


def _norm_bwd(xhat: torch.Tensor, std: torch.Tensor, dxhat: torch.Tensor) -> torch.Tensor:
    """Backward of xhat = (z - mean z) / std(z) through mean and std: dL/dz from dL/dxhat."""
    return (dxhat - dxhat.mean(dim=-1, keepdim=True) - xhat * (dxhat * xhat).mean(dim=-1, keepdim=True)) / std


def layer_norm_backward(
    z: torch.Tensor, ln_w: torch.Tensor, d_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of y = LN(z) * ln_w + ln_b (the read-out). z, d_y: [B,H,b,D]; ln_w: [H,1,D].

    Returns (dz [B,H,b,D], dln_w [B,H,1,D], dln_b [B,H,1,D]) with the LN parameters' gradients summed
    over the tokens (not over the batch).
    """
    xhat, std = _row_norm(z)
    dz = _norm_bwd(xhat, std, d_y * ln_w)
    return dz, (d_y * xhat).sum(dim=-2, keepdim=True), d_y.sum(dim=-2, keepdim=True)


def ln_fused_l2_bwd_vjp(
    z: torch.Tensor, target: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vector-Jacobian product of g = ln_fused_l2_bwd(z, target, ln_w, ln_b) with u = dL/dg.

    Per row (D = head dim): xhat = (z - mu) / std, r = ln_w xhat + ln_b - target, h = r ln_w,
    a = mean(h), c = mean(h xhat), g = (h - a - xhat c) / std. Then
        dh     = (u - mean(u) - xhat mean(u xhat)) / std
        dxhat  = ln_w^2 dh - (c u + h mean(u xhat)) / std
        dstd   = -sum(u g) / std
        dz     = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / std + dstd xhat / D
        dtarget = -ln_w dh,   dln_w = sum_rows dh (r + ln_w xhat),   dln_b = sum_rows dh ln_w.
    Shapes: z, target, u [B,H,b,D]; ln_w, ln_b [H,1,D]. Returns (dz, dtarget, dln_w, dln_b), the last
    two [B,H,1,D] (summed over the tokens).
    """
    d = z.shape[-1]
    xhat, std = _row_norm(z)
    r = ln_w * xhat + ln_b - target
    h = r * ln_w
    a = h.mean(dim=-1, keepdim=True)
    c = (h * xhat).mean(dim=-1, keepdim=True)
    g = (h - a - xhat * c) / std
    mux = (u * xhat).mean(dim=-1, keepdim=True)
    dh = (u - u.mean(dim=-1, keepdim=True) - xhat * mux) / std
    dxhat = ln_w * ln_w * dh - (c * u + h * mux) / std
    dstd = -(u * g).sum(dim=-1, keepdim=True) / std
    dz = _norm_bwd(xhat, std, dxhat) + dstd * xhat / d
    d_ln_w = (dh * (r + ln_w * xhat)).sum(dim=-2, keepdim=True)
    d_ln_b = (dh * ln_w).sum(dim=-2, keepdim=True)
    return dz, -ln_w * dh, d_ln_w, d_ln_b


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2)


def _colsum(x: torch.Tensor) -> torch.Tensor:
    return x.sum(dim=-2, keepdim=True)  # [B,H,b,N] -> [B,H,1,N]


# ------------------------------------------------------------------------------------------------
# TTT-MLP. State S = (W1 [B,H,D,F], b1 [B,H,1,F], W2 [B,H,F,D], b2 [B,H,1,D]); inputs [B,H,b,D],
# eta [B,H,b]; ln_w, ln_b [H,1,D].


def mlp_update(k, v, eta, ln_w, ln_b, w1, b1, w2, b2) -> Tensors:
    """The state update of one mini-batch (mlp_step_primal without the read-out)."""
    z1 = k @ w1 + b1
    x2 = gelu_tanh(z1)
    g2 = ln_fused_l2_bwd(x2 @ w2 + b2, v - k, ln_w, ln_b)
    g1 = (g2 @ _t(w2)) * gelu_tanh_bwd(z1)
    e = eta.unsqueeze(-1)
    return (
        w1 - _t(k) @ (e * g1),
        b1 - _colsum(e * g1),
        w2 - _t(x2) @ (e * g2),
        b2 - _colsum(e * g2),
    )


def mlp_readout_backward(q, d_out, ln_w, ln_b, w1, b1, w2, b2) -> tuple[torch.Tensor, Tensors, Tensors]:
    """Backward of out = q + LN(gelu(q W1 + b1) W2 + b2) for one mini-batch, state S given.

    Recomputes Zq1, Xq2, Zq2. Returns (dq, dS (dW1, db1, dW2, db2), (dln_w, dln_b)).
    """
    zq1 = q @ w1 + b1  # [B,H,b,F]
    xq2 = gelu_tanh(zq1)
    dzq2, d_ln_w, d_ln_b = layer_norm_backward(xq2 @ w2 + b2, ln_w, d_out)
    dzq1 = (dzq2 @ _t(w2)) * gelu_tanh_bwd(zq1)
    dq = d_out + dzq1 @ _t(w1)
    d_state = (_t(q) @ dzq1, _colsum(dzq1), _t(xq2) @ dzq2, _colsum(dzq2))
    return dq, d_state, (d_ln_w, d_ln_b)


def mlp_update_backward(
    k, v, eta, ln_w, ln_b, state: Sequence[torch.Tensor], d_next: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Tensors, Tensors]:
    """Backward of S' = mlp_update(S) for one mini-batch: dS' = d_next given, S given.

    Forward (recomputed here):  Z1 = K W1 + b1, X2 = gelu(Z1), Z2 = X2 W2 + b2, T = V - K,
        g2 = LNL2'(Z2, T), G1 = g2 W2^T, g1 = G1 * gelu'(Z1),
        W1' = W1 - K^T (eta g1), b1' = b1 - sum(eta g1), W2' = W2 - X2^T (eta g2), b2' = b2 - sum(eta g2).
    Backward, in the order a kernel runs it:
        dP1 = -(K dW1' + db1'),  dP2 = -(X2 dW2' + db2')          (gradients of eta g1, eta g2)
        deta = rowsum(dP1 g1) + rowsum(dP2 g2)
        dK  = -(eta g1) dW1'^T,   dX2 = -(eta g2) dW2'^T
        dG1 = eta dP1 gelu'(Z1),  dZ1 = eta dP1 G1 gelu''(Z1)
        dg2 = eta dP2 + dG1 W2,   dW2 = dW2' + dG1^T g2
        (dZ2, dT, dln_w, dln_b) = VJP of LNL2' with dg2
        dX2 += dZ2 W2^T,  dW2 += X2^T dZ2,  db2 = db2' + sum(dZ2)
        dZ1 += dX2 gelu'(Z1)
        dK  += dZ1 W1^T - dT,  dV = dT,  dW1 = dW1' + K^T dZ1,  db1 = db1' + sum(dZ1)
    Returns (dk, dv, deta, dS (dW1, db1, dW2, db2), (dln_w, dln_b)).
    """
    w1, b1, w2, b2 = state
    dw1n, db1n, dw2n, db2n = d_next
    e = eta.unsqueeze(-1)  # [B,H,b,1]
    z1 = k @ w1 + b1  # [B,H,b,F]
    x2 = gelu_tanh(z1)
    gp = gelu_tanh_bwd(z1)
    z2 = x2 @ w2 + b2  # [B,H,b,D]
    target = v - k
    g2 = ln_fused_l2_bwd(z2, target, ln_w, ln_b)
    big_g1 = g2 @ _t(w2)  # [B,H,b,F]
    g1 = big_g1 * gp

    dp1 = -(k @ dw1n + db1n)
    dp2 = -(x2 @ dw2n + db2n)
    deta = (dp1 * g1).sum(dim=-1) + (dp2 * g2).sum(dim=-1)
    dk = -(e * g1) @ _t(dw1n)
    dx2 = -(e * g2) @ _t(dw2n)
    dg1 = e * dp1
    d_big_g1 = dg1 * gp
    dz1 = dg1 * big_g1 * gelu_tanh_bwd2(z1)
    dg2 = e * dp2 + d_big_g1 @ w2
    dw2 = dw2n + _t(d_big_g1) @ g2
    dz2, dtarget, d_ln_w, d_ln_b = ln_fused_l2_bwd_vjp(z2, target, ln_w, ln_b, dg2)
    dx2 = dx2 + dz2 @ _t(w2)
    dw2 = dw2 + _t(x2) @ dz2
    db2 = db2n + _colsum(dz2)
    dz1 = dz1 + dx2 * gp
    dk = dk + dz1 @ _t(w1) - dtarget
    dw1 = dw1n + _t(k) @ dz1
    db1 = db1n + _colsum(dz1)
    return dk, dtarget, deta, (dw1, db1, dw2, db2), (d_ln_w, d_ln_b)


# ------------------------------------------------------------------------------------------------
# TTT-Linear. State S = (W [B,H,D,D], b [B,H,1,D]).


def linear_update(k, v, eta, ln_w, ln_b, w, b) -> Tensors:
    """The state update of one mini-batch (linear_step_primal without the read-out)."""
    eg = eta.unsqueeze(-1) * ln_fused_l2_bwd(k @ w + b, v - k, ln_w, ln_b)
    return w - _t(k) @ eg, b - _colsum(eg)


def linear_readout_backward(q, d_out, ln_w, ln_b, w, b) -> tuple[torch.Tensor, Tensors, Tensors]:
    """Backward of out = q + LN(q W + b). Returns (dq, (dW, db), (dln_w, dln_b))."""
    dzq, d_ln_w, d_ln_b = layer_norm_backward(q @ w + b, ln_w, d_out)
    return d_out + dzq @ _t(w), (_t(q) @ dzq, _colsum(dzq)), (d_ln_w, d_ln_b)


def linear_update_backward(
    k, v, eta, ln_w, ln_b, state: Sequence[torch.Tensor], d_next: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Tensors, Tensors]:
    """Backward of S' = linear_update(S): Z = K W + b, g = LNL2'(Z, V - K), W' = W - K^T (eta g),
    b' = b - sum(eta g). dP = -(K dW' + db'), deta = rowsum(dP g), dK = -(eta g) dW'^T,
    (dZ, dT, ...) = VJP of LNL2' with eta dP, dK += dZ W^T - dT, dV = dT, dW = dW' + K^T dZ,
    db = db' + sum(dZ). Returns (dk, dv, deta, (dW, db), (dln_w, dln_b))."""
    w, b = state
    dwn, dbn = d_next
    e = eta.unsqueeze(-1)
    z = k @ w + b
    target = v - k
    g = ln_fused_l2_bwd(z, target, ln_w, ln_b)
    dp = -(k @ dwn + dbn)
    deta = (dp * g).sum(dim=-1)
    dz, dtarget, d_ln_w, d_ln_b = ln_fused_l2_bwd_vjp(z, target, ln_w, ln_b, e * dp)
    dk = -(e * g) @ _t(dwn) + dz @ _t(w) - dtarget
    return dk, dtarget, deta, (dwn + _t(k) @ dz, dbn + _colsum(dz)), (d_ln_w, d_ln_b)


_UPDATE = {"mlp": mlp_update, "linear": linear_update}
_READOUT_BWD = {"mlp": mlp_readout_backward, "linear": linear_readout_backward}
_UPDATE_BWD = {"mlp": mlp_update_backward, "linear": linear_update_backward}


# ------------------------------------------------------------------------------------------------
# the scan


def ttt_scan_backward(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    checkpoints: Sequence[torch.Tensor],
    group: int,
    mini_batch_size: int,
    d_out: torch.Tensor | None,
    d_final: Sequence[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gradients of a whole scan from its inputs and its state checkpoints.

    q, k, v [B,H,L,D], eta [B,H,L] (L a multiple of mini_batch_size), ln_weight/ln_bias [H,D];
    checkpoints: one tensor per state field, [n_ckpt, B, H, ...], the state before mini-batches
    0, group, 2 group, ...; d_out [B,H,L,D] or None (zero); d_final: dL/d(final state) per field, or None.
    All in the compute dtype (float32 / float64). Returns (dq, dk, dv, deta, dln_w [H,D], dln_b [H,D],
    *d_initial_state), each in the compute dtype.
    """
    batch, heads, length, dim = q.shape
    n_mb = length // mini_batch_size
    if n_mb * mini_batch_size != length or n_mb == 0:
        raise ValueError(f"seq_len {length} must be a positive multiple of mini_batch_size {mini_batch_size}")
    if group < 1:
        raise ValueError(f"group: expected >= 1 mini-batches per checkpoint, got {group}")
    n_ckpt = -(-n_mb // group)
    if checkpoints[0].shape[0] != n_ckpt:
        raise ValueError(
            f"checkpoints: expected {n_ckpt} states for group {group}, got {checkpoints[0].shape[0]}"
        )

    def split(x: torch.Tensor) -> torch.Tensor:
        # [B,H,L,...] -> [n_mb, B,H,b,...] (a view)
        return x.reshape(batch, heads, n_mb, mini_batch_size, *x.shape[3:]).movedim(2, 0)

    qs, ks, vs, etas = split(q), split(k), split(v), split(eta)
    ln_w = ln_weight.reshape(heads, 1, dim)
    ln_b = ln_bias.reshape(heads, 1, dim)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    deta = torch.zeros_like(eta)
    dqs, dks, dvs, detas = split(dq), split(dk), split(dv), split(deta)
    d_out_s = split(d_out) if d_out is not None else None
    d_ln_w = torch.zeros(batch, heads, 1, dim, dtype=q.dtype, device=q.device)
    d_ln_b = torch.zeros_like(d_ln_w)
    d_state = [
        torch.zeros_like(c[0]) if d_final is None or d_final[i] is None else d_final[i].clone()
        for i, c in enumerate(checkpoints)
    ]
    update, readout_bwd, update_bwd = _UPDATE[kind], _READOUT_BWD[kind], _UPDATE_BWD[kind]

    for g0 in reversed(range(0, n_mb, group)):
        g1 = min(g0 + group, n_mb)
        last = g1 if g1 == n_mb else g1 - 1  # the last state this group's reverse steps read
        states = [tuple(c[g0 // group] for c in checkpoints)]
        for i in range(g0, last):
            states.append(update(ks[i], vs[i], etas[i], ln_w, ln_b, *states[-1]))
        for j in range(last, g0 - 1, -1):
            s_j = states[j - g0]
            if j < n_mb:  # update of mini-batch j: consumes dS_{j+1}, gives dS_j
                dk_j, dv_j, deta_j, d_state, (dw, db) = update_bwd(
                    ks[j], vs[j], etas[j], ln_w, ln_b, s_j, d_state
                )
                dks[j].copy_(dk_j)
                dvs[j].copy_(dv_j)
                detas[j].copy_(deta_j)
                d_ln_w += dw
                d_ln_b += db
            if j >= 1 and d_out_s is not None:  # read-out of mini-batch j-1 also reads S_j
                dq_j, d_state_r, (dw, db) = readout_bwd(qs[j - 1], d_out_s[j - 1], ln_w, ln_b, *s_j)
                dqs[j - 1].copy_(dq_j)
                d_state = [a + b for a, b in zip(d_state, d_state_r)]
                d_ln_w += dw
                d_ln_b += db
    return (
        dq,
        dk,
        dv,
        deta,
        d_ln_w.sum(dim=0).reshape(heads, dim),
        d_ln_b.sum(dim=0).reshape(heads, dim),
        *d_state,
    )


def ttt_scan_forward_checkpointed(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    state: Sequence[torch.Tensor],
    mini_batch_size: int,
    group: int,
    *,
    form: str = "dual",
    compile_step: bool = False,
) -> tuple[torch.Tensor, Tensors, Tensors]:
    """The reference forward (all in the compute dtype of the inputs) that also keeps the state before
    mini-batches 0, group, 2 group, ... Returns (out [B,H,L,D], final state, checkpoints [n_ckpt,B,H,...])."""
    batch, heads, length, dim = q.shape
    n_mb = length // mini_batch_size
    step = _get_step(kind, form, compile_step)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, heads, n_mb, mini_batch_size, *x.shape[3:]).movedim(2, 0)

    qs, ks, vs, etas = split(q), split(k), split(v), split(eta)
    ln_w = ln_weight.reshape(heads, 1, dim)
    ln_b = ln_bias.reshape(heads, 1, dim)
    carry = tuple(state)
    kept: list[Tensors] = []
    outs = []
    for i in range(n_mb):
        if i % group == 0:
            kept.append(carry)
        out_i, carry = step(qs[i], ks[i], vs[i], etas[i], ln_w, ln_b, *carry)
        outs.append(out_i)
    out = torch.stack(outs).movedim(0, 2).reshape(batch, heads, length, dim)
    checkpoints = tuple(torch.stack(field) for field in zip(*kept))
    return out, carry, checkpoints


class TTTScanFunction(torch.autograd.Function):
    """Autograd node of a whole scan: checkpointed forward, manual backward (ttt_scan_backward).

    apply(kind, mini_batch_size, group, form, compile_step, q, k, v, eta, ln_w, ln_b, *state)
    -> (out in q's dtype, *final state in the compute dtype).
    """

    @staticmethod
    def forward(ctx, kind, mini_batch_size, group, form, compile_step, q, k, v, eta, ln_w, ln_b, *state):
        cdt = _compute_dtype(q)
        args = [t.to(cdt) for t in (q, k, v, eta, ln_w, ln_b)]
        init = [t.to(cdt) for t in state]
        out, final, checkpoints = ttt_scan_forward_checkpointed(
            kind, *args, init, mini_batch_size, group, form=form, compile_step=compile_step
        )
        ctx.save_for_backward(*args, *checkpoints)
        ctx.kind, ctx.mini_batch_size, ctx.group = kind, mini_batch_size, group
        ctx.in_dtypes = [t.dtype for t in (q, k, v, eta, ln_w, ln_b, *state)]
        ctx.set_materialize_grads(False)
        return (out.to(q.dtype), *final)

    @staticmethod
    def backward(ctx, d_out, *d_final):
        saved = ctx.saved_tensors
        q, k, v, eta, ln_w, ln_b = saved[:6]
        checkpoints = saved[6:]
        d_out = d_out.to(q.dtype) if d_out is not None else None
        d_final = [d.to(q.dtype) if d is not None else None for d in d_final]
        grads = ttt_scan_backward(
            ctx.kind, q, k, v, eta, ln_w, ln_b, checkpoints, ctx.group, ctx.mini_batch_size, d_out, d_final
        )
        grads = [g.to(dt) for g, dt in zip(grads, ctx.in_dtypes)]
        return (None, None, None, None, None, *grads)


def ttt_scan_manual(
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
    """ttt_scan_reference with the manual backward: same signature, same results and gradients.

    checkpoint_group: mini-batches per saved state (0: one group, i.e. only the initial state is kept
    and the backward recomputes every state). L must be a multiple of mini_batch_size.
    """
    if kind not in _UPDATE:
        raise ValueError(f"kind: expected 'mlp' or 'linear', got {kind!r}")
    length = q.shape[2]
    if length % mini_batch_size or length == 0:
        raise ValueError(
            f"q: seq_len must be a positive multiple of {mini_batch_size} (ttt_scan pads), got {length}"
        )
    if checkpoint_group < 0:
        raise ValueError(f"checkpoint_group: expected >= 0, got {checkpoint_group}")
    n_mb = length // mini_batch_size
    group = checkpoint_group or n_mb
    res = TTTScanFunction.apply(
        kind, mini_batch_size, group, form, compile_step, q, k, v, eta, ln_weight, ln_bias, *state.tensors()
    )
    cls = MLPState if kind == "mlp" else LinearState
    return res[0], cls(*res[1:])
