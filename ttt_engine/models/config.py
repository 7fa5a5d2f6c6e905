"""Configuration of the video DiT: CogVideoX sizes plus the paper's segments and TTT (ttt-mlp.md section 2).

Presets are data: `VideoDiTConfig.cogvideox_5b()` (the paper's base model, CogVideoX-5B) and
`VideoDiTConfig.tiny()` (a CPU-sized model for tests and toys). Module-level `cogvideox_5b()` and `tiny()`
return the same.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..config import TTTConfig
from . import layout

TTT_INNER_KINDS = ("mlp", "linear", "none")
TTT_BACKENDS = ("auto", "reference", "cuda")


@dataclass(frozen=True)
class VideoDiTConfig:
    """One video DiT. The defaults are CogVideoX-5B with the paper's segments and TTT-MLP.

    Sizes: dim = num_heads * head_dim; text_dim is the text encoder's width (T5-XXL: 4096); max_text_len
    is the padded text length per segment (CogVideoX: 226); time_embed_dim the width of the timestep
    embedding that drives adaLN. sample_height/sample_width are the LATENT grid the base model was trained
    at (60 x 90 for 480 x 720): RoPE spatial positions of other sizes are fitted into it as CogVideoX does.

    Segments: the first segment has `first_segment_frames` latent frames, every later one
    `segment_frames` (paper: 13 and 12, so S segments have 13 + 12 (S - 1) latent frames). Attention
    window i covers frames [i * segment_frames, i * segment_frames + first_segment_frames), so windows
    overlap by first_segment_frames - segment_frames frames (paper: 1).

    TTT: ttt_inner 'mlp' | 'linear' | 'none' ('none' = local attention only: no TTT parameters at all).
    ttt_gate_init is the initial value of the four gate vectors alpha (output scaled by tanh(alpha)).
    ttt_base_lr None takes the paper's value for the inner model (0.1 MLP, 1.0 linear).

    use_rotary False selects the CogVideoX-2B style absolute sin-cos position table instead of 3D RoPE in
    attention (TTT always uses 3D RoPE at global positions).
    """

    dim: int = 3072
    num_layers: int = 42
    num_heads: int = 48
    head_dim: int = 64
    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    text_dim: int = 4096
    max_text_len: int = 226
    time_embed_dim: int = 512
    sample_height: int = 60
    sample_width: int = 90
    # segments (latent frames)
    first_segment_frames: int = 13
    segment_frames: int = 12
    # positions
    use_rotary: bool = True
    rope_theta: float = 10000.0
    spatial_interpolation_scale: float = 1.875
    temporal_interpolation_scale: float = 1.0
    # CogVideoX details
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    norm_eps: float = 1e-5
    qk_norm_eps: float = 1e-6
    norm_elementwise_affine: bool = True
    attention_bias: bool = True
    patch_bias: bool = True
    # TTT
    ttt_inner: str = "mlp"
    ttt_mini_batch_size: int = 64
    ttt_base_lr: float | None = None
    ttt_gate_init: float = 0.1
    ttt_checkpoint_group: int = 16
    ttt_backend: str = "auto"
    # torch.compile each reference scan step (a runtime switch for training on CPU; never saved)
    ttt_compile_step: bool = False
    # training
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in (
            "dim",
            "num_layers",
            "num_heads",
            "head_dim",
            "in_channels",
            "out_channels",
            "patch_size",
            "text_dim",
            "max_text_len",
            "time_embed_dim",
            "sample_height",
            "sample_width",
            "first_segment_frames",
            "segment_frames",
            "ttt_mini_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VideoDiTConfig.{name}: expected a positive int, got {value!r}")
        if self.num_heads * self.head_dim != self.dim:
            raise ValueError(
                f"VideoDiTConfig: dim must equal num_heads * head_dim, got dim={self.dim} but "
                f"{self.num_heads} * {self.head_dim} = {self.num_heads * self.head_dim}"
            )
        if self.segment_frames > self.first_segment_frames:
            raise ValueError(
                "VideoDiTConfig: segment_frames must be <= first_segment_frames (attention windows of "
                f"first_segment_frames frames must cover every frame), got segment_frames={self.segment_frames} "
                f"> first_segment_frames={self.first_segment_frames}"
            )
        if self.ttt_inner not in TTT_INNER_KINDS:
            raise ValueError(
                f"VideoDiTConfig.ttt_inner: expected one of {TTT_INNER_KINDS}, got {self.ttt_inner!r}"
            )
        if self.ttt_backend not in TTT_BACKENDS:
            raise ValueError(
                f"VideoDiTConfig.ttt_backend: expected one of {TTT_BACKENDS}, got {self.ttt_backend!r}"
            )
        if (self.use_rotary or self.ttt_inner != "none") and self.head_dim % 16:
            raise ValueError(
                "VideoDiTConfig.head_dim: 3D RoPE splits each head 1/4 time, 3/8 height, 3/8 width in rotation "
                f"pairs, so head_dim must be a multiple of 16, got {self.head_dim}"
            )
        if not self.use_rotary and self.dim % 16:
            raise ValueError(
                f"VideoDiTConfig.dim: the sin-cos position table (use_rotary=False) needs dim % 16 == 0, got {self.dim}"
            )
        for name in (
            "rope_theta",
            "spatial_interpolation_scale",
            "temporal_interpolation_scale",
            "norm_eps",
            "qk_norm_eps",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"VideoDiTConfig.{name}: expected a positive finite number, got {value!r}")
        if not isinstance(self.ttt_gate_init, int | float) or not math.isfinite(self.ttt_gate_init):
            raise ValueError(
                f"VideoDiTConfig.ttt_gate_init: expected a finite number, got {self.ttt_gate_init!r}"
            )
        if self.ttt_base_lr is not None and (not math.isfinite(self.ttt_base_lr) or self.ttt_base_lr <= 0):
            raise ValueError(
                f"VideoDiTConfig.ttt_base_lr: expected None or a positive number, got {self.ttt_base_lr!r}"
            )
        if self.ttt_checkpoint_group < 0:
            raise ValueError(
                f"VideoDiTConfig.ttt_checkpoint_group: expected >= 0, got {self.ttt_checkpoint_group}"
            )

    # ---- presets -------------------------------------------------------------------------------------

    @classmethod
    def cogvideox_5b(cls, **overrides: Any) -> VideoDiTConfig:
        """CogVideoX-5B (42 layers, 48 heads x 64, T5 text 4096 x 226, latents 16 x 60 x 90) + TTT-MLP."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> VideoDiTConfig:
        """A CPU-sized model: dim 64 (2 heads x 32), 2 layers, latents 4 x 8 x 8, segments of 3 then 2 frames."""
        base = cls(
            dim=64,
            num_layers=2,
            num_heads=2,
            head_dim=32,
            in_channels=4,
            out_channels=4,
            patch_size=2,
            text_dim=32,
            max_text_len=8,
            time_embed_dim=32,
            sample_height=8,
            sample_width=8,
            first_segment_frames=3,
            segment_frames=2,
            ttt_mini_batch_size=16,
        )
        return dataclasses.replace(base, **overrides)

    # ---- derived numbers -----------------------------------------------------------------------------

    def latent_frames(self, num_segments: int) -> int:
        """Latent frames of a video of `num_segments` segments (paper: 13, 37, 73, 121, 253 for 1/3/6/10/21)."""
        return layout.latent_frames(num_segments, self.first_segment_frames, self.segment_frames)

    def num_segments(self, num_frames: int) -> int:
        """Inverse of latent_frames; raises ValueError when no whole number of segments has that many frames."""
        return layout.num_segments_for_frames(num_frames, self.first_segment_frames, self.segment_frames)

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        return layout.tokens_per_frame(latent_height, latent_width, self.patch_size)

    def ttt_config(self) -> TTTConfig | None:
        """The TTTConfig of every block's TTT layer (None for ttt_inner='none')."""
        if self.ttt_inner == "none":
            return None
        return TTTConfig(
            dim=self.dim,
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            inner=self.ttt_inner,
            mini_batch_size=self.ttt_mini_batch_size,
            base_lr=self.ttt_base_lr,
            checkpoint_group=self.ttt_checkpoint_group,
            backend=self.ttt_backend,
            compile_step=self.ttt_compile_step,
        )

    # ---- (de)serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoDiTConfig:
        """Build from a dict (e.g. config.json); unknown keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"VideoDiTConfig.from_dict: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"VideoDiTConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> VideoDiTConfig:
        return dataclasses.replace(self, **changes)


def cogvideox_5b(**overrides: Any) -> VideoDiTConfig:
    """Same as VideoDiTConfig.cogvideox_5b()."""
    return VideoDiTConfig.cogvideox_5b(**overrides)


def tiny(**overrides: Any) -> VideoDiTConfig:
    """Same as VideoDiTConfig.tiny()."""
    return VideoDiTConfig.tiny(**overrides)
