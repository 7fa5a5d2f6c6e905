"""The TTT scan op: validated, padded to whole mini-batches, dispatched to the best backend.

`ttt_scan` is what layers call; `reference.ttt_scan_reference` is the specification (tests import it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import ScanCall, choose_backend
from .state import LinearState, MLPState, TTTState
from .validate import check_scan_inputs

__all__ = ["LinearState", "MLPState", "TTTState", "ttt_scan"]


def ttt_scan(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    state: MLPState | LinearState,
    mini_batch_size: int = 64,
    *,
    checkpoint_group: int = 0,
    compile_step: bool = False,
    backend: str = "auto",
    validate: bool = True,
) -> tuple[torch.Tensor, MLPState | LinearState]:
    """Run a TTT scan over a whole sequence.

    kind: 'mlp' or 'linear'. q, k, v: [B,H,L,D]; eta: [B,H,L]; ln_weight/ln_bias: [H,D];
    state: the initial state (batched, see MLPState / LinearState). L need not be a multiple of
    mini_batch_size: the tail is padded with zero tokens of zero learning rate, which leaves the real
    tokens' outputs and the final state untouched. Returns (out [B,H,L,D], final state).
    """
    if kind not in ("mlp", "linear"):
        raise ValueError(f"kind: expected 'mlp' or 'linear', got {kind!r}")
    if validate:
        check_scan_inputs(kind, q, k, v, eta, ln_weight, ln_bias, state, mini_batch_size)
    length = q.shape[2]
    pad = (-length) % mini_batch_size
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        eta = F.pad(eta, (0, pad))
    call = ScanCall(
        kind=kind,
        device=q.device,
        dtype=q.dtype,
        head_dim=q.shape[-1],
        hidden=state.w1.shape[-1],
        mini_batch_size=mini_batch_size,
        requires_grad=torch.is_grad_enabled()
        and any(t.requires_grad for t in (q, k, v, eta, ln_weight, ln_bias, *state.tensors())),
    )
    chosen = choose_backend(call, backend)
    kwargs: dict = {"checkpoint_group": checkpoint_group}
    if chosen.name == "reference":
        kwargs["compile_step"] = compile_step
    out, final = chosen.run(kind, q, k, v, eta, ln_weight, ln_bias, state, mini_batch_size, **kwargs)
    return out[:, :, :length], final
