"""Elements inside a matte (#25 item 4) through a real `python -m server.main --tiny-random` on loopback:
plates and single-channel mattes uploaded with UploadPlate, an "element" job submitted, RGBA frames
fetched. The sampling itself (outside the matte the plate, inside generated) is shown with the shipped
model in tests/pipeline/test_element.py; here the server's part: the mattes checked at submit, carried
to the pipeline (the job's saved latents are the plate's outside the matte), and the delivered frames'
alpha (the feathered matte) with RGB premultiplied by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from srv_helpers import STORYBOARD, TOKENS, ServerProcess

from host_plugin.core.exr_io import read_exr
from server.client import StudioClient
from ttt_engine.pipeline.element import feathered, latent_mask

pytestmark = pytest.mark.slow  # a live server and two jobs on 2 CPU cores (about a minute)

SIZE = 32  # the tiny model's native size
FRAMES = 9  # the tiny model's one-segment frame count
FEATHER = 1.5
JOB = {"steps": 2, "guidance_scale": 1.0, "seed": 5, "preview_every": 0, "strength": 1.0}


def disc(radius: float = 8.0) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return (((yy - 15) ** 2 + (xx - 17) ** 2) < radius**2).astype(np.float32)


def plate_rgba(frame: int, alpha: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(frame)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgb = np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy, 0.5 - 0.3 * xx * yy], axis=-1)
    rgb = np.clip(rgb + 0.03 * rng.standard_normal(rgb.shape), 0, 1)
    a = np.ones((SIZE, SIZE)) if alpha is None else alpha
    return np.concatenate([rgb, a[..., None]], axis=-1).astype(np.float16)


def exr(path: Path, channels: dict[str, np.ndarray]) -> bytes:
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {k: np.ascontiguousarray(v, np.float16) for k, v in channels.items()}).write(
        str(path)
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("element") / "data"
    process = ServerProcess(data, token_file, "--max-height", "64", "--max-width", "64").start()
    yield process
    assert process.terminate() == 0, process.log_text()[-3000:]


@pytest.fixture(scope="module")
def uploads(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """alice's RGB plates, RGBA plates (the disc as alpha), single-channel mattes ("A"); bob's matte."""
    tmp = tmp_path_factory.mktemp("uploads")
    matte = disc()
    out: dict = {"rgb": [], "rgba": [], "matte": []}
    with StudioClient(server.address, token=TOKENS["alice"]) as alice:
        for i in range(FRAMES):
            rgba = plate_rgba(i)
            rgb = {c: rgba[..., k] for k, c in enumerate("RGB")}
            out["rgb"].append(alice.upload_plate(exr(tmp / f"p{i}.exr", rgb)).upload_id)
            with_alpha = {**rgb, "A": matte}
            out["rgba"].append(alice.upload_plate(exr(tmp / f"pa{i}.exr", with_alpha)).upload_id)
            out["matte"].append(alice.upload_plate(exr(tmp / f"m{i}.exr", {"A": matte})).upload_id)
        small = alice.upload_plate(exr(tmp / "small.exr", {"Y": np.ones((16, 16))}))
        out["small_matte"] = small.upload_id
        assert list(small.channels) == ["Y"] and (small.width, small.height) == (16, 16)
    with StudioClient(server.address, token=TOKENS["bob"]) as bob:
        out["bob_matte"] = bob.upload_plate(exr(tmp / "bob.exr", {"A": matte})).upload_id
    out["plates"] = [plate_rgba(i) for i in range(FRAMES)]
    return out


@pytest.fixture(scope="module")
def element_job(server: ServerProcess, uploads: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("frames")
    with StudioClient(server.address, token=TOKENS["alice"]) as alice:
        job = alice.submit(
            STORYBOARD,
            plate_upload_ids=uploads["rgb"],
            plate_mode="element",
            matte_upload_ids=uploads["matte"],
            matte_feather=FEATHER,
            shot_name="sh010_element",
            **JOB,
        ).job
        done = alice.wait(job.job_id)
        assert done.state == 4, done.message  # JOB_STATE_COMPLETED
        paths = alice.fetch(job.job_id, out)
    return {"job": done, "paths": paths}


def test_an_element_job_records_its_mattes_and_feather(element_job: dict, uploads: dict) -> None:
    job = element_job["job"]
    assert list(job.matte_upload_ids) == uploads["matte"]
    assert job.parameters.plate_mode == "element" and job.parameters.matte_feather == FEATHER


def test_its_frames_carry_the_feathered_matte_as_alpha_and_premultiplied_rgb(element_job: dict) -> None:
    paths = element_job["paths"]
    assert len(paths) == FRAMES
    expected = feathered(disc(), FEATHER)
    for path in paths:
        rgba, header = read_exr(path)
        assert header["channel_names"] == ["A", "B", "G", "R"]
        np.testing.assert_allclose(rgba[..., 3], expected, rtol=0, atol=1e-3)  # half precision
        region, truth = rgba[..., 3] > 0.5, disc() > 0.5
        assert (region & truth).sum() / (region | truth).sum() >= 0.95
        outside = rgba[..., 3] == 0
        assert outside.any() and (rgba[outside, :3] == 0).all()  # premultiplied: nothing outside
        assert float(rgba[rgba[..., 3] == 1, :3].std()) > 0.01  # the element itself, a picture


def test_the_job_generated_inside_and_kept_the_plate_outside(
    server: ServerProcess, element_job: dict, uploads: dict
) -> None:
    """The job's saved latents are the plate's latents outside the matte (the pipeline re-imposed
    them), and the delivered element differs from the plate inside."""
    from ttt_engine.conform import convert
    from ttt_engine.pipeline import VideoPipeline, load_latents

    job = element_job["job"]
    latents, _ = load_latents(server.data_dir / "jobs" / job.job_id / "latents.safetensors")
    pipe = VideoPipeline.tiny_random(seed=0)  # the server's model (--tiny-random, seed 0)
    plates = np.stack([p[..., :3].astype(np.float32) for p in uploads["plates"]])
    plate_latents = pipe.encode_frames(convert(plates, "lin_rec709_scene", pipe.spec.colorspace))
    matte = np.repeat(disc()[None], FRAMES, axis=0)
    mask = latent_mask(matte, pipe.temporal_factor, pipe.spatial_factor, FEATHER)
    outside = (mask == 0).expand_as(latents)
    assert outside.any()
    np.testing.assert_allclose(latents[outside], plate_latents[outside], rtol=0, atol=1e-5)
    inside = (mask == 1).expand_as(latents)
    assert float((latents[inside] - plate_latents[inside]).abs().mean()) > 0.1
    rgba, _ = read_exr(element_job["paths"][4])
    core = feathered(disc(), FEATHER) > 0.99
    unpremultiplied = rgba[core, :3] / rgba[core, 3:]
    assert float(np.abs(unpremultiplied - uploads["plates"][4][core, :3]).mean()) > 0.05


def test_the_plates_own_alpha_is_the_matte_when_no_mattes_are_given(
    server: ServerProcess, uploads: dict
) -> None:
    with StudioClient(server.address, token=TOKENS["alice"]) as alice:
        job = alice.submit(STORYBOARD, plate_upload_ids=uploads["rgba"], plate_mode="element", **JOB).job
        assert job.parameters.matte_feather == 2.0  # the server's default
        done = alice.wait(job.job_id)
        assert done.state == 4, done.message
        rgba, _ = read_exr(alice.fetch(job.job_id, server.data_dir.parent / "own_alpha")[0])
    np.testing.assert_allclose(rgba[..., 3], feathered(disc(), 2.0), rtol=0, atol=1e-3)


def _refused(client: StudioClient, code: grpc.StatusCode, *needles: str, **kwargs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.submit(STORYBOARD, **{**JOB, **kwargs})
    assert info.value.code() == code, info.value.details()
    for needle in needles:
        assert needle in info.value.details()


def test_bad_mattes_are_refused_naming_the_field_and_index(server: ServerProcess, uploads: dict) -> None:
    rgb, mattes = uploads["rgb"], uploads["matte"]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    with StudioClient(server.address, token=TOKENS["alice"], retries=0) as alice:
        element = {"plate_upload_ids": rgb, "plate_mode": "element"}
        _refused(
            alice,
            invalid,
            "matte_upload_ids: got 8 mattes for 9 plates",
            **element,
            matte_upload_ids=mattes[:8],
        )
        wrong_size = [*mattes[:3], uploads["small_matte"], *mattes[4:]]
        _refused(
            alice, invalid, "matte_upload_ids[3]", "16x16", "32x32", **element, matte_upload_ids=wrong_size
        )
        bobs = [*mattes[:5], uploads["bob_matte"], *mattes[6:]]
        _refused(alice, grpc.StatusCode.NOT_FOUND, "matte_upload_ids[5]", **element, matte_upload_ids=bobs)
        rgb_as_matte = [*mattes[:2], rgb[2], *mattes[3:]]
        _refused(
            alice, invalid, "matte_upload_ids[2]", "single-channel", **element, matte_upload_ids=rgb_as_matte
        )
        _refused(alice, invalid, "plate_upload_ids[0]", "no A channel", **element)
        _refused(
            alice,
            invalid,
            "plate_upload_ids[1]",
            "needs R, G and B",
            **{**element, "plate_upload_ids": [rgb[0], mattes[1], *rgb[2:]]},
        )
        restyle = {"plate_upload_ids": rgb, "plate_mode": "restyle"}
        _refused(
            alice,
            invalid,
            "matte_upload_ids are for parameters.plate_mode 'element'",
            **restyle,
            matte_upload_ids=mattes,
        )
        _refused(alice, invalid, "matte_feather is for plate_mode 'element'", **restyle, matte_feather=3.0)


def test_a_delivered_element_follows_the_picture_through_the_conform(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Edit frames of 48 x 48 at 24 fps delivered 64 x 64, through the plugins' client: the plates and
    mattes are conformed in to the model's 16 fps, 32 x 32; the delivered alpha is the matte carried as
    the picture is (onto the generation frame, then scaled 2x) and feathered in output pixels."""
    from host_plugin.core.client import TTTClient
    from host_plugin.core.delivery import Delivery

    def disc_at(size: int) -> np.ndarray:  # disc() drawn at another size
        yy, xx = (np.mgrid[0:size, 0:size] + 0.5) * SIZE / size - 0.5
        return (((yy - 15) ** 2 + (xx - 17) ** 2) < 8.0**2).astype(np.float32)

    duration = 12
    with TTTClient(server.address, token=TOKENS["alice"], timeout_s=120) as client:
        client.connect()
        plates, mattes = [], []
        for i in range(duration):
            big = np.kron(plate_rgba(i).astype(np.float32), np.ones((3, 3, 1)))[::2, ::2]  # 48 x 48
            channels = {c: big[..., k] for k, c in enumerate("RGB")}
            plates.append(client.upload_plate(exr(tmp_path / f"p{i}.exr", channels)).upload_id)
            mattes.append(client.upload_plate(exr(tmp_path / f"m{i}.exr", {"A": disc_at(48)})).upload_id)
        job = client.submit(
            STORYBOARD,
            plate_upload_ids=plates,
            plate_mode="element",
            matte_upload_ids=mattes,
            matte_feather=FEATHER,
            delivery=Delivery(24, duration, width=64, height=64, retime="blend"),
            **JOB,
        ).job
        assert (job.total_frames, job.generation_size) == (duration, (SIZE, SIZE))
        for _ in client.watch(job.job_id):
            pass
        done = client.get_job(job.job_id)
        assert done.state == "completed", done.message
        rgba, header = read_exr(client.fetch_frames(job.job_id, tmp_path / "out")[5].path)
    assert header["displayWindow"] == ((0, 0), (63, 63))
    region, truth = rgba[..., 3] > 0.5, disc_at(64) > 0.5
    assert (region & truth).sum() / (region | truth).sum() >= 0.9
    assert (rgba[rgba[..., 3] == 0, :3] == 0).all()


