"""Numpy rasteriser for the toon world: sprites and backgrounds from simple shapes, hard edges.

Sprites are built once per (character, pixel height, leg phase, moving, facing, detail) from a list
of parts (ellipses, polygons, thick polylines) with a dark cartoon outline: in large frames each part
is drawn over a copy of itself grown by the outline width (inner lines, eye whites); in small frames
one outline goes around the silhouette so the body colour dominates a sprite of 10-30 pixels. Backgrounds are evaluated on the pixel
grid in world coordinates (the close-up zooms about (0.5, GROUND_Y)). Everything is cached, so a frame
is a background copy plus a few boolean-mask pastes. No anti-aliasing: a character's body pixels are
exactly its palette colour, which is what the detectors key on.

Output frames: float32 [T, H, W, 3], display (sRGB-like) values in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ttt_engine.storyboard import SEGMENT_SECONDS

from .world import (
    BACKGROUNDS,
    CHARACTERS,
    EXTRA_CHARACTERS,
    FRAMINGS,
    GROUND_Y,
    HAT_COLOURS,
    Episode,
    SegmentPlan,
    actor_track,
    draw_rank,
    get_character,
)

OUTLINE: tuple[float, float, float] = (0.08, 0.06, 0.10)
WHITE = (0.98, 0.98, 0.98)
BLACK = (0.05, 0.05, 0.07)
PINK = (0.95, 0.68, 0.74)
LEG_STEPS_PER_SECOND = 8
DETAIL_FRAME_HEIGHT = 240  # frames at least this tall get sprites with inner outlines and eye whites
HAT_HALF_WIDTH = 0.26  # the memory variant's hat crown, in sprite heights (the mouse's is scaled up)
HAT_HEIGHT = 0.45


def frames_per_segment(fps: int) -> int:
    """Frames in one 3-s segment at an integer fps."""
    if not isinstance(fps, int | np.integer) or fps < 1:
        raise ValueError(f"fps: expected a positive int, got {fps!r}")
    return SEGMENT_SECONDS * int(fps)


def _check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int | np.integer) or v < 16:
            raise ValueError(f"{name}: expected an int >= 16 pixels, got {v!r}")


# ----------------------------------------------------------------------------- shapes
# Each shape maps sprite coordinates (u, v) (v = 0 top .. 1 ground, u = 0 .. aspect, facing right)
# and a grow distance g (for outlines) to a boolean mask.


@dataclass(frozen=True)
class Ellipse:
    cx: float
    cy: float
    rx: float
    ry: float

    def mask(self, u: np.ndarray, v: np.ndarray, g: float) -> np.ndarray:
        return ((u - self.cx) / (self.rx + g)) ** 2 + ((v - self.cy) / (self.ry + g)) ** 2 <= 1.0


def _seg_dist(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    s = np.clip(((u - ax) * dx + (v - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(u - ax - s * dx, v - ay - s * dy)


@dataclass(frozen=True)
class Polygon:
    pts: tuple[tuple[float, float], ...]  # convex, any winding

    def mask(self, u: np.ndarray, v: np.ndarray, g: float) -> np.ndarray:
        n = len(self.pts)
        crosses = []
        for i in range(n):
            (x0, y0), (x1, y1) = self.pts[i], self.pts[(i + 1) % n]
            crosses.append((x1 - x0) * (v - y0) - (y1 - y0) * (u - x0))
        c = np.stack(crosses)
        inside = np.all(c >= 0, axis=0) | np.all(c <= 0, axis=0)
        if g <= 0:
            return inside
        dist = np.min([_seg_dist(u, v, self.pts[i], self.pts[(i + 1) % n]) for i in range(n)], axis=0)
        return inside | (dist <= g)


@dataclass(frozen=True)
class Stroke:
    pts: tuple[tuple[float, float], ...]
    r: float

    def mask(self, u: np.ndarray, v: np.ndarray, g: float) -> np.ndarray:
        d = np.min([_seg_dist(u, v, self.pts[i], self.pts[i + 1]) for i in range(len(self.pts) - 1)], axis=0)
        return d <= self.r + g


Part = tuple[object, tuple[float, float, float], bool]  # shape, colour, outlined


def _legs(hips: tuple[float, ...], top: float, r: float, phase: int, moving: bool, colour) -> list[Part]:
    swing = (0.0, 0.06, 0.0, -0.06)[phase % 4] if moving else 0.0
    parts = []
    for i, hx in enumerate(hips):
        dx = swing if i % 2 == 0 else -swing
        parts.append((Stroke(((hx, top), (hx + dx, 1.0 - r)), r), colour, True))
    return parts


def _eye(cx: float, cy: float, r: float) -> list[Part]:
    return [
        (Ellipse(cx, cy, r, r * 1.3), WHITE, True),
        (Ellipse(cx + r * 0.4, cy, r * 0.5, r * 0.7), BLACK, False),
    ]


def _cat_parts(phase: int, moving: bool) -> list[Part]:
    body = CHARACTERS["cat"].body
    light = (0.85, 0.88, 0.95)
    p: list[Part] = [(Stroke(((0.26, 0.55), (0.12, 0.46), (0.07, 0.3), (0.13, 0.14)), 0.035), body, True)]
    p += _legs((0.34, 0.78), 0.6, 0.05, phase + 1, moving, body)
    p += [(Ellipse(0.56, 0.6, 0.31, 0.17), body, True), (Ellipse(0.58, 0.68, 0.18, 0.07), light, False)]
    p += _legs((0.44, 0.68), 0.62, 0.055, phase, moving, body)
    p += [
        (Polygon(((0.79, 0.3), (0.83, 0.03), (0.94, 0.22))), body, True),
        (Polygon(((0.97, 0.22), (1.1, 0.04), (1.12, 0.3))), body, True),
        (Ellipse(0.96, 0.36, 0.19, 0.17), body, True),
        (Polygon(((0.83, 0.24), (0.845, 0.1), (0.9, 0.21))), PINK, False),
        (Ellipse(1.04, 0.44, 0.1, 0.065), light, True),
        (Ellipse(1.12, 0.41, 0.03, 0.025), PINK, False),
    ]
    p += _eye(0.92, 0.31, 0.04) + _eye(1.02, 0.31, 0.04)
    return p


def _mouse_parts(phase: int, moving: bool) -> list[Part]:
    body = CHARACTERS["mouse"].body
    p: list[Part] = [
        (Stroke(((0.26, 0.78), (0.12, 0.74), (0.05, 0.6), (0.1, 0.48)), 0.03), (0.9, 0.6, 0.62), False)
    ]
    p += _legs((0.42, 0.72), 0.78, 0.06, phase, moving, body)
    p += [
        (Ellipse(0.55, 0.68, 0.3, 0.2), body, True),
        (Ellipse(0.6, 0.77, 0.17, 0.08), (0.86, 0.72, 0.52), False),
        (Ellipse(0.78, 0.24, 0.16, 0.16), body, True),
        (Ellipse(0.78, 0.24, 0.09, 0.09), PINK, False),
        (Ellipse(1.0, 0.48, 0.22, 0.2), body, True),
        (Ellipse(1.05, 0.2, 0.16, 0.16), body, True),
        (Ellipse(1.05, 0.2, 0.09, 0.09), PINK, False),
        (Ellipse(1.2, 0.52, 0.045, 0.045), BLACK, False),
    ]
    p += _eye(1.02, 0.43, 0.05)
    return p


def _dog_parts(phase: int, moving: bool) -> list[Part]:
    body = CHARACTERS["dog"].body
    ear = (0.85, 0.55, 0.15)
    p: list[Part] = [(Stroke(((0.22, 0.5), (0.12, 0.34), (0.1, 0.22)), 0.04), body, True)]
    p += _legs((0.3, 0.74), 0.6, 0.055, phase + 1, moving, body)
    p += [(Ellipse(0.52, 0.58, 0.33, 0.18), body, True)]
    p += _legs((0.4, 0.64), 0.62, 0.06, phase, moving, body)
    p += [
        (Stroke(((0.8, 0.42), (0.86, 0.6)), 0.045), (0.85, 0.15, 0.15), True),
        (Ellipse(0.98, 0.33, 0.2, 0.18), body, True),
        (Ellipse(1.13, 0.42, 0.14, 0.085), (1.0, 0.95, 0.82), True),
        (Ellipse(1.25, 0.38, 0.045, 0.04), BLACK, False),
        (Ellipse(0.86, 0.38, 0.07, 0.16), ear, True),
    ]
    p += _eye(1.0, 0.28, 0.045)
    return p


def _zorp_parts(phase: int, moving: bool) -> list[Part]:
    """The extra character (never in a base dataset): a round violet body, two antennae, one big eye."""
    body = EXTRA_CHARACTERS["zorp"].body
    tip = (0.98, 0.55, 0.15)
    p: list[Part] = _legs((0.35, 0.65), 0.8, 0.06, phase, moving, body)
    p += [
        (Stroke(((0.38, 0.3), (0.28, 0.08)), 0.025), body, True),
        (Stroke(((0.62, 0.3), (0.72, 0.08)), 0.025), body, True),
        (Ellipse(0.28, 0.08, 0.06, 0.06), tip, True),
        (Ellipse(0.72, 0.08, 0.06, 0.06), tip, True),
        (Ellipse(0.5, 0.56, 0.36, 0.3), body, True),
    ]
    p += _eye(0.62, 0.48, 0.09)
    return p


_PARTS = {"cat": _cat_parts, "mouse": _mouse_parts, "dog": _dog_parts, "zorp": _zorp_parts}

# Where a hat sits on each cast member's head, in sprite units: (head centre u, brim v, crown half-width,
# crown height). The hat is big on purpose: the memory variant's cue must survive the model's VAE (4 x 4
# pixels a latent cell), so its crown spans whole latent cells at 64 x 64 (tests/eval/test_eval_memory.py
# measures the round trip); the small mouse gets a hat as large as the others' in pixels.
_HAT_PLACE = {
    "cat": (0.96, 0.21, HAT_HALF_WIDTH, HAT_HEIGHT),
    "mouse": (1.0, 0.3, HAT_HALF_WIDTH * 1.8, HAT_HEIGHT * 1.8),
    "dog": (0.98, 0.17, HAT_HALF_WIDTH, HAT_HEIGHT),
}


def _hat_parts(character: str, colour: str) -> list[Part]:
    """A top hat of a HAT_COLOURS colour on the character's head (the memory variant's appearance)."""
    if character not in _HAT_PLACE:
        raise ValueError(f"hat: only {sorted(_HAT_PLACE)} wear hats, got {character!r}")
    if colour not in HAT_COLOURS:
        raise ValueError(f"hat colour: expected one of {sorted(HAT_COLOURS)}, got {colour!r}")
    cu, brim, half, tall = _HAT_PLACE[character]
    rgb = HAT_COLOURS[colour]
    crown = Polygon(
        ((cu - half, brim - tall), (cu + half, brim - tall), (cu + half, brim), (cu - half, brim))
    )
    return [(crown, rgb, True), (Ellipse(cu, brim, 1.4 * half, 0.06), rgb, True)]


def _headroom(character: str, hat: str) -> float:
    """Sprite units above v = 0 that the hat needs (0 without one)."""
    if not hat:
        return 0.0
    _, brim, _, tall = _HAT_PLACE[character]
    return max(0.0, tall - brim)


def sprite_detail(frame_height: int) -> bool:
    """Whether sprites in frames this tall are drawn detailed (one style per resolution, both framings)."""
    return frame_height >= DETAIL_FRAME_HEIGHT


@lru_cache(maxsize=512)
def sprite(
    character: str,
    pixel_height: int,
    phase: int,
    moving: bool,
    facing: int,
    detail: bool = False,
    hat: str = "",
) -> tuple[np.ndarray, np.ndarray, int]:
    """(rgb [h, w, 3] float32, mask [h, w] bool, pad) of a character `pixel_height` pixels tall.

    The ground contact is at row `pad + pixel_height`; the horizontal centre at column w // 2.
    detail: inner outlines and eye whites (large frames); otherwise one silhouette outline, so the
    body colour dominates a small sprite. hat: a HAT_COLOURS name ("" none), drawn over the head.
    """
    ch = get_character(character)
    hp = max(4, int(pixel_height))
    ow = max(1, round(0.045 * hp))  # outline width in pixels
    pad = ow + 1 + int(np.ceil(_headroom(character, hat) * hp))  # rows above v = 0 (room for a hat)
    wp = int(round(ch.aspect * hp))
    h, w = hp + pad + ow + 1, wp + 2 * (ow + 1)
    v, u = np.mgrid[0:h, 0:w] + 0.5
    v, u = (v - pad) / hp, (u - ow - 1) / hp  # sprite units
    rgb = np.zeros((h, w, 3), np.float32)
    mask = np.zeros((h, w), bool)
    g = ow / hp
    parts = _PARTS[character](phase, moving) + (_hat_parts(character, hat) if hat else [])
    if detail:
        # large: every outlined part gets its own outline (cartoon inner lines)
        for shape, colour, outlined in parts:
            if outlined:
                m = shape.mask(u, v, g)
                rgb[m] = OUTLINE
                mask |= m
            m = shape.mask(u, v, 0.0)
            rgb[m] = colour
            mask |= m
    else:
        # small: one outline around the silhouette, no eye whites, so the body colour dominates
        for shape, _, outlined in parts:
            if outlined:
                mask |= shape.mask(u, v, g)
        rgb[mask] = OUTLINE
        for shape, colour, _ in parts:
            if colour == WHITE:
                continue
            m = shape.mask(u, v, 0.0)
            rgb[m] = colour
            mask |= m
    if facing < 0:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    rgb.setflags(write=False)
    mask.setflags(write=False)
    return rgb, mask, pad


def sprite_pixel_height(character: str, framing: str, height: int) -> int:
    return max(4, int(round(get_character(character).height * FRAMINGS[framing] * height)))


# ----------------------------------------------------------------------------- backgrounds


def _rect(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def _paint(img: np.ndarray, m: np.ndarray, colour) -> None:
    img[m] = colour


def _kitchen(x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
    img = np.empty(x.shape + (3,), np.float32)
    img[:] = (0.96, 0.93, 0.82)  # cream wall
    tiles = (y >= 0.48) & (y < GROUND_Y)
    _paint(img, tiles, (0.70, 0.88, 0.86))
    grout = tiles & ((np.mod(y, 0.08) < 0.012) | (np.mod(x * a, 0.08) < 0.012))
    _paint(img, grout, (0.92, 0.95, 0.93))
    win = _rect(x, y, 0.28, 0.56, 0.1, 0.38)
    _paint(img, win, WHITE)
    _paint(img, _rect(x, y, 0.30, 0.54, 0.125, 0.355), (0.62, 0.84, 0.98))
    _paint(img, win & ((np.abs(x - 0.42) < 0.01) | (np.abs(y - 0.24) < 0.012)), WHITE)
    floor = y >= GROUND_Y
    checker = (np.floor(x * a / 0.1) + np.floor((y - GROUND_Y) / 0.06)) % 2 == 0
    _paint(img, floor, (0.95, 0.95, 0.95))
    _paint(img, floor & checker, (0.55, 0.80, 0.60))
    _paint(img, np.abs(y - GROUND_Y) < 0.008, (0.35, 0.45, 0.40))
    return img


def _garden(x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
    img = np.empty(x.shape + (3,), np.float32)
    s = np.clip(y / 0.55, 0, 1)[..., None]
    img[:] = (1 - s) * np.array((0.50, 0.76, 0.96)) + s * np.array((0.75, 0.90, 1.0))  # sky
    _paint(img, ((x - 0.8) * a) ** 2 + (y - 0.14) ** 2 < 0.07**2, (1.0, 0.98, 0.72))  # pale sun
    _paint(img, ((x - 0.25) * a / 2.2) ** 2 + (y - 0.16) ** 2 < 0.05**2, WHITE)  # cloud
    hedge = (y >= 0.5) & (y < GROUND_Y)
    _paint(img, hedge, (0.20, 0.45, 0.22))
    pickets = hedge & (np.mod(x * a, 0.1) < 0.06) & (y >= 0.52 - 0.03 * (np.mod(x * a, 0.1) < 0.03))
    _paint(img, pickets, (0.97, 0.95, 0.90))
    _paint(img, hedge & (np.abs(y - 0.6) < 0.012), (0.97, 0.95, 0.90))
    grass = y >= GROUND_Y
    _paint(img, grass, (0.35, 0.72, 0.30))
    _paint(img, grass & (np.mod(x * a + 0.5 * y, 0.12) < 0.04), (0.30, 0.64, 0.27))
    flowers = (np.abs(y - (GROUND_Y - 0.03)) < 0.02) & (np.mod(x * a + 0.03, 0.23) < 0.035)
    _paint(img, flowers, (0.92, 0.25, 0.40))
    return img


def _living_room(x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
    img = np.empty(x.shape + (3,), np.float32)
    img[:] = (0.82, 0.62, 0.68)  # wallpaper
    _paint(img, (y < GROUND_Y) & (np.mod(x * a, 0.1) < 0.035), (0.76, 0.55, 0.62))
    frame = _rect(x, y, 0.18, 0.42, 0.14, 0.4)
    _paint(img, frame, (0.40, 0.22, 0.12))
    inner = _rect(x, y, 0.2, 0.4, 0.165, 0.375)
    _paint(img, inner, (0.65, 0.85, 0.95))
    _paint(img, inner & (y > 0.3 - 0.1 * np.sin((x - 0.2) * 12)), (0.30, 0.60, 0.30))
    _paint(img, _rect(x, y, 0.6, 0.64, 0.1, 0.55), (0.98, 0.94, 0.80))  # lamp light strip
    _paint(img, (y >= GROUND_Y - 0.035) & (y < GROUND_Y), (0.97, 0.95, 0.92))  # skirting board
    floor = y >= GROUND_Y
    _paint(img, floor, (0.45, 0.28, 0.52))
    rug = floor & (((x - 0.5) * a / 0.35) ** 2 + ((y - 0.9) / 0.07) ** 2 < 1)
    _paint(img, rug, (0.36, 0.20, 0.44))
    return img


def _night_street(x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
    img = np.empty(x.shape + (3,), np.float32)
    s = np.clip(y / 0.6, 0, 1)[..., None]
    img[:] = (1 - s) * np.array((0.04, 0.05, 0.16)) + s * np.array((0.10, 0.10, 0.26))
    stars = (np.mod(x * a * 7.3, 1.0) < 0.06) & (np.mod(y * 9.1 + x * 3, 1.0) < 0.06) & (y < 0.35)
    _paint(img, stars, (0.9, 0.9, 0.95))
    _paint(img, ((x - 0.78) * a) ** 2 + (y - 0.15) ** 2 < 0.065**2, (0.96, 0.95, 0.85))  # moon
    col = np.floor(x * a / 0.18)
    top = 0.3 + 0.15 * np.mod(col * 0.618, 1.0)
    bld = (y >= top) & (y < GROUND_Y)
    _paint(img, bld, (0.22, 0.20, 0.32))
    lit = bld & (np.mod(x * a, 0.09) < 0.035) & (np.mod(y, 0.1) < 0.045) & (np.mod(col, 3) != 1)
    _paint(img, lit, (1.0, 0.92, 0.55))
    _paint(img, (y >= GROUND_Y - 0.04) & (y < GROUND_Y + 0.05), (0.42, 0.42, 0.46))  # pavement
    road = y >= GROUND_Y + 0.05
    _paint(img, road, (0.20, 0.20, 0.23))
    _paint(img, road & (np.abs(y - 0.93) < 0.01) & (np.mod(x * a, 0.2) < 0.1), (0.9, 0.9, 0.9))
    _paint(img, _rect(x, y, 0.56, 0.575, 0.25, GROUND_Y), (0.15, 0.15, 0.18))  # lamp post
    _paint(img, ((x - 0.567) * a) ** 2 + ((y - 0.24) / 1.2) ** 2 < 0.035**2, (1.0, 0.97, 0.8))
    return img


_BACKDROPS = {
    "kitchen": _kitchen,
    "garden": _garden,
    "living_room": _living_room,
    "night_street": _night_street,
}


def _prop_shapes(bg: str) -> list[tuple[object, tuple[float, float, float]]]:
    """The hiding prop in its own units: u across (0..1 = prop width), v up from 0 top .. 1 bottom."""
    if bg == "kitchen":  # fridge
        return [
            (Polygon(((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))), (0.90, 0.93, 0.97)),
            (Polygon(((0.0, 0.36), (1.0, 0.36), (1.0, 0.38), (0.0, 0.38))), (0.72, 0.74, 0.78)),
            (Polygon(((0.12, 0.15), (0.17, 0.15), (0.17, 0.3), (0.12, 0.3))), (0.72, 0.74, 0.78)),
        ]
    if bg == "garden":  # bush
        green = (0.15, 0.50, 0.20)
        return [
            (Ellipse(cx, cy, r, r * 1.1), green)
            for cx, cy, r in ((0.3, 0.6, 0.3), (0.7, 0.6, 0.3), (0.5, 0.35, 0.32))
        ] + [(Polygon(((0.05, 0.6), (0.95, 0.6), (0.95, 1.0), (0.05, 1.0))), green)]
    if bg == "living_room":  # sofa / armchair
        teal, dark = (0.18, 0.55, 0.58), (0.12, 0.42, 0.45)
        return [
            (Polygon(((0.1, 0.0), (0.9, 0.0), (0.9, 0.7), (0.1, 0.7))), teal),
            (Polygon(((0.0, 0.45), (1.0, 0.45), (1.0, 0.92), (0.0, 0.92))), dark),
            (Polygon(((0.05, 0.92), (0.12, 0.92), (0.12, 1.0), (0.05, 1.0))), (0.3, 0.2, 0.15)),
            (Polygon(((0.88, 0.92), (0.95, 0.92), (0.95, 1.0), (0.88, 1.0))), (0.3, 0.2, 0.15)),
        ]
    grey = (0.40, 0.48, 0.42)  # trash can
    return [
        (Polygon(((0.1, 0.12), (0.9, 0.12), (0.82, 1.0), (0.18, 1.0))), grey),
        (Polygon(((0.0, 0.03), (1.0, 0.03), (1.0, 0.14), (0.0, 0.14))), (0.45, 0.6, 0.45)),
    ]


# prop (width, height) as fractions of the frame height; PROP_VISIBLE of its width is on screen
_PROP_SIZE = {
    "kitchen": (0.22, 0.5),
    "garden": (0.28, 0.3),
    "living_room": (0.3, 0.3),
    "night_street": (0.2, 0.3),
}
PROP_VISIBLE = 0.65


@lru_cache(maxsize=64)
def background_layers(
    bg: str, framing: str, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """(set [H, W, 3] float32 with the prop, prop mask [h, w] bool, prop region slices) for one shot.

    The prop is drawn over the characters (it is in front of them). It is a foreground object at the
    background's `prop_side` edge, partly off screen, the same size in both framings (so a close-up
    never buries the stage behind it).
    """
    if bg not in BACKGROUNDS:
        raise ValueError(f"unknown background {bg!r}; expected one of {sorted(BACKGROUNDS)}")
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; expected one of {sorted(FRAMINGS)}")
    _check_size(height, width)
    z = FRAMINGS[framing]
    a = width / height
    ys, xs = (np.mgrid[0:height, 0:width] + 0.5) / np.array([height, width])[:, None, None]
    xw = 0.5 + (xs - 0.5) / z  # world coordinates under the zoom about (0.5, GROUND_Y)
    yw = GROUND_Y + (ys - GROUND_Y) / z
    img = _BACKDROPS[bg](xw, yw, a)
    pw, ph = _PROP_SIZE[bg]
    pw_px, ph_px = pw * height, ph * height
    side = BACKGROUNDS[bg].prop_side
    x_left = width - PROP_VISIBLE * pw_px if side > 0 else -(1 - PROP_VISIBLE) * pw_px
    y_top = (GROUND_Y + 0.06) * height - ph_px
    u = (np.arange(width) + 0.5 - x_left) / pw_px
    v = (np.arange(height) + 0.5 - y_top) / ph_px
    vv, uu = np.meshgrid(v, u, indexing="ij")
    prop_rgb = np.zeros((height, width, 3), np.float32)
    prop_mask = np.zeros((height, width), bool)
    g = max(1.0, round(0.012 * height)) / pw_px
    for shape, colour in _prop_shapes(bg):
        m = shape.mask(uu, vv, g)
        prop_rgb[m] = OUTLINE
        prop_mask |= m
        m = shape.mask(uu, vv, 0.0)
        prop_rgb[m] = colour
    rows, cols = np.nonzero(prop_mask)
    region = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    img[prop_mask] = prop_rgb[prop_mask]  # so `backdrop` alone shows the full empty set
    out = (img, prop_mask[region].copy(), region)
    for arr in out[:2]:
        arr.setflags(write=False)
    return out


def render_background(bg: str, framing: str, height: int, width: int) -> np.ndarray:
    """The empty set of one shot, prop included: float32 [H, W, 3]."""
    return background_layers(bg, framing, height, width)[0].copy()


# ----------------------------------------------------------------------------- frames


def _paste(frame: np.ndarray, rgb: np.ndarray, mask: np.ndarray, top: int, left: int) -> None:
    h, w = mask.shape
    H, W = frame.shape[:2]
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, H), min(left + w, W)
    if t1 <= t0 or l1 <= l0:
        return
    m = mask[t0 - top : t1 - top, l0 - left : l1 - left]
    frame[t0:t1, l0:l1][m] = rgb[t0 - top : t1 - top, l0 - left : l1 - left][m]


def render_segment_and_matte(
    seg: SegmentPlan,
    height: int,
    width: int,
    fps: int,
    frame_offset: int = 0,
    hats: dict[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One 3-s segment and its subject matte: float32 [3*fps, H, W, 3] and bool [3*fps, H, W].

    hats: character -> HAT_COLOURS name for the characters that wear one (an Episode's `hats`).

    The matte is True on every visible character pixel (after the prop is drawn in front of them), the
    shape a compositor's roto matte of the characters would have; training can weight its loss by it."""
    n = frames_per_segment(fps)
    _check_size(height, width)
    img, prop_mask, region = background_layers(seg.background, seg.framing, height, width)
    prop_pixels = img[region][prop_mask]
    out = np.empty((n, height, width, 3), np.float32)
    out[:] = img
    matte = np.zeros((n, height, width), bool)
    actors = sorted(seg.actors, key=lambda a: draw_rank(a.character))
    tracks = [actor_track(a, seg.framing, n, width / height) for a in actors]
    detail = sprite_detail(height)
    for actor, tr in zip(actors, tracks):
        hp = sprite_pixel_height(actor.character, seg.framing, height)
        for t in range(n):
            if not tr.visible[t]:
                continue
            phase = ((frame_offset + t) * LEG_STEPS_PER_SECOND // fps) % 4
            rgb, mask, pad = sprite(
                actor.character,
                hp,
                int(phase),
                bool(tr.moving[t]),
                int(tr.facing[t]),
                detail,
                (hats or {}).get(actor.character, ""),
            )
            bottom = GROUND_Y * height - tr.lift[t] * height
            top = int(round(bottom)) - (pad + hp)
            left = int(round(tr.x[t] * width)) - mask.shape[1] // 2
            _paste(out[t], rgb, mask, top, left)
            _paste(matte[t], mask, mask, top, left)
    out[:, region[0], region[1]][:, prop_mask] = prop_pixels  # prop in front of the characters
    matte[:, region[0], region[1]][:, prop_mask] = False
    return out, matte


def render_segment(
    seg: SegmentPlan,
    height: int,
    width: int,
    fps: int,
    frame_offset: int = 0,
    hats: dict[str, str] | None = None,
) -> np.ndarray:
    """One 3-s segment: float32 [3*fps, H, W, 3] (hats: as render_segment_and_matte's)."""
    return render_segment_and_matte(seg, height, width, fps, frame_offset, hats)[0]


def render_episode_and_matte(
    episode: Episode, height: int = 64, width: int = 64, fps: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """All segments back to back: frames float32 [T, H, W, 3] in [0, 1] and the subject matte bool [T, H, W]."""
    n = frames_per_segment(fps)
    parts = [
        render_segment_and_matte(s, height, width, fps, frame_offset=i * n, hats=dict(episode.hats))
        for i, s in enumerate(episode.segments)
    ]
    return np.concatenate([f for f, _ in parts]), np.concatenate([m for _, m in parts])


def render_episode(episode: Episode, height: int = 64, width: int = 64, fps: int = 8) -> np.ndarray:
    """All segments back to back: float32 [n_segments * 3 * fps, H, W, 3] in [0, 1]."""
    return render_episode_and_matte(episode, height, width, fps)[0]


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float [.., 3] in [0, 1] -> uint8 (round to nearest)."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
