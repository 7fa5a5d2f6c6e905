"""What a model can generate: its native rate, its sizes and its colour space (model_index.json).

model_index.json keys (all optional; what a folder leaves out takes the defaults below):

    "fps": 8                                    native frame rate (frames per second it generates at)
    "sizes": [[64, 64]]                         (width, height) it was trained at, preferred first
    "size_constraints": {"multiple_of": 8, "min_side": 32, "max_side": 128}
                                                other sizes a request may name explicitly
    "colorspace": "srgb_rec709_scene"           the colour space of the values the VAE decodes to and
                                                encodes from (an OCIO interop id)

Defaults: sizes = the transformer's sample size; multiple_of = VAE factor x patch size, min_side =
multiple_of, max_side = MAX_SIDE_FACTOR x the largest trained side (a delivery never raises the generation
size: larger formats are scaled by the conform); colorspace = sRGB-encoded Rec.709 (generative video models
are trained on display-referred sRGB frames, ours on the toon world's sRGB renders; the VAE decodes to
those values); fps = the paper's 16, or 8 for a diffusers CogVideoX folder (CogVideoX 1.0: 49 frames =
6 s at 8 fps, trained at 720 x 480).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .params import PipelineError

PAPER_FPS = 16  # ttt-mlp.md section 2: 480 x 720 at 16 fps
COGVIDEOX_FPS = 8  # CogVideoX 1.0: 49 frames = 6 s
COGVIDEOX_CLASS = "CogVideoXPipeline"
SRGB_ENCODED = "srgb_rec709_scene"
"""sRGB-encoded Rec.709 (OCIO "sRGB Encoded Rec.709 (sRGB)"): what the VAE's 0..1 values are."""

MAX_SIDE_FACTOR = 4
"""Default max_side: how far past its trained size a model may be asked to generate explicitly."""

Size = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class ModelSpec:
    """A model's native rate, sizes and colour space. sizes: (width, height), preferred first."""

    fps: Fraction
    sizes: tuple[Size, ...]
    multiple_of: int
    min_side: int
    max_side: int
    colorspace: str = SRGB_ENCODED

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise PipelineError(f"model fps must be > 0, got {self.fps}")
        if not self.sizes:
            raise PipelineError("a model must declare at least one size it generates at")
        if self.multiple_of < 1 or not 1 <= self.min_side <= self.max_side:
            raise PipelineError(
                f"size_constraints: need multiple_of >= 1 and 1 <= min_side <= max_side, got "
                f"{self.multiple_of}, {self.min_side}, {self.max_side}"
            )
        for w, h in self.sizes:
            if w % self.multiple_of or h % self.multiple_of:
                raise PipelineError(f"size {w}x{h} is not a multiple of {self.multiple_of}")

    @classmethod
    def from_index(cls, index: dict[str, Any], trained_size: Size, multiple_of: int, where: str) -> ModelSpec:
        """The spec model_index.json declares (`where` names it in errors), with the module's defaults."""
        fps = index.get("fps")
        if fps is None:
            fps = COGVIDEOX_FPS if index.get("_class_name") == COGVIDEOX_CLASS else PAPER_FPS
        sizes = index.get("sizes", [list(trained_size)])
        if not isinstance(sizes, list) or not all(_is_size(s) for s in sizes) or not sizes:
            raise PipelineError(f"{where}: sizes must be a non-empty list of [width, height], got {sizes!r}")
        constraints = index.get("size_constraints", {})
        if not isinstance(constraints, dict) or set(constraints) - {"multiple_of", "min_side", "max_side"}:
            raise PipelineError(
                f"{where}: size_constraints must be an object with multiple_of, min_side, max_side; got "
                f"{constraints!r}"
            )
        step = int(constraints.get("multiple_of", multiple_of))
        colorspace = index.get("colorspace", SRGB_ENCODED)
        if not isinstance(colorspace, str) or not colorspace:
            raise PipelineError(f"{where}: colorspace must be a colour space name, got {colorspace!r}")
        return cls(
            fps=Fraction(fps).limit_denominator(1001),
            sizes=tuple((int(w), int(h)) for w, h in sizes),
            multiple_of=step,
            min_side=int(constraints.get("min_side", step)),
            max_side=int(constraints.get("max_side", MAX_SIDE_FACTOR * max(max(s) for s in sizes))),
            colorspace=colorspace,
        )

    def to_index(self) -> dict[str, Any]:
        """The model_index.json keys for this spec (from_index reads them back)."""
        fps: float | int = int(self.fps) if self.fps.denominator == 1 else float(self.fps)
        return {
            "fps": fps,
            "sizes": [list(s) for s in self.sizes],
            "size_constraints": {
                "multiple_of": self.multiple_of,
                "min_side": self.min_side,
                "max_side": self.max_side,
            },
            "colorspace": self.colorspace,
        }

    def describe_sizes(self) -> str:
        """For messages: the trained sizes and the rule for others."""
        trained = ", ".join(f"{w}x{h}" for w, h in self.sizes)
        return (
            f"{trained} (trained), or sizes whose sides are each a multiple of {self.multiple_of} within "
            f"{self.min_side}..{self.max_side}"
        )

    def check_size(self, width: int, height: int) -> None:
        """Raise PipelineError naming the supported sizes unless the model can generate width x height."""
        if (width, height) in self.sizes:
            return
        ok = all(v % self.multiple_of == 0 and self.min_side <= v <= self.max_side for v in (width, height))
        if not ok:
            raise PipelineError(
                f"this model cannot generate {width}x{height}; it generates {self.describe_sizes()}. "
                "Deliver at a larger format with a delivery (the frames are scaled), not a larger generation"
            )

    def generation_size(self, width: int, height: int, pixel_aspect: float = 1.0) -> Size:
        """The trained size whose aspect is nearest the target's display aspect (log ratio), first on ties."""
        if width < 1 or height < 1 or pixel_aspect <= 0:
            raise PipelineError(f"target format must be positive, got {width}x{height} par {pixel_aspect}")
        target = math.log(width * pixel_aspect / height)
        return min(self.sizes, key=lambda s: abs(math.log(s[0] / s[1]) - target))


def _is_size(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