TAKE_OUTSIDE_ATOL = 1e-5  # outside the matte a take's latents are the plate's: float32 re-imposition


def test_an_element_job_with_three_takes_varies_only_inside_the_matte(
    server: ServerProcess, uploads: dict, tmp_path: Path
) -> None:
    """Three takes (seeds 5, 6, 7) of one element: each take's saved latents are the plate's outside the
    matte (within TAKE_OUTSIDE_ATOL) and its own inside; every take's frames carry the same feathered
    matte as alpha, and inside it the three pictures differ."""
    from server.frames import FrameStore
    from ttt_engine.conform import convert
    from ttt_engine.pipeline import VideoPipeline, load_latents

    with StudioClient(server.address, token=TOKENS["alice"]) as alice:
        job = alice.submit(
            STORYBOARD,
            plate_upload_ids=uploads["rgb"],
            plate_mode="element",
            matte_upload_ids=uploads["matte"],
            matte_feather=FEATHER,
            takes=3,
            **JOB,
        ).job
        done = alice.wait(job.job_id)
        assert done.state == 4, done.message  # JOB_STATE_COMPLETED
        assert [(t.index, t.seed) for t in done.takes] == [(k, JOB["seed"] + k) for k in range(3)]
        frames = [read_exr(alice.fetch(job.job_id, tmp_path / f"take{k}", take=k)[4])[0] for k in range(3)]

    pipe = VideoPipeline.tiny_random(seed=0)  # the server's model (--tiny-random, seed 0)
    plates = np.stack([p[..., :3].astype(np.float32) for p in uploads["plates"]])
    plate_latents = pipe.encode_frames(convert(plates, "lin_rec709_scene", pipe.spec.colorspace))
    matte = np.repeat(disc()[None], FRAMES, axis=0)
    mask = latent_mask(matte, pipe.temporal_factor, pipe.spatial_factor, FEATHER)
    insides = []
    for take in range(3):
        latents, _ = load_latents(FrameStore(server.data_dir).latents_path(job.job_id, take))
        outside = (mask == 0).expand_as(latents)
        assert outside.any()
        np.testing.assert_allclose(latents[outside], plate_latents[outside], rtol=0, atol=TAKE_OUTSIDE_ATOL)
        insides.append(latents[(mask == 1).expand_as(latents)])
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert float((insides[a] - insides[b]).abs().mean()) > 0.1, (a, b)

    expected = feathered(disc(), FEATHER)
    core = expected > 0.99
    for rgba in frames:
        np.testing.assert_allclose(rgba[..., 3], expected, rtol=0, atol=1e-3)  # the same matte each take
        assert (rgba[rgba[..., 3] == 0, :3] == 0).all()
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert float(np.abs(frames[a][core, :3] - frames[b][core, :3]).mean()) > 0.01, (a, b)
