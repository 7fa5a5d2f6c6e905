"""Typed configuration of the engine's layers. Frozen dataclasses; presets are data."""

from __future__ import annotations

from dataclasses import dataclass

# Paper defaults (ttt-mlp.md section 1)
DEFAULT_HEAD_DIM = 64
DEFAULT_MINI_BATCH = 64
BASE_LR = {"mlp": 0.1, "linear": 1.0}
PARAM_INIT_STD = 0.02
POST_NORM_EPS = 1e-6
# training: recompute this many mini-batches per checkpoint group (paper code: 16)
DEFAULT_CHECKPOINT_GROUP = 16


@dataclass(frozen=True)
class TTTConfig:
    """One TTT layer.

    dim: model width (= num_heads * head_dim). inner: 'mlp' (TTT-MLP, hidden = mlp_ratio * head_dim)
    or 'linear' (TTT-Linear). base_lr: scale of the learned per-token inner learning rate; None takes
    the paper's value for the inner model. backend: 'auto' | 'reference' | 'cuda'.
    """

    dim: int
    num_heads: int
    head_dim: int = DEFAULT_HEAD_DIM
    inner: str = "mlp"
    mlp_ratio: int = 4
    mini_batch_size: int = DEFAULT_MINI_BATCH
    base_lr: float | None = None
    checkpoint_group: int = DEFAULT_CHECKPOINT_GROUP
    compile_step: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.inner not in BASE_LR:
            raise ValueError(f"TTTConfig.inner: expected 'mlp' or 'linear', got {self.inner!r}")
        for name in ("dim", "num_heads", "head_dim", "mlp_ratio", "mini_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TTTConfig.{name}: expected a positive int, got {value!r}")
        if self.num_heads * self.head_dim != self.dim:
            raise ValueError(
                f"TTTConfig: num_heads * head_dim must equal dim, got {self.num_heads} * {self.head_dim} != {self.dim}"
            )
        if self.checkpoint_group < 0:
            raise ValueError(f"TTTConfig.checkpoint_group: expected >= 0, got {self.checkpoint_group}")

    @property
    def hidden(self) -> int:
        """Width of the inner model's hidden layer (TTT-Linear: head_dim)."""
        return self.mlp_ratio * self.head_dim if self.inner == "mlp" else self.head_dim

    @property
    def lr(self) -> float:
        return BASE_LR[self.inner] if self.base_lr is None else self.base_lr
