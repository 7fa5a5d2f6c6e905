"""EXR frames: real files written and read with the OpenEXR bindings."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from host_plugin.core.errors import ExrWriteError, PlateError
from host_plugin.core.exr_io import (
    read_exr,
    read_exr_bytes,
    sequence_paths,
    validate_plate,
    write_rgba_exr,
    write_sequence,
)


def _pixels(h: int = 6, w: int = 10, seed: int = 0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 4)) * 4.0 - 1.0).astype(dtype)  # scene-linear values incl. > 1 and < 0


def _write_raw(path: Path, channels: dict) -> str:
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    # OpenEXR 3.5 writes strided numpy views wrongly: hand it contiguous arrays
    OpenEXR.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(str(path))
    return str(path)


def test_round_trip_within_half_precision_and_header(tmp_path: Path) -> None:
    rgba = _pixels()
    path = write_rgba_exr(
        tmp_path / "f.exr",
        rgba,
        colour_interop_id="lin_ap1_scene",
        attributes={"ttt_studio/job_id": "job-42", "ttt_studio/seed": 7},
        frames_per_second=Fraction(24000, 1001),
    )
    pixels, header = read_exr(path)
    assert pixels.dtype == np.float32 and pixels.shape == (6, 10, 4)
    np.testing.assert_allclose(pixels, rgba, rtol=2**-10, atol=2**-14)
    assert header["colorInteropID"] == "lin_ap1_scene"
    assert header["compression"] == "ZIP_COMPRESSION"
    assert header["type"] == "scanlineimage"
    assert header["ttt_studio/job_id"] == "job-42" and header["ttt_studio/seed"] == 7
    assert header["framesPerSecond"] == Fraction(24000, 1001)
    assert (header["width"], header["height"]) == (10, 6)
    assert header["pixel_types"] == {"A": "HALF", "B": "HALF", "G": "HALF", "R": "HALF"}


def test_float16_is_written_bit_exact(tmp_path: Path) -> None:
    rgba = _pixels(dtype=np.float16)
    pixels, _ = read_exr(write_rgba_exr(tmp_path / "h.exr", rgba))
    assert np.array_equal(pixels.astype(np.float16), rgba)


def test_strided_views_are_written_correctly(tmp_path: Path) -> None:
    big = _pixels(12, 20)
    view = big[::2, ::2, :]  # (6, 10, 4) non-contiguous view, e.g. a crop of a larger buffer
    pixels, _ = read_exr(write_rgba_exr(tmp_path / "v.exr", view))
    np.testing.assert_allclose(pixels, view, rtol=2**-10, atol=2**-14)
    rgb = big[:6, :10, :3]  # (H, W, 3) view: alpha 1 is added
    pixels, _ = read_exr(write_rgba_exr(tmp_path / "rgb.exr", rgb))
    np.testing.assert_allclose(pixels[:, :, :3], rgb, rtol=2**-10, atol=2**-14)
    assert np.all(pixels[:, :, 3] == 1.0)


def test_rgb_file_reads_with_opaque_alpha(tmp_path: Path) -> None:
    rgb = _pixels()[:, :, :3]
    path = _write_raw(tmp_path / "rgb.exr", {"RGB": rgb})  # FLOAT channels, no alpha
    pixels, header = read_exr(path)
    np.testing.assert_array_equal(pixels[:, :, :3], rgb)
    assert np.all(pixels[:, :, 3] == 1.0)
    assert header["pixel_types"] == {"B": "FLOAT", "G": "FLOAT", "R": "FLOAT"}
    info = validate_plate(path)
    assert (info.width, info.height, info.pixel_types) == (10, 6, ("FLOAT", "FLOAT", "FLOAT"))


def test_corrupt_file_gives_plate_error(tmp_path: Path) -> None:
    good = Path(write_rgba_exr(tmp_path / "good.exr", _pixels(64, 64)))
    truncated = tmp_path / "truncated.exr"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PlateError, match="corrupt or truncated"):
        validate_plate(truncated)
    with pytest.raises(PlateError, match="corrupt or truncated"):
        read_exr(truncated)


def test_not_an_exr_gives_plate_error(tmp_path: Path) -> None:
    png = tmp_path / "plate.exr"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(PlateError, match="is not an EXR file: it starts with bytes"):
        validate_plate(png)
    with pytest.raises(PlateError, match="plate upload is not an EXR file"):
        validate_plate(b"hello")


def test_missing_file_gives_plate_error(tmp_path: Path) -> None:
    with pytest.raises(PlateError, match="does not exist"):
        validate_plate(tmp_path / "nope.exr")
    with pytest.raises(PlateError, match="does not exist"):
        read_exr(tmp_path / "nope.exr")


def test_nan_and_inf_plates_are_refused_with_the_first_bad_pixel(tmp_path: Path) -> None:
    rgba = _pixels().astype(np.float16)
    rgba[2, 3, 1] = np.nan
    rgba[4, 5, 0] = np.inf
    path = _write_raw(tmp_path / "nan.exr", {"RGBA": rgba})  # as a host render could write it
    with pytest.raises(PlateError, match=r"1 NaN and 1 inf values \(first at x=3, y=2, channel G\)"):
        validate_plate(path)
    with pytest.raises(PlateError, match="NaN"):
        read_exr(path, check_finite=True)
    assert np.isnan(read_exr(path)[0][2, 3, 1])  # plain read returns what is there


def test_unsupported_channels(tmp_path: Path) -> None:
    luma = np.ones((4, 4), np.float32)
    path = _write_raw(tmp_path / "y.exr", {"Y": luma, "Z": luma})
    with pytest.raises(
        PlateError, match=r"has channels \['Y', 'Z'\]; expected R, G, B .* missing \['R', 'G', 'B'\]"
    ):
        validate_plate(path)
    ids = np.ones((4, 4), np.uint32)
    path = _write_raw(tmp_path / "uint.exr", {"R": ids, "G": ids, "B": ids})
    with pytest.raises(PlateError, match="channel B holds uint32 values; expected HALF or FLOAT"):
        validate_plate(path)


def test_size_limits(tmp_path: Path) -> None:
    path = write_rgba_exr(tmp_path / "big.exr", _pixels(20, 30))
    with pytest.raises(PlateError, match="is 30x20, above the limit of 16x16"):
        validate_plate(path, max_width=16, max_height=16)
    with pytest.raises(PlateError, match="above the limit of 100 bytes"):
        validate_plate(Path(path).read_bytes(), max_bytes=100)
    assert validate_plate(path).width == 30


def test_bytes_upload_round_trip(tmp_path: Path) -> None:
    rgba = _pixels()
    data = Path(
        write_rgba_exr(tmp_path / "up.exr", rgba, attributes={"ttt_studio/job_id": "u1"})
    ).read_bytes()
    assert validate_plate(data).channels == ("A", "B", "G", "R")
    pixels, header = read_exr_bytes(data)
    np.testing.assert_allclose(pixels, rgba, rtol=2**-10, atol=2**-14)
    assert header["ttt_studio/job_id"] == "u1"


def test_write_sequence_and_paths(tmp_path: Path) -> None:
    frames = [_pixels(4, 4, seed=i) for i in range(3)]
    paths = write_sequence(
        tmp_path / "seq", "sh010_gen.", iter(frames), start=1001, attributes={"ttt_studio/job_id": "j"}
    )
    assert paths == sequence_paths(tmp_path / "seq", "sh010_gen.", 1001, 3)
    assert [Path(p).name for p in paths] == ["sh010_gen.1001.exr", "sh010_gen.1002.exr", "sh010_gen.1003.exr"]
    for frame, path in zip(frames, paths):
        np.testing.assert_allclose(read_exr(path)[0], frame, rtol=2**-10, atol=2**-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rgba": np.zeros((4, 4), np.float32)}, r"must be \(H, W, 4\) or \(H, W, 3\), got shape \(4, 4\)"),
        ({"rgba": np.zeros((4, 4, 4), np.uint8)}, "got dtype uint8"),
        ({"rgba": np.full((2, 2, 4), np.nan, np.float32)}, "NaN or inf"),
        ({"rgba": np.full((2, 2, 4), np.inf, np.float16)}, "NaN or inf"),
        ({"rgba": np.full((2, 2, 4), 1e6, np.float32)}, "does not fit in half float"),
        ({"colour_interop_id": "ACEScg"}, "'ACEScg' is not a colour interop id"),
        ({"colour_interop_id": "ocio:ACEScg"}, "'ocio:ACEScg' is not a colour interop id"),
        ({"colour_interop_id": ":lin_ap1_scene"}, "':lin_ap1_scene' is not a colour interop id"),
        ({"attributes": {"compression": "none"}}, "reserved"),
        ({"attributes": {"ttt_studio/flag": True}}, "must be str, int, float or Fraction"),
        ({"attributes": {"ttt_studio/seed": 2**40}}, "does not fit a 32-bit EXR int; store it as a str"),
    ],
)
def test_write_errors(tmp_path: Path, kwargs, match) -> None:
    args = {"rgba": np.zeros((2, 2, 4), np.float32)}
    args.update(kwargs)
    with pytest.raises(ExrWriteError, match=match):
        write_rgba_exr(tmp_path / "x.exr", **args)
    assert not (tmp_path / "x.exr").exists()


def test_every_interop_id_of_the_studio_config_is_written_and_read_back(tmp_path: Path) -> None:
    """A delivery in any colour space OCIO's studio config names (camera spaces are namespaced,
    "ocio:lin_awg4_scene") is tagged with its id: the writer refuses none of them."""
    ocio = pytest.importorskip("PyOpenColorIO")  # a main dependency (the conform stage)
    config = ocio.Config.CreateFromFile("ocio://studio-config-latest")
    ids = sorted({cs.getInteropID() for cs in config.getColorSpaces() if cs.getInteropID()})
    assert "ocio:lin_awg4_scene" in ids and "lin_ap1_scene" in ids
    for interop_id in ids:
        path = tmp_path / f"{interop_id.replace(':', '_')}.exr"
        write_rgba_exr(path, np.zeros((2, 2, 4), np.float32), colour_interop_id=interop_id)
        assert read_exr(path)[1]["colorInteropID"] == interop_id
