"""The CUDA backend of the TTT scan (registered by ttt_engine/ops/ttt/dispatch.py on first CUDA call).

`unsupported_reason(call)` says why a call cannot run on the kernels (None when it can);
`run(...)` has the reference's signature and returns (out, final_state) with the reference's shapes
and dtypes: out [B, H, L, 64] in q's dtype (bf16), final state in fp32.
`scan_forward(...)` is the same launch with optional state checkpoints, for a future backward pass.

Importing this module does not import cupy (only `run` / `scan_forward` do, through cuda.loader).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from ttt_engine.ops.ttt.dispatch import Backend, ScanCall
from ttt_engine.ops.ttt.state import LinearState, MLPState

from . import loader

HEAD_DIM = 64
MINI_BATCH = 64


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
    if call.requires_grad:
        return (
            "training needs the backward kernel, not written yet (inference only: run under torch.no_grad())"
        )
    if not _cupy_available():
        return "cupy not installed (pip install 'ttt-studio[gpu]', i.e. cupy-cuda13x)"
    if not torch.cuda.is_available():
        return "torch has no CUDA device"
    arch = loader.device_arch(call.device)
    if arch < spec.min_arch:
        why = " (thread-block clusters hold the 128 KB fp32 state over 2 SMs)" if call.kind == "mlp" else ""
        return f"{call.kind} kernel needs sm_{spec.min_arch}+{why} (got sm_{arch})"
    props = torch.cuda.get_device_properties(call.device)
    optin = getattr(props, "shared_memory_per_block_optin", None)
    if optin is not None and optin < spec.smem_bytes:
        return f"needs {spec.smem_bytes} B of shared memory per block, device allows {optin} B"
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
) -> tuple[torch.Tensor, MLPState | LinearState]:
    """Same contract as ttt_scan_reference (inference): (out [B, H, L, 64] bf16, final state fp32)."""
    out, final, _ = scan_forward(kind, q, k, v, eta, ln_w, ln_b, state, mini_batch_size)
    return out, final


BACKEND = Backend("cuda", unsupported_reason, run)
