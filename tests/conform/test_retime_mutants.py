"""Retime behaviour the mutation run of ttt_engine/conform/retime.py found untested (issue #31).

Most of it is flow interpolation with flows given exactly (a uniform pan, flows that do or do not
cancel) and flat frames, so every delivered pixel has one right value: which side of a pan sees a pixel
at the frame's edges, how the two sides are weighted, when a pixel is unseen, and when a frame falls
back to a blend. The rest: weights 0 and 1, float32 results, flow guides, the flow settings honoured,
and errors that name the bad value."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ttt_engine.conform import interpolate
from ttt_engine.conform.retime import FlowConfig, FlowPair, blend, compute_flows, flow_interpolate, guide

from .scene import DiscScene

SIZE = 16


def _pan(dx: float, dy: float, back: tuple[float, float] | None = None, size: int = SIZE) -> FlowPair:
    """Uniform flows: A -> B moves every pixel by (dx, dy); B -> A by `back` (default: exactly back)."""
    bx, by = back if back is not None else (-dx, -dy)
    forward = np.broadcast_to(np.float32((dx, dy)), (size, size, 2)).copy()
    backward = np.broadcast_to(np.float32((bx, by)), (size, size, 2)).copy()
    return FlowPair(forward, backward)


def _flat(value: float, channels: int = 3, size: int = SIZE) -> np.ndarray:
    return np.full((size, size, channels), value, np.float32)


@pytest.mark.parametrize("axis", [0, 1], ids=["x", "y"])
def test_a_pan_is_seen_from_whichever_frame_holds_each_edge_pixel(axis):
    # a 3 px pan half way: frame A sees a pixel at index i from i - 1.5, frame B from i + 1.5 (the
    # frame spans -0.5 .. SIZE - 0.5). Index 0 is only in B, the last index only in A, the rest in both
    # (mixed half and half); A is black and B white, so each pixel shows which frames saw it
    flows = _pan(3.0, 0.0) if axis == 0 else _pan(0.0, 3.0)
    frame, fallback = flow_interpolate(_flat(0.0), _flat(1.0), 0.5, flows)
    assert not fallback and frame.dtype == np.float32
    line = frame[0, :, 0] if axis == 0 else frame[:, 0, 0]
    expected = np.full(SIZE, 0.5, np.float32)
    expected[0], expected[-1] = 1.0, 0.0
    np.testing.assert_allclose(line, expected, atol=1e-6)
    across = frame[:, 0, 0] if axis == 0 else frame[0, :, 0]  # along the other axis nothing changes
    np.testing.assert_allclose(across, expected[0], atol=1e-6)


@pytest.mark.parametrize("weight", [0.25, 0.5, 0.75])
def test_two_clear_sides_mix_by_time(weight):
    frame, fallback = flow_interpolate(_flat(0.2), _flat(1.0), weight, _pan(0.0, 0.0))
    assert not fallback
    np.testing.assert_allclose(frame, 0.2 + 0.8 * weight, atol=1e-6)


def test_a_pan_of_a_flat_colour_keeps_the_colour_up_to_the_edges():
    # sources a fraction of a pixel inside the frame must not be mixed with black beyond the edge
    frame, fallback = flow_interpolate(_flat(0.6), _flat(0.6), 0.5, _pan(2.3, 1.7))
    assert not fallback
    np.testing.assert_allclose(frame, 0.6, atol=1e-6)


def test_a_matte_interpolates_with_its_single_channel():
    frame, fallback = flow_interpolate(_flat(0.0, 1), _flat(1.0, 1), 0.25, _pan(0.0, 0.0))
    assert frame.shape == (SIZE, SIZE, 1) and not fallback
    np.testing.assert_allclose(frame, 0.25, atol=1e-6)


@pytest.mark.parametrize(
    "back",
    [
        # each flow is 22.4 px long, so they must cancel to within 0.75 + 0.1 x 22.4 = 2.99 px; these
        # miss by 2.5 px (mostly along x) and by 2.5 px (mostly along y)
        (-18.0, -8.5),
        (-18.5, -8.0),
    ],
)
def test_flows_that_cancel_within_the_relative_tolerance_are_consistent(back):
    size = 64
    flows = _pan(20.0, 10.0, back, size=size)
    frame, fallback = flow_interpolate(_flat(0.0, size=size), _flat(1.0, size=size), 0.5, flows)
    assert not fallback
    # the middle of the frame is seen from both sides, evenly
    np.testing.assert_allclose(frame[24:40, 24:40], 0.5, atol=1e-6)


def test_exact_flows_are_found_and_consistent_with_zero_tolerances():
    exact = FlowConfig(converge_px=0.0, consistency_px=0.0, consistency_rel=0.0, max_unreliable=0.0)
    frame, fallback = flow_interpolate(_flat(0.0), _flat(1.0), 0.25, _pan(0.0, 0.0), exact)
    assert not fallback
    np.testing.assert_allclose(frame, 0.25, atol=1e-6)


def test_inconsistent_flows_without_a_fallback():
    # flows that do not cancel (both move right by 4): no side is consistent anywhere. With fallback
    # disabled (max_unreliable 1.0) each pixel still mixes its sides by time; pixels that neither side
    # finds inside the frame (the left edge: 4 x 0.5 = 2 columns) keep the plain blend of A and B
    size = 16
    a = np.repeat(np.linspace(0.0, 0.5, size, dtype=np.float32)[None, :, None], size, axis=0)
    a = np.repeat(a, 3, axis=2)
    b = a + 0.5
    frame, fallback = flow_interpolate(a, b, 0.5, _pan(4.0, 0.0, (4.0, 0.0)), FlowConfig(max_unreliable=1.0))
    assert not fallback
    np.testing.assert_allclose(frame[:, :2], 0.5 * a[:, :2] + 0.5 * b[:, :2], atol=1e-6)
    # inside, A is read 2 px to the left and B 2 px to the left too, mixed evenly
    np.testing.assert_allclose(frame[:, 4:12], 0.5 * a[:, 2:10] + 0.5 * b[:, 2:10], atol=1e-5)


def test_a_frame_with_one_clear_side_everywhere_does_not_fall_back():
    # the 3 px pan of a 16 px frame: the two edge columns (12.5 % > the 10 % limit) are seen from one
    # side only, which is enough
    frame, fallback = flow_interpolate(_flat(0.0), _flat(1.0), 0.5, _pan(3.0, 0.0))
    assert not fallback


def test_frames_on_a_native_frame_are_that_frame_and_never_a_fallback():
    scene = DiscScene()
    a = scene.render(Fraction(0))
    b = np.ascontiguousarray(a[::-1, ::-1])  # unrelated: flow between them falls back
    for weight, native in ((0.0, a), (1.0, b)):
        for method in ("flow", "blend", "hold"):
            frame, fallback = interpolate(a, b, weight, method)
            assert not fallback, (weight, method)
            np.testing.assert_array_equal(frame, native)
    frame, fallback = interpolate(a, b, 0.5, "hold")
    assert not fallback
    frame[:] = 0.0  # the held frame is a copy: the native frame is untouched
    assert b.any()
    assert interpolate(a, b, 0.5, "blend")[1] is False


def test_results_are_float32_for_float64_frames():
    a, b = np.zeros((8, 8, 3)), np.ones((8, 8, 3))  # float64
    for weight, method in ((0.5, "hold"), (0.0, "blend"), (0.5, "blend")):
        assert interpolate(a, b, weight, method)[0].dtype == np.float32
    assert blend(a, b, 0.5).dtype == np.float32
    frame, _ = flow_interpolate(a, b, 0.5, _pan(0.0, 0.0, size=8))
    assert frame.dtype == np.float32


def test_the_flow_guide_is_the_clipped_grey_of_the_colour():
    rgba = np.zeros((1, 4, 4), np.float32)
    rgba[0, :, :3] = [[0.0] * 3, [1.0] * 3, [-0.5] * 3, [1.5] * 3]
    rgba[..., 3] = 1.0  # alpha does not steer the flow
    np.testing.assert_array_equal(guide(rgba), [[0, 255, 0, 255]])
    np.testing.assert_array_equal(guide(rgba), guide(rgba[..., :3]))


def test_each_flow_setting_changes_the_flow():
    scene = DiscScene()
    a, b = guide(scene.render(Fraction(0))), guide(scene.render(Fraction(1, 8)))
    flows = {
        name: compute_flows(a, b, config).forward
        for name, config in {
            "medium": FlowConfig(),
            "fast": FlowConfig(preset="fast"),
            "ultrafast": FlowConfig(preset="ultrafast"),
            "medium, coarser": FlowConfig(finest_scale=2),
        }.items()
    }
    names = list(flows)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not np.array_equal(flows[first], flows[second]), (first, second)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: compute_flows(
                np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), FlowConfig(preset="slow")
            ),
            r"^flow preset must be one of ultrafast, fast, medium; got 'slow'$",
        ),
        (
            lambda: compute_flows(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)),
            r"^flow guides must be two \(H, W\) uint8 images of one size, got \(4, 4\) float32 and \(4, 4\) "
            r"float32$",
        ),
        (
            lambda: compute_flows(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)),
            r"^flow guides must be two \(H, W\) uint8 images of one size, got \(4, 4\) uint8 and \(4, 5\) uint8$",
        ),
        (
            lambda: flow_interpolate(_flat(0.0, 3, 4), _flat(0.0, 4, 4), 0.5, _pan(0.0, 0.0, size=4)),
            r"^flow interpolation needs two frames of the flow's size \(4, 4\), got \(4, 4, 3\) and \(4, 4, 4\)$",
        ),
        (
            lambda: interpolate(_flat(0.0), _flat(1.0), 1.5, "blend"),
            r"^interpolation weight must be in 0\.\.1, got 1\.5$",
        ),
        (
            lambda: interpolate(_flat(0.0, 3, 4), _flat(0.0, 4, 4), 0.5, "blend"),
            r"^interpolation needs two frames of one shape, got \(4, 4, 3\) and \(4, 4, 4\)$",
        ),
        (
            lambda: interpolate(_flat(0.0), _flat(1.0), 0.5, "optical"),
            r"^retime method must be one of flow, blend, hold; got 'optical'$",
        ),
    ],
)
def test_bad_retime_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_consistency_check_reads_the_other_flow_where_the_source_lands():
    # a 4 px pan to the right whose backward flow is wrong in columns 20-21 only. Frame A sees pixel x
    # from x - 2, which lands on x + 2 in B: A's view of columns 18-19 is inconsistent (and B, whose
    # flow is wrong there, finds nothing, so they show A alone); columns 22-23 are clear on both sides
    size = 32
    flows = _pan(4.0, 0.0, size=size)
    flows.backward[:, 20:22] = (0.0, 8.0)
    a, b = _flat(0.0, size=size), _flat(1.0, size=size)
    frame, _ = flow_interpolate(a, b, 0.5, flows, FlowConfig(max_unreliable=1.0))
    np.testing.assert_allclose(frame[:, 18:20], 0.0, atol=1e-6)
    np.testing.assert_allclose(frame[:, 22:24], 0.5, atol=1e-6)


def test_half_float_frames_retime_at_float32_precision():
    # frames read from half-float EXRs: guides, blends and flow mixes are computed from their exact
    # float32 values (float16 arithmetic would round every step to about 3 decimal digits)
    rng = np.random.default_rng(0)
    a16, b16 = (rng.random((SIZE, SIZE, 3)).astype(np.float16) for _ in range(2))
    a32, b32 = a16.astype(np.float32), b16.astype(np.float32)
    np.testing.assert_array_equal(guide(a16), guide(a32))
    np.testing.assert_allclose(blend(a16, b16, 0.3), 0.7 * a32 + 0.3 * b32, rtol=0, atol=1e-6)
    frame, _ = flow_interpolate(a16, b16, 0.3, _pan(0.0, 0.0))
    assert frame.dtype == np.float32
    np.testing.assert_allclose(frame, 0.7 * a32 + 0.3 * b32, rtol=0, atol=1e-6)
