"""Scaling behaviour the mutation run of ttt_engine/conform/scale.py found untested (issue #31): which
filter a resize really uses (area averaging when shrinking, nearest, cubic), letterboxed and pillar-cropped
placements, mattes, float32 output, one-pixel sources and the errors for bad images."""

from __future__ import annotations

import numpy as np
import pytest

from ttt_engine.conform import Format, placement, scale_to
from ttt_engine.conform.scale import resize

SMOOTH_FILTERS = ("lanczos", "cubic", "linear")


def _stripes(rows: int, cols: int, axis: int) -> np.ndarray:
    """One lit line in every three along `axis` (1: columns, 0: rows): 1/3 grey on average."""
    image = np.zeros((rows, cols, 3), np.float32)
    if axis == 1:
        image[:, 0::3] = 1.0
    else:
        image[0::3] = 1.0
    return image


@pytest.mark.parametrize("filter", SMOOTH_FILTERS)
@pytest.mark.parametrize(
    "src, size, axis",
    [
        ((8, 48), (16, 4), 1),  # both axes shrink
        ((8, 48), (16, 8), 1),  # the width shrinks, the height stays
        ((48, 8), (8, 16), 0),  # the height shrinks, the width stays
    ],
)
def test_a_shrink_averages_fine_detail_instead_of_aliasing(filter, src, size, axis):
    # a third of the lines lit, shrunk three times: every output pixel covers one lit line of three, so
    # it is 1/3 grey; a Lanczos, cubic or linear kernel that does not widen samples the dark lines only
    out = resize(_stripes(*src, axis), *size, filter)
    assert out.shape == (size[1], size[0], 3)
    np.testing.assert_allclose(out, 1.0 / 3.0, atol=1e-5)


def test_only_one_axis_shrinking_keeps_the_named_filter_on_the_growing_axis():
    # the height grows four times across a horizontal edge while the width halves: Lanczos rings
    # (overshoots 1) along the growing axis; area averaging would not
    image = np.zeros((8, 16, 3), np.float32)
    image[4:] = 1.0
    out = resize(image, 8, 32, "lanczos")
    assert out.max() > 1.05 and out.min() < -0.05


@pytest.mark.parametrize("filter", SMOOTH_FILTERS)
def test_an_anamorphic_squeeze_averages_the_shrinking_axis(filter):
    # columns of random values, constant down each column: the width shrinks 4x while the height grows 2x.
    # Each output column is the mean of its 4 source columns (no aliasing), whatever the growing axis's
    # filter (a constant column stays constant).
    columns = np.random.default_rng(3).random(16).astype(np.float32)
    image = np.broadcast_to(columns[None, :, None], (8, 16, 3)).copy()
    out = resize(image, 4, 16, filter)
    expected = columns.reshape(4, 4).mean(axis=1)
    np.testing.assert_allclose(out, np.broadcast_to(expected[None, :, None], (16, 4, 3)), atol=1e-5)
    transposed = resize(np.ascontiguousarray(image.transpose(1, 0, 2)), 16, 4, filter)
    np.testing.assert_allclose(transposed, out.transpose(1, 0, 2), atol=1e-5)


@pytest.mark.parametrize("filter", SMOOTH_FILTERS)
def test_smooth_filters_blend_and_nearest_keeps_the_source_values(filter):
    edge = np.zeros((8, 8, 3), np.float32)
    edge[:, 4:] = 1.0
    blended = resize(edge, 32, 32, filter)
    assert len(np.unique(blended)) > 2  # values between the two sides of the edge
    if filter != "linear":
        assert blended.max() > 1.05  # Lanczos and cubic ring, as Nuke's do
    nearest = resize(edge, 32, 32, "nearest")
    assert set(np.unique(nearest)) == {0.0, 1.0}
    np.testing.assert_array_equal(nearest[:, :16], 0.0)
    np.testing.assert_array_equal(nearest[:, 16:], 1.0)


def test_a_letterboxed_fit_places_the_picture_in_the_middle_rows():
    image = np.zeros((16, 64, 3), np.float32)
    image[:8] = 1.0  # top half lit: the top of the picture must stay on top
    frame, window = scale_to(image, Format(64, 64), "fit", "nearest")
    assert window == (0, 24, 63, 39)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.float32
    np.testing.assert_array_equal(frame[:24], 0.0)
    np.testing.assert_array_equal(frame[40:], 0.0)
    np.testing.assert_array_equal(frame[24:32], 1.0)
    np.testing.assert_array_equal(frame[32:40], 0.0)


