"""Conform behaviour the mutation run of ttt_engine/conform/conform.py found untested (issue #31): plates
retimed and reformatted into the model (hold, blend, flow, fit), display-referred clipping, the delivered
frames' hold choice, fallback flags, display window, pixel aspect and report, the written EXR (windows,
tags, half pixels) and the work done once (plates read, flows and guides computed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import OpenEXR
import pytest

import ttt_engine.conform.conform as conform_module
from host_plugin.core.errors import ExrWriteError
from ttt_engine.conform import Conformer, Delivery, conform_in, write_delivered

from .scene import DiscScene

LINEAR = "lin_rec709_scene"
MODEL = "srgb_rec709_scene"
STEP = 0.05  # plate frame j is flat STEP * j


class _Plates(Sequence):
    """Flat plate frames that record which frames were read (a plate sequence read from disk)."""

    def __init__(self, count: int, shape: tuple[int, int, int] = (12, 16, 3)) -> None:
        self.count, self.shape, self.reads = count, shape, []

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):  # type: ignore[override]
        if not 0 <= i < self.count:
            raise IndexError(i)
        self.reads.append(i)
        return np.full(self.shape, STEP * i, np.float32)


def _counting(monkeypatch, name: str) -> list[int]:
    """Count the calls of conform.py's `name` (compute_flows, guide) while still running it."""
    calls: list[int] = []
    real = getattr(conform_module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(conform_module, name, counted)
    return calls


@pytest.mark.parametrize(
    "retime, native_fps, count, expected",
    [
        # 24 fps plates into 10 fps: native i shows plate time 2.4 i (weights 0.4, 0.8, 0.2, 0.6)
        ("blend", 10, 5, [0.0, 2.4, 4.8, 7.2, 9.6]),
        ("flow", 10, 5, [0.0, 2.4, 4.8, 7.2, 9.6]),  # flat frames: nothing moves, flow mixes like blend
        ("hold", 10, 5, [0, 2, 5, 7, 10]),
        ("hold", 16, 3, [0, 2, 3]),  # plate time 1.5: exactly half way holds the later frame
    ],
)
def test_conform_in_retimes_plates_into_the_model_rate(retime, native_fps, count, expected):
    plates = _Plates(11)
    model = conform_in(plates, Fraction(24), LINEAR, Fraction(native_fps), count, (16, 12), LINEAR, retime)
    assert model.shape == (count, 12, 16, 3)
    np.testing.assert_allclose(model[:, 0, 0, 0], STEP * np.asarray(expected), atol=1e-6)
    np.testing.assert_allclose(model, np.broadcast_to(model[:, :1, :1], model.shape), atol=1e-6)  # flat


def test_conform_in_blend_cross_fades_a_moving_disc():
    # blend shows the disc at both positions at half strength, a cross-fade, where flow would move it
    scene = DiscScene()
    plates = [scene.render(Fraction(j, 24) * 6) for j in range(3)]
    model = conform_in(plates, Fraction(24), MODEL, Fraction(48), 5, (128, 128), MODEL, "blend")
    np.testing.assert_allclose(model[1], 0.5 * plates[0] + 0.5 * plates[1], atol=1e-5)


def test_conform_in_reads_each_plate_once_and_computes_each_flow_once(monkeypatch):
    flows = _counting(monkeypatch, "compute_flows")
    plates = _Plates(5)
    # 24 fps plates into 48 fps: every plate frame serves two native frames, every pair one in-between
    model = conform_in(plates, Fraction(24), LINEAR, Fraction(48), 9, (16, 12), LINEAR, "flow")
    np.testing.assert_allclose(model[:, 0, 0, 0], STEP * np.arange(9) / 2, atol=1e-6)
    assert plates.reads == list(range(5))
    assert len(flows) == 4
    flows.clear()
    conform_in(_Plates(7), Fraction(24), LINEAR, Fraction(8), 3, (16, 12), LINEAR, "flow")
    assert flows == []  # every native frame is a plate frame: nothing to interpolate


@pytest.mark.parametrize(
    "fit, filled_rows", [("distort", slice(0, 16)), ("fit", slice(4, 12)), ("fill", slice(0, 16))]
)
def test_conform_in_reformats_plates_with_the_fit(fit, filled_rows):
    plates = [np.full((16, 32, 3), 0.5, np.float32)]  # 2:1 plate into a square generation
    model = conform_in(
        plates, Fraction(24), LINEAR, Fraction(24), 1, (16, 16), LINEAR, fit=fit, filter="linear"
    )
    expected = np.zeros((16, 16, 3), np.float32)
    expected[filled_rows] = 0.5
    np.testing.assert_allclose(model[0], expected, atol=1e-6)


def test_conform_in_clips_to_a_display_referred_model_and_not_to_a_linear_one():
    plates = [np.full((12, 16, 3), v, np.float32) for v in (-0.5, 2.5)]
    clipped = conform_in(plates, Fraction(24), LINEAR, Fraction(24), 2, (16, 12), MODEL)
    np.testing.assert_array_equal(clipped[:, 0, 0, 0], [0.0, 1.0])
    kept = conform_in(plates, Fraction(24), LINEAR, Fraction(24), 2, (16, 12), LINEAR)
    np.testing.assert_allclose(kept[:, 0, 0, 0], [-0.5, 2.5], atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: conform_in([], Fraction(24), LINEAR, Fraction(8), 1, (16, 12), LINEAR),
            r"^conform_in needs at least one plate frame, got none$",
        ),
        (
            lambda: conform_in(_Plates(3), Fraction(24), LINEAR, Fraction(8), 1, (16, 12), LINEAR, "twixtor"),
            r"^retime method must be one of flow, blend, hold; got 'twixtor'$",
        ),
        (
            lambda: conform_in(_Plates(3), Fraction(24), LINEAR, Fraction(8), 1, (16, 12, 3), LINEAR),
            r"^generation_size must be \(width, height\) in whole pixels >= 1, got \(16, 12, 3\)$",
        ),
        (
            lambda: Conformer(Delivery(rate=24, duration=1), Fraction(24), 1, (16.0, 12), LINEAR),
            r"^generation_size must be \(width, height\) in whole pixels >= 1, got \(16\.0, 12\)$",
        ),
        (
            lambda: Conformer("24 fps", Fraction(24), 1, (16, 12), LINEAR),  # type: ignore[arg-type]
            r"^delivery must be a Delivery, got str$",
        ),
    ],
)
def test_bad_conform_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_one_pixel_generation_is_a_generation():
    conformer = Conformer(Delivery(rate=24, duration=1), Fraction(24), 1, (1, 1), LINEAR)
    frame = conformer.frame(0, lambda i: np.full((1, 1, 3), 0.25, np.float32))
    np.testing.assert_allclose(frame.rgba, [[[0.25, 0.25, 0.25, 1.0]]], atol=1e-6)


