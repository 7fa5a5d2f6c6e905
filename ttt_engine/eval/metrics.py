"""Per-segment scores of a generated toon-world video against its storyboard.

Definitions (all in [0, 1], higher is better):

- prompt adherence (per segment) = fraction of the segment's requested facts that the detectors
  confirm. Facts: each requested character is present (detected in >= present_frac of the
  frames); no unrequested character is present (one fact, when any character is unrequested); the
  background is the requested one; each requested motion (left / right / jump / hide / still) is
  seen. The framing (wide / close-up) is reported as a separate accuracy, not part of adherence.
- identity consistency (per character) = mean similarity between the character's consecutive
  appearances (segments where it is present, across camera cuts and scene changes), where
  similarity = colour_sim * size_sim; colour_sim = max(0, 1 - |mean body colour difference| /
  colour_tol), size_sim = min/max of its 90th-percentile body height (rows spanned by its mask,
  robust to side-by-side occlusion) over the segment divided by the reference body height of its sprite at the segment's framing (detected from the background,
  else the requested one). None when it appears in fewer than two segments.
- temporal smoothness (per segment) = 1 - min(1, mean_d / smooth_scale), where mean_d is the mean
  absolute per-pixel change between consecutive frames of the segment, averaged over its frame
  pairs that are not detected cuts. A pair (t-1, t) is a cut when its change exceeds both
  `cut_abs` and `cut_rel` times the median change of the whole video, so hard cuts (camera or
  scene) are not counted as jitter, while uniform noise (every pair changes a lot) has no cuts
  and scores 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ttt_engine.storyboard import SEGMENT_SECONDS, Storyboard
from ttt_engine.toonworld.world import CHARACTER_KEYS

from .detectors import (
    DetectorConfig,
    Motion,
    classify_background,
    detect_characters,
    reference_extent,
    segment_motion,
)
from .facts import SegmentFacts, parse_storyboard
from .memory import MemoryScore

FACT_KINDS = ("presence", "absence", "background", "motion")


@dataclass(frozen=True)
class MetricConfig:
    smooth_scale: float = 0.1  # mean |change| per pixel per frame that scores 0 smoothness
    cut_abs: float = 0.06
    cut_rel: float = 4.0


@dataclass(frozen=True)
class FactResult:
    kind: str  # one of FACT_KINDS
    subject: str  # character, or "scene"
    expected: str
    observed: str
    ok: bool


@dataclass(frozen=True)
class SegmentRow:
    index: int
    adherence: float
    facts: tuple[FactResult, ...]
    background: str | None  # detected
    framing: str | None  # detected
    framing_ok: bool | None  # detected framing == requested (None: the text names none)
    smoothness: float
    cuts: int  # detected cuts inside the segment or at its first frame
    visible: dict[str, float] = field(default_factory=dict)  # character -> fraction of frames detected


@dataclass(frozen=True)
class EvalReport:
    segments: tuple[SegmentRow, ...]
    identity: dict[str, float | None]
    fps: int
    memory: MemoryScore | None = None  # memory-variant storyboards only (eval/memory.py)

    @property
    def adherence(self) -> float:
        return float(np.mean([s.adherence for s in self.segments]))

    @property
    def smoothness(self) -> float:
        return float(np.mean([s.smoothness for s in self.segments]))

    @property
    def identity_mean(self) -> float | None:
        vals = [v for v in self.identity.values() if v is not None]
        return float(np.mean(vals)) if vals else None

    def fact_accuracy(self, kind: str) -> float | None:
        """Fraction of facts of one kind satisfied over the whole video (None if none asked)."""
        oks = [f.ok for s in self.segments for f in s.facts if f.kind == kind]
        return float(np.mean(oks)) if oks else None

    @property
    def framing_accuracy(self) -> float | None:
        """Share of segments naming a framing whose detected framing matches (not part of adherence)."""
        oks = [s.framing_ok for s in self.segments if s.framing_ok is not None]
        return float(np.mean(oks)) if oks else None

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"adherence": self.adherence}
        out.update({f"  {k}": self.fact_accuracy(k) for k in FACT_KINDS})
        out["framing"] = self.framing_accuracy
        out["identity"] = self.identity_mean
        out.update({f"  {k}": v for k, v in self.identity.items()})
        out["smoothness"] = self.smoothness
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "adherence": self.adherence,
            "identity_mean": self.identity_mean,
            "identity": self.identity,
            "smoothness": self.smoothness,
            "fact_accuracy": {k: self.fact_accuracy(k) for k in FACT_KINDS},
            "framing_accuracy": self.framing_accuracy,
            "segments": [asdict(s) for s in self.segments],
            **({"memory": self.memory.to_dict()} if self.memory is not None else {}),
        }


def _as_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames: expected a numpy array [T, H, W, 3], got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected shape [T, H, W, 3], got {tuple(frames.shape)}")
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames: expected float values in [0, 1] or uint8, got dtype {frames.dtype}")
    if not np.isfinite(frames).all():
        raise ValueError("frames: contain NaN or inf values")
    # display values: clip like a display would (decoders overshoot slightly)
    return np.clip(frames, 0.0, 1.0).astype(np.float32, copy=False)


def _frame_changes(frames: np.ndarray) -> np.ndarray:
    """Mean |change| per pixel for each consecutive pair: [T - 1]."""
    out = np.empty(max(0, frames.shape[0] - 1))
    for t in range(1, frames.shape[0]):
        out[t - 1] = float(np.mean(np.abs(frames[t] - frames[t - 1])))
    return out


def _similarity(a: tuple[np.ndarray, float], b: tuple[np.ndarray, float], tol: float) -> float:
    colour_sim = max(0.0, 1.0 - float(np.linalg.norm(a[0] - b[0])) / tol)
    size_sim = min(a[1], b[1]) / max(a[1], b[1]) if max(a[1], b[1]) > 0 else 0.0
    return colour_sim * size_sim


def motion_fact(character: str, motion: str, seen: Motion, cfg: DetectorConfig) -> FactResult:
    """Was `motion` seen? A segment can satisfy several motions (a runner that leaves the frame also
    "hides"): the report names the asked one when it is seen, else the first the detectors see."""
    ok = seen.satisfies(motion, cfg)
    return FactResult("motion", character, motion, motion if ok else seen.label(cfg), ok)


def evaluate(
    frames: np.ndarray,
    storyboard: Storyboard,
    fps: int,
    facts: list[SegmentFacts] | None = None,
    detector: DetectorConfig | None = None,
    metric: MetricConfig | None = None,
) -> EvalReport:
    """Score `frames` (float [T, H, W, 3] display values in [0, 1], or uint8) against `storyboard`.

    T must be len(storyboard) * 3 * fps, or one more: a generated video starts with CogVideoX's leading
    frame (49 = 1 + 48 frames for one segment), which is dropped. `facts` (e.g. `facts_from_episode(plan)`)
    replaces the facts parsed from the storyboard text.
    """
    cfg = detector or DetectorConfig()
    mcfg = metric or MetricConfig()
    if not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps: expected a positive int, got {fps!r}")
    frames = _as_frames(frames)
    n_seg = len(storyboard)
    per = SEGMENT_SECONDS * fps
    if frames.shape[0] == n_seg * per + 1:
        frames = frames[1:]  # the leading frame of a generated video
    if frames.shape[0] != n_seg * per:
        raise ValueError(
            f"frames: {frames.shape[0]} frames do not match the storyboard: {n_seg} segments x "
            f"{SEGMENT_SECONDS} s x {fps} fps = {n_seg * per} frames expected (or 1 more: a generated video's leading frame)"
        )
    facts = parse_storyboard(storyboard) if facts is None else list(facts)
    if len(facts) != n_seg:
        raise ValueError(f"facts: {len(facts)} entries for {n_seg} storyboard segments")

    tracks, masks = detect_characters(frames, cfg)
    changes = _frame_changes(frames)
    median_change = float(np.median(changes)) if changes.size else 0.0
    is_cut = (changes > mcfg.cut_abs) & (changes > mcfg.cut_rel * median_change)

    rows: list[SegmentRow] = []
    appearances: dict[str, list[tuple[np.ndarray, float]]] = {k: [] for k in CHARACTER_KEYS}
    for i, want in enumerate(facts):
        sl = slice(i * per, (i + 1) * per)
        motions = {k: segment_motion(tracks[k], sl, fps, cfg) for k in CHARACTER_KEYS}
        present = {k: m.visible >= cfg.present_frac for k, m in motions.items()}
        guess = classify_background(frames[sl], [masks[k][sl] for k in CHARACTER_KEYS], cfg)
        results: list[FactResult] = []
        for k in want.characters:
            ok = motions[k].present(cfg, hiding=want.motion(k) == "hide")
            results.append(FactResult("presence", k, "present", f"{motions[k].visible:.2f} of frames", ok))
        unrequested = [k for k in CHARACTER_KEYS if k not in want.characters]
        if unrequested:
            extra = [k for k in unrequested if present[k]]
            results.append(
                FactResult("absence", "+".join(unrequested), "absent", "+".join(extra) or "absent", not extra)
            )
        if want.background is not None:
            results.append(
                FactResult(
                    "background",
                    "scene",
                    want.background,
                    str(guess.background),
                    guess.background == want.background,
                )
            )
        results.extend(motion_fact(k, motion, motions[k], cfg) for k, motion in want.motions)
        adherence = float(np.mean([r.ok for r in results])) if results else 0.0
        framing_ok = None if want.framing is None else guess.framing == want.framing

        # smoothness over the pairs ending in this segment (pair t-1 -> t is counted for frame t)
        pair_idx = np.arange(max(1, sl.start), sl.stop) - 1
        keep = pair_idx[~is_cut[pair_idx]]
        mean_d = float(changes[keep].mean()) if keep.size else 0.0
        smooth = 1.0 - min(1.0, mean_d / mcfg.smooth_scale)

        # identity descriptors of present characters
        framing = guess.framing or want.framing or "wide"
        h = frames.shape[1]
        for k in CHARACTER_KEYS:
            if present[k]:
                det = tracks[k].detected[sl]
                colour = np.average(tracks[k].colour[sl][det], axis=0, weights=tracks[k].area[sl][det])
                ref = reference_extent(k, h, cfg, framing)
                size = float(np.percentile(tracks[k].extent[sl][det], 90)) / ref
                appearances[k].append((colour, size))
        rows.append(
            SegmentRow(
                index=i,
                adherence=adherence,
                facts=tuple(results),
                background=guess.background,
                framing=guess.framing,
                framing_ok=framing_ok,
                smoothness=smooth,
                cuts=int(is_cut[pair_idx].sum()),
                visible={k: round(motions[k].visible, 4) for k in CHARACTER_KEYS},
            )
        )
    identity: dict[str, float | None] = {}
    for k, seen in appearances.items():
        sims = [_similarity(seen[j], seen[j + 1], cfg.colour_tol) for j in range(len(seen) - 1)]
        identity[k] = float(np.mean(sims)) if sims else None
    return EvalReport(segments=tuple(rows), identity=identity, fps=fps)


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def format_table(reports: dict[str, EvalReport]) -> str:
    """Models side by side: summary metrics, then per-segment adherence / smoothness."""
    if not reports:
        raise ValueError("format_table: no reports given")
    names = list(reports)
    width = max(12, *(len(n) + 2 for n in names))
    summaries = {n: r.summary() for n, r in reports.items()}
    keys = list(dict.fromkeys(k for s in summaries.values() for k in s))
    lines = ["metric".ljust(22) + "".join(n.rjust(width) for n in names)]
    lines.append("-" * len(lines[0]))
    for key in keys:
        lines.append(key.ljust(22) + "".join(_fmt(summaries[n].get(key)).rjust(width) for n in names))
    n_seg = max(len(r.segments) for r in reports.values())
    for i in range(n_seg):
        for label, attr in (("adherence", "adherence"), ("smoothness", "smoothness")):
            cells = []
            for n in names:
                segs = reports[n].segments
                cells.append(_fmt(getattr(segs[i], attr)) if i < len(segs) else "-")
            lines.append(f"seg {i:2d} {label}".ljust(22) + "".join(c.rjust(width) for c in cells))
    return "\n".join(lines)


# ---- colour distribution ------------------------------------------------------------------------------

_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
COLOUR_QUANTILES = 512  # quantiles compared per projection
COLOUR_PROJECTIONS = 64  # random directions of the sliced distance


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB display values [..., 3] in [0, 1] -> CIELAB (D65) [..., 3]: L in [0, 100], a and b about +-100."""
    c = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def colour_distance(frames_a: np.ndarray, frames_b: np.ndarray, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between the CIELAB colour distributions of two sets of images.

    frames: sRGB display values [..., H, W, 3] in [0, 1] (any number of leading axes; every pixel is one
    sample). The pixels of each set are projected on COLOUR_PROJECTIONS seeded random directions of Lab;
    per direction the W1 distance of the two 1-D distributions is the mean absolute difference of their
    COLOUR_QUANTILES quantiles; the result is the mean over directions, in Lab units (delta E76-like: 0 for
    the same colours in any arrangement, larger as the palettes differ; 2-3 is a just-noticeable shift).
    """
    a = srgb_to_lab(frames_a).reshape(-1, 3)
    b = srgb_to_lab(frames_b).reshape(-1, 3)
    if not len(a) or not len(b):
        raise ValueError("colour_distance: both sets need at least one pixel")
    directions = np.random.default_rng(seed).normal(size=(COLOUR_PROJECTIONS, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    q = (np.arange(COLOUR_QUANTILES) + 0.5) / COLOUR_QUANTILES
    qa = np.quantile(a @ directions.T, q, axis=0)  # (Q, P)
    qb = np.quantile(b @ directions.T, q, axis=0)
    return float(np.abs(qa - qb).mean())