@pytest.mark.parametrize(
    "target, lit, seen",
    [
        # fill of a square on a tall frame: 4 x scale, the middle 64 of 256 columns remain, so source
        # column c lands on frame column 4 * c - 96
        (Format(64, 256), (slice(None), slice(24, 32)), (slice(None), slice(0, 32))),
        # fill of a square on a wide frame: the middle 64 of 256 rows remain
        (Format(256, 64), (slice(24, 32), slice(None)), (slice(0, 32), slice(None))),
    ],
)
def test_fill_keeps_the_centre_of_an_asymmetric_picture(target, lit, seen):
    image = np.zeros((64, 64, 3), np.float32)
    image[lit] = 1.0  # a band on one side of the centre line only
    frame, window = scale_to(image, target, "fill", "nearest")
    assert window == (0, 0, target.width - 1, target.height - 1)
    expected = np.zeros((target.height, target.width, 3), np.float32)
    expected[seen] = 1.0
    np.testing.assert_array_equal(frame, expected)


def test_a_matte_scales_with_its_single_channel():
    matte = np.zeros((16, 16, 1), np.float32)
    matte[4:12, 4:12] = 1.0
    frame, window = scale_to(matte, Format(64, 32), "fit", "linear")
    assert frame.shape == (32, 64, 1) and window == (16, 0, 47, 31)
    assert frame[16, 32, 0] == pytest.approx(1.0) and not frame[:, :16].any()


def test_scaled_frames_are_float32_and_copies():
    wide = np.random.default_rng(1).random((8, 8, 4))  # float64 in
    frame, _ = scale_to(wide, Format(16, 16), "distort", "linear")
    assert frame.dtype == np.float32
    frame, _ = scale_to(wide, Format(16, 32), "fit", "linear")
    assert frame.dtype == np.float32
    same, _ = scale_to(wide, Format(8, 8), "fit", "linear")
    assert same.dtype == np.float32
    single = wide.astype(np.float32)
    copy = resize(single, 8, 8, "linear")
    copy[:] = 0.0  # writing into the delivered frame leaves the generated one alone
    assert single.any()


def test_alpha_outside_an_upscaled_picture_stays_transparent():
    image = np.zeros((32, 32, 4), np.float32)
    image[8:24, 8:24] = (0.5, 0.25, 0.125, 1.0)
    frame, _ = scale_to(image, Format(128, 128), "distort", "lanczos")
    np.testing.assert_array_equal(frame[:16, :16, 3], 0.0)
    assert frame[64, 64, 3] == pytest.approx(1.0)


def test_one_pixel_sources_and_one_pixel_results():
    frame, window = scale_to(np.ones((1, 1, 3), np.float32), Format(4, 4), "fit", "nearest")
    np.testing.assert_array_equal(frame, 1.0)
    assert window == (0, 0, 3, 3)
    assert placement(1, 1, Format(4, 4), "fit").scaled_width == 4
    # a very tall or very wide picture fits as a one-pixel line
    tall = placement(1, 1000, Format(64, 64), "fit")
    assert (tall.scaled_width, tall.scaled_height, tall.offset_x) == (1, 64, 31)
    wide = placement(1000, 1, Format(64, 64), "fit")
    assert (wide.scaled_width, wide.scaled_height, wide.offset_y) == (64, 1, 31)
    for shape in ((1, 8, 3), (8, 1, 3)):
        frame, _ = scale_to(np.ones(shape, np.float32), Format(8, 8), "distort", "linear")
        np.testing.assert_allclose(frame, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: scale_to(np.zeros((8, 8, 3), np.int32), Format(8, 8), "fit", "linear"),
            r"^scale_to: expected a float image \(H, W, C\) with C in \(1, 3, 4\), got shape \(8, 8, 3\) "
            r"dtype int32$",
        ),
        (
            lambda: scale_to(np.zeros((8, 8, 2), np.float32), Format(8, 8), "fit", "linear"),
            r"^scale_to: expected a float image .* got shape \(8, 8, 2\) dtype float32$",
        ),
        (
            lambda: scale_to(np.zeros((0, 8, 3), np.float32), Format(8, 8), "fit", "linear"),
            r"^scale_to: image is empty, shape \(0, 8, 3\)$",
        ),
        (
            lambda: scale_to(np.zeros((8, 0, 3), np.float32), Format(8, 8), "fit", "linear"),
            r"^scale_to: image is empty, shape \(8, 0, 3\)$",
        ),
        (
            lambda: resize(np.zeros((8, 8, 3), np.float32), 4, 4, "sinc"),
            r"^filter must be one of lanczos, cubic, linear, nearest; got 'sinc'$",
        ),
        (lambda: placement(0, 64, Format(64, 64), "fit"), r"^src_width must be a whole number >= 1, got 0$"),
        (
            lambda: placement(True, 64, Format(64, 64), "fit"),
            r"^src_width must be a whole number >= 1, got True$",
        ),
        (
            lambda: placement(64, 1.5, Format(64, 64), "fit"),
            r"^src_height must be a whole number >= 1, got 1.5$",
        ),
    ],
)
def test_bad_images_and_sizes_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