def _flat_natives(count: int, size=(16, 12)) -> list[np.ndarray]:
    return [np.full((size[1], size[0], 3), STEP * i, np.float32) for i in range(count)]


@pytest.mark.parametrize(
    "retime, native_fps, rate, expected",
    [
        # 24 fps natives delivered at 48 fps: frames 1 and 3 lie half way (hold takes the later native)
        ("hold", 24, 48, [0, 1, 1, 2, 2]),
        ("blend", 24, 48, [0, 0.5, 1, 1.5, 2]),
        # 8 fps natives delivered at 24 fps: a third and two thirds of the way
        ("hold", 8, 24, [0, 0, 1, 1, 1]),
        ("blend", 8, 24, [0, 1 / 3, 2 / 3, 1, 4 / 3]),
    ],
)
def test_delivered_hold_and_blend_frames_and_their_flags(retime, native_fps, rate, expected, monkeypatch):
    guides = _counting(monkeypatch, "guide")
    natives = _flat_natives(3)
    delivery = Delivery(rate=Fraction(rate), duration=5, retime=retime, colorspace=LINEAR)
    conformer = Conformer(delivery, Fraction(native_fps), 3, (16, 12), LINEAR)
    frames = list(conformer.frames(lambda i: natives[i]))
    values = [float(f.rgba[0, 0, 0]) for f in frames]
    np.testing.assert_allclose(values, STEP * np.asarray(expected), atol=1e-6)
    assert [f.attributes["ttt_studio/conform/flow_fallback"] for f in frames] == ["0"] * 5
    assert conformer.report.flow_fallbacks == 0
    assert guides == []  # no flow guides without flow


