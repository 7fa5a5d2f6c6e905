"""In-process servers (real gRPC on loopback, real SQLite, the real tiny pipeline): priority order,
limits, graceful stop and resume, one server per data dir, metrics, TLS, configuration refusals."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from srv_helpers import MINIMAL, ROOT, STORYBOARD, STORYBOARD_2, TOKENS, wait_for

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from server.config import Limits, ServerConfig
from server.main import StudioServer, load_pipelines, resolve_model
from ttt_engine import default_model


@contextmanager
def running(config: ServerConfig, pipe: Any) -> Iterator[StudioServer]:
    server = StudioServer(config, pipelines=[("cpu", pipe)])
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)


def _config(tmp_path: Path, token_file: Path, **overrides: Any) -> ServerConfig:
    return ServerConfig(address="127.0.0.1:0", data_dir=tmp_path / "data", token_file=token_file, **overrides)


def _sampling_started(server: StudioServer, job_id: str) -> float:
    return next(t for s, _, t in server.engine.store.state_history(job_id) if s == "sampling")


def test_previews_start_before_earlier_finals(tmp_path: Path, token_file: Path, server_pipe: Any) -> None:
    with running(_config(tmp_path, token_file, debug_step_delay_s=0.1), server_pipe) as server:
        with StudioClient(server.address, token=TOKENS["alice"]) as client:
            busy = client.submit(STORYBOARD, **{**MINIMAL, "steps": 6}).job_id
            wait_for(lambda: client.job(busy).state == pb.JOB_STATE_SAMPLING, what="busy job")
            final1 = client.submit(STORYBOARD, **MINIMAL).job_id
            final2 = client.submit(STORYBOARD, **MINIMAL).job_id
            preview = client.submit(STORYBOARD, priority="preview", **MINIMAL).job_id
            assert client.job(preview).queue_position == 1 and client.job(final2).queue_position == 3
            for job_id in (busy, final1, final2, preview):
                assert client.wait(job_id).state == pb.JOB_STATE_COMPLETED
        starts = {j: _sampling_started(server, j) for j in (preview, final1, final2)}
        assert starts[preview] < starts[final1] < starts[final2]


def test_frame_limit_names_the_limit(tmp_path: Path, token_file: Path, server_pipe: Any) -> None:
    config = _config(tmp_path, token_file, limits=Limits(max_frames=10))
    with running(config, server_pipe) as server, StudioClient(server.address, token=TOKENS["bob"]) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.submit(STORYBOARD_2, **MINIMAL)  # 17 frames
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "17 frames" in err.value.details() and "max_frames=10" in err.value.details()
        assert client.info().limits.max_frames == 10


def test_graceful_stop_requeues_the_running_job_and_the_next_start_finishes_it(
    tmp_path: Path, token_file: Path, server_pipe: Any
) -> None:
    config = _config(tmp_path, token_file, debug_step_delay_s=0.3)
    with running(config, server_pipe) as server:
        with StudioClient(server.address, token=TOKENS["alice"]) as client:
            job_id = client.submit(STORYBOARD, **{**MINIMAL, "steps": 30}).job_id
            for event in client.watch(job_id):
                if event.WhichOneof("kind") == "progress":
                    break
            with pytest.raises(RuntimeError, match="another ttt-studio server is using the data dir"):
                StudioServer(config, pipelines=[("cpu", server_pipe)])
    # stopped: the job went back to the queue, not failed
    with running(replace(config, debug_step_delay_s=0.0), server_pipe) as server:
        with StudioClient(server.address, token=TOKENS["alice"]) as client:
            job = client.wait(job_id)
            assert job.state == pb.JOB_STATE_COMPLETED and job.attempts == 2
        history = [(s, m) for s, m, _ in server.engine.store.state_history(job_id)]
        assert ("queued", "interrupted by server shutdown; will resume") in history


def test_metrics_endpoint(tmp_path: Path, token_file: Path, server_pipe: Any) -> None:
    config = _config(tmp_path, token_file, metrics_port=0)
    with (
        running(config, server_pipe) as server,
        StudioClient(server.address, token=TOKENS["alice"]) as client,
    ):
        job_id = client.submit(STORYBOARD, **{**MINIMAL, "steps": 2}).job_id
        assert client.wait(job_id).state == pb.JOB_STATE_COMPLETED
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
    values = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"
    }
    assert values['ttt_jobs_finished_total{state="completed"}'] == 1
    assert values['ttt_jobs_submitted_total{priority="final"}'] == 1
    assert values["ttt_step_duration_seconds_count"] == 2
    assert values["ttt_decode_calls_total"] == 1 and values["ttt_frames_written_total"] == 9
    assert values['ttt_queue_length{priority="preview"}'] == 0
    assert 'ttt_job_duration_seconds_count{phase="sampling"}' in values


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate"
)
def test_tls(tmp_path: Path, token_file: Path, server_pipe: Any) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    config = _config(tmp_path, token_file, tls_cert=cert, tls_key=key)
    with running(config, server_pipe) as server:
        with StudioClient(
            server.address, token=TOKENS["alice"], root_certificates=cert.read_bytes()
        ) as client:
            assert client.info().caller == "alice"
        with StudioClient(server.address, token=TOKENS["alice"], retries=0, timeout_s=5) as plain:
            with pytest.raises(grpc.RpcError) as err:
                plain.info()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_model_folder_resolution(tmp_path: Path, token_file: Path, monkeypatch) -> None:
    """--model, else the studio's <data-dir>/models/default, else the shipped default model."""
    config = _config(tmp_path, token_file)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "model_index.json").write_text("{}")
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", shipped)
    assert resolve_model(config) == shipped
    site = tmp_path / "data" / "models" / "default"
    site.mkdir(parents=True)
    assert resolve_model(config) == site
    assert resolve_model(replace(config, model=tmp_path / "mine")) == tmp_path / "mine"
    site.rmdir()
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(ValueError, match="no model: the default model is not installed"):
        load_pipelines(config)


