"""The Ray pool's parts that need no cluster: the relay a worker writes through, the front end's checks on
what a worker sends, the pool-size file and the options (the pool itself: test_srv_ray.py)."""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from server.config import RayPoolConfig, ServerConfig
from server.frames import FrameStore
from server.jobs import EventKind, FrameRecord, JobRecord, JobSpec, JobState, Priority, TakeRecord
from server.main import add_serve_arguments, config_from_args
from server.metrics import Metrics
from server.queue import JobQueue
from server.ray_pool import PoolCancels, WorkerPool, read_pool_target, write_pool_target
from server.ray_worker import AdapterFiles, MetricsRelay, RelayStore, ShippedAdapters
from server.store import Store


def _record(
    frames: FrameStore, job_id: str, index: int, data: bytes, take: int = 0, draft: bool = False
) -> FrameRecord:
    relpath = frames.frame_relpath(job_id, index, take, draft)
    sha = hashlib.sha256(data).hexdigest()
    return FrameRecord(
        job_id,
        index,
        1001 + index,
        0,
        f"s.{1001 + index}.exr",
        relpath,
        len(data),
        sha,
        time.time(),
        take=take,
        draft=draft,
    )


def _job(job_id: str) -> JobRecord:
    """A two-take job with drafts, as the store hands it to the pool."""
    spec = JobSpec(storyboard=[], params={"seed": 3}, shot_name="s", takes=2, draft_steps=1)
    takes = tuple(TakeRecord(index=i, seed=3 + i, state=JobState.QUEUED, draft_steps=1) for i in range(2))
    now = time.time()
    return JobRecord(job_id, "alice", JobState.SAMPLING, Priority.PREVIEW, spec, now, now, takes=takes)


@pytest.fixture()
def pool(tmp_path: Path) -> WorkerPool:
    config = ServerConfig(
        data_dir=tmp_path / "front", insecure_no_auth=True, tiny_random=True, ray=RayPoolConfig()
    )
    store = Store(config.db_path)
    return WorkerPool(
        config, store, FrameStore(config.data_dir), JobQueue(store), PoolCancels(), Metrics(), bool
    )


def test_relay_sends_files_before_the_message_that_follows_them_and_each_frame_once(tmp_path: Path) -> None:
    frames = FrameStore(tmp_path / "scratch")
    job_id = uuid.uuid4().hex
    sent: list[tuple] = []
    relay = RelayStore(frames)
    relay.begin(_job(job_id), [], sent.append)
    relay.add_event(job_id, EventKind.PROGRESS, {"step": 1})
    run_dir = frames.run_dir(job_id, 1, True)  # take 1's draft
    run_dir.mkdir(parents=True)  # as the actor unpacks a job
    (run_dir / "latents.safetensors").write_bytes(b"latents")
    (run_dir / "latents.safetensors.tmp").write_bytes(b"partial")
    relay.set_take_state(job_id, 1, JobState.DECODING)
    path = frames.path_of(frames.frame_relpath(job_id, 0, 1, True))
    path.parent.mkdir()
    path.write_bytes(b"exr")
    record = _record(frames, job_id, 0, b"exr", take=1, draft=True)
    relay.add_frame(record)
    relay.set_draft_complete(job_id, 1)
    assert [m[0] for m in sent] == ["event", "file", "take_state", "frame", "draft_complete"]
    assert sent[1][1] == ("take1/draft/latents.safetensors", b"latents"), "a partial (.tmp) never travels"
    assert sent[2][1] == (1, "decoding") and sent[4][1] == (1,)
    assert sent[3][1] == (record, b"exr") and not path.exists(), "the front end's copy is the one kept"
    assert relay.frame_indices(job_id, 1, True) == {0} and relay.frames(job_id, take=1, draft=True) == [
        record
    ]
    assert relay.frame_indices(job_id) == set(), "take 0's final has no frame"
    take = relay.get_job(job_id).takes[1]  # what the result OTIO the worker builds reads
    assert (take.draft_frames_ready, take.draft_complete, take.state) == (1, True, JobState.QUEUED)
    with pytest.raises(RuntimeError, match="the relay runs job"):
        relay.log_work(uuid.uuid4().hex, "sample")


def test_an_actor_loads_only_adapters_whose_bytes_match_the_jobs_sha256(tmp_path: Path) -> None:
    from tests.adapter_helpers import random_lora
    from ttt_engine.pipeline import VideoPipeline

    weights = random_lora(
        VideoPipeline.tiny_random(seed=0).transformer, tmp_path / "warm", seed=1
    ).read_bytes()
    sha = hashlib.sha256(weights).hexdigest()
    shipped = ShippedAdapters(tmp_path / "actor")
    shipped.receive([AdapterFiles("warm", sha, weights)])
    assert str(shipped.load("warm", sha).sha256) == sha
    with pytest.raises(FileNotFoundError, match="did not come with the job"):
        shipped.load("cool", "0" * 64)
    with pytest.raises(ValueError, match=f"arrived with sha256 .* the job recorded {'0' * 64}"):
        shipped.receive([AdapterFiles("warm", "0" * 64, weights)])
    with pytest.raises(FileNotFoundError):  # the previous job's adapters are gone
        shipped.load("warm", sha)


