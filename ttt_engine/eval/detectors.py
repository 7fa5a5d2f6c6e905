"""Detectors for the toon world, run on display frames float [T, H, W, 3] in [0, 1].

- Characters: a pixel belongs to a character when its RGB lies within `colour_tol` (Euclidean,
  colours quantised to 6 bits per channel for a table lookup) of that character's body colour. The
  mask is opened (a 2x2 square below 176-pixel frames, 3x3 above: removes thin lines such as
  blurred outlines and isolated noise), split into 4-connected components per frame, and components
  smaller than `min_area_frac` of the largest body component of the character's wide-shot sprite
  (rendered at this resolution) cannot lead an instance. A character appears once: its instance is the
  frame's largest component plus the components near it (parts cut off by an occluder or by outlines),
  and it counts only if it holds at least `min_instance_frac` of the sprite's body area and
  `min_dominance` of the frame's pixels of that colour, so body-coloured clutter scattered over the
  frame (what an untrained generator decodes to) is no character. Per frame: detected or not,
  centroid, top and bottom rows, area, mean colour of the instance.
- Background (and framing): features are the mean colours of a `bg_grid` x `bg_grid` grid over the
  segment's temporal median frame, ignoring the (grown) boxes of detected characters where they
  stand most of the time. The nearest prototype (the same features of every background rendered
  empty at this resolution, wide and close-up) wins if its trimmed RMS distance (worst quarter of
  the cells left out) is below `bg_max_dist`; otherwise the background is unknown (None). The
  framing is then the closer of that background's two prototypes over all valid cells.
- Motion per character per segment: slope of the centroid x over time (frame widths per second,
  from the frames where the body is nearly whole) with a dead-zone `idle_speed`; vertical travel of
  both the top and the bottom of the body for jumps; visible early but gone late for hides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ttt_engine.toonworld.render import background_layers, sprite, sprite_detail, sprite_pixel_height
from ttt_engine.toonworld.world import BACKGROUND_KEYS, CHARACTER_KEYS, FRAMINGS, get_character


@dataclass(frozen=True)
class DetectorConfig:
    """Detector thresholds (defaults tuned on rendered ground truth vs noise; see tests/eval)."""

    colour_tol: float = 0.2  # RGB distance to a body colour
    min_area_frac: float = 0.15  # smallest component kept, fraction of the reference body area
    present_frac: float = 0.25  # detected in at least this fraction of a segment's frames = present
    idle_speed: float = 0.05  # |dx/dt| below this (frame widths / s) is "not moving sideways"
    jump_rise: float = 0.08  # vertical travel of the body (fraction of height) that counts as jumping
    whole_frac: float = 0.6  # motion uses frames whose body area is >= this share of the segment's 90th pct.
    hide_window: float = 0.25  # first / last fraction of the segment examined for a hide
    # one instance per character: the components near the frame's largest (within instance_window
    # wide-shot sprite heights / widths of its centroid) must hold >= min_instance_frac of the reference
    # body area and >= min_dominance of the frame's character-coloured pixels (clutter is not a character)
    instance_window: float = 0.6
    min_instance_frac: float = 0.35
    min_dominance: float = 0.5
    bg_grid: int = 6
    bg_max_dist: float = 0.12  # RMS colour distance to the nearest background prototype
    bg_max_side: int = 96  # background features are computed on frames strided down to about this size

    def __post_init__(self) -> None:
        for name in (
            "colour_tol",
            "min_area_frac",
            "present_frac",
            "idle_speed",
            "jump_rise",
            "bg_max_dist",
            "min_instance_frac",
            "min_dominance",
            "instance_window",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"DetectorConfig.{name}: expected > 0, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------- morphology


def _window(m: np.ndarray, offsets: range, op) -> np.ndarray:
    """op-reduce of m shifted by each offset along both of the last two axes (outside = False)."""
    out = None
    h, w = m.shape[-2:]
    for dy in offsets:
        for dx in offsets:
            sh = np.zeros_like(m)
            ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
            xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
            sh[..., yd, xd] = m[..., ys, xs]  # sh[p] = m[p + (dy, dx)]
            out = sh if out is None else op(out, sh)
    return out


def opening_size(height: int) -> int:
    """Side of the square structuring element: 2 px while the mouse is under ~30 px tall, else 3."""
    return 2 if height < 176 else 3


def open_mask(m: np.ndarray, size: int = 3) -> np.ndarray:
    """Morphological opening with a size x size square over the last two axes (removes thin lines)."""
    lo = -(size // 2)
    fwd = range(lo, lo + size)
    eroded = _window(m, fwd, np.logical_and)
    return _window(eroded, range(-(lo + size - 1), -lo + 1), np.logical_or)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """4-connected components of a boolean [..., H, W] mask, separately per leading index (frame).

    Returns (fg: flat indices of the foreground pixels, comp: their component 0..n-1, n).
    Vectorised union-find over foreground pixels only: hook every edge's larger root onto the
    smaller, pointer-jump to the roots, repeat until no edge joins two roots.
    """
    fg = np.flatnonzero(mask)
    if fg.size == 0:
        return fg, fg, 0
    w = mask.shape[-1]
    horiz = np.zeros_like(mask)
    horiz[..., :-1] = mask[..., :-1] & mask[..., 1:]
    vert = np.zeros_like(mask)
    vert[..., :-1, :] = mask[..., :-1, :] & mask[..., 1:, :]
    a_h, a_v = np.flatnonzero(horiz), np.flatnonzero(vert)
    ea = np.searchsorted(fg, np.concatenate([a_h, a_v]))
    eb = np.searchsorted(fg, np.concatenate([a_h + 1, a_v + w]))
    parent = np.arange(fg.size, dtype=np.int64)
    while True:
        pa, pb = parent[ea], parent[eb]
        diff = pa != pb
        if not diff.any():
            break
        np.minimum.at(parent, np.maximum(pa[diff], pb[diff]), np.minimum(pa[diff], pb[diff]))
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    _, comp = np.unique(parent, return_inverse=True)
    return fg, comp.reshape(-1), int(comp.max()) + 1


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Component labels of a boolean [..., H, W] mask: (int32 labels, 0 = background, 1..n; n)."""
    fg, comp, n = _components(mask)
    labels = np.zeros(mask.size, np.int32)
    labels[fg] = comp + 1
    return labels.reshape(mask.shape), n


