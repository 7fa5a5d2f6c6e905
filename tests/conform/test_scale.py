"""Scaling to the edit's format: Reformat-like placement, pixel aspect, EXR windows read back from files."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import OpenEXR
import pytest

from ttt_engine.conform import Conformer, Delivery, Format, placement, scale_to, write_delivered

HD_ANAMORPHIC = Format(1920, 1080, 2.0)


@pytest.mark.parametrize(
    "fit, expected",
    [
        # 64 x 64 square on a 2:1-pixel 1920 x 1080 frame (3.56:1 on screen): the height binds; the
        # picture is 1080 rows tall and 1080 / 2 = 540 columns wide, centred
        ("fit", (540, 1080, 690, 0, 540 / 64, 1080 / 64)),
        # the width binds: 1920 columns = 3840 square pixels wide, so 3840 rows tall, centred and cropped
        ("fill", (1920, 3840, 0, -1380, 1920 / 64, 3840 / 64)),
        ("distort", (1920, 1080, 0, 0, 1920 / 64, 1080 / 64)),
    ],
)
def test_placement_honours_pixel_aspect(fit, expected):
    p = placement(64, 64, HD_ANAMORPHIC, fit)
    assert (p.scaled_width, p.scaled_height, p.offset_x, p.offset_y) == expected[:4]
    assert (p.scale_x, p.scale_y) == pytest.approx(expected[4:])


def test_placement_square_pixels():
    p = placement(64, 64, Format(1920, 1080), "fit")
    assert (p.scaled_width, p.scaled_height, p.offset_x, p.offset_y) == (1080, 1080, 420, 0)
    p = placement(64, 48, Format(1920, 1080), "fill")
    assert (p.scaled_width, p.scaled_height, p.offset_x, p.offset_y) == (1920, 1440, 0, -180)


@pytest.mark.parametrize(
    "fit, data_window, size",
    [("fit", ((690, 0), (1229, 1079)), (1080, 540)), ("fill", ((0, 0), (1919, 1079)), (1080, 1920))],
)
def test_delivered_exr_windows_and_pixel_aspect_read_back(tmp_path, fit, data_window, size):
    native = np.random.default_rng(3).random((64, 64, 3), dtype=np.float32) * 0.8 + 0.1
    delivery = Delivery(rate=Fraction(24), duration=1, width=1920, height=1080, pixel_aspect=2.0, fit=fit)
    conformer = Conformer(delivery, Fraction(24), 1, (64, 64), "lin_rec709_scene")
    frame = conformer.frame(0, lambda i: native)
    assert frame.rgba.shape == (1080, 1920, 4)
    path = str(tmp_path / f"{fit}.exr")
    write_delivered(path, frame)
    with OpenEXR.File(path) as exr:
        header = exr.header()
        pixels = exr.channels()["RGBA"].pixels
        assert tuple(tuple(int(v) for v in c) for c in header["dataWindow"]) == data_window
        assert tuple(tuple(int(v) for v in c) for c in header["displayWindow"]) == ((0, 0), (1919, 1079))
        assert header["pixelAspectRatio"] == 2.0
        assert pixels.shape[:2] == size
        assert header["ttt_studio/conform/fit"] == fit
    if fit == "fit":  # outside the picture: nothing, alpha 0 (the plate below shows through)
        assert not frame.rgba[:, :690].any() and not frame.rgba[:, 1230:].any()
        np.testing.assert_allclose(frame.rgba[:, 690:1230, 3], 1.0, atol=1e-6)
    scale = conformer.report.metadata()["scale"]
    assert scale == pytest.approx([size[1] / 64 if fit == "fit" else 30.0, 16.875 if fit == "fit" else 60.0])


def test_fill_crops_the_centre():
    image = np.zeros((64, 64, 3), np.float32)
    image[:, 32:] = 1.0  # a vertical edge through the centre
    image[:4] = 0.5  # a band at the top that fill crops away on a wide frame
    frame, window = scale_to(image, Format(256, 64), "fill", "linear")
    assert window == (0, 0, 255, 63)
    assert frame[:, :120].max() <= 0.5 and frame[10:, 136:].min() == pytest.approx(1.0)
    assert not (frame == 0.5).any()


def test_same_size_is_not_resampled():
    image = np.random.default_rng(0).random((48, 64, 4), dtype=np.float32)
    for fit in ("fit", "fill", "distort"):
        frame, window = scale_to(image, Format(64, 48), fit, "lanczos")
        np.testing.assert_array_equal(frame, image)
        assert window == (0, 0, 63, 47)


def test_lanczos_upscale_keeps_flat_colour_and_alpha_in_range():
    image = np.zeros((32, 32, 4), np.float32)
    image[8:24, 8:24] = (0.5, 0.25, 0.125, 1.0)
    frame, _ = scale_to(image, Format(128, 128), "distort", "lanczos")
    np.testing.assert_allclose(
        frame[56:72, 56:72, :3], np.broadcast_to((0.5, 0.25, 0.125), (16, 16, 3)), atol=1e-3
    )
    assert frame[..., 3].min() >= 0.0 and frame[..., 3].max() <= 1.0


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda img: scale_to(img, Format(64, 64), "stretch", "lanczos"),
            "fit must be one of fit, fill, distort; got 'stretch'",
        ),
        (
            lambda img: scale_to(img, Format(64, 64), "fit", "sinc"),
            "filter must be one of lanczos.*got 'sinc'",
        ),
        (lambda img: scale_to(img[..., 0], Format(64, 64), "fit", "cubic"), r"got shape \(8, 8\)"),
        (lambda img: Format(0, 64), "format width must be a whole number in 1..8192, got 0"),
        (lambda img: Format(64, 64, 0.0), "pixel_aspect must be a number in 0.1..10, got 0.0"),
        (
            lambda img: placement(64, -1, Format(64, 64), "fit"),
            "src_height must be a whole number >= 1, got -1",
        ),
    ],
)
def test_bad_inputs_name_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.zeros((8, 8, 3), np.float32))
