"""Adapters on the server (issue #24 item 3): the adapters folder, UploadAdapter (chunked, size-limited,
sha256-checked, validated against the model, per user unless an admin publishes), ServerInfo.adapters,
SubmitShot naming adapters, and the worker applying them per job with no state left between jobs.
Real gRPC on loopback, real EXR frames and OTIO results, real SQLite, tiny random LoRAs of the tiny model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from srv_helpers import MINIMAL, STORYBOARD, TOKENS
from srv_helpers import write_token_file as write_tokens

from host_plugin.core.exr_io import read_exr
from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from server.config import ServerConfig
from server.main import StudioServer
from tests.adapter_helpers import BAD_KEY, TARGETS, random_lora
from ttt_engine.adapters import load_adapter, save_adapter
from ttt_engine.adapters.record import ATTRIBUTE as ADAPTERS_ATTRIBUTE
from ttt_engine.pipeline import VideoPipeline

ADMIN = "user00"
JOB = {**MINIMAL, "steps": 2}


def tiny_lora(pipe: Any, folder: Path, seed: int, in_extra: int = 0, decoder: str = "") -> Path:
    """decoder: "" (a transformer LoRA), "also" (and a VAE decoder LoRA) or "only" (a decoder LoRA alone)."""
    vae = pipe.vae if decoder else None
    return random_lora(
        pipe.transformer, folder, seed, in_extra=in_extra, vae=vae, decoder_only=decoder == "only"
    )


@contextmanager
def serving(data: Path, tokens: Path, adapters_dir: Path | None = None) -> Iterator[StudioServer]:
    """A real server on loopback with a FRESH tiny model (same weights seed every time)."""
    config = ServerConfig(address="127.0.0.1:0", data_dir=data, token_file=tokens, adapters_dir=adapters_dir)
    server = StudioServer(config, pipelines=[("cpu", VideoPipeline.tiny_random(seed=0))])
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)


def client_of(server: StudioServer, user: str) -> StudioClient:
    return StudioClient(server.address, token=TOKENS[user], retries=1)


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def frames_of(client: StudioClient, job_id: str, out: Path) -> tuple[list[np.ndarray], list[dict]]:
    job = client.wait(job_id)
    assert job.state == pb.JOB_STATE_COMPLETED, job.message
    paths = client.fetch(job_id, out / job_id)
    read = [read_exr(p) for p in sorted(paths)]
    return [pixels for pixels, _ in read], [header for _, header in read]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("tokens") / "tokens", admins=(ADMIN,))


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different random LoRAs ("warm" as a folder in the adapters dir, with a VAE decoder LoRA too;
    "cool" as a file to upload, a VAE decoder LoRA alone: its frames differ from the base's only if the
    worker applies it while decoding), and one whose shapes do not fit the model."""
    root = tmp_path_factory.mktemp("loras")
    pipe = VideoPipeline.tiny_random(seed=0)
    folder = root / "published"
    warm = tiny_lora(pipe, folder / "warm", seed=1, decoder="also").parent
    cool = tiny_lora(pipe, root / "cool", seed=2, decoder="only")
    bad = tiny_lora(pipe, root / "bad", seed=3, in_extra=3)
    return {"folder": folder, "warm": warm, "cool": cool, "bad": bad}