# ----------------------------------------------------------------------------- references


_LUT_BITS = 6  # colour lookups quantise each channel to 6 bits (error <= 0.008 per channel)


@lru_cache(maxsize=32)
def _colour_lut(colour: tuple[float, float, float], tol: float) -> np.ndarray:
    """Boolean table over quantised RGB codes: is the bin centre within tol of colour?"""
    levels = (np.arange(1 << _LUT_BITS) + 0.5) / (1 << _LUT_BITS)
    d = [(levels - c) ** 2 for c in colour]
    return (d[0][:, None, None] + d[1][None, :, None] + d[2][None, None, :] <= tol * tol).reshape(-1)


def colour_codes(frames: np.ndarray) -> np.ndarray:
    """Quantised RGB code per pixel ([..., 3] float in [0, 1] -> [...] int32), for `colour_mask`."""
    out = np.empty(frames.shape[:-1], np.int32)
    src, dst = frames.reshape(-1, 3), out.reshape(-1)
    top = (1 << _LUT_BITS) - 1
    for i in range(0, src.shape[0], 1 << 21):  # in chunks: bounds the temporaries
        q = np.minimum((src[i : i + (1 << 21)] * (1 << _LUT_BITS)).astype(np.int32), top)
        dst[i : i + (1 << 21)] = (q[:, 0] << (2 * _LUT_BITS)) | (q[:, 1] << _LUT_BITS) | q[:, 2]
    return out


