"""The memory metric: does a hero keep the hat colour that only the first segment's text stated?

For the toon world's memory variant (ttt_engine/toonworld/memory.py). Per hatted character and per later
segment that shows it (segments 2..N of the plan whose cast holds it), the hat colour seen on it is
compared with the colour the text stated (`text_match`) and with the colour seen on it in segment 1
(`self_match`, is the look kept whatever it was).

Seeing a hat: in each frame where the detectors find the character (by its body colour), the pixels
within `colour_tol` of each HAT_COLOURS colour are counted in a window over its head (from `above` body
heights above the body's top to `below` under it, `side` body heights either side of its centre). A
segment's hat is the colour with the most such pixels per detected frame, if that is at least
`min_pixels`; otherwise none is seen (which never matches).

Chance level: CHANCE = 1 / len(HAT_COLOURS) = 1/6, the score of a generator that draws the hat in each
segment in a colour of the palette picked at random (it cannot know the stated one); a generator that
always draws one fixed colour also scores 1/6 in expectation, as the variant draws the stated colour
uniformly. A generator that draws no hat scores 0 (`hat_seen` tells those apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ttt_engine.storyboard import SEGMENT_SECONDS
from ttt_engine.toonworld.world import HAT_COLOURS, Episode

from .detectors import DetectorConfig, colour_codes, colour_mask, detect_characters

CHANCE = 1.0 / len(HAT_COLOURS)


@dataclass(frozen=True)
class HatConfig:
    """Where and how a hat is looked for (defaults checked on rendered ground truth, tests/eval)."""

    colour_tol: float = 0.2  # RGB distance to a hat colour (the palette is >= 0.25 from the body colours)
    above: float = 0.8  # window top: this many body heights above the body's top row
    below: float = 0.4  # window bottom: this many body heights under the body's top row
    side: float = 1.0  # window half-width in body heights around the body's centre
    min_pixels: float = 1.0  # hat pixels per detected frame for a colour to count as seen

    def __post_init__(self) -> None:
        for name in ("colour_tol", "above", "below", "side", "min_pixels"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HatConfig.{name}: expected > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class MemoryScore:
    """One video's memory figures (means over the later segments that show a hatted character)."""

    text_match: float  # seen hat colour == the colour the first segment's text states
    self_match: float  # seen hat colour == the colour seen in segment 1
    hat_seen: float  # any hat colour seen
    segments: int  # later segments scored
    seen: dict[str, list[str | None]]  # character -> hat colour seen per segment (None: none / absent)

    def to_dict(self) -> dict:
        return asdict(self)


def hat_colour(
    frames: np.ndarray, character: str, detector: DetectorConfig | None = None, cfg: HatConfig | None = None
) -> str | None:
    """The hat colour seen on `character` in one segment's display frames [T, H, W, 3] (None: no hat seen
    or the character not detected)."""
    detector = detector or DetectorConfig()
    cfg = cfg or HatConfig()
    tracks, masks = detect_characters(frames, detector, keys=(character,))
    track = tracks[character]
    found = np.nonzero(track.detected)[0]
    if found.size == 0:
        return None
    t, h, w, _ = frames.shape
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    window = np.zeros((found.size, h, w), bool)
    for k, i in enumerate(found):
        ext = float(track.extent[i])  # body rows
        top, cx = track.top[i] * h, track.cx[i] * w
        window[k] = (
            (rows >= top - cfg.above * ext)
            & (rows <= top + cfg.below * ext)
            & (np.abs(cols + 0.5 - cx) <= cfg.side * ext)
        )
    codes = colour_codes(frames[found])
    counts = {
        name: float((colour_mask(codes, rgb, cfg.colour_tol) & window).sum()) / found.size
        for name, rgb in HAT_COLOURS.items()
    }
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] >= cfg.min_pixels else None


def memory_score(
    frames: np.ndarray,
    episode: Episode,
    fps: int,
    detector: DetectorConfig | None = None,
    cfg: HatConfig | None = None,
) -> MemoryScore:
    """Score a video of a memory-variant episode (frames [T, H, W, 3] display values in [0, 1]; T = N x 3 s
    x fps, or one more: a generated video's leading frame, dropped)."""
    if not episode.hats:
        raise ValueError(f"episode {episode.seed}: no hats; the memory metric needs a memory-variant plan")
    per = SEGMENT_SECONDS * fps
    n = len(episode)
    if frames.shape[0] == n * per + 1:
        frames = frames[1:]
    if frames.shape[0] != n * per:
        raise ValueError(f"frames: {frames.shape[0]} frames; expected {n * per} ({n} segments at {fps} fps)")
    text, own, any_hat = [], [], []
    seen: dict[str, list[str | None]] = {}
    for key, stated in episode.hats:
        colours = [
            hat_colour(frames[i * per : (i + 1) * per], key, detector, cfg) if key in seg.cast else None
            for i, seg in enumerate(episode.segments)
        ]
        seen[key] = colours
        later = [c for c, seg in zip(colours[1:], episode.segments[1:]) if key in seg.cast]
        text += [c == stated for c in later]
        own += [c is not None and c == colours[0] for c in later]
        any_hat += [c is not None for c in later]
    if not text:
        raise ValueError(f"episode {episode.seed}: no later segment shows a hatted character")
    return MemoryScore(float(np.mean(text)), float(np.mean(own)), float(np.mean(any_hat)), len(text), seen)


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n); 0 for one value)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise ValueError("mean_and_se: no values")
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se
