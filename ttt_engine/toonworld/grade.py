"""Colour grades of toon-world renders: a look the base model never saw, for style adapters (issue #24).

One rule: a grade is an exactly invertible affine colour transform of display values, so the detectors
(which key on the toon world's palette) can score a graded shot after `ungrade`; the base datasets are
never graded (`write_dataset` has no grade; only `write_graded_stills` uses one).

    graded = offset + gain * R(hue) @ rgb          (per pixel; R rotates hue about the grey axis)

"dusk": hue turned 40 degrees, contrast to 0.65, a warm lift: greens go teal, reds go orange-pink, the
darks lift to a warm grey. Values stay inside [0, 1] for the toon world's palette.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def hue_rotation(degrees: float) -> np.ndarray:
    """3 x 3 rotation about the grey axis (1, 1, 1) / sqrt(3) (Rodrigues)."""
    theta = math.radians(degrees)
    k = np.ones(3) / math.sqrt(3.0)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return math.cos(theta) * np.eye(3) + math.sin(theta) * cross + (1 - math.cos(theta)) * np.outer(k, k)


@dataclass(frozen=True)
class Grade:
    """graded = offset + gain * hue_rotation(hue) @ rgb."""

    hue: float
    gain: float
    offset: tuple[float, float, float]

    @property
    def matrix(self) -> np.ndarray:
        return self.gain * hue_rotation(self.hue)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """float [..., 3] display values -> graded, clipped to [0, 1], float32."""
        out = np.asarray(frames, np.float32) @ self.matrix.T.astype(np.float32) + np.float32(self.offset)
        return np.clip(out, 0.0, 1.0)

    def invert(self, frames: np.ndarray) -> np.ndarray:
        """The inverse transform (clipped to [0, 1]): a graded render back to the toon world's palette."""
        inv = np.linalg.inv(self.matrix).astype(np.float32)
        out = (np.asarray(frames, np.float32) - np.float32(self.offset)) @ inv.T
        return np.clip(out, 0.0, 1.0)


GRADES: dict[str, Grade] = {"dusk": Grade(hue=40.0, gain=0.65, offset=(0.26, 0.20, 0.20))}


def get_grade(name: str) -> Grade:
    if name not in GRADES:
        raise ValueError(f"grade: expected one of {sorted(GRADES)}, got {name!r}")
    return GRADES[name]


def write_graded_stills(
    folder: str | Path, count: int, grade: str, seed: int, height: int = 64, width: int = 64, fps: int = 8
) -> list[Path]:
    """`count` graded stills of toon-world shots (PNG) with their storyboard text as sidecar captions.

    Still i is the middle frame of one segment of the episode of seed (seed, i): sets, framings and
    characters as the toon world samples them, in the grade's colours."""
    from .render import frames_per_segment, render_segment, to_uint8
    from .storyboard_text import episode_storyboard
    from .world import sample_episode

    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected an int >= 1, got {count!r}")
    look = get_grade(grade)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        episode_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        episode = sample_episode(episode_seed, 1)
        frames = render_segment(episode.segments[0], height, width, fps)
        still = look.apply(frames[frames_per_segment(fps) // 2])
        path = folder / f"{grade}_{i:04d}.png"
        Image.fromarray(to_uint8(still)).save(path)
        path.with_suffix(".txt").write_text(
            episode_storyboard(episode).segments[0].text + "\n", encoding="utf-8"
        )
        written.append(path)
    return written
