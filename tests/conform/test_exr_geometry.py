"""host_plugin.core.exr_io's windows, pixel aspect and chromaticities (the conform's EXR writer)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from host_plugin.core.errors import ExrWriteError
from host_plugin.core.exr_io import read_exr, write_rgba_exr


def test_defaults_are_unchanged_for_existing_callers(tmp_path):
    path = write_rgba_exr(
        tmp_path / "a.exr", np.full((4, 6, 3), 0.5, np.float32), frames_per_second=Fraction(24000, 1001)
    )
    pixels, header = read_exr(path)
    assert header["dataWindow"] == header["displayWindow"] == ((0, 0), (5, 3))
    assert header["pixelAspectRatio"] == 1.0
    assert "chromaticities" not in header
    assert header["framesPerSecond"] == Fraction(24000, 1001)  # rational, not 23.976...
    assert pixels.shape == (4, 6, 4)


def test_overscan_window_and_tags_round_trip(tmp_path):
    rgba = np.random.default_rng(0).random((4, 6, 4), dtype=np.float32)
    path = write_rgba_exr(
        tmp_path / "b.exr",
        rgba,
        colour_interop_id="lin_ap1_scene",
        data_window=(-2, 3, 3, 6),
        display_window=(0, 0, 9, 4),
        pixel_aspect_ratio=2.0,
        chromaticities=(0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767),
    )
    pixels, header = read_exr(path)
    assert header["dataWindow"] == ((-2, 3), (3, 6)) and header["displayWindow"] == ((0, 0), (9, 4))
    assert header["pixelAspectRatio"] == 2.0 and header["colorInteropID"] == "lin_ap1_scene"
    np.testing.assert_allclose(header["chromaticities"][:2], (0.713, 0.293), atol=1e-6)
    np.testing.assert_allclose(pixels, rgba, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"data_window": (0, 0, 9, 9)}, r"data_window \(0, 0, 9, 9\) is 10x10 pixels but the pixels are 6x4"),
        ({"data_window": (0, 0, 5)}, r"data_window must be \(xmin, ymin, xmax, ymax\)"),
        ({"display_window": (5, 0, 0, 3)}, "xmax >= xmin"),
        ({"pixel_aspect_ratio": 0}, "pixel_aspect_ratio must be a number > 0, got 0"),
        ({"chromaticities": (0.7, 0.3)}, "chromaticities must be 8 finite numbers"),
        ({"attributes": {"chromaticities": "ap1"}}, "reserved"),
    ],
)
def test_bad_geometry_is_named(tmp_path, kwargs, match):
    with pytest.raises(ExrWriteError, match=match):
        write_rgba_exr(tmp_path / "c.exr", np.zeros((4, 6, 4), np.float32), **kwargs)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(tmp_path, dtype, bad):
    pixels = np.zeros((4, 6, 4), dtype)
    pixels[2, 3, 1] = bad
    with pytest.raises(ExrWriteError, match="NaN or inf"):
        write_rgba_exr(tmp_path / "d.exr", pixels)


def test_values_beyond_half_are_refused(tmp_path):
    pixels = np.zeros((4, 6, 3), np.float32)
    pixels[0, 0, 0] = -70000.0
    with pytest.raises(ExrWriteError, match="pixel magnitude 70000 does not fit in half float"):
        write_rgba_exr(tmp_path / "e.exr", pixels)