def test_flow_fallbacks_are_flagged_per_frame_and_counted():
    rng = np.random.default_rng(1)
    natives = [rng.random((32, 32, 3), dtype=np.float32) for _ in range(3)]  # noise: nothing to follow
    delivery = Delivery(rate=Fraction(24), duration=7, colorspace=MODEL)
    conformer = Conformer(delivery, Fraction(8), 3, (32, 32), MODEL)
    assert conformer.report.flow_fallbacks == 0
    frames = list(conformer.frames(lambda i: natives[i]))
    flags = [f.attributes["ttt_studio/conform/flow_fallback"] for f in frames]
    assert flags == ["0", "1", "1", "0", "1", "1", "0"]
    assert conformer.report.flow_fallbacks == 4
    assert json.loads(frames[-1].attributes["ttt_studio/conform/flow_fallbacks"]) == 4


def test_each_flow_is_computed_once_and_only_the_current_pair_is_held(monkeypatch):
    flows = _counting(monkeypatch, "compute_flows")
    natives = _flat_natives(4)
    delivery = Delivery(rate=Fraction(24), duration=10, colorspace=LINEAR)
    conformer = Conformer(delivery, Fraction(8), 4, (16, 12), LINEAR)
    held = []
    for _ in conformer.frames(lambda i: natives[i]):
        held.append(len(conformer._flows))
    assert len(flows) == 3  # pairs (0, 1), (1, 2), (2, 3)
    assert max(held) == 1


def test_a_frame_index_must_be_a_whole_number():
    conformer = Conformer(Delivery(rate=24, duration=4), Fraction(24), 4, (16, 12), LINEAR)
    for k in (True, 1.0):
        with pytest.raises(ValueError, match=rf"^delivered frame index must be in 0\.\.3, got {k!r}$"):
            conformer.frame(k, lambda i: np.zeros((12, 16, 3), np.float32))  # type: ignore[arg-type]


def test_rgba_natives_keep_their_alpha():
    native = np.full((12, 16, 4), 0.25, np.float32)
    native[..., 3] = 0.5
    conformer = Conformer(Delivery(rate=24, duration=1), Fraction(24), 1, (16, 12), LINEAR)
    frame = conformer.frame(0, lambda i: native)
    assert frame.rgba.shape == (12, 16, 4)
    np.testing.assert_allclose(frame.rgba, native, atol=1e-6)


def test_report_and_attributes_of_an_anamorphic_ntsc_delivery():
    delivery = Delivery(
        rate=Fraction(24000, 1001), duration=1, width=100, height=50, pixel_aspect=2.0, fit="distort"
    )
    conformer = Conformer(delivery, Fraction(24000, 1001), 1, (12, 12), LINEAR)
    frame = conformer.frame(0, lambda i: np.full((12, 12, 3), 0.5, np.float32))
    metadata = conformer.report.metadata()
    assert metadata["rate"] == "24000/1001" and metadata["native_fps"] == "24000/1001"
    assert metadata["target"] == {"width": 100, "height": 50, "pixel_aspect": 2.0}
    assert metadata["scale"] == [8.333333, 4.166667]
    assert frame.attributes["pixelAspectRatio"] == 2.0
    assert frame.attributes["displayWindow"] == ((0, 0), (99, 49))
    assert frame.attributes["dataWindow"] == ((0, 0), (99, 49))


