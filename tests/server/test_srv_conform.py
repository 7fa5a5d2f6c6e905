"""Issue 22 on a real `python -m server.main --model <shipped 64x64, 8 fps model>` on loopback, through the
plugins' client (host_plugin.core.client): a shot arrives in the edit's time, format and colour.

Jobs sample 2 steps (guidance 1: one forward a step) so each runs in seconds; the conform's own accuracy
(flow retime, scaling, OCIO) is tested in tests/conform.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import grpc
import numpy as np
import OpenEXR
import opentimelineio as otio
import pytest
from srv_helpers import TOKENS, ServerProcess

from host_plugin.core.client import TTTClient
from host_plugin.core.delivery import Delivery
from host_plugin.core.errors import ClientError
from host_plugin.core.exr_io import read_exr
from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from protos.ttt_studio.v1 import ttt_studio_pb2_grpc as pb_grpc
from ttt_engine import default_model
from ttt_engine.conform import convert, exr_colour_attributes
from ttt_engine.conform.colour import GAMUT_CHROMATICITIES

BEAT = [{"text": "The story opens in the garden. Tom the cat chases Jerry the mouse to the right."}]
FAST = {"steps": 2, "guidance_scale": 1.0, "seed": 1, "preview_every": 0}
NTSC_FILM = Fraction(24000, 1001)
AP1 = GAMUT_CHROMATICITIES["ap1"]
GREY_DELTA_E = 12.0
"""Largest CIE76 delta E (Lab, D65) a mid-grey patch may take from a restyle at strength 0.05 (one
denoising step at the lowest noise). Measured on the shipped model: its VAE round trip alone moves the
grey by 2.0; the one step tints it towards magenta by 5-11 (the toy model's own bias, not the conform's:
the plate goes ACEScg -> sRGB-encoded -> ACEScg through OCIO exactly)."""

pytestmark = pytest.mark.slow  # a real server loading the shipped model, jobs on 2 CPU cores


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("conform") / "data"
    model = default_model.default_model_dir()
    process = ServerProcess(data, token_file, "--max-height", "1080", "--max-width", "1920", model=model)
    yield process.start()
    assert process.terminate() == 0, process.log_text()[-3000:]


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[TTTClient]:
    with TTTClient(server.address, token=TOKENS["alice"], timeout_s=120) as c:
        c.connect()
        yield c


def _finish(client: TTTClient, job_id: str) -> None:
    for _ in client.watch(job_id):
        pass
    job = client.get_job(job_id)
    assert job.state == "completed", job.message


def _header(path: str) -> dict:
    return read_exr(path)[1]


def test_server_info_says_what_the_model_makes_and_what_a_job_really_has(client: TTTClient) -> None:
    """Issue 23's defect: frames_per_segment (24) was all the wire said while a one-segment job has 25
    frames; first_segment_frames is now served and is what a job has. Issue 22: the model's facts."""
    info = client.info
    assert (info.native_fps, info.sizes, info.model_colourspace) == (8, ((64, 64),), "srgb_rec709_scene")
    assert (info.segment_seconds, info.default_colourspace, info.supports_delivery()) == (
        3,
        "lin_rec709_scene",
        True,
    )
    assert info.segments_for(48, 24) == 1 and info.segments_for(73, 24) == 2
    raw = pb_grpc.TTTStudioStub(grpc.insecure_channel(client.address)).GetServerInfo(
        pb.GetServerInfoRequest(), metadata=client.metadata
    )
    native = client.submit(BEAT, **FAST).job  # no delivery: native frames
    assert native.total_frames == raw.first_segment_frames == info.num_frames(1) == 25
    assert raw.frames_per_segment == 24 and native.generation_size == (64, 64)
    client.cancel(native.job_id)