def test_metrics_relay_carries_labels_and_values() -> None:
    sent: list[tuple] = []
    metrics = MetricsRelay()
    metrics.emit = sent.append
    metrics.job_duration.labels(phase="sampling").observe(1.5)
    metrics.frames_written.inc()
    assert sent == [
        ("metric", ("job_duration", {"phase": "sampling"}, "observe", 1.5)),
        ("metric", ("frames_written", {}, "inc", 1.0)),
    ]


def test_front_end_stores_a_frame_only_as_the_worker_wrote_it(pool: WorkerPool) -> None:
    job_id = uuid.uuid4().hex
    good = _record(pool.frames, job_id, 0, b"frame bytes")
    pool._apply(job_id, ("frame", (good, b"frame bytes")))
    assert pool.frames.path_of(good.relpath).read_bytes() == b"frame bytes"
    assert pool.store.frame_indices(job_id) == {0}
    with pytest.raises(ValueError, match="arrived with sha256"):
        pool._apply(job_id, ("frame", (_record(pool.frames, job_id, 1, b"other"), b"changed")))
    elsewhere = _record(pool.frames, uuid.uuid4().hex, 2, b"x")
    with pytest.raises(ValueError, match="expected jobs/"):
        pool._apply(job_id, ("frame", (elsewhere, b"x")))
    draft = _record(pool.frames, job_id, 0, b"draft", take=1, draft=True)
    pool._apply(job_id, ("frame", (draft, b"draft")))
    assert pool.frames.path_of(draft.relpath).read_bytes() == b"draft"
    assert pool.store.frame_indices(job_id, 1, True) == {0}
    with pytest.raises(ValueError, match="expected jobs/"):  # a draft frame claiming take 0's final path
        pool._apply(job_id, ("frame", (replace(draft, relpath=good.relpath), b"draft")))
    pool._apply(job_id, ("file", ("take1/draft/conform.json", b"{}")))
    assert (pool.frames.run_dir(job_id, 1, True) / "conform.json").read_bytes() == b"{}"
    for name in ("../studio.sqlite3", "take1/../../x", "take1/other/conform.json"):
        with pytest.raises(ValueError, match="expected a run's plain file"):
            pool._apply(job_id, ("file", (name, b"x")))
    with pytest.raises(ValueError, match="unknown metric update gpu_memory.set"):
        pool._apply(job_id, ("metric", ("gpu_memory", {}, "set", 1.0)))
    with pytest.raises(ValueError, match="unknown message kind 'exec'"):
        pool._apply(job_id, ("exec", ()))
    assert pool.store.frame_indices(job_id) == {0}


def test_pool_size_file(tmp_path: Path) -> None:
    assert read_pool_target(tmp_path, 3) == 3  # no file: the configured size
    write_pool_target(tmp_path, 5)
    assert read_pool_target(tmp_path, 3) == 5
    write_pool_target(tmp_path, None)
    assert read_pool_target(tmp_path, 3) is None  # auto
    (tmp_path / "ray_workers").write_text("lots")
    assert read_pool_target(tmp_path, 3) == 3  # reported and ignored
    with pytest.raises(ValueError, match="workers must be >= 0"):
        write_pool_target(tmp_path, -1)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(["--tiny-random", "--insecure-no-auth", *argv])


def test_ray_options() -> None:
    assert config_from_args(_args()).ray is None
    ray = config_from_args(_args("--ray", "local", "--ray-workers", "3", "--ray-threads", "2")).ray
    assert ray == RayPoolConfig(address="local", workers=3, threads=2)
    assert config_from_args(_args("--ray", "10.0.0.5:6379")).ray.workers is None  # auto
    with pytest.raises(ValueError, match="--ray-workers: expected a number or 'auto', got 'many'"):
        config_from_args(_args("--ray", "local", "--ray-workers", "many"))
    with pytest.raises(ValueError, match="--ray-threads: expected >= 1, got 0"):
        RayPoolConfig(threads=0)
    with pytest.raises(ValueError, match="--ray-max-worker-deaths: expected >= 1"):
        RayPoolConfig(max_worker_deaths=0)
    with pytest.raises(ValueError, match="--ray-device: expected auto, gpu or cpu"):
        RayPoolConfig(device="tpu")