def colour_mask(codes: np.ndarray, colour: tuple[float, float, float], tol: float) -> np.ndarray:
    """Pixels whose colour lies within `tol` (Euclidean RGB) of `colour`; codes from `colour_codes`."""
    return _colour_lut(tuple(float(c) for c in colour), float(tol))[codes]


def instance_mask(
    m: np.ndarray, min_size: float, window: tuple[float, float], ref_area: float, cfg: DetectorConfig
) -> np.ndarray:
    """Per frame of a boolean [T, H, W] mask, the one instance of a character, or nothing.

    The instance is the frame's largest component (it must have >= min_size pixels) with every component
    whose centroid lies within `window` (rows, cols) of its centroid (the parts an occluder or the
    sprite's outlines cut off). It is kept only if it holds >= cfg.min_instance_frac * ref_area pixels
    and >= cfg.min_dominance of the frame's pixels in the mask: a sprite is one compact blob, while
    noise of the body colour scatters clumps over the whole frame.
    """
    fg, comp, n = _components(m)
    out = np.zeros(m.size, bool)
    if n == 0:
        return out.reshape(m.shape)
    t, h, w = m.shape
    sizes = np.bincount(comp, minlength=n).astype(np.float64)
    frame = np.zeros(n, np.int64)
    frame[comp] = fg // (h * w)
    cy = np.bincount(comp, weights=(fg // w) % h, minlength=n) / sizes
    cx = np.bincount(comp, weights=fg % w, minlength=n) / sizes
    big = np.nonzero(sizes >= min_size)[0]
    if big.size == 0:
        return out.reshape(m.shape)
    # the largest component of each frame: sort by (frame, -size), take each frame's first
    order = big[np.lexsort((-sizes[big], frame[big]))]
    frames_with, first = np.unique(frame[order], return_index=True)
    largest = np.full(t, -1, np.int64)
    largest[frames_with] = order[first]
    lead = largest[frame]
    near = (lead >= 0) & (np.abs(cy - cy[lead]) <= window[0]) & (np.abs(cx - cx[lead]) <= window[1])
    instance = np.bincount(frame[near], weights=sizes[near], minlength=t)
    total = np.bincount(frame, weights=sizes, minlength=t)
    frame_ok = (instance >= cfg.min_instance_frac * ref_area) & (instance >= cfg.min_dominance * total)
    chosen = near & frame_ok[frame]
    out[fg[chosen[comp]]] = True
    return out.reshape(m.shape)


def _keep_components(m: np.ndarray, min_size: float) -> np.ndarray:
    """Drop 4-connected components (per frame) smaller than min_size pixels."""
    fg, comp, n = _components(m)
    if n == 0:
        return m
    keep = np.bincount(comp, minlength=n) >= min_size
    out = np.zeros(m.size, bool)
    out[fg[keep[comp]]] = True
    return out.reshape(m.shape)


def _opened_sprite_mask(character: str, height: int, tol: float, framing: str) -> np.ndarray:
    hp = sprite_pixel_height(character, framing, height)
    rgb, mask, _ = sprite(character, hp, 0, False, 1, sprite_detail(height))
    return open_mask(
        colour_mask(colour_codes(rgb), get_character(character).body, tol) & mask, opening_size(height)
    )


@lru_cache(maxsize=64)
def min_component(character: str, height: int, tol: float, min_area_frac: float) -> float:
    """Smallest component kept for this character: a fraction of the largest body component of its
    wide-shot sprite (with detailed sprites, inner outlines split the body into parts)."""
    m = _opened_sprite_mask(character, height, tol, "wide")
    labels, n = label_components(m[None])
    largest = np.bincount(labels.reshape(-1))[1:].max() if n else 0
    return max(3.0, min_area_frac * float(largest))


@lru_cache(maxsize=64)
def _reference_mask(
    character: str, height: int, tol: float, min_area_frac: float, framing: str
) -> np.ndarray:
    m = _opened_sprite_mask(character, height, tol, framing)
    return _keep_components(m[None], min_component(character, height, tol, min_area_frac))[0]


def reference_area(character: str, height: int, cfg: DetectorConfig, framing: str = "wide") -> float:
    """Body pixels the detector keeps on the character's standing sprite at this framing and height."""
    return float(_reference_mask(character, height, cfg.colour_tol, cfg.min_area_frac, framing).sum())


def reference_extent(character: str, height: int, cfg: DetectorConfig, framing: str = "wide") -> float:
    """Rows spanned by the same reference mask (robust to side-by-side occlusion)."""
    m = _reference_mask(character, height, cfg.colour_tol, cfg.min_area_frac, framing)
    return float(_vertical_extent(m[None])[0])


def _vertical_extent(m: np.ndarray) -> np.ndarray:
    """Rows spanned (first to last occupied row) by each frame's mask: [T] float."""
    rows = m.any(axis=2)  # [T, H]
    h = rows.shape[1]
    first = np.argmax(rows, axis=1)
    last = h - 1 - np.argmax(rows[:, ::-1], axis=1)
    return np.where(rows.any(axis=1), last - first + 1, 0).astype(np.float64)


def _stride(height: int, width: int, max_side: int) -> tuple[int, int]:
    return max(1, height // max_side), max(1, width // max_side)


def grid_features(image: np.ndarray, valid: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour per grid cell over valid pixels: (features [grid, grid, 3], cell_ok [grid, grid])."""
    h, w = valid.shape
    rows = np.minimum((np.arange(h) * grid) // h, grid - 1)
    cols = np.minimum((np.arange(w) * grid) // w, grid - 1)
    cell = (rows[:, None] * grid + cols[None, :]).reshape(-1)
    v = valid.reshape(-1).astype(np.float64)
    counts = np.bincount(cell, weights=v, minlength=grid * grid)
    totals = np.bincount(cell, minlength=grid * grid)
    feats = (
        np.stack(
            [
                np.bincount(cell, weights=image[..., c].reshape(-1) * v, minlength=grid * grid)
                for c in range(3)
            ],
            -1,
        )
        / np.maximum(counts, 1)[:, None]
    )
    ok = counts >= 0.25 * totals
    return feats.reshape(grid, grid, 3), ok.reshape(grid, grid)


@lru_cache(maxsize=16)
def background_prototypes(
    height: int, width: int, grid: int, max_side: int
) -> dict[tuple[str, str], np.ndarray]:
    """(background, framing) -> grid features of the empty rendered set at this resolution."""
    sy, sx = _stride(height, width, max_side)
    out = {}
    for bg in BACKGROUND_KEYS:
        for framing in FRAMINGS:
            img = background_layers(bg, framing, height, width)[0][::sy, ::sx]
            feats, _ = grid_features(img, np.ones(img.shape[:2], bool), grid)
            out[(bg, framing)] = feats
    return out


# ----------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class CharacterTrack:
    """Per-frame detection of one character. Arrays [T]; cx, cy NaN where not detected."""

    detected: np.ndarray  # bool
    cx: np.ndarray  # centroid x, fraction of width
    cy: np.ndarray  # centroid y, fraction of height
    top: np.ndarray  # first occupied row, fraction of height (NaN where not detected)
    bottom: np.ndarray  # last occupied row, fraction of height
    area: np.ndarray  # kept pixels
    extent: np.ndarray  # rows spanned by the kept pixels
    colour: np.ndarray  # [T, 3] mean colour of kept pixels (NaN where not detected)
    ref_area: float


def detect_characters(
    frames: np.ndarray, cfg: DetectorConfig, keys: tuple[str, ...] = CHARACTER_KEYS
) -> tuple[dict[str, CharacterTrack], dict[str, np.ndarray]]:
    """(tracks, kept masks [T, H, W]) for the characters `keys` (default: the toon world's cast; an
    extra character such as "zorp" is detected the same way, by its own body colour and sprite)."""
    t, h, w, _ = frames.shape
    tracks, masks = {}, {}
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    codes = colour_codes(frames)  # [T, H, W]
    for key in keys:
        ch = get_character(key)
        ref = reference_area(key, h, cfg)
        min_size = min_component(key, h, cfg.colour_tol, cfg.min_area_frac)
        hp = sprite_pixel_height(key, "wide", h)
        m = instance_mask(
            open_mask(colour_mask(codes, ch.body, cfg.colour_tol), opening_size(h)),
            min_size,
            (cfg.instance_window * hp, cfg.instance_window * hp * ch.aspect),
            ref,
            cfg,
        )
        area = m.sum(axis=(1, 2)).astype(np.float64)
        detected = area > 0
        safe = np.maximum(area, 1)
        cx = np.where(detected, (m.sum(axis=1) * xs).sum(axis=1) / safe, np.nan)
        cy = np.where(detected, (m.sum(axis=2) * ys).sum(axis=1) / safe, np.nan)
        t_idx = np.nonzero(m)[0]
        pix = frames[m]  # [K, 3]
        colour = (
            np.stack([np.bincount(t_idx, weights=pix[:, c], minlength=t) for c in range(3)], -1)
            / safe[:, None]
        )
        colour[~detected] = np.nan
        rows = m.any(axis=2)  # [T, H]
        top = np.where(detected, np.argmax(rows, axis=1) / h, np.nan)
        bottom = np.where(detected, (h - 1 - np.argmax(rows[:, ::-1], axis=1)) / h, np.nan)
        tracks[key] = CharacterTrack(detected, cx, cy, top, bottom, area, _vertical_extent(m), colour, ref)
        masks[key] = m
    return tracks, masks


def character_present(frames: np.ndarray, key: str, cfg: DetectorConfig | None = None) -> bool:
    """Whether character `key` is in a segment's frames [T, H, W, 3]: detected in at least
    cfg.present_frac of them (the rule the storyboard facts use for presence)."""
    cfg = cfg or DetectorConfig()
    tracks, _ = detect_characters(frames, cfg, keys=(key,))
    return float(tracks[key].detected.mean()) >= cfg.present_frac


def _boxes(m: np.ndarray, grow: float = 0.25) -> np.ndarray:
    """Per frame, the bounding box of the mask grown by `grow` of its size on each side: [T, H, W] bool.

    Masks out a character's outline, eyes and belly too, which are not its body colour.
    """
    out = np.zeros_like(m)
    h, w = m.shape[-2:]
    for t in np.nonzero(m.any(axis=(1, 2)))[0]:
        rows, cols = np.nonzero(m[t].any(axis=1))[0], np.nonzero(m[t].any(axis=0))[0]
        dy = int(np.ceil(grow * (rows[-1] - rows[0] + 1)))
        dx = int(np.ceil(grow * (cols[-1] - cols[0] + 1)))
        out[t, max(0, rows[0] - dy) : rows[-1] + dy + 1, max(0, cols[0] - dx) : cols[-1] + dx + 1] = True
    return out


def _trimmed_rms(sq: np.ndarray, keep: float = 0.75) -> float:
    """RMS of the smallest `keep` share of squared cell distances (robust to a few occluded cells)."""
    sq = np.sort(sq)
    return float(np.sqrt(np.mean(sq[: max(1, int(np.ceil(keep * sq.size)))])))


@dataclass(frozen=True)
class BackgroundGuess:
    background: str | None  # None = unknown (no prototype close enough)
    framing: str | None
    distance: float  # RMS distance to the nearest prototype


def classify_background(
    frames: np.ndarray, char_masks: list[np.ndarray], cfg: DetectorConfig
) -> BackgroundGuess:
    """Background and framing of one segment (frames [T, H, W, 3], char_masks each [T, H, W])."""
    t, h, w, _ = frames.shape
    sy, sx = _stride(h, w, cfg.bg_max_side)
    st = max(1, t // 12)
    small = frames[::st, ::sy, ::sx]
    median = np.median(small, axis=0)
    occupied = np.zeros(small.shape[:3], bool)
    for m in char_masks:
        occupied |= _boxes(m[::st])[:, ::sy, ::sx]
    valid = occupied.mean(axis=0) < 0.5
    feats, ok = grid_features(median, valid, cfg.bg_grid)
    if not ok.any():
        return BackgroundGuess(None, None, float("inf"))
    best, best_d = None, float("inf")
    for key, proto in background_prototypes(h, w, cfg.bg_grid, cfg.bg_max_side).items():
        d = float(_trimmed_rms(np.sum((feats[ok] - proto[ok]) ** 2, axis=-1)))
        if d < best_d:
            best, best_d = key, d
    if best is None or best_d > cfg.bg_max_dist:
        return BackgroundGuess(None, None, best_d)
    # framing: the two shots of one set differ in few cells, so compare them on all valid cells
    protos = background_prototypes(h, w, cfg.bg_grid, cfg.bg_max_side)
    framing = min(FRAMINGS, key=lambda f: float(np.sum((feats[ok] - protos[(best[0], f)][ok]) ** 2)))
    return BackgroundGuess(best[0], framing, best_d)


@dataclass(frozen=True)
class Motion:
    """What one character did in one segment."""

    visible: float  # fraction of frames detected
    slope: float  # centroid dx/dt, frame widths per second (NaN if < 3 detections)
    rise: float  # vertical travel (5-95 percentile range of the body's top and bottom, the smaller), fraction of height
    early: float  # visible fraction in the first hide_window of the segment
    late: float  # visible fraction in the last hide_window

    def present(self, cfg: DetectorConfig, hiding: bool = False) -> bool:
        """On screen in >= present_frac of the frames; a character asked to hide only at the start."""
        if hiding:
            return self.visible >= cfg.present_frac or self.early >= 0.5
        return self.visible >= cfg.present_frac

    def satisfies(self, motion: str, cfg: DetectorConfig) -> bool:
        if self.visible < cfg.present_frac and motion != "hide":
            return False
        if motion == "hide":
            return self.early >= 0.5 and self.late <= 0.2
        if np.isnan(self.slope):
            return False
        if motion == "left":
            return self.slope <= -cfg.idle_speed
        if motion == "right":
            return self.slope >= cfg.idle_speed
        if motion == "jump":
            return self.rise >= cfg.jump_rise
        if motion == "still":
            return abs(self.slope) < cfg.idle_speed and self.rise < cfg.jump_rise
        raise ValueError(f"unknown motion {motion!r}; expected left, right, jump, hide or still")

    def label(self, cfg: DetectorConfig) -> str:
        """The motion the detectors see (for reports)."""
        if self.visible < cfg.present_frac and not self.satisfies("hide", cfg):
            return "absent"
        for m in ("hide", "left", "right", "jump", "still"):
            if self.satisfies(m, cfg):
                return m
        return "unclear"


def _spread(x: np.ndarray) -> float:
    return float(np.percentile(x, 95) - np.percentile(x, 5))


def segment_motion(track: CharacterTrack, sl: slice, fps: int, cfg: DetectorConfig) -> Motion:
    det = track.detected[sl]
    n = det.size
    k = max(1, int(round(cfg.hide_window * n)))
    early, late = float(det[:k].mean()), float(det[-k:].mean())
    idx = np.nonzero(det)[0]
    if idx.size < 3:
        return Motion(float(det.mean()), float("nan"), 0.0, early, late)
    # a jump moves both the top and the bottom of the body; an occluder passing in front moves one
    rise = min(_spread(track.top[sl][idx]), _spread(track.bottom[sl][idx]))
    # sideways motion from the frames where it is (nearly) whole: partial occlusion drags the centroid
    area = track.area[sl][idx]
    whole = idx[area >= cfg.whole_frac * np.percentile(area, 90)]
    if whole.size >= 3:
        idx = whole
    slope = float(np.polyfit(idx / fps, track.cx[sl][idx], 1)[0])
    return Motion(float(det.mean()), slope, rise, early, late)
