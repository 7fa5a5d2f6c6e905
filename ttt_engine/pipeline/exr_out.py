"""Frames out: the delivered EXR sequence and an animated GIF preview.

Colour is never converted here by hand: the EXR frames are what the conform (ttt_engine.conform, through
OpenColorIO) delivers, tagged with their colorInteropID and chromaticities, and the GIF shows a model's
frames through conform.to_display (the sRGB display).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .params import PipelineError

log = logging.getLogger(__name__)

FIRST_FRAME = 1001  # the usual first frame number of a shot in VFX


def _check_frames(frames: np.ndarray, what: str) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        got = frames.shape if isinstance(frames, np.ndarray) else type(frames).__name__
        raise PipelineError(f"{what}: expected frames [T, H, W, 3] with T >= 1, got {got}")


def exr_frame_path(directory: str | Path, name: str, frame: int) -> Path:
    """directory/<name>.<frame:04d>.exr, e.g. frames/shot.1001.exr."""
    return Path(directory) / f"{name}.{frame:04d}.exr"


def delivered_writer(
    directory: str | Path,
    name: str,
    start: int = FIRST_FRAME,
    attributes: dict[str, Any] | None = None,
    on_frame: Callable[[int, Path], None] | None = None,
) -> Callable[[Any], Path]:
    """A writer of delivered frames (ttt_engine.conform.DeliveredFrame) as directory/<name>.<start + k>.exr
    (half RGBA ZIP, the frame's windows, rate and colour tags, plus `attributes`).

    on_frame(k, path) is called after each file (for a progress bar).
    """
    from ttt_engine.conform import DeliveredFrame, write_delivered

    if not name or "/" in name or "\\" in name:
        raise PipelineError(f"delivered_writer: name must be a plain file stem, got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extra = dict(attributes or {})

    def write(frame: Any) -> Path:
        path = exr_frame_path(directory, name, start + frame.index)
        write_delivered(str(path), DeliveredFrame(frame.index, frame.rgba, {**frame.attributes, **extra}))
        if on_frame is not None:
            on_frame(frame.index, path)
        return path

    return write


def to_uint8_display(frames: np.ndarray, colorspace: str) -> np.ndarray:
    """Frames [T, H, W, 3] in `colorspace` -> sRGB display uint8 [T, H, W, 3] (OCIO), for viewing."""
    from ttt_engine.conform import to_display

    return np.round(to_display(frames, colorspace) * 255.0).astype(np.uint8)


def write_gif(
    frames: np.ndarray, path: str | Path, fps: float, colorspace: str, max_side: int | None = 256
) -> Path:
    """Animated GIF of frames [T, H, W, 3] in `colorspace` (shown on the sRGB display), looping, at fps.

    max_side: downscale so the longer side is at most this many pixels (None keeps the size).
    """
    from PIL import Image

    _check_frames(frames, "write_gif")
    if not fps or fps <= 0:
        raise PipelineError(f"write_gif: fps must be > 0, got {fps!r}")
    images = [Image.fromarray(f) for f in to_uint8_display(frames, colorspace)]
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