def test_config_refusals(tmp_path: Path, token_file: Path) -> None:
    with pytest.raises(ValueError, match="only on loopback"):
        ServerConfig(address="0.0.0.0:50051", insecure_no_auth=True, data_dir=tmp_path)
    ServerConfig(address="[::1]:50051", insecure_no_auth=True, data_dir=tmp_path)
    with pytest.raises(ValueError, match="no token file"):
        ServerConfig(address="0.0.0.0:50051", data_dir=tmp_path)
    with pytest.raises(ValueError, match="both a certificate and a key"):
        ServerConfig(token_file=token_file, tls_cert=tmp_path / "c.pem", data_dir=tmp_path)
    with pytest.raises(ValueError, match="max_upload_bytes"):
        Limits(max_upload_bytes=0)
    with pytest.raises(ValueError, match="draft_unguided_steps: expected >= 0, got -1"):
        ServerConfig(token_file=token_file, draft_unguided_steps=-1, data_dir=tmp_path)
    # the command line says so and exits before loading any model
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.main",
            "--insecure-no-auth",
            "--address",
            "0.0.0.0:0",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "refusing '0.0.0.0'" in out.stderr


def test_insecure_no_auth_on_loopback(tmp_path: Path, server_pipe: Any) -> None:
    config = ServerConfig(address="127.0.0.1:0", data_dir=tmp_path / "data", insecure_no_auth=True)
    with running(config, server_pipe) as server, StudioClient(server.address, token="") as client:
        client.token = None
        assert client.info().caller == "local"


