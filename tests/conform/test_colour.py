"""Colour through OpenColorIO: names, tags, and an ACEScg chart plate conformed in and out."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import OpenEXR
import PyOpenColorIO as ocio
import pytest

from ttt_engine.conform import (
    Conformer,
    Delivery,
    colourspace_of_header,
    conform_in,
    convert,
    exr_colour_attributes,
    resolve_colourspace,
    to_display,
    write_delivered,
)

AP1 = (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767)
AP0 = (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767)
REC709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
MODEL = "srgb_rec709_scene"  # display-referred, like the default model
# ColorChecker-like patches as 8-bit sRGB (the usual published sRGB renditions), all inside Rec.709 and 0..1
CHART_SRGB8 = [
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52),
]  # fmt: skip
PATCH = 8


def _ocio_processor(src: str, dst: str):
    """The test's own processor, built here from the same built-in config (not the code under test)."""
    config = ocio.Config.CreateFromFile("ocio://studio-config-latest")
    return config.getProcessor(src, dst).getDefaultCPUProcessor()


def _apply(processor, values: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, 3).copy()
    processor.applyRGB(flat)
    return flat.reshape(values.shape)


def _chart_acescg() -> np.ndarray:
    """(4 * PATCH, 6 * PATCH, 3) ACEScg plate of the chart (values converted by OCIO in the test)."""
    srgb = np.asarray(CHART_SRGB8, np.float32).reshape(4, 6, 3) / 255.0
    acescg = _apply(_ocio_processor("srgb_rec709_scene", "lin_ap1_scene"), srgb)
    return np.repeat(np.repeat(acescg, PATCH, axis=0), PATCH, axis=1)


def _read_back(path: str) -> tuple[np.ndarray, dict]:
    with OpenEXR.File(path) as exr:
        header = dict(exr.header())
        rgba = np.array(exr.channels()["RGBA"].pixels, dtype=np.float32, copy=True)
    return rgba, header


def test_acescg_chart_round_trip_through_the_model_space(tmp_path):
    plate = _chart_acescg()
    height, width = plate.shape[:2]
    rate = Fraction(24)
    plates = [plate, plate]
    model_frames = conform_in(plates, rate, "lin_ap1_scene", rate, 2, (width, height), MODEL)
    # into the model: exactly what OCIO's own AP1 -> sRGB-encoded Rec.709 conversion gives
    expected_in = _apply(_ocio_processor("lin_ap1_scene", "srgb_rec709_scene"), plate)
    np.testing.assert_allclose(model_frames[0], expected_in, atol=1e-5)
    # and out again, delivered in ACEScg, written as a half EXR and read back with OpenEXR
    delivery = Delivery(rate=rate, duration=2, colorspace="ACEScg")
    conformer = Conformer(delivery, rate, 2, (width, height), MODEL)
    frame = conformer.frame(1, lambda i: model_frames[i])
    path = str(tmp_path / "chart.1001.exr")
    write_delivered(path, frame)
    rgba, header = _read_back(path)
    np.testing.assert_allclose(rgba[:, :, :3], plate, atol=1e-3)
    assert (rgba[:, :, 3] == 1.0).all()
    assert header["colorInteropID"] == "lin_ap1_scene"
    np.testing.assert_allclose(header["chromaticities"], AP1, atol=1e-6)
    assert header["framesPerSecond"] == rate
    assert conformer.report.metadata()["colourspace"] == "lin_ap1_scene"
    assert conformer.report.metadata()["source_colourspace"] == MODEL


def test_out_of_range_plate_values_clip_going_into_a_display_referred_model():
    # a scene-linear highlight (4.0) and a saturated AP1 green outside Rec.709
    plate = np.array([[[4.0, 4.0, 4.0], [0.05, 0.6, 0.05], [0.18, 0.18, 0.18]]], np.float32)
    model = conform_in([plate], Fraction(24), "lin_ap1_scene", Fraction(24), 1, (3, 1), MODEL)[0]
    assert model.min() >= 0.0 and model.max() <= 1.0
    np.testing.assert_allclose(model[0, 0], 1.0)  # the highlight is clipped at the encoding's white
    unclipped = _apply(_ocio_processor("lin_ap1_scene", MODEL), plate)
    assert unclipped[0, 1].min() < 0.0  # the green really is outside Rec.709 ...
    np.testing.assert_allclose(model[0, 1], np.clip(unclipped[0, 1], 0, 1), atol=1e-6)  # ... and clipped
    np.testing.assert_allclose(model[0, 2], unclipped[0, 2], atol=1e-6)  # mid grey passes untouched
    back = convert(model, MODEL, "lin_ap1_scene")
    np.testing.assert_allclose(back[0, 2], 0.18, atol=1e-5)
    assert back[0, 0].max() < 1.01  # the highlight does not come back: stated, tested


@pytest.mark.parametrize(
    "name, interop",
    [
        ("lin_ap1_scene", "lin_ap1_scene"),
        ("ACEScg", "lin_ap1_scene"),
        ("lin_ap1", "lin_ap1_scene"),
        ("ACES2065-1", "lin_ap0_scene"),
        ("lin_rec709_scene", "lin_rec709_scene"),
        ("sRGB Encoded Rec.709 (sRGB)", "srgb_rec709_scene"),
        ("srgb_tx", "srgb_rec709_scene"),
    ],
)
def test_names_and_aliases_resolve_to_interop_ids(name, interop):
    assert resolve_colourspace(name).interop_id == interop


def test_unknown_colour_space_is_named_with_examples():
    with pytest.raises(ValueError, match=r"unknown colour space 'lin_ap3_scene'.*lin_ap1_scene"):
        resolve_colourspace("lin_ap3_scene")
    with pytest.raises(ValueError, match=r"unknown colour space 'Rec.7O9'"):
        convert(np.zeros((1, 3), np.float32), "Rec.7O9", "ACEScg")


