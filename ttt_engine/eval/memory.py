"""The memory metric: does a hero keep the hat colour that only the first segment's text stated?

For the toon world's memory variant (ttt_engine/toonworld/memory.py). Per hatted character and per later
segment that shows it (segments 2..N of the plan whose cast holds it), the hat colour seen on it is
compared with the colour the text stated (`text_match`) and with the colour seen on it in segment 1
(`self_match`, is the look kept whatever it was).

Seeing a hat: in each frame where the detectors find the character (by its body colour), each pixel of a
window over its head (from `above` body heights above the body's top to `below` under it, `side` body
heights either side of its centre) goes to its nearest reference colour: a HAT_COLOURS colour, the
character's body, the outline, or the plan's empty set at that pixel; it counts for a hat colour if that
is its nearest and within `colour_tol`. A segment's hat is the colour with the most such pixels per
detected frame, if that is at least `min_pixels`; otherwise none is seen (which never matches). The
nearest-reference rule is what lets the metric read a hat through a VAE, whose blur mixes the hat with
the head and the set behind it.

Chance level: CHANCE = 1 / len(HAT_COLOURS) = 1/3, the score of a generator that draws the hat in each
segment in a colour of the palette picked at random (it cannot know the stated one); a generator that
always draws one fixed colour also scores 1/3 in expectation, as the variant draws the stated colour
uniformly. A generator that draws no hat scores 0 (`hat_seen` tells those apart), up to what the
shipped VAE's blur makes of a bare head (docs/ablation.md, "Memory").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ttt_engine.storyboard import SEGMENT_SECONDS
from ttt_engine.toonworld.render import OUTLINE, background_layers
from ttt_engine.toonworld.world import CHARACTERS, HAT_COLOURS, Episode, SegmentPlan

from .detectors import DetectorConfig, detect_characters

CHANCE = 1.0 / len(HAT_COLOURS)


@dataclass(frozen=True)
class HatConfig:
    """Where and how a hat is looked for (defaults checked on rendered ground truth, tests/eval)."""

    colour_tol: float = 0.2  # RGB distance to a hat colour (and nearer it than to any other reference)
    above: float = 0.8  # window top: this many body heights above the body's top row
    below: float = 0.4  # window bottom: this many body heights under the body's top row
    side: float = 1.0  # window half-width in body heights around the body's centre
    # hat pixels per detected frame for a colour to count as seen: a rendered hat has 60-220, one through
    # the shipped VAE 20 or more, while the VAE's blur of a bare head makes a few
    min_pixels: float = 10.0

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
    frames: np.ndarray,
    character: str,
    detector: DetectorConfig | None = None,
    cfg: HatConfig | None = None,
    background: np.ndarray | None = None,
) -> str | None:
    """The hat colour seen on `character` in one segment's display frames [T, H, W, 3] (None: no hat seen
    or the character not detected). background: the shot's empty set [H, W, 3] (the plan's), so a set
    colour near a hat colour (the living room's teal sofa) is not read as a hat."""
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
    # each window pixel goes to its nearest reference colour (the hat palette, the character's body and
    # the outline, which a VAE's blur spreads over the head, and the set behind it) and counts for a hat
    # colour within colour_tol of it
    pixels = frames[found][window].astype(np.float32)  # [P, 3]
    names = list(HAT_COLOURS)
    refs = np.array([*HAT_COLOURS.values(), CHARACTERS[character].body, OUTLINE], np.float32)
    dist = np.linalg.norm(pixels[:, None, :] - refs[None], axis=-1)  # [P, colours + 2]
    if background is not None:  # the set behind each pixel is one more reference
        behind = np.broadcast_to(background, frames.shape)[found][window]
        dist = np.concatenate([dist, np.linalg.norm(pixels - behind, axis=-1)[:, None]], axis=1)
    nearest = dist.argmin(axis=1)
    close = dist[np.arange(len(pixels)), nearest] <= cfg.colour_tol
    counts = {name: float((close & (nearest == i)).sum()) / found.size for i, name in enumerate(names)}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] >= cfg.min_pixels else None


def _empty_set(seg: SegmentPlan, size: tuple[int, int]) -> np.ndarray:
    """The segment's set [H, W, 3] without characters (the prop included), as the toon world draws it."""
    return background_layers(seg.background, seg.framing, *size)[0]


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
            hat_colour(
                frames[i * per : (i + 1) * per], key, detector, cfg, _empty_set(seg, frames.shape[1:3])
            )
            if key in seg.cast
            else None
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
