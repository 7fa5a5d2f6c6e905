"""Which native frames each delivered frame shows: exact rational frame math, no drift.

Delivered frame k shows edit time k / rate from the shot's start, which is native position
k * native_fps / rate. Both rates are Fractions (23.976 is 24000/1001), so every position is exact: a
63-second shot at 23.976 has exactly its 1510 frames and frame 1509 sits where it should, not a
rounding error further on. Nothing here touches pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Sample:
    """Delivered frame `index` = (1 - weight) * native[lo] (+) weight * native[hi].

    lo == hi (weight 0): exactly native frame lo. position: the exact native position k * native / rate.
    """

    index: int
    lo: int
    hi: int
    weight: float
    position: Fraction = Fraction(0)

    @property
    def exact(self) -> bool:
        return self.lo == self.hi


def _check_rate(rate: Fraction, what: str) -> Fraction:
    try:
        value = Fraction(rate)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a rational number of frames per second, got {rate!r}") from exc
    if value <= 0:
        raise ValueError(f"{what} must be > 0 frames per second, got {rate!r}")
    return value


def _check_count(value: int, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return value


def native_position(k: int, rate: Fraction, native_fps: Fraction) -> Fraction:
    """The exact native position (in native frames) of delivered frame k: k * native_fps / rate."""
    return Fraction(k) * Fraction(native_fps) / Fraction(rate)


def native_frames_needed(duration: int, rate: Fraction, native_fps: Fraction) -> int:
    """Native frames a shot of `duration` delivered frames at `rate` reads: ceil(last position) + 1."""
    _check_count(duration, "duration")
    last = native_position(duration - 1, _check_rate(rate, "rate"), _check_rate(native_fps, "native_fps"))
    return math.ceil(last) + 1


def retime_plan(
    duration: int, rate: Fraction, native_fps: Fraction, native_count: int, scene_starts: Sequence[int] = ()
) -> list[Sample]:
    """One Sample per delivered frame 0..duration-1.

    scene_starts: native indices that begin a new scene (segment boundaries with a scene change). A
    position between s - 1 and s for such an s never mixes the two: it holds the nearer side's frame
    (the later one at exactly half way). ValueError when native_count is shorter than
    native_frames_needed, or a scene start is outside the native frames.
    """
    rate = _check_rate(rate, "rate")
    native_fps = _check_rate(native_fps, "native_fps")
    needed = native_frames_needed(duration, rate, native_fps)
    _check_count(native_count, "native_count")
    if native_count < needed:
        raise ValueError(
            f"native_count {native_count} is too short: {duration} frames at {rate} fps read native frames "
            f"0..{needed - 1} at {native_fps} fps, so {needed} native frames are needed"
        )
    starts = set()
    for s in scene_starts:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < native_count:
            raise ValueError(f"scene start {s!r} must be a native frame index in 0..{native_count - 1}")
        starts.add(s)
    plan = []
    for k in range(duration):
        position = native_position(k, rate, native_fps)
        lo = math.floor(position)
        fraction = position - lo
        if fraction == 0:
            plan.append(Sample(k, lo, lo, 0.0, position))
        elif lo + 1 in starts:  # between the last frame of one scene and the first of the next
            nearer = lo if fraction < Fraction(1, 2) else lo + 1
            plan.append(Sample(k, nearer, nearer, 0.0, position))
        else:
            plan.append(Sample(k, lo, lo + 1, float(fraction), position))
    return plan


__all__ = ["Sample", "native_frames_needed", "native_position", "retime_plan"]