def test_decode_is_one_vae_pass_per_job_with_frames_written_per_segment(
    tmp_path: Path, token_file: Path, server_pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three segments: one VAE decode of the whole latents (not one growing prefix per segment), the frames
    announced segment by segment, and each stored frame the full decode's frame."""
    from host_plugin.core.exr_io import read_exr
    from ttt_engine.pipeline import load_latents

    passes: list[int] = []
    real_decode = server_pipe.vae.decode

    def counted(z, *args, **kwargs):
        passes.append(z.shape[2])  # latent frames decoded
        return real_decode(z, *args, **kwargs)

    monkeypatch.setattr(server_pipe.vae, "decode", counted)
    storyboard = STORYBOARD_2 + [{"text": "The cat sleeps on the chair. The ball rolls away. Night falls."}]
    with running(_config(tmp_path, token_file), server_pipe) as server:
        with StudioClient(server.address, token=TOKENS["alice"]) as client:
            job_id = client.submit(storyboard, **MINIMAL).job_id
            events = list(client.watch(job_id))
            assert client.job(job_id).state == pb.JOB_STATE_COMPLETED
            paths = client.fetch(job_id, tmp_path / "frames")
        latents, _ = load_latents(server.engine.frames.latents_path(job_id))
        log = [(kind, segment) for kind, segment, _, _ in server.engine.store.work_log(job_id)]
    assert passes == [server_pipe.config.latent_frames(3)]
    assert log == [("sample", None), ("decode", 0), ("decode", 1), ("decode", 2)]
    ready = [(e.frames.segment, e.frames.ready) for e in events if e.WhichOneof("kind") == "frames"]
    assert ready == [(0, 9), (1, 17), (2, 25)]
    monkeypatch.setattr(server_pipe.vae, "decode", real_decode)
    from ttt_engine.conform import convert

    # a native job: the decode in the model's colour space, converted by OCIO into the server's default
    full = convert(server_pipe.decode(latents), server_pipe.spec.colorspace, "lin_rec709_scene")
    stored = np.stack([read_exr(p)[0][..., :3] for p in paths])
    np.testing.assert_array_equal(stored, full.astype(np.float16).astype(np.float32))


def test_unset_parameters_take_the_models_own_sampling_defaults(
    tmp_path: Path, token_file: Path, server_pipe: Any
) -> None:
    from ttt_engine.pipeline import VideoPipeline

    tuned = {"steps": 2, "guidance_scale": 4.5, "cfg_schedule": "constant"}
    p = server_pipe
    pipe = VideoPipeline(
        p.transformer, p.vae, p.text_encoder, p.scheduler_config, device="cpu", sampling=tuned
    )
    with running(_config(tmp_path, token_file), pipe) as server:
        with StudioClient(server.address, token=TOKENS["alice"]) as client:
            defaults = client.info().defaults
            assert (defaults.steps, defaults.guidance_scale) == (2, 4.5)
            unset = {k: v for k, v in MINIMAL.items() if k not in ("steps", "guidance_scale")}
            job = client.wait(client.submit(STORYBOARD, **unset).job_id)
            assert job.state == pb.JOB_STATE_COMPLETED
            assert (job.parameters.steps, job.parameters.guidance_scale) == (2, 4.5)
    assert server.engine.default_params()["cfg_schedule"] == "constant"


def _tagged_plate(path: Path, space: str | None, value: float = 0.18) -> Path:
    """A 32x32 flat EXR plate, tagged with `space`'s colorInteropID and chromaticities (None: untagged)."""
    import OpenEXR

    from ttt_engine.conform import exr_colour_attributes

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    header.update(exr_colour_attributes(space) if space else {})
    OpenEXR.File(header, {"RGBA": np.full((32, 32, 4), value, np.float16)}).write(str(path))
    return path


def test_a_delivery_with_plates_reads_them_in_their_space_and_returns_that_space(
    tmp_path: Path, token_file: Path, server_pipe: Any
) -> None:
    """Tiny model (16 fps, 9 frames a segment): 8 frames at 24 fps restyled from an ACEScg-tagged plate come
    back tagged ACEScg at 24 fps; plate_colorspace overrides the tags; plates in two spaces are refused."""
    from host_plugin.core.client import TTTClient
    from host_plugin.core.delivery import Delivery
    from host_plugin.core.errors import ClientError
    from host_plugin.core.exr_io import read_exr

    aces = _tagged_plate(tmp_path / "aces.exr", "lin_ap1_scene")
    untagged = _tagged_plate(tmp_path / "plain.exr", None)
    with running(_config(tmp_path, token_file), server_pipe) as server:
        with TTTClient(server.address, token=TOKENS["alice"]) as client:
            client.connect()
            ids = {
                name: client.upload_plate(p).upload_id for name, p in (("aces", aces), ("plain", untagged))
            }
            args = {
                "strength": 0.5,
                "steps": 2,
                "guidance_scale": 1.0,
                "seed": 1,
                "delivery": Delivery(24, 8),
            }
            job = client.submit(STORYBOARD, plate_upload_ids=[ids["aces"]] * 8, **args).job
            override = client.submit(
                STORYBOARD, plate_upload_ids=[ids["plain"]] * 8, plate_colorspace="ACEScg", **args
            ).job
            with pytest.raises(ClientError, match="different colour spaces"):
                client.submit(STORYBOARD, plate_upload_ids=[ids["aces"]] * 4 + [ids["plain"]] * 4, **args)
            with pytest.raises(ClientError, match="expected exactly delivery.duration=8"):
                client.submit(STORYBOARD, plate_upload_ids=[ids["aces"]] * 9, **args)
            for submitted in (job, override):
                for _ in client.watch(submitted.job_id):
                    pass
                assert client.get_job(submitted.job_id).state == "completed"
                assert client.result(submitted.job_id).colour_interop_id == "lin_ap1_scene"
                files = client.fetch_frames(submitted.job_id, tmp_path / submitted.job_id)
                assert len(files) == 8
                _, header = read_exr(files[3].path)
                assert header["colorInteropID"] == "lin_ap1_scene" and header["framesPerSecond"] == 24
