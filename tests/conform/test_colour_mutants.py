"""Colour behaviour the mutation run of ttt_engine/conform/colour.py found untested (issue #31): float32
results from float64 pixels, single pixels, RGBA previews, the data space, chromaticities read as xy
pairs or at the edge of the tolerance, and errors that name the call and the values."""

from __future__ import annotations

import numpy as np
import pytest

from ttt_engine.conform import (
    colourspace_of_header,
    convert,
    resolve_colourspace,
    to_display,
)
from ttt_engine.conform.colour import space_of_chromaticities

AP0 = (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767)
REC709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
# linear Rec.709 18 % grey is sRGB-encoded 0.46135 (IEC 61966-2-1: 1.055 * 0.18 ** (1 / 2.4) - 0.055)
GREY_LINEAR, GREY_SRGB = 0.18, 1.055 * 0.18 ** (1 / 2.4) - 0.055


def test_float64_pixels_convert_to_float32():
    pixels = np.full((2, 3, 3), GREY_LINEAR)  # float64
    out = convert(pixels, "lin_rec709_scene", "srgb_rec709_scene")
    assert out.dtype == np.float32 and out.shape == (2, 3, 3)
    np.testing.assert_allclose(out, GREY_SRGB, atol=5e-5)
    shown = to_display(pixels, "lin_rec709_scene")
    assert shown.dtype == np.float32
    np.testing.assert_allclose(shown, GREY_SRGB, atol=5e-5)


def test_a_single_pixel_converts():
    out = convert(np.array([GREY_LINEAR] * 3, np.float32), "lin_rec709_scene", "srgb_rec709_scene")
    assert out.shape == (3,)
    np.testing.assert_allclose(out, GREY_SRGB, atol=5e-5)


def test_an_rgba_image_previews_with_its_alpha_kept():
    pixels = np.zeros((3, 5, 4), np.float32)
    pixels[..., :3] = GREY_LINEAR
    pixels[:, :, 3] = np.linspace(0.0, 1.0, 5)
    pixels[0, 0, :3] = (4.0, -1.0, 0.5)  # out of range: clipped in the preview
    shown = to_display(pixels, "lin_rec709_scene")
    assert shown.shape == (3, 5, 4)
    np.testing.assert_array_equal(shown[..., 3], pixels[..., 3])
    np.testing.assert_allclose(shown[1:, :, :3], GREY_SRGB, atol=5e-5)
    np.testing.assert_allclose(shown[0, 0, :2], (1.0, 0.0))


def test_the_data_space_has_no_gamut():
    raw = resolve_colourspace("Raw")
    assert (raw.interop_id, raw.chromaticities) == ("data", None)


def test_chromaticities_as_xy_pairs_or_exactly_at_the_tolerance_match():
    pairs = [REC709[i : i + 2] for i in range(0, 8, 2)]  # red, green, blue, white as (x, y)
    assert space_of_chromaticities(pairs) == "lin_rec709_scene"
    assert colourspace_of_header({"chromaticities": pairs}) == "lin_rec709_scene"
    # AP0's green x is 0.0: 0.002 off is exactly the tolerance, still AP0
    edge = (*AP0[:2], 0.002, *AP0[3:])
    assert space_of_chromaticities(edge) == "lin_ap0_scene"
    assert space_of_chromaticities(("x",) * 8) is None  # not numbers: no gamut, no crash


def test_unknown_chromaticities_are_named_rounded_with_the_known_gamuts():
    chroma = (0.123456, 0.5, 0.3, 0.3, 0.2, 0.1, 0.3, 0.3)
    message = (
        r"^plate chromaticities \(0\.12346, 0\.5, 0\.3, 0\.3, 0\.2, 0\.1, 0\.3, 0\.3\) match no known gamut "
        r"\(rec709, ap1, ap0, rec2020, p3d65\); name the plate's colour space explicitly$"
    )
    with pytest.raises(ValueError, match=message):
        colourspace_of_header({"chromaticities": chroma})


@pytest.mark.parametrize(
    "call, what",
    [
        (lambda pixels: convert(pixels, "lin_rec709_scene", "ACEScg"), "convert"),
        (lambda pixels: to_display(pixels, "lin_rec709_scene"), "to_display"),
    ],
)
def test_integer_pixels_are_refused_by_the_call_that_got_them(call, what):
    message = rf"^{what}: expected float pixels with 3 \(RGB\) or 4 \(RGBA\) channels last, got shape \(2, 3\), dtype int64$"
    with pytest.raises(ValueError, match=message):
        call(np.zeros((2, 3), np.int64))
