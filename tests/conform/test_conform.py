"""The conform stage as the server uses it: pass-through, streaming, scene cuts, report, bad inputs."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from ttt_engine.conform import Conformer, Delivery, conform_in, native_frames_needed

MODEL = "srgb_rec709_scene"
NTSC_FILM = Fraction(24000, 1001)


def _natives(count: int, size=(16, 12), seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((size[1], size[0], 3), dtype=np.float32) for _ in range(count)]


def test_native_rate_equal_to_delivery_rate_passes_frames_through_exactly():
    natives = _natives(10)
    delivery = Delivery(rate=Fraction(24), duration=10, colorspace=MODEL)
    conformer = Conformer(delivery, Fraction(24), 10, (16, 12), MODEL)
    frames = list(conformer.frames(lambda i: natives[i]))
    assert conformer.report.retime == "none"
    for f, native in zip(frames, natives, strict=True):
        np.testing.assert_array_equal(f.rgba[:, :, :3], native)
        assert f.attributes["framesPerSecond"] == Fraction(24)


def test_streaming_reads_each_native_frame_once_and_keeps_two():
    natives = _natives(17)
    reads: list[int] = []
    held: list[int] = []

    def native(i: int) -> np.ndarray:
        reads.append(i)
        return natives[i]

    delivery = Delivery(rate=NTSC_FILM, duration=48, colorspace="ACEScg")
    conformer = Conformer(delivery, Fraction(8), 17, (16, 12), MODEL)
    for _ in conformer.frames(native):
        held.append(len(conformer._natives))
    assert reads == list(range(17))
    assert max(held) <= 2


def test_no_delivered_frame_mixes_two_scenes():
    # scene one: flat 0.2 with a moving bar; scene two (from native frame 24): flat 0.8
    natives = []
    for i in range(native_frames_needed(144, NTSC_FILM, Fraction(8))):
        frame = np.full((32, 32, 3), 0.2 if i < 24 else 0.8, np.float32)
        frame[8:24, i % 24 : i % 24 + 4] = 0.5 if i < 24 else 0.9
        natives.append(frame)
    for retime in ("flow", "blend"):
        delivery = Delivery(rate=NTSC_FILM, duration=144, retime=retime, colorspace=MODEL)
        conformer = Conformer(delivery, Fraction(8), len(natives), (32, 32), MODEL, scene_starts=[24])
        for f in conformer.frames(lambda i: natives[i]):
            rgb = f.rgba[:, :, :3]
            first, second = np.isclose(rgb, 0.2, atol=1e-6).mean(), np.isclose(rgb, 0.8, atol=1e-6).mean()
            assert max(first, second) > 0.8, f"{retime} frame {f.index} mixes the scenes"
            assert min(first, second) == 0.0, f"{retime} frame {f.index} mixes the scenes"


def test_report_is_json_and_every_frame_carries_it():
    natives = _natives(9)
    delivery = Delivery(rate=Fraction(25), duration=25, width=64, height=48, colorspace="lin_ap1_scene")
    conformer = Conformer(delivery, Fraction(8), 9, (16, 12), MODEL)
    frame = conformer.frame(3, lambda i: natives[i])
    metadata = conformer.report.metadata()
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata == {
        "native_fps": "8",
        "rate": "25",
        "retime": "flow",
        "frames": 25,
        "flow_fallbacks": metadata["flow_fallbacks"],
        "generation_size": [16, 12],
        "target": {"width": 64, "height": 48, "pixel_aspect": 1.0},
        "fit": "fit",
        "filter": "lanczos",
        "scale": [4.0, 4.0],
        "source_colourspace": MODEL,
        "colourspace": "lin_ap1_scene",
    }
    assert frame.attributes["ttt_studio/conform/rate"] == "25"
    assert json.loads(frame.attributes["ttt_studio/conform/generation_size"]) == [16, 12]
    assert frame.attributes["colorInteropID"] == "lin_ap1_scene"
    assert all(isinstance(v, str) for k, v in frame.attributes.items() if k.startswith("ttt_studio/"))


def test_round_trip_with_a_retime_returns_the_plate_on_shared_frames():
    """24 fps plate -> 8 fps model frames -> 24 fps delivery: every third frame is a plate frame again."""
    plates = [np.clip(p * 0.8, 0, 1) for p in _natives(25, seed=4)]
    model = conform_in(plates, Fraction(24), "lin_rec709_scene", Fraction(8), 9, (16, 12), MODEL)
    delivery = Delivery(rate=Fraction(24), duration=25, colorspace="lin_rec709_scene")
    conformer = Conformer(delivery, Fraction(8), 9, (16, 12), MODEL)
    for f in conformer.frames(lambda i: model[i]):
        if f.index % 3 == 0:
            np.testing.assert_allclose(f.rgba[:, :, :3], plates[f.index], atol=1e-4)


def test_conform_in_downscales_and_retimes():
    plates = [np.full((120, 160, 4), v, np.float32) for v in np.linspace(0.1, 0.7, 7)]
    model = conform_in(plates, Fraction(24), "lin_rec709_scene", Fraction(8), 3, (16, 12), "lin_rec709_scene")
    assert model.shape == (3, 12, 16, 3) and model.dtype == np.float32
    np.testing.assert_allclose(model[:, 0, 0, 0], [0.1, 0.4, 0.7], atol=1e-6)  # plate frames 0, 3, 6


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: Conformer(Delivery(rate=24, duration=24), Fraction(8), 5, (16, 12), MODEL),
            "native_count 5 is too short",
        ),
        (
            lambda: Conformer(Delivery(rate=24, duration=24), Fraction(8), 9, (16, 0), MODEL),
            r"generation_size .* got \(16, 0\)",
        ),
        (
            lambda: Conformer(Delivery(rate=24, duration=24), Fraction(8), 9, (16, 12), "sRGB-ish"),
            "unknown colour space 'sRGB-ish'",
        ),
        (
            lambda: Conformer(
                Delivery(rate=24, duration=24, colorspace="acescg2"), Fraction(8), 9, (16, 12), MODEL
            ),
            "'acescg2'",
        ),
        (
            lambda: Delivery(rate=24, duration=24, fit="stretch"),
            "fit must be one of fit, fill, distort; got 'stretch'",
        ),
        (lambda: Delivery(rate=24, duration=24, filter="sinc"), "filter must be one of .*got 'sinc'"),
        (
            lambda: conform_in([], Fraction(24), MODEL, Fraction(8), 1, (16, 12), MODEL),
            "at least one plate frame",
        ),
        (
            lambda: conform_in(_natives(48), Fraction(24), MODEL, Fraction(8), 17, (16, 12), MODEL),
            r"17 native frames at 8 fps show plate frames 0..48 at 24 fps; got 48 plate frames",
        ),
        (
            lambda: conform_in(
                [np.zeros((4, 4), np.float32)], Fraction(24), MODEL, Fraction(24), 1, (4, 4), MODEL
            ),
            r"plate frame 0: expected a float image .* got shape \(4, 4\)",
        ),
        (
            lambda: conform_in(
                _natives(3), Fraction(24), MODEL, Fraction(8), 1, (16, 12), MODEL, retime="twixtor"
            ),
            "'twixtor'",
        ),
    ],
)
def test_bad_inputs_raise_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_native_frame_shape_is_named():
    conformer = Conformer(Delivery(rate=24, duration=24), Fraction(8), 9, (16, 12), MODEL)
    with pytest.raises(ValueError, match="native frame 0 is 12x16; the generation size is 16x12"):
        conformer.frame(0, lambda i: np.zeros((16, 12, 3), np.float32))
    with pytest.raises(ValueError, match=r"native frame 0: expected a float image .* got shape \(12, 16\)"):
        conformer.frame(0, lambda i: np.zeros((12, 16), np.float32))
    with pytest.raises(ValueError, match="delivered frame index must be in 0..23, got 24"):
        conformer.frame(24, lambda i: np.zeros((12, 16, 3), np.float32))


def test_written_frame_is_the_half_of_the_delivered_one(tmp_path):
    from host_plugin.core.errors import ExrWriteError
    from host_plugin.core.exr_io import read_exr
    from ttt_engine.conform import write_delivered

    natives = [n * 3.0 - 1.0 for n in _natives(1)]  # negative and above-1 values, in a linear space
    conformer = Conformer(Delivery(rate=24, duration=1), Fraction(24), 1, (16, 12), "lin_rec709_scene")
    frame = conformer.frame(0, lambda i: natives[i])
    write_delivered(str(tmp_path / "f.exr"), frame)
    pixels, _ = read_exr(str(tmp_path / "f.exr"))
    np.testing.assert_array_equal(pixels, frame.rgba.astype(np.float16).astype(np.float32))
    frame.rgba[0, 0, 0] = 1e6
    with pytest.raises(ExrWriteError, match="pixel magnitude 1e\\+06 does not fit in half float"):
        write_delivered(str(tmp_path / "g.exr"), frame)
