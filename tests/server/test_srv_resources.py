"""Resources (issue #23 item 3): per-user quotas answered with RESOURCE_EXHAUSTED naming the quota, use and
limit; retention by age and total size that never removes frames while they are fetched; `ttt-studio
gc` and the server's own periodic collection; a full disk (a real tmpfs) fails the job clearly and the
server keeps serving. Real gRPC on loopback, real SQLite, the real tiny pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from srv_helpers import MINIMAL, STORYBOARD, TOKENS, ServerProcess, exr_bytes, wait_for, write_token_file

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from server.config import ServerConfig
from server.main import StudioServer
from server.resources import ResourcePolicy
from ttt_engine.cli import main as cli_main

NO_GC = ResourcePolicy(gc_interval_s=0)


@contextmanager
def running(tmp_path: Path, token_file: Path, pipe: Any, policy: ResourcePolicy) -> Iterator[StudioServer]:
    config = ServerConfig(
        address="127.0.0.1:0", data_dir=tmp_path / "data", token_file=token_file, resources=policy
    )
    server = StudioServer(config, pipelines=[("cpu", pipe)])
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)


def _client(server: StudioServer, user: str = "alice") -> StudioClient:
    return StudioClient(server.address, token=TOKENS[user], retries=0)


def _exhausted(call: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    return info.value.details()


def _completed_job(client: StudioClient) -> str:
    job_id = client.submit(STORYBOARD, **MINIMAL).job_id
    job = client.wait(job_id)
    assert job.state == pb.JOB_STATE_COMPLETED, job.message
    return job_id


def _plate(tmp_path: Path) -> bytes:
    return exr_bytes(tmp_path, np.full((16, 16, 4), 0.25, np.float32))


def test_quotas_name_the_quota_the_use_and_the_limit(tmp_path: Path, server_pipe: Any) -> None:
    token_file = write_token_file(tmp_path / "tokens", admins=("bob",))
    plate = _plate(tmp_path)
    policy = replace(NO_GC, max_uploads_per_user=1, max_bytes_per_user=len(plate) + 10)
    with running(tmp_path, token_file, server_pipe, policy) as server, _client(server) as alice:
        info = alice.info()
        assert info.resources.max_uploads_per_user == 1 and info.resources.gc_interval_s == 0
        assert info.resources.max_queued_jobs_per_user == server.config.limits.max_queued_jobs_per_caller
        alice.upload_plate(plate)
        assert (alice.info().caller_usage.uploads, alice.info().caller_usage.bytes) == (1, len(plate))
        details = _exhausted(lambda: alice.upload_plate(plate))
        assert "max_uploads_per_user" in details and "keeps 1 uploads" in details and "limit is 1" in details

        policy_bytes = replace(policy, max_uploads_per_user=10)
        server.engine.policy = server.engine.collector.policy = policy_bytes
        details = _exhausted(lambda: alice.upload_plate(plate))
        assert "max_bytes_per_user" in details and f"keeps {len(plate)} bytes" in details
        assert f"adds {len(plate)}" in details and f"limit is {len(plate) + 10}" in details
        # a job is accepted while under the bytes quota; its frames then count
        server.engine.policy = replace(policy_bytes, max_bytes_per_user=len(plate) + 1)
        job_key = "quota-job"
        job_id = alice.submit(STORYBOARD, idempotency_key=job_key, **MINIMAL).job_id
        assert alice.wait(job_id).state == pb.JOB_STATE_COMPLETED
        use = alice.info().caller_usage.bytes
        assert use > len(plate) + 1
        details = _exhausted(lambda: alice.submit(STORYBOARD, **MINIMAL))
        assert f"quota max_bytes_per_user: caller 'alice' keeps {use} bytes" in details
        assert f"the limit is {len(plate) + 1}" in details
        retry = alice.submit(STORYBOARD, idempotency_key=job_key, **MINIMAL)  # a retry gets its job back
        assert retry.deduplicated and retry.job_id == job_id
        with _client(server, "bob") as bob:  # an admin token: exempt
            bob.upload_plate(plate)
            bob.upload_plate(plate)
            assert bob.info().caller_usage.quota_exempt


def test_retention_expires_by_age_but_never_while_a_fetch_holds_the_frames(
    tmp_path: Path, token_file: Path, server_pipe: Any
) -> None:
    policy = replace(NO_GC, job_max_age_s=0.0, upload_max_age_s=3600.0)
    with running(tmp_path, token_file, server_pipe, policy) as server, _client(server) as alice:
        job_id = _completed_job(alice)
        upload = alice.upload_plate(_plate(tmp_path)).upload_id
        engine = server.engine
        job_dir = engine.frames.job_dir(job_id)
        assert len(list((job_dir / "frames").glob("*.exr"))) == 9
        # an open FetchFrames stream (the engine's generator, suspended after its first chunk)
        stream = engine.fetch_frames("alice", job_id, chunk_bytes=1024)
        first = next(stream)
        assert first.index == 0 and engine.leases.held(job_id) == 1
        report = engine.collector.run()
        assert report.kept_leased == [job_id] and not report.removed
        rest = list(stream)  # the stream finishes with every frame intact
        assert rest[-1].index == 8 and rest[-1].last and engine.leases.held(job_id) == 0
        report = engine.collector.run()
        assert [(c.kind, c.item_id) for c in report.removed] == [("job", job_id)], report
        assert not job_dir.exists(), "the job's frames and latents were removed"
        assert (engine.frames.upload_path(upload)).is_file(), "a fresh upload is kept"
        with pytest.raises(grpc.RpcError) as info:
            alice.fetch(job_id, tmp_path / "out")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "removed" in info.value.details() and "retention policy" in info.value.details()
        assert alice.info().caller_usage.bytes == len(_plate(tmp_path))
        # unused uploads by age
        engine.collector.policy = replace(policy, upload_max_age_s=0.0)
        assert [c.item_id for c in engine.collector.run().removed] == [upload]
        assert not engine.frames.upload_path(upload).exists()
        with pytest.raises(grpc.RpcError) as info:
            alice.submit(STORYBOARD, plate_upload_ids=[upload] * 9, **{**MINIMAL, "strength": 0.5})
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_retention_by_total_size_expires_the_oldest_first_and_keeps_uploads_in_use(
    tmp_path: Path, token_file: Path, server_pipe: Any
) -> None:
    with running(tmp_path, token_file, server_pipe, NO_GC) as server, _client(server) as alice:
        old, new = _completed_job(alice), _completed_job(alice)
        store = server.engine.store
        one_job = sum(f.size for f in store.frames(new))
        server.engine.collector.policy = replace(NO_GC, max_total_bytes=one_job)
        report = server.engine.collector.run()
        assert [c.item_id for c in report.removed] == [old]
        assert "max_total_bytes" in report.removed[0].reason
        assert store.frames(old) == [] and len(store.frames(new)) == 9
        # an upload a queued job uses is never a candidate
        server.engine.request_stop()  # workers stop taking jobs; the store stays open
        for worker in server.engine.workers:
            worker.join(30)
    from server.jobs import Priority, UploadRecord
    from server.store import Store

    store = Store(tmp_path / "data" / "studio.sqlite3")
    for name in ("used", "idle"):
        store.add_upload(UploadRecord(f"u{name}", "alice", name, 10, "0" * 64, 16, 16, ("R",), 0.0))
    spec = replace(store.get_job(new).spec, plate_ids=("uused",))
    store.create_job("f" * 32, "alice", Priority.FINAL, spec, "h", None, 10)
    assert [u for u, *_ in store.unused_uploads()] == ["uidle"]
    store.close()


def test_gc_command_and_the_servers_periodic_collection(
    tmp_path: Path, token_file: Path, server_pipe: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    policy = ResourcePolicy(job_max_age_s=0.0, gc_interval_s=0.2)
    with running(tmp_path, token_file, server_pipe, policy) as server, _client(server) as alice:
        job_id = _completed_job(alice)
        wait_for(lambda: not server.engine.frames.job_dir(job_id).exists(), 30, what="periodic gc")
        assert server.engine.store.expired(job_id) is not None
        server.engine.collector.policy = server.engine.policy = NO_GC
        kept = _completed_job(alice)
        # gc refuses to run beside a live server, except as a dry run
        assert cli_main(["gc", "--data-dir", data, "--job-max-age", "0"]) == 1
        assert "another ttt-studio server is using" in capsys.readouterr().err
        assert cli_main(["gc", "--data-dir", data, "--job-max-age", "0", "--dry-run"]) == 0
        out = capsys.readouterr()
        assert f"job\t{kept}\talice" in out.out and "would remove 1 job(s)" in out.err
        assert server.engine.frames.job_dir(kept).exists()
    assert cli_main(["gc", "--data-dir", data, "--job-max-age", "0"]) == 0
    assert "removed 1 job(s)' frames" in capsys.readouterr().err
    assert not (tmp_path / "data" / "jobs" / kept).exists()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs) for the server's data dir; needs root to mount."""
    path = tmp_path / "disk"
    if not _mount_tmpfs(path, "4m"):
        pytest.skip("mounting a tmpfs needs root (mount -t tmpfs); this machine does not allow it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _finished(client: StudioClient, job_id: str) -> pb.Job:
    """The job once it is finished; bounded, so a job stuck on a full disk fails the test, not hangs it."""
    terminal = (pb.JOB_STATE_COMPLETED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
    return wait_for(
        lambda: (job := client.job(job_id)).state in terminal and job, 120, 0.2, "the job to finish"
    )


@pytest.mark.slow
def test_full_disk_fails_the_job_clearly_and_the_server_keeps_serving(
    small_disk: Path, tmp_path: Path
) -> None:
    token_file = write_token_file(tmp_path / "tokens")
    reserve = 512 * 1024  # what the server holds back to record the failure
    server = ServerProcess(
        small_disk / "data", token_file, "--gc-interval", "0", "--disk-reserve", str(reserve)
    )
    server.start()
    try:
        with StudioClient(server.address, token=TOKENS["alice"], retries=0) as client:
            assert client.info().caller == "alice"
            assert wait_for(lambda: (small_disk / "data" / "disk.reserve").is_file(), 30, what="the reserve")
            ballast = small_disk / "ballast"
            free = shutil.disk_usage(small_disk).free
            ballast.write_bytes(b"\0" * (free - 96 * 1024))  # leave less than one 128x128 job's files
            big = {**MINIMAL, "height": 128, "width": 128}
            job = _finished(client, client.submit(STORYBOARD, **big).job_id)
            assert job.state == pb.JOB_STATE_FAILED
            assert job.message.startswith("disk full while writing the job's files"), job.message
            assert "ttt-studio gc" in job.message
            assert client.info().caller == "alice", "the server still answers"
            ballast.unlink()
            job = _finished(client, client.submit(STORYBOARD, **big).job_id)
            assert job.state == pb.JOB_STATE_COMPLETED, job.message
            assert len(client.fetch(job.job_id, tmp_path / "out")) == 9
        assert server.alive()
    finally:
        server.kill9()


def test_enospc_at_the_frame_write_without_root(
    tmp_path: Path, token_file: Path, server_pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a tmpfs cannot be mounted (CI without root): ENOSPC injected at the frame write, as OpenEXR
    reports it (a RuntimeError after a partial file), fails the job clearly and leaves no partial file."""
    from host_plugin.core import exr_io

    real_write = exr_io.write_rgba_exr

    def disk_full(path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"\0" * 4096)
        raise RuntimeError(f'Failed to write pixel data to image file "{path}". No space left on device.')

    with running(tmp_path, token_file, server_pipe, NO_GC) as server, _client(server) as alice:
        monkeypatch.setattr(exr_io, "write_rgba_exr", disk_full)
        job = alice.wait(alice.submit(STORYBOARD, **MINIMAL).job_id)
        assert job.state == pb.JOB_STATE_FAILED
        assert job.message.startswith("disk full while writing the job's files"), job.message
        assert not list(server.engine.frames.tmp_dir.iterdir()), "the partial frame was left behind"
        monkeypatch.setattr(exr_io, "write_rgba_exr", real_write)
        _completed_job(alice)
