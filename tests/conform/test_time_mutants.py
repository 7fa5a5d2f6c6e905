"""Retime frame math the mutation run of ttt_engine/conform/time.py found untested (issue #31):
`native_frames_needed` called on its own names the bad rate, and a one-frame shot is a valid shot."""

from __future__ import annotations

from fractions import Fraction

import pytest

from ttt_engine.conform import native_frames_needed, retime_plan


@pytest.mark.parametrize(
    "rate, native_fps, match",
    [
        (Fraction(0), Fraction(8), r"^rate must be > 0 frames per second, got Fraction\(0, 1\)$"),
        ("fast", Fraction(8), r"^rate must be a rational number of frames per second, got 'fast'$"),
        (Fraction(24), Fraction(-8), r"^native_fps must be > 0 frames per second, got Fraction\(-8, 1\)$"),
        (Fraction(24), None, r"^native_fps must be a rational number of frames per second, got None$"),
    ],
)
def test_native_frames_needed_names_the_bad_rate(rate: object, native_fps: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        native_frames_needed(24, rate, native_fps)  # type: ignore[arg-type]


def test_a_one_frame_shot_from_one_native_frame() -> None:
    assert native_frames_needed(1, Fraction(24000, 1001), Fraction(8)) == 1
    (sample,) = retime_plan(1, Fraction(24000, 1001), Fraction(8), 1)
    assert (sample.index, sample.lo, sample.hi, sample.weight, sample.exact) == (0, 0, 0, 0.0, True)


def test_any_positive_rate_is_a_rate() -> None:
    # a slow generation (1 fps, half a frame per second) is still a rate; only <= 0 is refused
    assert native_frames_needed(24, Fraction(24), Fraction(1)) == 2  # 23/24 of a native frame, then frame 1
    assert native_frames_needed(3, Fraction(1, 2), Fraction(1)) == 5  # 2 * 1 / (1/2) = native frame 4


def test_a_too_short_sequence_names_the_native_frames_read() -> None:
    with pytest.raises(ValueError) as caught:
        retime_plan(72, Fraction(24), Fraction(8), 24)
    assert str(caught.value) == (
        "native_count 24 is too short: 72 frames at 24 fps read native frames 0..24 at 8 fps, "
        "so 25 native frames are needed"
    )


@pytest.mark.parametrize("start", [0, 29])
def test_scene_starts_at_either_end_of_the_native_frames_are_accepted(start: int) -> None:
    assert len(retime_plan(24, Fraction(24), Fraction(8), 30, [start])) == 24


@pytest.mark.parametrize("start", [30, -1, 2.0, True])
def test_a_scene_start_outside_the_frames_or_not_an_index_is_refused(start: object) -> None:
    with pytest.raises(ValueError, match=rf"^scene start {start!r} must be a native frame index in 0\.\.29$"):
        retime_plan(24, Fraction(24), Fraction(8), 30, [start])  # type: ignore[list-item]


def test_half_way_across_a_cut_holds_the_later_scene_unmixed() -> None:
    # 24 fps from 12 fps: delivered frame 1 sits exactly half way between native frames 0 and 1
    plan = retime_plan(4, Fraction(24), Fraction(12), 3, scene_starts=[1])
    assert plan[1].position == Fraction(1, 2)
    assert (plan[1].lo, plan[1].hi, plan[1].weight) == (1, 1, 0.0)
    # without the cut it is an even mix of the two
    assert retime_plan(4, Fraction(24), Fraction(12), 3)[1].weight == 0.5