@pytest.fixture(scope="module")
def delivered(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A one-beat storyboard on a 2-s marker (48 frames) at 24 fps delivered 1920x1080 ACEScg, and at
    23.976 at the generation size; both submitted at once, fetched when done."""
    out = tmp_path_factory.mktemp("delivered")
    asks = {
        Fraction(24): Delivery(24, 48, width=1920, height=1080, colorspace="lin_ap1_scene"),
        NTSC_FILM: Delivery(NTSC_FILM, 48, colorspace="ACEScg"),
    }
    results = {}
    with TTTClient(server.address, token=TOKENS["alice"], timeout_s=120) as client:
        client.connect()
        jobs = {
            rate: client.submit(BEAT, delivery=d, shot_name="sh010", **FAST).job for rate, d in asks.items()
        }
        for rate, job in jobs.items():
            _finish(client, job.job_id)
            files = client.fetch_frames(job.job_id, out / str(rate).replace("/", "_"))
            results[rate] = (job, files, client.result(job.job_id))
    return results


@pytest.mark.parametrize("rate", [Fraction(24), NTSC_FILM], ids=["24", "23.976"])
def test_a_one_beat_storyboard_fills_a_two_second_marker_at_the_edit_rate(
    delivered: dict, rate: Fraction
) -> None:
    job, files, result = delivered[rate]
    assert job.total_frames == 48 and job.native_frames == 25 and job.delivery.rate == rate
    assert [f.index for f in files] == list(range(48)) and files[0].number == 1001
    assert result.rate == rate and result.colour_interop_id == "lin_ap1_scene"
    for f in (files[0], files[17], files[47]):
        header = _header(f.path)
        assert header["framesPerSecond"] == rate
        assert header["colorInteropID"] == "lin_ap1_scene"
        np.testing.assert_allclose(header["chromaticities"], AP1, atol=1e-6)
    clip = otio.adapters.read_from_string(result.otio_json, "otio_json").find_clips()[0]
    assert clip.source_range.duration.value == 48 and clip.source_range.duration.rate == pytest.approx(
        float(rate)
    )
    conform = clip.metadata["ttt_studio"]["conform"]
    assert list(conform["generation_size"]) == [64, 64]
    assert conform["native_fps"] == "8" and conform["retime"] == "flow"
    assert conform["colourspace"] == "lin_ap1_scene" and conform["source_colourspace"] == "srgb_rec709_scene"


def test_a_1080p_target_generates_at_the_models_size_and_is_scaled(delivered: dict) -> None:
    job, files, result = delivered[Fraction(24)]
    assert job.generation_size == (64, 64)  # never run natively at 1080
    assert (result.width, result.height) == (1920, 1080)
    header = _header(files[10].path)
    assert header["displayWindow"] == ((0, 0), (1919, 1079))
    assert header["dataWindow"] == ((420, 0), (1499, 1079))  # fit: the square picture pillarboxed
    assert result.conform["generation_size"] == [64, 64] and result.conform["scale"] == [16.875, 16.875]
    pixels, _ = read_exr(files[10].path)
    assert pixels.shape == (1080, 1080, 4) and float(pixels[..., :3].std()) > 0.01  # a picture, not black
    _, other_files, other = delivered[NTSC_FILM]
    assert (other.width, other.height) == (64, 64) and other.conform["scale"] == [1.0, 1.0]
    assert _header(other_files[0].path)["displayWindow"] == ((0, 0), (63, 63))


def _aces_plate(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 64x64 ACEScg plate tagged as such: a mid-grey patch (0.18) on a coloured ground."""
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    rgb = np.stack([0.05 + 0.5 * xx, 0.3 * yy + 0.05, 0.25 - 0.2 * xx], -1).astype(np.float32)
    rgb[16:48, 16:48] = 0.18
    rgba = np.concatenate([rgb, np.ones((64, 64, 1), np.float32)], -1)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    header.update(exr_colour_attributes("lin_ap1_scene"))
    path = tmp_path / "aces_plate.exr"
    OpenEXR.File(header, {"RGBA": rgba.astype(np.float16)}).write(str(path))
    return path, rgb


def _lab(acescg: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) of ACEScg values: OCIO converts them to linear Rec.709, OpenCV to Lab."""
    import cv2

    linear = convert(np.asarray(acescg, np.float32).reshape(1, -1, 3), "lin_ap1_scene", "lin_rec709_scene")
    return cv2.cvtColor(linear, cv2.COLOR_LRGB2Lab).reshape(-1, 3)


def test_an_aces_plate_restyled_comes_back_in_aces_with_its_grey(client: TTTClient, tmp_path: Path) -> None:
    """Restyle at low strength: the plate is read as ACEScg (its tags), conformed into the model's rate,
    size and sRGB space, and the result comes back in ACEScg with the grey patch's colour kept."""
    path, plate = _aces_plate(tmp_path)
    upload = client.upload_plate(path).upload_id
    job = client.submit(
        BEAT,
        delivery=Delivery(24, 48),
        plate_upload_ids=[upload] * 48,
        strength=0.05,
        **{**FAST, "steps": 20},
    ).job
    _finish(client, job.job_id)
    files = client.fetch_frames(job.job_id, tmp_path / "restyled")
    result = client.result(job.job_id)
    assert len(files) == 48 and result.colour_interop_id == "lin_ap1_scene"
    for f in (files[0], files[24], files[47]):
        pixels, header = read_exr(f.path)
        assert header["colorInteropID"] == "lin_ap1_scene"
        grey = pixels[24:40, 24:40, :3].reshape(-1, 3).mean(axis=0)
        delta = float(np.linalg.norm(_lab(grey) - _lab(plate[32, 32])))
        assert delta <= GREY_DELTA_E, (f.index, grey, delta)


def _raw_submit(client: TTTClient, delivery: pb.Delivery, segments: int = 1) -> grpc.RpcError:
    stub = pb_grpc.TTTStudioStub(grpc.insecure_channel(client.address))
    request = pb.SubmitShotRequest(
        storyboard=pb.Storyboard(segments=[pb.Segment(text=BEAT[0]["text"])] * segments), delivery=delivery
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitShot(request, metadata=client.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value.details()


def test_bad_deliveries_are_refused_naming_the_field(client: TTTClient) -> None:
    assert "delivery rate" in _raw_submit(client, pb.Delivery(rate_num=51, rate_den=2, duration=48))
    assert "24000/1001" in _raw_submit(client, pb.Delivery(rate_num=51, rate_den=2, duration=48))
    four_seconds = _raw_submit(client, pb.Delivery(rate_num=24, duration=96))
    assert "storyboard has 1 segment(s); a delivery of 96 frames at 24 fps needs 2" in four_seconds
    assert "delivery.colorspace" in _raw_submit(
        client, pb.Delivery(rate_num=24, duration=48, colorspace="bogus")
    )
    too_wide = _raw_submit(client, pb.Delivery(rate_num=24, duration=48, width=4096, height=2160))
    assert "delivery.width=4096 exceeds the server limit max_width=1920" in too_wide
    with pytest.raises(ClientError, match="cannot generate 1920x1080; it generates 64x64"):
        client.submit(BEAT, delivery=Delivery(24, 48), width=1920, height=1080, **FAST)
