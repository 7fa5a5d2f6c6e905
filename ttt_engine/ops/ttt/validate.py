"""Input checks for the TTT op: each failure names the tensor, what arrived and what was expected."""

from __future__ import annotations

import torch

from .state import LinearState, MLPState, expected_state_shapes

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(
    name: str,
    x: object,
    shape: tuple[int, ...],
    *,
    device: torch.device | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Raise ValueError unless x is a floating tensor of exactly `shape` on `device`, all finite."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != len(shape):
        raise ValueError(
            f"{name}: expected rank {len(shape)} with shape {shape}, got rank {x.dim()} with shape "
            f"{tuple(x.shape)}"
        )
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected a floating dtype {FLOAT_DTYPES}, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name}: expected device {device} (where q lives), got {x.device}")
    if finite and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: {bad} non-finite values (NaN/inf) in a tensor of shape {tuple(x.shape)}")
    return x


def check_scan_inputs(
    kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    state: MLPState | LinearState,
    mini_batch_size: int,
) -> None:
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        got = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"q: expected rank 4 [batch, heads, seq_len, head_dim], got {got}")
    if not isinstance(mini_batch_size, int) or mini_batch_size < 1:
        raise ValueError(f"mini_batch_size: expected a positive int, got {mini_batch_size!r}")
    b, h, length, d = q.shape
    if length == 0:
        raise ValueError("q: seq_len is 0; a TTT scan needs at least one token")
    dev = q.device
    check_tensor("q", q, (b, h, length, d), device=dev)
    check_tensor("k", k, (b, h, length, d), device=dev)
    check_tensor("v", v, (b, h, length, d), device=dev)
    check_tensor("eta", eta, (b, h, length), device=dev)
    check_tensor("ln_weight", ln_weight, (h, d), device=dev)
    check_tensor("ln_bias", ln_bias, (h, d), device=dev)
    expected_cls = MLPState if kind == "mlp" else LinearState
    if not isinstance(state, expected_cls):
        raise ValueError(
            f"state: expected {expected_cls.__name__} for kind {kind!r}, got {type(state).__name__}"
        )
    hidden = state.w1.shape[-1] if state.w1.dim() == 4 else -1
    for field, shape in expected_state_shapes(kind, b, h, d, hidden).items():
        check_tensor(f"state.{field}", getattr(state, field), shape, device=dev)
