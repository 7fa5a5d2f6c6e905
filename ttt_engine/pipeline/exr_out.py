"""Frames out: the colour conversion, an EXR sequence, and an animated GIF preview.

The VAE decodes display-referred sRGB (values 0..1 after the [-1, 1] -> [0, 1] map). EXR frames are
scene-linear Rec.709, so we convert explicitly with the sRGB transfer function (IEC 61966-2-1) and tag
them colorInteropID "lin_rec709_scene". The GIF goes back through the inverse for display.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .params import PipelineError

log = logging.getLogger(__name__)

LINEAR_INTEROP_ID = "lin_rec709_scene"
FIRST_FRAME = 1001  # the usual first frame number of a shot in VFX


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear Rec.709 (piecewise IEC 61966-2-1)."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear Rec.709 -> sRGB-encoded values, clipped to [0, 1] (display)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def _check_frames(frames: np.ndarray, what: str) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        got = frames.shape if isinstance(frames, np.ndarray) else type(frames).__name__
        raise PipelineError(f"{what}: expected frames [T, H, W, 3] with T >= 1, got {got}")


def exr_frame_path(directory: str | Path, name: str, frame: int) -> Path:
    """directory/<name>.<frame:04d>.exr, e.g. frames/shot.1001.exr."""
    return Path(directory) / f"{name}.{frame:04d}.exr"


def write_exr_sequence(
    frames: np.ndarray,
    directory: str | Path,
    name: str,
    start: int = FIRST_FRAME,
    fps: float | Fraction | None = None,
    attributes: dict[str, Any] | None = None,
    on_frame: Callable[[int, Path], None] | None = None,
) -> list[Path]:
    """Write scene-linear frames [T, H, W, 3] as half-float RGBA ZIP EXRs <name>.<start + i>.exr.

    Alpha is 1. on_frame(i, path) is called after each file (for a progress bar).
    """
    from host_plugin.core.exr_io import write_rgba_exr

    _check_frames(frames, "write_exr_sequence")
    if not name or "/" in name or "\\" in name:
        raise PipelineError(f"write_exr_sequence: name must be a plain file stem, got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001) if fps is not None else None
    paths = []
    for i, rgb in enumerate(frames):
        path = exr_frame_path(directory, name, start + i)
        write_rgba_exr(
            path, rgb, colour_interop_id=LINEAR_INTEROP_ID, attributes=attributes, frames_per_second=rate
        )
        paths.append(path)
        if on_frame is not None:
            on_frame(i, path)
    log.info("wrote %d EXR frames to %s", len(paths), directory)
    return paths


def to_uint8_display(frames_linear: np.ndarray) -> np.ndarray:
    """Scene-linear [T, H, W, 3] -> sRGB uint8 [T, H, W, 3] for viewing."""
    return np.round(linear_to_srgb(frames_linear) * 255.0).astype(np.uint8)


def write_gif(frames_linear: np.ndarray, path: str | Path, fps: float, max_side: int | None = 256) -> Path:
    """Animated GIF of scene-linear frames [T, H, W, 3] (converted to sRGB), looping, at fps.

    max_side: downscale so the longer side is at most this many pixels (None keeps the size).
    """
    from PIL import Image

    _check_frames(frames_linear, "write_gif")
    if not fps or fps <= 0:
        raise PipelineError(f"write_gif: fps must be > 0, got {fps!r}")
    images = [Image.fromarray(f) for f in to_uint8_display(frames_linear)]
    if max_side is not None and max(images[0].size) > max_side:
        scale = max_side / max(images[0].size)
        size = (max(1, round(images[0].width * scale)), max(1, round(images[0].height * scale)))
        images = [im.resize(size, Image.Resampling.BILINEAR) for im in images]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    duration_ms = max(20, round(1000.0 / fps))  # GIF delays are in 10 ms units; browsers floor at 20
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, optimize=False
    )
    return path


def gif_frames(path: str | Path) -> Sequence[np.ndarray]:
    """Read back a GIF's frames as RGB uint8 arrays (for checks)."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]
