"""A synthetic scene for retime tests: a disc moving at constant speed over a static textured background,
rendered at any exact time (antialiased by analytic coverage), in display-referred 0..1 values."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class DiscScene:
    size: int = 128
    radius: float = 14.0
    start: tuple[float, float] = (30.0, 50.0)
    speed: tuple[float, float] = (40.0, 16.0)  # pixels per second
    disc_rgb: tuple[float, float, float] = (1.0, 0.85, 0.1)

    def background(self) -> np.ndarray:
        """A static, smooth, grey texture (low saturation so the disc is found by redness)."""
        y, x = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32)
        tex = (
            0.45
            + 0.12 * np.sin(x / 5.0) * np.cos(y / 7.0)
            + 0.08 * np.sin((x + 2 * y) / 11.0)
            + 0.05 * np.cos((3 * x - y) / 4.0)
        )
        return np.repeat(tex[:, :, None], 3, axis=2)

    def centre(self, seconds: Fraction) -> tuple[float, float]:
        s = float(seconds)
        return self.start[0] + self.speed[0] * s, self.start[1] + self.speed[1] * s

    def render(self, seconds: Fraction) -> np.ndarray:
        """(size, size, 3) float32 frame at `seconds`."""
        cx, cy = self.centre(seconds)
        y, x = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32)
        coverage = np.clip(self.radius + 0.5 - np.hypot(x - cx, y - cy), 0.0, 1.0)[:, :, None]
        # the disc carries its own texture (flow needs something to follow inside it), moving with it
        pattern = 0.75 + 0.25 * np.sin((x - cx) / 2.5) * np.cos((y - cy) / 3.0)
        disc = pattern[:, :, None] * np.asarray(self.disc_rgb, np.float32)
        return ((1.0 - coverage) * self.background() + coverage * disc).astype(np.float32)


def redness(frame: np.ndarray) -> np.ndarray:
    """Per-pixel disc coverage estimate: (R + G) / 2 - B, 0 on the grey background, high on the yellow disc."""
    return np.clip((frame[:, :, 0] + frame[:, :, 1]) / 2 - frame[:, :, 2], 0.0, None)


def centroid(frame: np.ndarray) -> tuple[float, float]:
    """Centroid (x, y) of the frame's redness."""
    weight = redness(frame)
    y, x = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    total = weight.sum()
    return float((weight * x).sum() / total), float((weight * y).sum() / total)


def largest_share(frame: np.ndarray, threshold: float = 0.3) -> float:
    """Fraction of the clearly-disc pixels that lie in the largest connected region (1.0: one disc)."""
    import cv2

    mask = (redness(frame) > threshold).astype(np.uint8)
    count, labels = cv2.connectedComponents(mask)
    if count < 2:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def misplaced(frame: np.ndarray, truth: np.ndarray, threshold: float = 0.3) -> int:
    """Pixels that are clearly disc in one of the two frames and not in the other (ghosts, lag)."""
    return int(((redness(frame) > threshold) != (redness(truth) > threshold)).sum())
