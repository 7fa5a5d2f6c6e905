"""Scaling a generated frame to the edit's format, as Nuke's Reformat does (fit / fill / distort).

Library filters only: OpenCV's cv2.resize (INTER_LANCZOS4, INTER_CUBIC, INTER_LINEAR, INTER_NEAREST).
A shrinking axis uses INTER_AREA instead of the named smooth filter, because OpenCV's Lanczos and cubic
kernels do not widen when shrinking and would alias (Nuke widens its filters there; area averaging is
OpenCV's equivalent). When one axis shrinks and the other grows (an anamorphic squeeze), the resize runs
in two passes: the shrinking axis by area, then the growing one with the named filter. `nearest` is
always nearest.

Pixel aspect: the generation has square pixels; the target's pixels are `pixel_aspect` times as wide
as they are tall (2.0 for anamorphic). fit / fill keep the picture's shape as seen on screen, so on a
2.0 target the picture is squeezed to half as many columns. The placed picture is centred; what fit
leaves uncovered is 0 in every channel (alpha included, so the plate below shows through), and the
EXR dataWindow says where the picture is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from host_plugin.core.delivery import FILTERS, FIT_METHODS, Format


@dataclass(frozen=True)
class Placement:
    """Where the scaled picture lands in the target frame: its size in target pixels, the offset of its
    top-left corner (negative when fill crops it) and the scale factors in pixels per source pixel."""

    scaled_width: int
    scaled_height: int
    offset_x: int
    offset_y: int
    scale_x: float
    scale_y: float

    def data_window(self, target: Format) -> tuple[int, int, int, int]:
        """(xmin, ymin, xmax, ymax), inclusive: the placed picture clipped to the target frame."""
        x0, y0 = max(0, self.offset_x), max(0, self.offset_y)
        x1 = min(target.width, self.offset_x + self.scaled_width) - 1
        y1 = min(target.height, self.offset_y + self.scaled_height) - 1
        return x0, y0, x1, y1


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def placement(src_width: int, src_height: int, target: Format, fit: str) -> Placement:
    """Placement of a src_width x src_height square-pixel picture in `target` with fit / fill / distort."""
    _check_choice(fit, FIT_METHODS, "fit")
    for name, value in (("src_width", src_width), ("src_height", src_height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if fit == "distort":
        width, height = target.width, target.height
    else:
        # scale in target rows per source pixel; a target column is pixel_aspect rows wide on screen
        by_width = target.width * target.pixel_aspect / src_width
        by_height = target.height / src_height
        rows = min(by_width, by_height) if fit == "fit" else max(by_width, by_height)
        width = target.width if rows == by_width else max(1, round(src_width * rows / target.pixel_aspect))
        height = target.height if rows == by_height else max(1, round(src_height * rows))
    return Placement(
        scaled_width=width,
        scaled_height=height,
        offset_x=(target.width - width) // 2,
        offset_y=(target.height - height) // 2,
        scale_x=width / src_width,
        scale_y=height / src_height,
    )


def _interpolation(filter: str, shrinking: bool) -> int:
    import cv2

    if filter == "nearest":
        return cv2.INTER_NEAREST
    if shrinking:
        return cv2.INTER_AREA
    return {"lanczos": cv2.INTER_LANCZOS4, "cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}[filter]


def resize(image: np.ndarray, width: int, height: int, filter: str) -> np.ndarray:
    """image (H, W, C) float32 resized to (height, width, C) with the named filter; alpha (C == 4) is
    clipped to 0..1 afterwards (Lanczos and cubic ring); colour keeps its overshoot, as Nuke's does."""
    import cv2

    _check_choice(filter, FILTERS, "filter")
    src_h, src_w = image.shape[:2]
    if (width, height) == (src_w, src_h):
        return np.array(image, dtype=np.float32, copy=True)
    out = np.ascontiguousarray(image, dtype=np.float32)
    if filter != "nearest" and (width < src_w) != (height < src_h) and width != src_w and height != src_h:
        # one axis shrinks, the other grows: the shrinking axis alone first, by area
        shrunk = (width, src_h) if width < src_w else (src_w, height)
        out = cv2.resize(out, shrunk, interpolation=_interpolation(filter, shrinking=True))
        if out.ndim == 2:
            out = out[:, :, None]
    shrinking = width <= out.shape[1] and height <= out.shape[0]
    out = cv2.resize(out, (width, height), interpolation=_interpolation(filter, shrinking))
    if out.ndim == 2:  # cv2 drops a single channel axis
        out = out[:, :, None]
    if out.shape[2] == 4:
        np.clip(out[:, :, 3], 0.0, 1.0, out=out[:, :, 3])
    return out


def check_image(image: np.ndarray, what: str, channels: tuple[int, ...] = (3, 4)) -> np.ndarray:
    """A float (H, W, C) image with C in `channels` (colour: 3 or 4), else ValueError naming what was
    received."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in channels or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{what}: expected a float image (H, W, C) with C in {channels}, got shape {array.shape} dtype "
            f"{array.dtype}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{what}: image is empty, shape {array.shape}")
    return array


def scale_to(
    image: np.ndarray, target: Format, fit: str, filter: str
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """image (H, W, C) float -> (target.height, target.width, C) float32 full frame and its dataWindow
    (xmin, ymin, xmax, ymax) inclusive. The same size (and square target pixels) returns a copy, with
    nothing resampled."""
    array = check_image(image, "scale_to", channels=(1, 3, 4))  # 1: a matte
    _check_choice(filter, FILTERS, "filter")
    src_h, src_w = array.shape[:2]
    place = placement(src_w, src_h, target, fit)
    scaled = resize(array, place.scaled_width, place.scaled_height, filter)
    if (place.scaled_width, place.scaled_height, place.offset_x, place.offset_y) == (
        target.width,
        target.height,
        0,
        0,
    ):
        return scaled, (0, 0, target.width - 1, target.height - 1)
    frame = np.zeros((target.height, target.width, array.shape[2]), np.float32)
    x0, y0, x1, y1 = place.data_window(target)
    sx, sy = x0 - place.offset_x, y0 - place.offset_y  # where the window starts inside the scaled picture
    frame[y0 : y1 + 1, x0 : x1 + 1] = scaled[sy : sy + y1 - y0 + 1, sx : sx + x1 - x0 + 1]
    return frame, (x0, y0, x1, y1)


__all__ = ["Format", "Placement", "check_image", "placement", "resize", "scale_to"]
