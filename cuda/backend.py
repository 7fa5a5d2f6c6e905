"""The CUDA backend of the TTT scan (registered by ttt_engine/ops/ttt/dispatch.py on first CUDA call).

`unsupported_reason(call)` says why a call cannot run on the kernels (None when it can);
`run(...)` has the reference's signature and returns (out, final_state) with the reference's shapes
and dtypes: out [B, H, L, 64] in q's dtype (bf16), final state in fp32. When an input requires grad,
`run` goes through `TTTScanCudaFunction`: the forward kernel also writes the state before every
`checkpoint_group`-th mini-batch, and the backward kernel (ttt_*_bwd.cu, the algorithm of
ttt_engine/ops/ttt/backward.py) recomputes each group from its checkpoint and runs the reverse scan.
`scan_forward(...)` / `scan_backward(...)` are the two launches.
`TTT_STUDIO_TTT_CUDA_TRAINING=0` keeps training on the reference (inference still uses the kernels).

Importing this module does not import cupy (only the launches do, through cuda.loader).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ttt_engine.config import DEFAULT_CHECKPOINT_GROUP
from ttt_engine.ops.ttt.dispatch import Backend, ScanCall
from ttt_engine.ops.ttt.state import LinearState, MLPState

from . import loader

HEAD_DIM = 64
MINI_BATCH = 64
ENV_TRAINING = "TTT_STUDIO_TTT_CUDA_TRAINING"


def _cupy_available() -> bool:
    return importlib.util.find_spec("cupy") is not None


def unsupported_reason(call: ScanCall) -> str | None:
    """Why the kernels cannot run this call, or None when they can."""
    if call.device.type != "cuda":
        return f"needs CUDA tensors, got device {call.device}"
    if call.kind not in ("mlp", "linear"):
        return f"kind must be 'mlp' or 'linear', got {call.kind!r}"
    if call.head_dim != HEAD_DIM:
        return f"head_dim {HEAD_DIM} only, got {call.head_dim}"
    if call.mini_batch_size != MINI_BATCH:
        return f"mini_batch_size {MINI_BATCH} only, got {call.mini_batch_size}"
    spec = loader.KERNELS.get((call.kind, torch.bfloat16))
    if spec is None:
        return f"no kernel for kind {call.kind!r}"
    if call.hidden != spec.hidden:
        return f"{call.kind} hidden size {spec.hidden} only, got {call.hidden}"
    if call.dtype != torch.bfloat16:
        return (
            f"bf16 inputs only, got {call.dtype}: the kernels multiply in bf16 on tensor cores, which would "
            f"not keep {call.dtype} accuracy; the reference does"
        )
    if call.requires_grad and os.environ.get(ENV_TRAINING, "1") == "0":
        return f"CUDA training switched off by {ENV_TRAINING}=0 (the reference computes the gradients)"
    if not _cupy_available():
        return "cupy not installed (pip install 'ttt-studio[gpu]', i.e. cupy-cuda13x)"
    if not torch.cuda.is_available():
        return "torch has no CUDA device"
    arch = loader.device_arch(call.device)
    try:
        spec = loader.select_spec(call.kind, torch.bfloat16, arch)
    except ValueError as err:  # a bad TTT_STUDIO_TTT_CUDA_VARIANT
        return str(err)
    if arch < spec.min_arch:
        variant = loader.forced_variant()
        why = f"; {loader.ENV_VARIANT}={variant} forces it" if variant != "auto" else ""
        return f"{call.kind} kernel {spec.source} needs sm_{spec.min_arch}+ (got sm_{arch}{why})"
    props = torch.cuda.get_device_properties(call.device)
    optin = getattr(props, "shared_memory_per_block_optin", None)
    if optin is not None and optin < spec.smem_bytes:
        return f"needs {spec.smem_bytes} B of shared memory per block, device allows {optin} B"
    if call.requires_grad:
        bwd = loader.select_spec(call.kind, torch.bfloat16, arch, backward=True)
        if arch < bwd.min_arch:
            return f"training: the {call.kind} backward kernel needs sm_{bwd.min_arch}+ (got sm_{arch})"
        if optin is not None and optin < bwd.smem_bytes:
            return (
                f"training: the {call.kind} backward kernel needs {bwd.smem_bytes} B of shared memory per "
                f"block, device allows {optin} B"
            )
    return None


@dataclass
class Checkpoints:
    """States before mini-batches 0, every, 2 * every, ...: each tensor [B, H, n_ckpt, ...] fp32."""

    every: int
    state: MLPState | LinearState


def _fp32(t: torch.Tensor) -> torch.Tensor:
    return _aligned(t.to(torch.float32).contiguous())


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """cp.async moves 16-byte chunks: a contiguous view at an odd offset gets its own copy."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def scan_forward(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: MLPState | LinearState,
    mini_batch_size: int = MINI_BATCH,
    *,
    checkpoint_every: int = 0,
) -> tuple[torch.Tensor, MLPState | LinearState, Checkpoints | None]:
    """Run the fused forward scan. q, k, v: [B, H, L, 64] bf16 with L a multiple of 64; eta [B, H, L];
    ln_w, ln_b [H, 64]; state as MLPState / LinearState [B, H, ...]. Returns (out [B, H, L, 64] bf16,
    final state fp32, checkpoints or None)."""
    call = ScanCall(
        kind=kind,
        device=q.device,
        dtype=q.dtype,
        head_dim=q.shape[-1],
        hidden=state.w1.shape[-1],
        mini_batch_size=mini_batch_size,
        requires_grad=torch.is_grad_enabled()
        and any(t.requires_grad for t in (q, k, v, eta, ln_w, ln_b, *state.tensors())),
    )
    reason = unsupported_reason(call)
    if reason is not None:
        raise ValueError(f"CUDA TTT kernel cannot run this call: {reason}")
    batch, heads, length, dim = q.shape
    if length % MINI_BATCH:
        raise ValueError(f"q: seq_len must be a multiple of {MINI_BATCH} (ttt_scan pads), got {length}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every: expected >= 0, got {checkpoint_every}")
    n_mb = length // MINI_BATCH
    kernel = loader.load_kernel(kind, torch.bfloat16, q.device)

    q, k, v = (_aligned(t.contiguous()) for t in (q, k, v))
    eta, ln_w, ln_b = _fp32(eta), _fp32(ln_w), _fp32(ln_b)
    init = [_fp32(t) for t in state.tensors()]
    out = torch.empty_like(q)
    final = [torch.empty_like(t) for t in init]
    n_ckpt = -(-n_mb // checkpoint_every) if checkpoint_every else 0
    if n_ckpt:
        ckpt = [torch.empty(batch, heads, n_ckpt, *t.shape[2:], device=q.device) for t in init]
    else:
        ckpt = [torch.empty(1, device=q.device) for _ in init]  # never written (ckpt_every = 0)

    if batch * heads:
        grid = batch * heads * kernel.spec.ctas_per_head
        ints = [heads, n_mb, checkpoint_every, n_ckpt]
        loader.launch(kernel, grid, [q, k, v, eta, ln_w, ln_b, *init, out, *final, *ckpt, *ints])

    cls = MLPState if kind == "mlp" else LinearState
    checkpoints = Checkpoints(checkpoint_every, cls(*ckpt)) if n_ckpt else None
    return out, cls(*final), checkpoints


def scan_backward(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    checkpoints: Checkpoints,
    d_out: torch.Tensor,
    d_final: Sequence[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Run the fused backward scan of a scan_forward call that kept `checkpoints`.

    q, k, v [B, H, L, 64] bf16 and eta, ln_w, ln_b as given to scan_forward; d_out [B, H, L, 64]
    (rounded to bf16); d_final: dL/d(final state) per state field, or None for zero. Returns fp32
    (dq, dk, dv [B, H, L, 64], deta [B, H, L], dln_w, dln_b [H, 64], *d_initial_state [B, H, ...]).
    """
    kernel = loader.load_kernel(kind, torch.bfloat16, q.device, backward=True)
    batch, heads, length, dim = q.shape
    n_mb = length // MINI_BATCH
    every = checkpoints.every
    n_ckpt = -(-n_mb // every)
    dev = q.device
    q, k, v = (_aligned(t.contiguous()) for t in (q, k, v))
    d_out = _aligned(d_out.to(torch.bfloat16).contiguous())
    eta, ln_w, ln_b = _fp32(eta), _fp32(ln_w), _fp32(ln_b)
    ckpt = [_fp32(t) for t in checkpoints.state.tensors()]
    if ckpt[0].shape[2] != n_ckpt:
        raise ValueError(f"checkpoints: expected {n_ckpt} states (every {every}), got {ckpt[0].shape[2]}")
    # d_state: in dL/d(final state), out dL/d(initial state); fresh buffers (the kernel overwrites them)
    d_state = [torch.zeros(batch, heads, *t.shape[3:], device=dev) for t in ckpt]
    for buf, d in zip(d_state, d_final or [None] * len(d_state)):
        if d is not None:
            buf.copy_(d)
    # dq, dk, deta: the 2-CTA MLP kernel sums its CTAs' addends with red.add into zeros; the others store
    # every element
    new = torch.zeros if kind == "mlp" and kernel.spec.ctas_per_head > 1 else torch.empty
    dq, dk = new(q.shape, device=dev), new(k.shape, device=dev)
    deta = new(batch, heads, length, device=dev)
    dv = torch.empty(batch, heads, length, dim, device=dev)
    dln_w = torch.empty(batch, heads, dim, device=dev)
    dln_b = torch.empty(batch, heads, dim, device=dev)
    if kind == "mlp" and kernel.spec.ctas_per_head == 1:  # ttt_mlp_bwd_sm80.cu: 5 step tables (dS copy,
        # stashes), then W1^T, W2 per state, [256][64] bf16; the Z2 stash and two contraction sums [64][64],
        # then b1, b2 per state, fp32
        hidden = kernel.spec.hidden
        scr_w = torch.empty(batch * heads, 5 + 2 * (every + 1), hidden, dim, device=dev, dtype=torch.bfloat16)
        scr_b = torch.empty(batch * heads, 3 * MINI_BATCH * dim + (every + 1) * (hidden + dim), device=dev)
    elif kind == "mlp":  # per state: [CTA rank][W1^T, W2][128 hidden][64] bf16, [rank][b1 slice + b2] fp32
        scr_w = torch.empty(batch * heads, every + 1, 2, 2, 128, dim, device=dev, dtype=torch.bfloat16)
        scr_b = torch.empty(batch * heads, every + 1, 2, 128 + dim, device=dev)
    else:  # per state: W^T bf16, b fp32
        scr_w = torch.empty(batch * heads, every + 1, dim, dim, device=dev, dtype=torch.bfloat16)
        scr_b = torch.empty(batch * heads, every + 1, dim, device=dev)
    if batch * heads:
        grid = batch * heads * kernel.spec.ctas_per_head
        inputs = [q, k, v, d_out, eta, ln_w, ln_b, *ckpt]
        outputs = [*d_state, dq, dk, dv, deta, dln_w, dln_b]
        loader.launch(kernel, grid, [*inputs, *outputs, scr_w, scr_b, heads, n_mb, every, n_ckpt])
    return dq, dk, dv, deta, dln_w.sum(dim=0), dln_b.sum(dim=0), *d_state


class TTTScanCudaFunction(torch.autograd.Function):
    """Autograd node of a kernel scan: forward kernel with checkpoints, backward kernel.

    apply(kind, group, q, k, v, eta, ln_w, ln_b, *state) -> (out bf16, *final state fp32); gradients
    come back in each input's dtype.
    """

    @staticmethod
    def forward(ctx, kind, group, q, k, v, eta, ln_w, ln_b, *state):
        cls = MLPState if kind == "mlp" else LinearState
        out, final, ckpt = scan_forward(
            kind, q, k, v, eta, ln_w, ln_b, cls(*state), MINI_BATCH, checkpoint_every=group
        )
        ctx.save_for_backward(q, k, v, eta, ln_w, ln_b, *ckpt.state.tensors())
        ctx.kind, ctx.group = kind, group
        ctx.in_dtypes = [t.dtype for t in (q, k, v, eta, ln_w, ln_b, *state)]
        ctx.set_materialize_grads(False)
        return (out, *final.tensors())

    @staticmethod
    def backward(ctx, d_out, *d_final):
        q, k, v, eta, ln_w, ln_b, *ckpt = ctx.saved_tensors
        cls = MLPState if ctx.kind == "mlp" else LinearState
        if d_out is None:
            d_out = torch.zeros_like(q)
        grads = scan_backward(
            ctx.kind, q, k, v, eta, ln_w, ln_b, Checkpoints(ctx.group, cls(*ckpt)), d_out, d_final
        )
        return (None, None, *(g.to(dt) for g, dt in zip(grads, ctx.in_dtypes)))


def run(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: MLPState | LinearState,
    mini_batch_size: int,
    *,
    checkpoint_group: int = 0,
) -> tuple[torch.Tensor, MLPState | LinearState]:
    """Same contract as ttt_scan_reference: (out [B, H, L, 64] bf16, final state fp32).

    With grad enabled and an input requiring grad, the result is differentiable through the backward
    kernel; checkpoint_group (0: DEFAULT_CHECKPOINT_GROUP) is the number of mini-batches per saved state.
    """
    tensors = (q, k, v, eta, ln_w, ln_b, *state.tensors())
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        out, final, _ = scan_forward(kind, q, k, v, eta, ln_w, ln_b, state, mini_batch_size)
        return out, final
    if checkpoint_group < 0:
        raise ValueError(f"checkpoint_group: expected >= 0, got {checkpoint_group}")
    call = ScanCall(kind, q.device, q.dtype, q.shape[-1], state.w1.shape[-1], mini_batch_size, True)
    reason = unsupported_reason(call)
    if reason is not None:
        raise ValueError(f"CUDA TTT kernels cannot train on this call: {reason}")
    n_mb = max(1, q.shape[2] // MINI_BATCH)
    group = min(checkpoint_group or DEFAULT_CHECKPOINT_GROUP, n_mb)
    res = TTTScanCudaFunction.apply(kind, group, *tensors)
    cls = MLPState if kind == "mlp" else LinearState
    return res[0], cls(*res[1:])


BACKEND = Backend("cuda", unsupported_reason, run)
