"""Against a real `python -m server.main --tiny-random` process on loopback: round trip, resume, auth,
isolation between callers, bad inputs (each a clear status, the server stays up), cancel, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import grpc
import numpy as np
import OpenEXR
import opentimelineio as otio
import pytest
from PIL import Image
from srv_helpers import MINIMAL, SMALL, STORYBOARD, STORYBOARD_2, TOKENS, ServerProcess, exr_bytes, wait_for

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from ttt_engine.pipeline.params import sampling_from_attributes


def _code(exc_info: pytest.ExceptionInfo) -> grpc.StatusCode:
    return exc_info.value.code()


def _events(client: StudioClient, job_id: str, after: int = 0) -> list[pb.JobEvent]:
    return list(client.watch(job_id, after_seq=after, reconnect=False))


def _assert_up(server: ServerProcess, client: StudioClient) -> None:
    assert server.alive(), server.log_text()[-3000:]
    assert client.info().api_version == "ttt_studio.v1"


# ---------------------------------------------------------------------------- round trip


def test_submit_watch_fetch_round_trip(alice: StudioClient, tmp_path: Path) -> None:
    info = alice.info()
    assert info.caller == "alice" and info.limits.max_height == 64 and info.frames_per_segment > 0
    response = alice.submit(STORYBOARD_2, shot_name="sh010", **SMALL)
    job_id = response.job_id
    assert response.job.total_frames == 17
    # issue 23: the served numbers make what a job has (segment 0 holds the causal VAE's extra frame)
    assert response.job.total_frames == info.first_segment_frames + info.frames_per_segment
    assert (info.first_segment_frames, info.frames_per_segment) == (9, 8)

    events = _events(alice, job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    states = [e.state.state for e in events if e.WhichOneof("kind") == "state"]
    assert states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_COMPLETED
    assert pb.JOB_STATE_SAMPLING in states and pb.JOB_STATE_DECODING in states
    progress = [e.progress for e in events if e.WhichOneof("kind") == "progress"]
    assert [p.step for p in progress] == [1, 2] and all(p.total == 2 for p in progress)
    previews = [e.preview for e in events if e.WhichOneof("kind") == "preview"]
    assert previews, "preview_every defaults to 1: a preview per step"
    image = Image.open(io.BytesIO(previews[-1].data))
    assert image.format == "PNG" and image.size == (previews[-1].width, previews[-1].height)
    ready = [e.frames for e in events if e.WhichOneof("kind") == "frames"]
    assert [(r.segment, r.ready) for r in ready] == [(0, 9), (1, 17)]

    out = tmp_path / "frames"
    paths, otio_json = alice.fetch_result(job_id, out)
    assert [p.name for p in paths] == [f"sh010.{1001 + i}.exr" for i in range(17)]
    result = alice.result(job_id)
    for path, frame in zip(paths, result.frames):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == frame.sha256
        with OpenEXR.File(str(path)) as exr:
            header = dict(exr.header())  # emptied when the file closes
            rgba = exr.channels()["RGBA"].pixels
        assert rgba.shape == (32, 32, 4) and rgba.dtype == np.float16
        assert np.isfinite(rgba).all() and np.all(rgba[..., 3] == 1)
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert header["colorInteropID"] == "lin_rec709_scene"
        assert header["ttt_studio/job_id"] == job_id
        # how it was sampled, as `ttt-studio eval --random-init` reads it back (unset ones: the model's)
        sampling = sampling_from_attributes(header, str(path))
        assert {k: sampling[k] for k in ("steps", "seed", "guidance_scale")} == {
            "steps": 2,
            "seed": 3,
            "guidance_scale": 1.0,
        }
        assert sampling["sampler"] == "dpmpp_2m" and sampling["cfg_schedule"] in ("constant", "dynamic")

    timeline = otio.adapters.read_from_string(otio_json, "otio_json")
    clips = list(timeline.find_clips())
    assert len(clips) == 1
    clip = clips[0]
    assert clip.metadata["ttt_studio"]["job_id"] == job_id
    assert clip.source_range.duration.to_frames() == 17
    refs = clip.media_references()
    sequence = refs["DEFAULT_MEDIA"]
    assert isinstance(sequence, otio.schema.ImageSequenceReference)
    assert sequence.target_url_base == out.resolve().as_uri() + "/"
    assert [Path(sequence.target_url_for_image_number(i)[len("file://") :]) for i in range(17)] == paths
    assert refs["first_frame"].target_url == paths[0].as_uri()


def test_watch_resumes_after_a_dropped_stream(alice: StudioClient) -> None:
    job_id = alice.submit(STORYBOARD, **SMALL).job_id
    stream = alice.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=alice.metadata)
    seen = []
    for event in stream:
        seen.append(event.seq)
        if len(seen) == 3:
            stream.cancel()  # the connection "drops" mid-job
            break
    rest = _events(alice, job_id, after=seen[-1])
    everything = _events(alice, job_id)
    assert seen + [e.seq for e in rest] == [e.seq for e in everything]
    assert everything[-1].state.state == pb.JOB_STATE_COMPLETED


def test_fetch_resumes_from_frame_n_in_small_chunks(alice: StudioClient, tmp_path: Path) -> None:
    job_id = alice.submit(STORYBOARD_2, **SMALL).job_id
    assert alice.wait(job_id).state == pb.JOB_STATE_COMPLETED
    chunks = list(
        alice.stub.FetchFrames(
            pb.FetchFramesRequest(job_id=job_id, start_frame=5, chunk_bytes=1024), metadata=alice.metadata
        )
    )
    assert chunks[0].frame_index == 5 and chunks[-1].frame_index == 16 and chunks[-1].last
    assert all(len(c.data) <= 1024 for c in chunks)
    assert sum(c.last for c in chunks) == 12  # frames 5..16
    paths = alice.fetch(job_id, tmp_path, start_frame=5)
    assert [p.name for p in paths] == [f"ttt_shot.{1006 + i}.exr" for i in range(12)]
    by_name = {f.filename: f.sha256 for f in alice.result(job_id).frames}
    for path in paths:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == by_name[path.name]


def test_fetch_follow_streams_frames_while_the_job_runs(alice: StudioClient, tmp_path: Path) -> None:
    job_id = alice.submit(STORYBOARD_2, **{**SMALL, "steps": 6}).job_id  # >= 0.9 s of sampling
    with pytest.raises(grpc.RpcError) as err:
        alice.result(job_id)
    assert _code(err) == grpc.StatusCode.FAILED_PRECONDITION and "completed" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        alice.fetch(job_id, tmp_path / "early")
    assert _code(err) == grpc.StatusCode.FAILED_PRECONDITION and "follow" in err.value.details()
    states_at_frame = []

    def on_frame(path: Path, chunk: pb.FrameChunk) -> None:
        if chunk.frame_index in (0, 16):
            states_at_frame.append(alice.job(job_id).state)

    paths = alice.fetch(job_id, tmp_path / "follow", follow=True, on_frame=on_frame)
    assert len(paths) == 17
    assert states_at_frame[0] != pb.JOB_STATE_COMPLETED, "the first frame arrived before the job finished"
    assert alice.wait(job_id).state == pb.JOB_STATE_COMPLETED


# ---------------------------------------------------------------------------- auth and isolation


def test_missing_or_unknown_token_is_unauthenticated(live_server: ServerProcess, tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for token in ("", "not-a-real-token-0123456789"):
        with StudioClient(live_server.address, token=token or None, retries=0) as client:
            client.token = token or None
            with pytest.raises(grpc.RpcError) as err:
                client.info()
            assert _code(err) == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                client.submit(STORYBOARD, **MINIMAL)
            assert _code(err) == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                list(client.watch("0" * 32, reconnect=False))
            assert _code(err) == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                client.upload_plate(b"\x76\x2f\x31\x01" + b"x" * 10)
            assert _code(err) == grpc.StatusCode.UNAUTHENTICATED
    # load balancers probe health without a token
    with grpc.insecure_channel(live_server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="ttt_studio.v1.TTTStudio"), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(live_server: ServerProcess) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(live_server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            metadata=[("authorization", f"Bearer {TOKENS['alice']}")],
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"ttt_studio.v1.TTTStudio", "grpc.health.v1.Health"} <= names


def test_another_users_job_is_not_found(alice: StudioClient, bob: StudioClient, tmp_path: Path) -> None:
    job_id = alice.submit(STORYBOARD, **MINIMAL).job_id
    assert alice.wait(job_id).state == pb.JOB_STATE_COMPLETED
    calls = {
        "get": lambda: bob.job(job_id),
        "cancel": lambda: bob.cancel(job_id),
        "watch": lambda: list(bob.watch(job_id, reconnect=False)),
        "fetch": lambda: bob.fetch(job_id, tmp_path),
        "result": lambda: bob.result(job_id),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert _code(err) == grpc.StatusCode.NOT_FOUND, name
        assert job_id in err.value.details()
    assert job_id not in {j.job_id for j in bob.jobs()}
    assert job_id in {j.job_id for j in alice.jobs()}
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- bad inputs


def _plate_chunks(data: bytes, order: list[int] | None = None, chunk: int = 1024, **header):
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    head = pb.PlateHeader(
        display_name="plate.exr", total_bytes=header.pop("total_bytes", len(data)), **header
    )
    order = order if order is not None else list(range(len(pieces)))
    for seq in order:
        msg = pb.UploadPlateChunk(sequence=seq, data=pieces[seq])
        if seq == 0:
            msg.header.CopyFrom(head)
        yield msg


def test_plate_upload_validates_and_is_used_by_id(
    alice: StudioClient, bob: StudioClient, tmp_path: Path
) -> None:
    good = exr_bytes(tmp_path, np.full((16, 24, 4), 0.25, np.float32))
    upload = alice.upload_plate(good, chunk_bytes=700)
    assert upload.upload_id.startswith("u") and (upload.width, upload.height) == (24, 16)
    assert upload.sha256 == hashlib.sha256(good).hexdigest()
    # restyle: one plate per output frame (an id may repeat: a held frame), at the plate's size
    ids = [upload.upload_id] * 9
    args = {**MINIMAL, "width": 24, "strength": 0.5}
    job = alice.submit(STORYBOARD, plate_upload_ids=ids, **args).job
    assert list(job.plate_upload_ids) == ids
    assert job.parameters.strength == 0.5 and job.parameters.plate_mode == "restyle"
    with pytest.raises(grpc.RpcError) as err:  # plates are per caller too
        bob.submit(STORYBOARD, plate_upload_ids=ids, **args)
    assert _code(err) == grpc.StatusCode.NOT_FOUND
    alice.cancel(job.job_id)


def _ramp_plate(frames: int, height: int, width: int) -> np.ndarray:
    """Scene-linear RGB [T, H, W, 3] that changes over the frames, rounded to half like the EXRs."""
    t = np.linspace(0, 1, frames)[:, None, None]
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([0.05 + 0.8 * xx + 0 * t, 0.6 * yy + 0.3 * t, 0.9 - 0.8 * t + 0 * xx], axis=-1)
    return rgb.astype(np.float16).astype(np.float32)


def _upload_frames(client: StudioClient, plate: np.ndarray, tmp: Path) -> list[str]:
    alpha = np.ones(plate.shape[:3] + (1,), np.float32)
    return [
        client.upload_plate(exr_bytes(tmp, np.concatenate([rgb, a], -1), f"plate{i}.exr")).upload_id
        for i, (rgb, a) in enumerate(zip(plate, alpha))
    ]


def test_plates_restyle_and_continue_come_back_as_frames(
    alice: StudioClient, server_pipe, tmp_path: Path
) -> None:
    """Plates uploaded, used by id: the server's frames are what the same tiny model makes locally from
    the same plates (so the server read them, in order, and used them as asked), and not text-to-video."""
    from host_plugin.core.exr_io import read_exr
    from ttt_engine.pipeline import GenerationParams

    plate = _ramp_plate(9, 16, 16)
    ids = _upload_frames(alice, plate, tmp_path)
    args = {**MINIMAL, "steps": 4}
    jobs = {
        "restyle": (alice.submit(STORYBOARD, plate_upload_ids=ids, strength=0.5, **args).job_id, plate),
        "continue": (
            alice.submit(STORYBOARD, plate_upload_ids=ids[:5], plate_mode="continue", **args).job_id,
            plate[:5],
        ),
    }
    from ttt_engine.conform import convert

    model, linear = server_pipe.spec.colorspace, "lin_rec709_scene"  # plates and frames: the EXR default
    local = GenerationParams(height=16, width=16, steps=4, guidance_scale=1.0, seed=MINIMAL["seed"])
    t2v = convert(server_pipe.generate(STORYBOARD, local).frames, model, linear)
    for mode, (job_id, init) in jobs.items():
        job = alice.wait(job_id)
        assert job.state == pb.JOB_STATE_COMPLETED, job.message
        paths = alice.fetch(job_id, tmp_path / mode)
        got = np.stack([read_exr(p)[0][..., :3] for p in paths])  # (9, 16, 16, 3)
        params = GenerationParams(
            **{**local.to_dict(), "plate_mode": mode, "strength": 0.5 if mode == "restyle" else 1.0}
        )
        frames = server_pipe.generate(STORYBOARD, params, init_frames=convert(init, linear, model)).frames
        expected = convert(frames, model, linear)
        np.testing.assert_allclose(got, expected.astype(np.float16), atol=2e-3, err_msg=mode)
        assert np.abs(got - t2v).max() > 0.02, f"{mode}: the plates made no difference"


@pytest.mark.parametrize(
    "case",
    [
        "count",
        "size",
        "no_strength",
        "strength_without_plates",
        "strength_range",
        "continue_strength",
        "continue_count",
    ],
)
def test_bad_plate_requests_get_a_clear_status(
    case: str, live_server: ServerProcess, alice: StudioClient, tmp_path: Path
) -> None:
    small = exr_bytes(tmp_path, np.full((16, 16, 4), 0.5, np.float32))
    wide = exr_bytes(tmp_path, np.full((16, 24, 4), 0.5, np.float32), "wide.exr")
    one = alice.upload_plate(small).upload_id
    args: dict = {**MINIMAL, "plate_upload_ids": [one] * 9, "strength": 0.5}
    if case == "count":
        args["plate_upload_ids"], words = (
            [one] * 5,
            "got 5 frames for plate_mode 'restyle'; expected exactly 9",
        )
    elif case == "size":
        wide_id = alice.upload_plate(wide).upload_id
        args["plate_upload_ids"] = [one] * 3 + [wide_id] * 6
        words = f"plate_upload_ids[3] ({wide_id}) is 24x16; expected 16x16"
    elif case == "no_strength":
        del args["strength"]
        words = "without parameters.strength"
    elif case == "strength_without_plates":
        args["plate_upload_ids"], words = [], "need plates"
    elif case == "strength_range":
        args["strength"], words = 1.5, "parameters.strength=1.5 is out of range: expected 0..1"
    elif case == "continue_strength":
        args["plate_mode"], words = "continue", "strength must be 1.0; got 0.5"
    else:
        args["plate_mode"], words = (
            "continue",
            "got 9 frames for plate_mode 'continue'; expected 1 + 4k frames fewer",
        )
        del args["strength"]
    with pytest.raises(grpc.RpcError) as err:
        alice.submit(STORYBOARD, **args)
    assert _code(err) == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert words in err.value.details()
    _assert_up(live_server, alice)


@pytest.mark.parametrize(
    "case",
    [
        "empty_text",
        "no_segments",
        "too_many_segments",
        "height_over_limit",
        "height_not_multiple",
        "steps_over_limit",
        "bad_sampler",
        "shot_name_is_a_path",
        "message_too_large",
        "bad_job_id",
        "unknown_plate",
    ],
)
def test_bad_submit_gets_a_clear_status(case: str, live_server: ServerProcess, alice: StudioClient) -> None:
    args = dict(MINIMAL)
    storyboard = STORYBOARD
    expected, words = grpc.StatusCode.INVALID_ARGUMENT, ""
    call = None
    if case == "empty_text":
        storyboard, words = [{"text": "   "}], "segment 0"
    elif case == "no_segments":
        storyboard, words = [], "empty"
    elif case == "too_many_segments":
        storyboard, words = STORYBOARD * 4, "max_segments=3"
    elif case == "height_over_limit":
        args["height"], words = 128, "max_height=64"
    elif case == "height_not_multiple":
        args["height"], words = 20, "multiple of 8"
    elif case == "steps_over_limit":
        args["steps"], words = 5000, "max_steps"
    elif case == "bad_sampler":
        args["sampler"], words = "euler", "sampler"
    elif case == "shot_name_is_a_path":
        args["shot_name"], words = "../../etc/passwd", "shot_name"
    elif case == "message_too_large":
        args["otio_json"] = "x" * (2 << 20)
        expected, words = grpc.StatusCode.RESOURCE_EXHAUSTED, str(1 << 20)
    elif case == "bad_job_id":
        expected, words = grpc.StatusCode.NOT_FOUND, "no job"
        call = lambda: alice.job("../../etc/passwd")  # noqa: E731
    elif case == "unknown_plate":
        args["plate_upload_ids"] = ["u" + "0" * 32]
        expected, words = grpc.StatusCode.NOT_FOUND, "plate upload"
    call = call or (lambda: alice.submit(storyboard, **args))
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert _code(err) == expected, err.value.details()
    assert words in err.value.details()
    _assert_up(live_server, alice)


@pytest.mark.parametrize(
    "case", ["corrupt", "nan", "not_exr", "wrong_order", "over_limit", "sha_mismatch", "short"]
)
def test_bad_plate_gets_a_clear_status(
    case: str, live_server: ServerProcess, alice: StudioClient, tmp_path: Path
):
    good = exr_bytes(tmp_path, np.full((32, 32, 4), 0.5, np.float32))
    header: dict = {}
    order = None
    data = good
    if case == "corrupt":
        data = good[: len(good) // 2] + bytes(len(good) - len(good) // 2)
        expected, words = grpc.StatusCode.INVALID_ARGUMENT, "corrupt"
    elif case == "nan":
        data = exr_bytes(tmp_path, np.full((8, 8, 4), np.nan, np.float16), "nan.exr")
        expected, words = grpc.StatusCode.INVALID_ARGUMENT, "NaN"
    elif case == "not_exr":
        data = b"P6\n8 8\n255\n" + bytes(192)
        expected, words = grpc.StatusCode.INVALID_ARGUMENT, "not an EXR"
    elif case == "wrong_order":
        order = [0, 2, 1]
        expected, words = grpc.StatusCode.INVALID_ARGUMENT, "chunk sequence 2 arrived where 1 was expected"
    elif case == "over_limit":
        header["total_bytes"] = 10 << 20
        expected, words = grpc.StatusCode.RESOURCE_EXHAUSTED, "max_upload_bytes=262144"
    elif case == "sha_mismatch":
        header["sha256"] = "0" * 64
        expected, words = grpc.StatusCode.DATA_LOSS, "sha256"
    else:  # the stream ends before the announced size
        header["total_bytes"] = len(good) + 10
        expected, words = grpc.StatusCode.INVALID_ARGUMENT, "total_bytes"
    chunk = 100
    if order is not None:
        assert len(data) > 3 * chunk
        order = order + list(range(3, -(-len(data) // chunk)))
    with pytest.raises(grpc.RpcError) as err:
        alice.stub.UploadPlate(
            _plate_chunks(data, order, chunk=chunk, **header), metadata=alice.metadata, timeout=30
        )
    assert _code(err) == expected, err.value.details()
    assert words in err.value.details()
    _assert_up(live_server, alice)
    leftovers = list((live_server.data_dir / "tmp").iterdir())
    assert leftovers == [], "a failed upload leaves nothing behind"


def test_idempotency_key_returns_the_same_job(alice: StudioClient) -> None:
    first = alice.submit(STORYBOARD, idempotency_key="shot-42-take-1", **MINIMAL)
    again = alice.submit(STORYBOARD, idempotency_key="shot-42-take-1", **MINIMAL)
    assert again.job_id == first.job_id and again.deduplicated and not first.deduplicated
    with pytest.raises(grpc.RpcError) as err:
        alice.submit(STORYBOARD_2, idempotency_key="shot-42-take-1", **MINIMAL)
    assert _code(err) == grpc.StatusCode.ALREADY_EXISTS and "idempotency key" in err.value.details()
    alice.wait(first.job_id)


def test_queued_jobs_per_caller_limit(live_server: ServerProcess) -> None:
    with (
        StudioClient(live_server.address, token=TOKENS["user01"]) as user1,
        StudioClient(live_server.address, token=TOKENS["user02"]) as user2,
    ):
        busy = user1.submit(STORYBOARD, **{**MINIMAL, "steps": 100}).job_id  # holds the worker
        wait_for(lambda: user1.job(busy).state == pb.JOB_STATE_SAMPLING, what="busy job running")
        queued = [user1.submit(STORYBOARD, **MINIMAL).job_id for _ in range(6)]
        with pytest.raises(grpc.RpcError) as err:
            user1.submit(STORYBOARD, **MINIMAL)
        assert _code(err) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queued_jobs_per_caller is 6" in err.value.details()
        other = user2.submit(STORYBOARD, **MINIMAL).job_id  # another caller is not affected
        for job_id in [*queued, busy]:
            user1.cancel(job_id)
        assert user2.wait(other).state == pb.JOB_STATE_COMPLETED
        assert {j.state for j in user1.jobs()} == {pb.JOB_STATE_CANCELLED}


# ---------------------------------------------------------------------------- cancel


def test_cancel_stops_within_one_step_and_frees_the_worker(alice: StudioClient, live_server: ServerProcess):
    long_job = alice.submit(STORYBOARD, **{**MINIMAL, "steps": 200}).job_id
    next_job = alice.submit(STORYBOARD, **MINIMAL).job_id
    steps_seen = []
    for event in alice.watch(long_job):
        if event.WhichOneof("kind") == "progress":
            steps_seen.append(event.progress.step)
            if event.progress.step == 3:
                break
    cancel_time = time.time()
    reply = alice.cancel(long_job)
    assert reply.cancel_requested and reply.state in (pb.JOB_STATE_SAMPLING, pb.JOB_STATE_CANCELLED)
    events = _events(alice, long_job)
    assert events[-1].state.state == pb.JOB_STATE_CANCELLED
    late_steps = [
        e.progress.step
        for e in events
        if e.WhichOneof("kind") == "progress" and e.time.ToNanoseconds() / 1e9 > cancel_time
    ]
    assert len(late_steps) <= 1, f"steps finished after the cancel: {late_steps}"
    assert max(e.progress.step for e in events if e.WhichOneof("kind") == "progress") < 200
    # the worker is free: the next job runs to completion, the cancelled one left no frames
    assert alice.wait(next_job).state == pb.JOB_STATE_COMPLETED
    assert alice.job(long_job).frames_ready == 0
    assert not (live_server.data_dir / "jobs" / long_job / "latents.safetensors").exists()
    # cancel touches that job only
    assert alice.job(next_job).state == pb.JOB_STATE_COMPLETED


# ---------------------------------------------------------------------------- logs and CLI


def test_logs_are_json_lines_with_job_ids(alice: StudioClient, live_server: ServerProcess) -> None:
    job_id = alice.submit(STORYBOARD, **MINIMAL).job_id
    alice.wait(job_id)
    records = wait_for(
        lambda: [
            r for r in live_server.log_records() if r.get("job_id") == job_id and "completed" in r["msg"]
        ],
        what="the completion log line",
    )
    assert records[0]["level"] == "INFO" and records[0]["logger"] == "server.worker"


def _cli(argv: list[str]) -> int:
    import argparse
    import importlib

    parser = argparse.ArgumentParser(prog="ttt-studio")
    sub = parser.add_subparsers(dest="command")
    for name in ("serve", "submit", "watch", "fetch", "cancel", "jobs"):
        importlib.import_module(f"server.cli.{name}").register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_submit_watch_fetch_cancel_jobs(live_server: ServerProcess, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("TTT_STUDIO_TOKEN", TOKENS["bob"])
    board = tmp_path / "board.json"
    board.write_text(json.dumps(STORYBOARD))
    out = tmp_path / "out"
    common = ["--server", live_server.address]
    size = ["--height", "16", "--width", "16", "--steps", "1", "--guidance-scale", "1"]
    code = _cli(["submit", str(board), *size, "--shot-name", "cli", "--watch", "--fetch", str(out), *common])
    printed = capsys.readouterr().out.split()
    assert code == 0, printed
    job_id = printed[0]
    assert sorted(p.name for p in out.glob("*.exr")) == [f"cli.{1001 + i}.exr" for i in range(9)]
    otio_file = out / f"{job_id}.otio"
    timeline = otio.adapters.read_from_file(str(otio_file))
    assert timeline.find_clips()[0].metadata["ttt_studio"]["job_id"] == job_id

    assert _cli(["watch", job_id, *common]) == 0
    assert _cli(["jobs", "--state", "completed", *common]) == 0
    assert job_id in capsys.readouterr().out
    assert _cli(["fetch", job_id, str(tmp_path / "again"), "--start", "4", *common]) == 0
    assert len(list((tmp_path / "again").glob("*.exr"))) == 5
    assert _cli(["cancel", job_id, *common]) == 0  # finished: reported, nothing changes
    assert "completed" in capsys.readouterr().out
    assert _cli(["cancel", "f" * 32, *common]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    monkeypatch.delenv("TTT_STUDIO_TOKEN")
    assert _cli(["jobs", *common]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