def test_exr_tags_match_each_space():
    assert exr_colour_attributes("ACEScg") == {"colorInteropID": "lin_ap1_scene", "chromaticities": AP1}
    assert exr_colour_attributes("lin_ap0_scene")["chromaticities"] == AP0
    assert exr_colour_attributes("lin_rec709_scene")["chromaticities"] == REC709
    assert exr_colour_attributes("srgb_rec709_scene")["chromaticities"] == REC709


def _rgb_to_xyz(chromaticities) -> np.ndarray:
    """The normalised primary matrix of a chromaticity set (SMPTE RP 177), computed in the test."""
    xy = np.asarray(chromaticities, np.float64).reshape(4, 2)
    xyz = np.column_stack([xy[:, 0] / xy[:, 1], np.ones(4), (1 - xy[:, 0] - xy[:, 1]) / xy[:, 1]])
    primaries, white = xyz[:3].T, xyz[3]
    return primaries * np.linalg.solve(primaries, white)


@pytest.mark.parametrize(
    "src, dst", [("lin_ap1_scene", "lin_ap0_scene"), ("lin_rec709_scene", "lin_ciexyzd65_scene")]
)
def test_chromaticity_table_agrees_with_ocio_matrices(src, dst):
    """Our tags' primaries give the same matrices as OCIO's own conversions (same white point pairs)."""
    dst_matrix = (
        np.eye(3)
        if dst == "lin_ciexyzd65_scene"
        else _rgb_to_xyz(exr_colour_attributes(dst)["chromaticities"])
    )
    expected = np.linalg.solve(dst_matrix, _rgb_to_xyz(exr_colour_attributes(src)["chromaticities"]))
    got = convert(np.eye(3, dtype=np.float32), src, dst).T  # columns: where each primary goes
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_srgb_encoding_is_the_iec_61966_2_1_curve():
    """What the pipeline's hand-written srgb_to_linear did, now OCIO's: the same values within 5e-5, a
    tenth of half-float precision at 1.0 (OCIO's curve constants are rounded: 1.0 -> 1.000024). The
    reference formula is written here as the independent check."""
    encoded = np.array([[0.0, 0.04045, 0.2], [0.5, 0.8, 1.0]], np.float32)
    reference = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(convert(encoded, MODEL, "lin_rec709_scene"), reference, atol=5e-5)
    np.testing.assert_allclose(
        convert(reference.astype(np.float32), "lin_rec709_scene", MODEL), encoded, atol=2e-5
    )


def test_convert_keeps_alpha_and_shape():
    pixels = np.random.default_rng(0).random((5, 7, 4), dtype=np.float32)
    out = convert(pixels, "lin_rec709_scene", "ACEScg")
    assert out.shape == pixels.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 3], pixels[..., 3])
    np.testing.assert_allclose(
        out[..., :3], _apply(_ocio_processor("lin_rec709_scene", "lin_ap1_scene"), pixels[..., :3]), atol=1e-6
    )


def test_to_display_is_the_plain_srgb_encoding_clipped():
    linear = np.array([[0.18, 0.18, 0.18], [2.0, 0.5, -0.1]], np.float32)
    shown = to_display(linear, "lin_rec709_scene")
    expected = np.clip(_apply(_ocio_processor("lin_rec709_scene", "srgb_rec709_scene"), linear), 0, 1)
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    srgb = np.array([[0.25, 0.5, 0.75]], np.float32)
    np.testing.assert_allclose(to_display(srgb, MODEL), srgb, atol=3e-5)  # the model's output shows as is


@pytest.mark.parametrize("shape", [(4, 5), (4, 4, 2), (4, 4, 5)])
def test_bad_pixel_shape_is_named(shape):
    with pytest.raises(ValueError, match=rf"got shape \({shape[0]}, {shape[1]}"):
        convert(np.zeros(shape, np.float32), "ACEScg", "lin_rec709_scene")


def test_plate_space_from_a_file_tagged_only_by_chromaticities(tmp_path):
    from host_plugin.core.exr_io import read_exr, write_rgba_exr

    path = write_rgba_exr(
        tmp_path / "p.exr", np.zeros((2, 2, 3), np.float32), colour_interop_id=None, chromaticities=AP1
    )
    assert colourspace_of_header(read_exr(path)[1]) == "lin_ap1_scene"


def test_plate_space_from_header():
    assert colourspace_of_header({}) == "lin_rec709_scene"  # the OpenEXR spec's default
    assert colourspace_of_header({"chromaticities": AP1}) == "lin_ap1_scene"
    assert colourspace_of_header({"colorInteropID": "unknown", "chromaticities": AP1}) == "lin_ap1_scene"
    assert colourspace_of_header({"chromaticities": AP0}) == "lin_ap0_scene"
    assert colourspace_of_header({"chromaticities": REC709}) == "lin_rec709_scene"
    assert (
        colourspace_of_header({"colorInteropID": "lin_ap0_scene", "chromaticities": AP1}) == "lin_ap0_scene"
    )
    assert colourspace_of_header({"colorInteropID": "lin_ap0_scene"}, override="ACEScg") == "lin_ap1_scene"
    with pytest.raises(ValueError, match=r"chromaticities \(0\.5, 0\.5.*match no known gamut"):
        colourspace_of_header({"chromaticities": (0.5, 0.5, 0.3, 0.3, 0.2, 0.1, 0.3, 0.3)})
    with pytest.raises(ValueError, match="unknown colour space 'lin_ap9_scene'"):
        colourspace_of_header({"colorInteropID": "lin_ap9_scene"})
