"""kill -9 of a real server process mid-job, then a restart on the same data dir: the job completes,
finished frames are kept (same index rows, same files), saved latents are reused, nothing is lost."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from srv_helpers import SMALL, STORYBOARD_2, TOKENS, ServerProcess, wait_for

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient

pytestmark = pytest.mark.slow


def _db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'studio.sqlite3'}?mode=ro", uri=True)


def _frames(data_dir: Path, job_id: str) -> dict[int, tuple]:
    with _db(data_dir) as db:
        rows = db.execute(
            "SELECT frame_index, created, sha256, relpath FROM frames WHERE job_id = ?", (job_id,)
        ).fetchall()
    return {i: (created, sha, os.stat(data_dir / rel).st_mtime_ns) for i, created, sha, rel in rows}


def _work_log(data_dir: Path, job_id: str) -> list[tuple]:
    with _db(data_dir) as db:
        return db.execute(
            "SELECT kind, segment, pid FROM work_log WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()


def test_kill9_during_decoding_keeps_frames_and_latents(tmp_path: Path, token_file: Path) -> None:
    data = tmp_path / "data"
    # a pause after each decoded segment puts the kill between segment 0 and segment 1
    first = ServerProcess(data, token_file, "--debug-segment-delay", "30").start()
    try:
        with StudioClient(first.address, token=TOKENS["alice"]) as client:
            job_id = client.submit(STORYBOARD_2, **SMALL).job_id
            for event in client.watch(job_id):
                if event.WhichOneof("kind") == "frames" and event.frames.segment == 0:
                    break
        first.kill9()
    finally:
        first.kill9()
    before = _frames(data, job_id)
    assert sorted(before) == list(range(9)), "segment 0's frames were stored before the kill"
    assert (data / "jobs" / job_id / "latents.safetensors").exists()

    second = ServerProcess(data, token_file).start()
    try:
        with StudioClient(second.address, token=TOKENS["alice"]) as client:
            job = client.wait(job_id)
            assert job.state == pb.JOB_STATE_COMPLETED, job.message
            assert job.attempts == 2 and job.frames_ready == 17
            assert len(client.fetch(job_id, tmp_path / "out")) == 17
        after = _frames(data, job_id)
        assert sorted(after) == list(range(17))
        for index, facts in before.items():
            assert after[index] == facts, f"frame {index} was regenerated"
        log = _work_log(data, job_id)
        assert log == [
            ("sample", None, first.pid),
            ("decode", 0, first.pid),
            ("decode", 1, second.pid),
        ], "sampled once, each segment decoded once"
        assert second.terminate() == 0
    finally:
        second.kill9()


def test_kill9_during_sampling_samples_again_and_completes(tmp_path: Path, token_file: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data, token_file, "--debug-step-delay", "5").start()
    try:
        with StudioClient(first.address, token=TOKENS["bob"]) as client:
            job_id = client.submit(STORYBOARD_2, **{**SMALL, "steps": 3}).job_id
            queued = client.submit(STORYBOARD_2, **SMALL).job_id  # waits behind it; must not be lost
            for event in client.watch(job_id):
                if event.WhichOneof("kind") == "progress":
                    break
        first.kill9()
    finally:
        first.kill9()
    assert not (data / "jobs" / job_id / "latents.safetensors").exists()

    second = ServerProcess(data, token_file).start()
    try:
        with StudioClient(second.address, token=TOKENS["bob"]) as client:
            for jid in (job_id, queued):
                assert client.wait(jid).state == pb.JOB_STATE_COMPLETED
            states = [e.state for e in client.watch(job_id) if e.WhichOneof("kind") == "state"]
            assert any("requeued after a server restart" in s.message for s in states)
        log = _work_log(data, job_id)
        assert [(k, p) for k, _, p in log if k == "sample"] == [("sample", first.pid), ("sample", second.pid)]
        assert [s for k, s, _ in log if k == "decode"] == [0, 1]
        wait_for(lambda: len(_frames(data, queued)) == 17, what="queued job frames")
        assert second.terminate() == 0
    finally:
        second.kill9()


def _take_frames(data_dir: Path, job_id: str) -> dict[tuple[int, int], tuple]:
    """(take, index) -> (created, sha256, file mtime) of a job's final frames."""
    with _db(data_dir) as db:
        rows = db.execute(
            "SELECT take, frame_index, created, sha256, relpath FROM frames WHERE job_id = ? AND draft = 0",
            (job_id,),
        ).fetchall()
    return {(t, i): (created, sha, os.stat(data_dir / rel).st_mtime_ns) for t, i, created, sha, rel in rows}


def test_kill9_during_the_second_take_keeps_the_first_and_resumes_the_second(
    tmp_path: Path, token_file: Path
) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data, token_file, "--debug-segment-delay", "3").start()
    try:
        with StudioClient(first.address, token=TOKENS["alice"]) as client:
            job_id = client.submit(STORYBOARD_2, **SMALL, takes=2).job_id
            for event in client.watch(job_id):
                if event.WhichOneof("kind") == "frames" and (event.frames.take, event.frames.segment) == (
                    1,
                    0,
                ):
                    break
        first.kill9()
    finally:
        first.kill9()
    before = _take_frames(data, job_id)
    assert sorted(before) == [(0, i) for i in range(17)] + [(1, i) for i in range(9)]

    second = ServerProcess(data, token_file).start()
    try:
        with StudioClient(second.address, token=TOKENS["alice"]) as client:
            job = client.wait(job_id)
            assert job.state == pb.JOB_STATE_COMPLETED, job.message
            assert [(t.seed, t.frames_ready) for t in job.takes] == [
                (SMALL["seed"], 17),
                (SMALL["seed"] + 1, 17),
            ]
        after = _take_frames(data, job_id)
        assert len(after) == 34
        for key, facts in before.items():
            assert after[key] == facts, f"take {key[0]} frame {key[1]} was regenerated"
        with _db(data) as db:
            log = db.execute(
                "SELECT kind, segment, take, pid FROM work_log WHERE job_id = ? ORDER BY id", (job_id,)
            ).fetchall()
        assert log == [
            ("sample", None, 0, first.pid),
            ("decode", 0, 0, first.pid),
            ("decode", 1, 0, first.pid),
            ("sample", None, 1, first.pid),
            ("decode", 0, 1, first.pid),
            ("decode", 1, 1, second.pid),
        ], "each take sampled once, each segment of each take decoded once"
        assert second.terminate() == 0
    finally:
        second.kill9()