@pytest.mark.parametrize(
    "size, window",
    [
        ((32, 16), ((8, 0), (23, 15))),  # a square picture fitted into a wide frame: columns 8..23
        ((16, 32), ((0, 8), (15, 23))),  # into a tall frame: rows 8..23
    ],
)
def test_a_written_fitted_frame_reads_back_window_tags_and_half_pixels(tmp_path, size, window):
    delivery = Delivery(rate=24, duration=1, width=size[0], height=size[1], colorspace="lin_adobergb_scene")
    conformer = Conformer(delivery, Fraction(24), 1, (8, 8), LINEAR)
    frame = conformer.frame(0, lambda i: np.full((8, 8, 3), 0.5, np.float32))
    (x0, y0), (x1, y1) = window
    path = str(tmp_path / "f.exr")
    write_delivered(path, frame)
    with OpenEXR.File(path) as exr:  # the header is read while the file is open
        header = dict(exr.header())
        pixels = np.array(exr.channels()["RGBA"].pixels)
    assert tuple(tuple(int(v) for v in c) for c in header["dataWindow"]) == window
    assert tuple(tuple(int(v) for v in c) for c in header["displayWindow"]) == (
        (0, 0),
        (size[0] - 1, size[1] - 1),
    )
    assert pixels.shape == (16, 16, 4) and pixels.dtype == np.float16
    np.testing.assert_array_equal(pixels, frame.rgba[y0 : y1 + 1, x0 : x1 + 1].astype(np.float16))
    assert header["colorInteropID"] == "lin_adobergb_scene"
    assert "chromaticities" not in header  # no primaries listed for AdobeRGB
    assert header["ttt_studio/conform/flow_fallback"] == "0"
    assert json.loads(header["ttt_studio/conform/target"])["width"] == size[0]


def test_written_pixels_must_fit_in_half_floats(tmp_path):
    conformer = Conformer(Delivery(rate=24, duration=1), Fraction(24), 1, (4, 4), LINEAR)
    frame = conformer.frame(0, lambda i: np.zeros((4, 4, 3), np.float32))
    frame.rgba[0, 0, 0] = 65504.0  # the largest half: written exactly
    write_delivered(str(tmp_path / "max.exr"), frame)
    with OpenEXR.File(str(tmp_path / "max.exr")) as exr:
        assert float(exr.channels()["RGBA"].pixels[0, 0, 0]) == 65504.0
    frame.rgba[0, 0, 0] = -70000.0
    with pytest.raises(ExrWriteError, match="pixel magnitude 70000 does not fit in half float"):
        write_delivered(str(tmp_path / "low.exr"), frame)
    frame.rgba[0, 0, 0] = -np.inf
    with pytest.raises(ExrWriteError, match="pixels contain NaN or inf"):
        write_delivered(str(tmp_path / "inf.exr"), frame)


def test_a_delivery_in_a_camera_space_is_written_with_its_namespaced_id(tmp_path):
    """Camera spaces carry OCIO's namespaced interop ids: a delivery in Linear ARRI Wide Gamut 4 conforms
    and writes, tagged "ocio:lin_awg4_scene"."""
    delivery = Delivery(rate=24, duration=1, width=8, height=8, colorspace="ocio:lin_awg4_scene")
    frame = Conformer(delivery, Fraction(24), 1, (8, 8), LINEAR).frame(
        0, lambda i: np.full((8, 8, 3), 0.5, np.float32)
    )
    path = str(tmp_path / "awg4.exr")
    write_delivered(path, frame)
    with OpenEXR.File(path) as exr:
        assert dict(exr.header())["colorInteropID"] == "ocio:lin_awg4_scene"
