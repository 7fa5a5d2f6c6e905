"""The retime plan: exact frame counts, no drift, no blend across a scene cut, clear errors."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from ttt_engine.conform import native_frames_needed, native_position, retime_plan

NTSC_FILM = Fraction(24000, 1001)


@pytest.mark.parametrize("seconds", [1, 3, 63])
@pytest.mark.parametrize("native_fps", [Fraction(8), Fraction(16)])
def test_exact_frame_counts_and_no_drift_at_23_976(seconds, native_fps):
    duration = math.ceil(seconds * NTSC_FILM)  # the record range of an n-second shot: 24, 72, 1511 frames
    needed = native_frames_needed(duration, NTSC_FILM, native_fps)
    plan = retime_plan(duration, NTSC_FILM, native_fps, needed, ())
    assert len(plan) == duration
    assert [s.index for s in plan] == list(range(duration))
    for s in plan:  # every position exact, from the frame number alone
        assert s.position == Fraction(s.index) * native_fps * Fraction(1001, 24000)
        assert s.lo <= s.position <= s.hi < needed
        assert s.weight == pytest.approx(float(s.position - s.lo))
    last = plan[-1]
    assert last.hi == needed - 1  # the last native frame read is the last one needed
    # a frame-counting float would drift by now; 1001 / 24000 s per frame, exactly
    assert last.position / native_fps == Fraction(duration - 1, 1) / NTSC_FILM


def test_63_seconds_at_23_976_reads_about_63_seconds_of_8_fps():
    duration = math.ceil(63 * NTSC_FILM)
    assert duration == 1511
    needed = native_frames_needed(duration, NTSC_FILM, Fraction(8))
    assert needed == math.ceil(Fraction(1510 * 8 * 1001, 24000)) + 1 == 505


def test_equal_rates_read_each_native_frame_exactly():
    plan = retime_plan(50, Fraction(25), Fraction(25), 50)
    assert all(s.exact and s.lo == s.index and s.weight == 0.0 for s in plan)


def test_native_position_is_a_fraction():
    assert native_position(1001, NTSC_FILM, Fraction(8)) == Fraction(1001 * 8 * 1001, 24000)


@pytest.mark.parametrize("rate", [Fraction(24), NTSC_FILM, Fraction(25), Fraction(30)])
def test_no_sample_mixes_two_scenes(rate):
    native_fps, cut = Fraction(8), 24  # a second segment that starts a new scene at native frame 24
    duration = 2 * math.ceil(3 * rate)
    needed = native_frames_needed(duration, rate, native_fps)
    plan = retime_plan(duration, rate, native_fps, needed, [cut])
    crossing = [s for s in plan if cut - 1 < s.position < cut]
    assert crossing, "some delivered frames fall between the two scenes"
    for s in plan:
        assert not (s.lo < cut <= s.hi), f"frame {s.index} blends native {s.lo} and {s.hi} across the cut"
    for s in crossing:  # held from the nearer side
        assert s.exact and s.lo == (cut - 1 if s.position - (cut - 1) < Fraction(1, 2) else cut)
    # without the cut the same frames would have been mixes
    plain = retime_plan(duration, rate, native_fps, needed, [])
    assert any(plain[s.index].lo < cut <= plain[s.index].hi for s in crossing)


def test_too_short_native_sequence_names_the_count():
    needed = native_frames_needed(72, Fraction(24), Fraction(8))
    assert needed == 25  # 71 * 8 / 24 = 23.67 reads native frames 23 and 24
    with pytest.raises(ValueError, match=r"native_count 24 is too short.*25 native frames are needed"):
        retime_plan(72, Fraction(24), Fraction(8), 24)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"duration": 0}, "duration must be a whole number >= 1, got 0"),
        ({"rate": Fraction(0)}, "rate must be > 0"),
        ({"native_fps": "fast"}, "native_fps must be a rational number.*'fast'"),
        ({"scene_starts": [99]}, "scene start 99 must be a native frame index in 0..29"),
        ({"native_count": 2.5}, "native_count must be a whole number >= 1, got 2.5"),
    ],
)
def test_bad_inputs_name_the_value(kwargs, match):
    args = {
        "duration": 24,
        "rate": Fraction(24),
        "native_fps": Fraction(8),
        "native_count": 30,
        "scene_starts": (),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        retime_plan(**args)
