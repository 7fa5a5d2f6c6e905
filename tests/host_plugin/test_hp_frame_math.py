"""Frame math: exact rates, rounding instead of truncation, timecode."""

from __future__ import annotations

from fractions import Fraction

import opentimelineio as otio
import pytest

from host_plugin.core.errors import FrameMathError
from host_plugin.core.frame_math import (
    format_timecode,
    parse_timecode,
    rational_time,
    round_half_up,
    snap_rate,
    time_range,
    to_frames,
)

RT = otio.opentime.RationalTime
NTSC = Fraction(24000, 1001)


@pytest.mark.parametrize(
    "given, expected",
    [
        (23.976, NTSC),
        (23.98, NTSC),
        (24000 / 1001, NTSC),
        ("24000/1001", NTSC),
        (24, Fraction(24)),
        (25.0, Fraction(25)),
        (29.97, Fraction(30000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (12, Fraction(12)),  # not a SMPTE rate: kept as is, not pulled to 23.976
        (1, Fraction(1)),
    ],
    ids=str,
)
def test_snap_rate(given, expected) -> None:
    assert snap_rate(given) == expected


@pytest.mark.parametrize("bad", [0, -24, "fast", float("nan"), None])
def test_snap_rate_rejects_bad_rates(bad) -> None:
    with pytest.raises(FrameMathError, match="rate"):
        snap_rate(bad)


def test_to_frames_rounds_where_otio_truncates() -> None:
    time = RT(100, 24)
    assert time.rescaled_to(24000 / 1001).to_frames() == 99  # the pitfall this module exists for
    assert to_frames(time, NTSC) == 100


def test_to_frames_treats_23976_and_ntsc_as_one_rate_for_a_day_of_frames() -> None:
    day = 24 * 3600 * 24  # 2,073,600 frames
    assert to_frames(RT(day, 23.976), NTSC) == day
    assert to_frames(RT(day, 24000 / 1001), 23.976) == day
    # an unsnapped ratio would drift by two frames over the day
    assert round(RT(day, 23.976).value_rescaled_to(24000 / 1001)) == day + 2


def test_round_half_up_is_explicit() -> None:
    assert [round_half_up(Fraction(n, 2)) for n in (1, 3, 5, -1, -3)] == [1, 2, 3, 0, -1]
    assert round_half_up(99.9) == 100 and round_half_up(99.4) == 99


def test_rational_time_and_range_keep_integer_frames() -> None:
    assert rational_time(86400, "24000/1001") == RT(86400, 24000 / 1001)
    rng = time_range(1001, 48, 23.976)
    assert (rng.start_time.value, rng.duration.value, rng.duration.rate) == (1001, 48, 24000 / 1001)
    with pytest.raises(FrameMathError, match="int number of frames"):
        rational_time(10.5, 24)
    with pytest.raises(FrameMathError, match="duration must be >= 0"):
        time_range(0, -1, 24)


@pytest.mark.parametrize(
    "timecode, rate, frames",
    [
        ("01:00:00:00", 24, 86400),
        ("01:00:00:00", 23.976, 86400),
        ("00:00:00:00", 25, 0),
        ("10:00:00:12", 24000 / 1001, 864012),
        ("01:00:00;00", 29.97, 107892),
    ],
)
def test_timecode_round_trip(timecode, rate, frames) -> None:
    assert parse_timecode(timecode, rate) == frames
    assert format_timecode(frames, rate) == timecode


@pytest.mark.parametrize(
    "bad, match",
    [("1h", "not HH:MM:SS:FF"), ("01:00:00:30", "frames beyond"), ("01:00:00;00", "drop frame")],
)
def test_parse_timecode_errors_name_the_input(bad, match) -> None:
    with pytest.raises(FrameMathError, match=match) as info:
        parse_timecode(bad, 24)
    assert bad in str(info.value)


def test_format_timecode_rejects_negative_frames() -> None:
    with pytest.raises(FrameMathError, match="frames >= 0"):
        format_timecode(-1, 24)
