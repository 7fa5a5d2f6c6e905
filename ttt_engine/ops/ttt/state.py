"""Hidden states of the two inner models; plain containers of per-(batch, head) tensors."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class MLPState:
    """TTT-MLP state: W1 [B,H,D,F], b1 [B,H,1,F], W2 [B,H,F,D], b2 [B,H,1,D]."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


@dataclass
class LinearState:
    """TTT-Linear state: W1 [B,H,D,D], b1 [B,H,1,D]."""

    w1: torch.Tensor
    b1: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


TTTState = MLPState | LinearState


def expected_state_shapes(
    kind: str, batch: int, heads: int, head_dim: int, hidden: int
) -> dict[str, tuple[int, ...]]:
    """Shape of every state tensor for an inner model kind ('mlp' or 'linear')."""
    if kind == "mlp":
        return {
            "w1": (batch, heads, head_dim, hidden),
            "b1": (batch, heads, 1, hidden),
            "w2": (batch, heads, hidden, head_dim),
            "b2": (batch, heads, 1, head_dim),
        }
    if kind == "linear":
        return {"w1": (batch, heads, head_dim, head_dim), "b1": (batch, heads, 1, head_dim)}
    raise ValueError(f"inner model kind must be 'mlp' or 'linear', got {kind!r}")
