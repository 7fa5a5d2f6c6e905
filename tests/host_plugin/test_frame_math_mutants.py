"""Frame math behaviour that the first mutation run showed untested (docs/reliability.md, "Mutation testing").

Each test states a rule of host_plugin.core.frame_math that a one-line change broke without any test
failing: error messages that name the argument and what was received, explicit drop-frame choice, empty
ranges, the smallest frame counts and rates, and rates that are real numbers but not Python floats.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import opentimelineio as otio
import pytest

from host_plugin.core.errors import FrameMathError
from host_plugin.core.frame_math import (
    format_timecode,
    rate_to_str,
    rational_time,
    snap_rate,
    time_range,
    to_frames,
)

RT = otio.opentime.RationalTime
NTSC_30 = Fraction(30000, 1001)


@pytest.mark.parametrize(
    "call, needles",
    [
        (lambda: rational_time(2.5, 24), ("frames must be an int", "float 2.5")),
        (lambda: format_timecode(7.0, 24), ("frames must be an int", "float 7.0")),
        (lambda: time_range(0, "48", 24), ("duration must be an int", "str '48'")),
        (lambda: time_range(0.5, 48, 24), ("frames must be an int", "float 0.5")),
        (lambda: to_frames(48, 24), ("expected an opentimelineio RationalTime", "int: 48")),
        (lambda: to_frames(RT(float("nan"), 24), 24), ("time value must be finite", "nan")),
    ],
)
def test_errors_name_the_argument_and_what_was_received(call, needles) -> None:
    # the message starts with the argument's own name, then says what arrived
    with pytest.raises(FrameMathError) as info:
        call()
    message = str(info.value)
    assert message.startswith(needles[0])
    assert needles[1] in message


def test_format_timecode_honours_an_explicit_drop_frame_choice() -> None:
    # one hour of 29.97 video is 107892 frames: drop frame reads 01:00:00;00, non-drop counts nominal frames
    assert format_timecode(107892, NTSC_30, drop_frame=True) == "01:00:00;00"
    assert format_timecode(107892, NTSC_30, drop_frame=False) == "00:59:56:12"
    assert format_timecode(86400, 24, drop_frame=False) == "01:00:00:00"


def test_rate_to_str_writes_the_exact_snapped_rate() -> None:
    assert rate_to_str(23.976) == "24000/1001"
    assert rate_to_str("24") == "24"
    assert rate_to_str(30.5) == "61/2"


def test_rates_away_from_smpte_rates_are_kept_exactly() -> None:
    # OTIO answers 0 as the "nearest SMPTE rate" of slow rates; a positive rate must never become 0
    assert snap_rate(0.004) == Fraction(1, 250)
    assert snap_rate(12) == 12
    assert snap_rate(30.5) == Fraction(61, 2)
    assert snap_rate("12345/1000") == Fraction(12345, 1000)


def test_numpy_rates_snap_like_python_floats() -> None:
    # rates read from arrays or image headers arrive as numpy scalars (np.float32 is no Python float)
    assert snap_rate(np.float32(23.976)) == Fraction(24000, 1001)
    assert snap_rate(np.float64(25.0)) == 25
    assert snap_rate(np.int32(24)) == 24


def test_time_range_accepts_an_empty_range() -> None:
    empty = time_range(86400, 0, 24)
    assert empty.start_time == RT(86400, 24)
    assert empty.duration == RT(0, 24)


def test_to_frames_of_a_single_frame() -> None:
    assert to_frames(RT(1, 24), 24) == 1
    assert to_frames(RT(1, 24), 48) == 2
    assert to_frames(RT(0, 24), 48) == 0