def test_upload_validation_ownership_and_publishing(
    tmp_path: Path, tokens: Path, loras: dict[str, Path]
) -> None:
    with serving(tmp_path / "data", tokens, loras["folder"]) as server:
        alice, bob, admin = (client_of(server, u) for u in ("alice", "bob", ADMIN))
        # the adapters folder: published to all, owner ""
        for client in (alice, bob):
            (warm,) = [a for a in client.adapters() if a.name == "warm"]
            assert warm.published and warm.owner == "" and warm.rank == 2 and warm.kind == "style"
            assert warm.trigger == "toonish" and list(warm.target_modules) == list(TARGETS)
            assert (
                warm.sha256
                == hashlib.sha256(
                    (loras["warm"] / "pytorch_lora_weights.safetensors").read_bytes()
                ).hexdigest()
            )

        data = loras["cool"].read_bytes()
        info = alice.upload_adapter(loras["cool"], name="cool", chunk_bytes=1024)  # several chunks
        assert (info.name, info.owner, info.published) == ("cool", "alice", False)
        assert info.sha256 == hashlib.sha256(data).hexdigest() and info.bytes == len(data)
        assert "cool" in [a.name for a in alice.adapters()]
        assert "cool" not in [a.name for a in bob.adapters()], "another user's adapter is visible"
        assert alice.info().caller_usage.bytes >= len(data), "the quota does not count the adapter"

        err = rpc_error(lambda: bob.submit(STORYBOARD, adapters=[("cool", 1.0)], **JOB))
        assert err.code() == grpc.StatusCode.NOT_FOUND and "'cool'" in err.details(), err.details()
        err = rpc_error(lambda: alice.submit(STORYBOARD, adapters=[("nosuch", 1.0)], **JOB))
        assert err.code() == grpc.StatusCode.NOT_FOUND and "adapters[0].name" in err.details(), err.details()
        assert "'nosuch'" in err.details()
        err = rpc_error(lambda: alice.upload_adapter(loras["cool"], name="cool"))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
        err = rpc_error(lambda: alice.upload_adapter(loras["cool"], name="warm"))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS and "'warm'" in err.details()

        # too big: refused from the header, before any data
        limit = server.config.limits.max_adapter_bytes
        header = pb.AdapterHeader(name="huge", total_bytes=limit + 1)
        err = rpc_error(
            lambda: alice.stub.UploadAdapter(
                iter([pb.UploadAdapterChunk(sequence=0, header=header)]), metadata=alice.metadata, timeout=30
            )
        )
        assert (
            err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and f"max_adapter_bytes={limit}" in err.details()
        )
        # a damaged transfer
        chunk = pb.UploadAdapterChunk(
            sequence=0, data=data, header=pb.AdapterHeader(name="dmg", total_bytes=len(data), sha256="0" * 64)
        )
        err = rpc_error(lambda: alice.stub.UploadAdapter(iter([chunk]), metadata=alice.metadata, timeout=30))
        assert err.code() == grpc.StatusCode.DATA_LOSS and "sha256" in err.details()
        # shapes that do not fit the model: the first bad key is named
        err = rpc_error(lambda: alice.upload_adapter(loras["bad"], name="bad"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert BAD_KEY in err.details(), err.details()
        nan = load_adapter(loras["warm"])
        nan.state[BAD_KEY][0, 0] = float("nan")
        nan_file = save_adapter(nan, tmp_path / "nan").path
        err = rpc_error(lambda: alice.upload_adapter(nan_file))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and f"{BAD_KEY} holds NaN" in err.details()
        err = rpc_error(lambda: alice.upload_adapter(b"not a safetensors file at all", name="junk"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'junk'" in err.details(), err.details()
        err = rpc_error(lambda: alice.upload_adapter(data, name="../escape"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "header.name" in err.details()
        assert "bad" not in [a.name for a in alice.adapters()]

        # publishing needs an admin token; a published upload is everyone's
        err = rpc_error(lambda: bob.upload_adapter(data, name="shared", publish=True))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
        shared = admin.upload_adapter(data, name="shared", publish=True)
        assert shared.published and shared.owner == ADMIN
        for client in (alice, bob):
            assert "shared" in [a.name for a in client.adapters()]
        err = rpc_error(lambda: bob.upload_adapter(data, name="shared"))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, "a private copy would shadow the published name"
        job = bob.submit(STORYBOARD, adapters=[("shared", 0.5)], **JOB).job
        assert [(a.name, a.scale, a.sha256) for a in job.adapters] == [("shared", 0.5, shared.sha256)]
        bob.cancel(job.job_id)

        # request bounds
        limits = alice.info().limits
        too_many = [("warm", 1.0)] * (limits.max_adapters_per_job + 1)
        err = rpc_error(lambda: alice.submit(STORYBOARD, adapters=too_many, **JOB))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_adapters_per_job" in err.details()
        err = rpc_error(
            lambda: alice.submit(STORYBOARD, adapters=[("warm", limits.max_adapter_scale + 1)], **JOB)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_adapter_scale" in err.details()
        err = rpc_error(lambda: alice.submit(STORYBOARD, adapters=[("warm", 1.0), ("warm", 0.5)], **JOB))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "named twice" in err.details()
        # the idempotency hash covers the adapters
        alice.submit(STORYBOARD, adapters=[("warm", 1.0)], idempotency_key="k1", **JOB)
        err = rpc_error(
            lambda: alice.submit(STORYBOARD, adapters=[("warm", 0.5)], idempotency_key="k1", **JOB)
        )
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
        for client in (alice, bob, admin):
            client.close()
    # adapters survive a restart (uploads from the store, the folder read again)
    with serving(tmp_path / "data", tokens, loras["folder"]) as server, client_of(server, "alice") as alice:
        assert {"warm", "cool", "shared"} <= {a.name for a in alice.adapters()}


def test_a_bad_adapters_folder_stops_the_start(tmp_path: Path, tokens: Path, loras: dict[str, Path]) -> None:
    folder = tmp_path / "adapters"
    folder.mkdir()
    (folder / "bad.safetensors").write_bytes(loras["bad"].read_bytes())
    config = ServerConfig(
        address="127.0.0.1:0", data_dir=tmp_path / "data", token_file=tokens, adapters_dir=folder
    )
    with pytest.raises(
        ValueError, match=r"bad.*transformer\.transformer_blocks\.0\.attn1\.to_q\.lora_A\.weight"
    ):
        StudioServer(config, pipelines=[("cpu", VideoPipeline.tiny_random(seed=0))])
    # a folder entry named like an upload would make the name ambiguous for its uploader
    (folder / "bad.safetensors").unlink()
    (folder / "look.safetensors").write_bytes(loras["cool"].read_bytes())
    with serving(tmp_path / "data", tokens) as server, client_of(server, "bob") as bob:
        bob.upload_adapter(loras["cool"], name="look")
    clash = r"\['look'\] are also names of adapters uploaded by \{'look': \['bob'\]\}"
    with pytest.raises(ValueError, match=clash):
        StudioServer(config, pipelines=[("cpu", VideoPipeline.tiny_random(seed=0))])


def _run(server: StudioServer, adapters: list[tuple[str, float]], out: Path) -> tuple[list[np.ndarray], str]:
    with client_of(server, "alice") as alice:
        job_id = alice.submit(STORYBOARD, adapters=adapters, **JOB).job_id
        frames, headers = frames_of(alice, job_id, out)
        recorded = [json.loads(h[ADAPTERS_ATTRIBUTE]) for h in headers if ADAPTERS_ATTRIBUTE in h]
        result = json.loads(alice.result(job_id).otio_json)
    return frames, json.dumps({"exr": recorded[:1], "otio": _otio_adapters(result)}, sort_keys=True)


def _otio_adapters(timeline: dict) -> list:
    found: list = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            meta = node.get("metadata", {}).get("ttt_studio", {})
            if isinstance(meta, dict) and "adapters" in meta:
                found.append(meta["adapters"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(timeline)
    return found


@pytest.mark.slow  # six jobs on four fresh servers: about 25 s on 2 cores
def test_adapters_switch_between_jobs_without_leaking(
    tmp_path: Path, tokens: Path, loras: dict[str, Path]
) -> None:
    """Must-show: two consecutive jobs on one server with different adapters each equal the same job run
    alone on a fresh server; scale 0 equals no adapter bit for bit; the frames and the OTIO record which
    adapters, at which scale, with which content hash."""
    warm_sha = hashlib.sha256((loras["warm"] / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()
    cool_sha = hashlib.sha256(loras["cool"].read_bytes()).hexdigest()
    with serving(tmp_path / "one", tokens, loras["folder"]) as server:
        with client_of(server, "alice") as alice:
            alice.upload_adapter(loras["cool"])
        warm_then, warm_meta = _run(server, [("warm", 1.0)], tmp_path / "out")
        cool_then, cool_meta = _run(server, [("cool", 0.75)], tmp_path / "out")
        base, base_meta = _run(server, [], tmp_path / "out")
        zero, zero_meta = _run(server, [("warm", 0.0)], tmp_path / "out")
    with serving(tmp_path / "fresh-warm", tokens, loras["folder"]) as server:
        warm_alone, _ = _run(server, [("warm", 1.0)], tmp_path / "out")
    with serving(tmp_path / "fresh-cool", tokens) as server:
        with client_of(server, "alice") as alice:
            alice.upload_adapter(loras["cool"])
        cool_alone, _ = _run(server, [("cool", 0.75)], tmp_path / "out")

    def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    assert not same(warm_then, base) and not same(cool_then, base) and not same(warm_then, cool_then), (
        "the test LoRAs must change the frames"
    )
    assert same(warm_then, warm_alone), "job 1 on a shared server differs from the same job alone"
    assert same(cool_then, cool_alone), "job 2 after another adapter's job differs from the same job alone"
    assert same(zero, base), "scale 0 is not the base model bit for bit"
    assert json.loads(warm_meta) == {
        "exr": [[{"name": "warm", "scale": 1.0, "sha256": warm_sha}]],
        "otio": [[{"name": "warm", "scale": 1.0, "sha256": warm_sha}]],
    }
    assert json.loads(cool_meta)["exr"] == [[{"name": "cool", "scale": 0.75, "sha256": cool_sha}]]
    assert json.loads(zero_meta)["otio"] == [[{"name": "warm", "scale": 0.0, "sha256": warm_sha}]]
    assert json.loads(base_meta) == {"exr": [], "otio": [[]]}


def test_the_command_line_uploads_lists_and_submits_with_adapters(
    tmp_path: Path, tokens: Path, loras: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from ttt_engine.cli import main as cli_main

    storyboard = tmp_path / "board.json"
    storyboard.write_text(json.dumps(STORYBOARD))
    with serving(tmp_path / "data", tokens, loras["folder"]) as server:
        connect = ["--server", server.address, "--token", TOKENS["alice"]]
        assert cli_main(["adapter", "upload", str(loras["cool"].parent), "--name", "cool", *connect]) == 0
        assert "cool  sha256 " in capsys.readouterr().out
        assert cli_main(["adapter", "upload", str(loras["bad"]), *connect]) == 1
        assert BAD_KEY in capsys.readouterr().err
        assert cli_main(["adapter", "list", *connect]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in listing[1:]] == ["cool", "warm"]
        assert "(published)" in listing[2] and "alice" in listing[1]
        args = [
            "submit",
            str(storyboard),
            "--adapter",
            "warm:0.5",
            "--adapter",
            "cool",
            "--steps",
            "1",
            *connect,
        ]
        assert cli_main(args) == 0
        job_id = capsys.readouterr().out.strip()
        with client_of(server, "alice") as alice:
            job = alice.job(job_id)
            assert [(a.name, a.scale) for a in job.adapters] == [("warm", 0.5), ("cool", 1.0)]
            alice.cancel(job_id)
        with pytest.raises(SystemExit):
            cli_main(["submit", str(storyboard), "--adapter", "warm:lots", *connect])
        assert "NAME or NAME:SCALE" in capsys.readouterr().err


def test_a_queued_job_whose_adapter_is_gone_fails_naming_it(
    tmp_path: Path, tokens: Path, loras: dict[str, Path]
) -> None:
    """The job keeps the sha256 it was submitted with: after the folder entry is removed and the server
    restarted, it fails naming the adapter and its hash instead of running without it (or another one)."""
    import shutil

    folder = tmp_path / "adapters"
    shutil.copytree(loras["warm"], folder / "warm")
    sha = hashlib.sha256((folder / "warm" / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()
    config = ServerConfig(
        address="127.0.0.1:0",
        data_dir=tmp_path / "data",
        token_file=tokens,
        adapters_dir=folder,
        debug_step_delay_s=0.5,
    )
    server = StudioServer(config, pipelines=[("cpu", VideoPipeline.tiny_random(seed=0))])
    server.start()
    with client_of(server, "alice") as alice:
        busy = alice.submit(STORYBOARD, **{**JOB, "steps": 20}).job_id  # holds the only worker
        queued = alice.submit(STORYBOARD, adapters=[("warm", 1.0)], **JOB).job_id
        assert alice.job(queued).state == pb.JOB_STATE_QUEUED
    server.stop(grace=1)
    shutil.rmtree(folder / "warm")
    with serving(tmp_path / "data", tokens, folder) as server, client_of(server, "alice") as alice:
        alice.cancel(busy)
        job = alice.wait(queued)
        assert job.state == pb.JOB_STATE_FAILED, job.message
        assert (
            "adapter 'warm'" in job.message
            and sha in job.message
            and "no longer on this server" in job.message
        )
