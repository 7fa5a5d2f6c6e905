"""Frame rates, integer frames and timecode: exact rates in, integer frames out, explicit rounding.

Rules (see docs/shared hosts.md, "Frame-math pitfalls"):
- Every rate that comes in is snapped with OTIO's nearest_smpte_timecode_rate when it is within
  RATE_SNAP_TOLERANCE of a SMPTE rate, so 23.976, 23.98 and 23.976023976... all become 24000/1001.
  The exact rate is kept as a fractions.Fraction.
- A RationalTime becomes frames with round-half-up on the exact value, never OTIO's to_frames or
  rescaled_to (which truncate: RT(100, 24) at 24000/1001 is 99.9 frames and truncates to 99).
- The source rate of a RationalTime is snapped too, so 86400 frames written at 23.976 stay 86400 frames
  at 24000/1001 however long the timeline is (an unsnapped ratio drifts a frame every ~1M frames).
"""

from __future__ import annotations

import math
import numbers
import re
from fractions import Fraction
from typing import Optional, Union

import opentimelineio as otio

from host_plugin.core.errors import FrameMathError

RateLike = Union[int, float, Fraction, str]

RATE_SNAP_TOLERANCE = 0.005  # fps; 23.98 -> 24000/1001, 24 stays 24, 12 stays 12
_MAX_DENOMINATOR = 1001
_TIMECODE = re.compile(r"^\d{1,2}:\d{2}:\d{2}[:;]\d{2,3}$")


def snap_rate(rate: RateLike) -> Fraction:
    """Exact rate for `rate`: the nearest SMPTE rate when within tolerance, else the rate itself.

    Accepts int, float, Fraction or a string such as "24000/1001" or "23.976".
    """
    try:
        value = Fraction(rate) if isinstance(rate, (str, Fraction)) else Fraction(float(rate))
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise FrameMathError(
            f"frame rate {rate!r} is not a number; expected e.g. 24 or '24000/1001'"
        ) from exc
    if not math.isfinite(float(value)) or value <= 0:
        raise FrameMathError(f"frame rate must be a positive finite number, got {rate!r}")
    nearest = otio.opentime.RationalTime.nearest_smpte_timecode_rate(float(value))
    if nearest > 0 and abs(nearest - float(value)) <= RATE_SNAP_TOLERANCE:
        return Fraction(nearest).limit_denominator(_MAX_DENOMINATOR)
    return value.limit_denominator(_MAX_DENOMINATOR * 1000)


def rate_to_str(rate: RateLike) -> str:
    """Serialisable exact rate: "24" or "24000/1001"."""
    return str(snap_rate(rate))


def round_half_up(value: Union[Fraction, float, int]) -> int:
    """Round to the nearest integer, halves away from -inf (2.5 -> 3, -2.5 -> -2); explicit, never truncating."""
    exact = Fraction(value)
    return math.floor(exact + Fraction(1, 2))


def to_frames(time: otio.opentime.RationalTime, rate: RateLike) -> int:
    """Integer frames of `time` at `rate`, rounded (not truncated).

    Both the time's own rate and the target rate are snapped first, so RT(86400, 23.976) is exactly
    86400 frames at 24000/1001 and RT(100, 24) at 24000/1001 is 100 (99.9 rounded), not 99.
    """
    if not isinstance(time, otio.opentime.RationalTime):
        raise FrameMathError(f"expected an opentimelineio RationalTime, got {type(time).__name__}: {time!r}")
    if not math.isfinite(time.value):
        raise FrameMathError(f"time value must be finite, got {time!r}")
    if time.value == 0:
        return 0
    source_rate = snap_rate(time.rate)
    return round_half_up(Fraction(time.value) * snap_rate(rate) / source_rate)


def rational_time(frames: int, rate: RateLike) -> otio.opentime.RationalTime:
    """RationalTime of an integer frame count at an exact rate (stored by OTIO as a float)."""
    _check_int(frames, "frames")
    return otio.opentime.RationalTime(frames, float(snap_rate(rate)))


def time_range(start: int, duration: int, rate: RateLike) -> otio.opentime.TimeRange:
    """TimeRange of integer start and duration frames at an exact rate."""
    _check_int(duration, "duration")
    if duration < 0:
        raise FrameMathError(f"duration must be >= 0 frames, got {duration}")
    return otio.opentime.TimeRange(rational_time(start, rate), rational_time(duration, rate))


def parse_timecode(timecode: str, rate: RateLike) -> int:
    """Frames of a SMPTE timecode ("01:00:00:00"; ";" before frames for drop frame) at `rate`.

    "01:00:00:00" is 86400 at 24 and at 24000/1001 (non-drop counts nominal frames).
    """
    exact = snap_rate(rate)
    if not isinstance(timecode, str) or not _TIMECODE.match(timecode.strip()):
        raise FrameMathError(f"timecode {timecode!r} is not HH:MM:SS:FF (or HH:MM:SS;FF for drop frame)")
    try:
        time = otio.opentime.RationalTime.from_timecode(timecode.strip(), float(exact))
    except ValueError as exc:
        raise FrameMathError(f"timecode {timecode!r} at {exact} fps: {exc}") from exc
    return to_frames(time, exact)


def format_timecode(frames: int, rate: RateLike, drop_frame: Optional[bool] = None) -> str:
    """SMPTE timecode of an absolute frame number; drop frame defaults to OTIO's choice for the rate."""
    _check_int(frames, "frames")
    if frames < 0:
        raise FrameMathError(f"timecode needs frames >= 0, got {frames}")
    exact = float(snap_rate(rate))
    time = otio.opentime.RationalTime(frames, exact)
    if drop_frame is None:
        return time.to_timecode(exact)
    return time.to_timecode(exact, drop_frame)


def _check_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise FrameMathError(f"{name} must be an int number of frames, got {type(value).__name__} {value!r}")
