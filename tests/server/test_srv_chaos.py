"""Chaos (issue #23 item 7): SIGKILL a real server at seeded random moments while 20 jobs are submitted
and run, at least 10 times, restarting it on the same data dir each time. Every job must complete exactly
once, with every frame a valid EXR whose sha256 is the recorded one, and nothing duplicated: one job per
idempotency key, one index row and one file per frame, one completion per job. Jobs that make the same
request (same seed) must give the same frames, whether or not a kill interrupted them."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest
from srv_helpers import MINIMAL, STORYBOARD_2, TOKENS, ServerProcess

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from server.frames import sha256_file

pytestmark = pytest.mark.slow

SEED = 23
JOBS = 20
KILLS = 10
FRAMES = 17  # two segments of the tiny model
KEYS = [f"chaos-{i:02d}" for i in range(JOBS)]
SERVER_ARGS = ("--debug-step-delay", "0.05", "--max-queued-per-caller", str(JOBS), "--gc-interval", "0")


def _params(i: int) -> dict:
    return {**MINIMAL, "steps": 2, "seed": i % (JOBS // 2)}  # jobs i and i + 10 make the same request


def _submit_all(address: str, ids: dict[str, str], stop: threading.Event) -> None:
    """Submit (or re-submit: same idempotency key) every job until the server dies under us."""
    with StudioClient(address, token=TOKENS["alice"], retries=0, timeout_s=10) as client:
        for i, key in enumerate(KEYS):
            if stop.is_set():
                return
            try:
                job_id = client.submit(STORYBOARD_2, idempotency_key=key, **_params(i)).job_id
            except grpc.RpcError:
                return  # killed: the next life submits the rest with the same keys
            assert ids.setdefault(key, job_id) == job_id, f"{key} became a second job"


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path, token_file: Path) -> None:
    from host_plugin.core.exr_io import read_exr

    rng = random.Random(SEED)
    data = tmp_path / "data"
    ids: dict[str, str] = {}
    for _ in range(KILLS):
        server = ServerProcess(data, token_file, *SERVER_ARGS).start()
        stop = threading.Event()
        submitter = threading.Thread(target=_submit_all, args=(server.address, ids, stop))
        submitter.start()
        try:
            stop.wait(rng.uniform(0.2, 2.5))
        finally:
            server.kill9()
            stop.set()
            submitter.join(30)

    server = ServerProcess(data, token_file, *SERVER_ARGS).start()
    try:
        _submit_all(server.address, ids, threading.Event())
        assert sorted(ids) == KEYS
        with StudioClient(server.address, token=TOKENS["alice"]) as client:
            for key in KEYS:
                job = client.wait(ids[key])
                assert job.state == pb.JOB_STATE_COMPLETED, (key, job.message)
                assert job.frames_ready == FRAMES
                fetched = client.fetch(ids[key], tmp_path / "out" / key)  # checks each frame's sha256
                assert len(fetched) == FRAMES
        assert server.terminate() == 0
    finally:
        server.kill9()

    with sqlite3.connect(f"file:{data / 'studio.sqlite3'}?mode=ro", uri=True) as db:
        jobs = db.execute("SELECT idempotency_key, job_id, attempts FROM jobs").fetchall()
        assert sorted(k for k, _, _ in jobs) == KEYS, "one job per idempotency key, none lost"
        completions = Counter(
            j for (j,) in db.execute("SELECT job_id FROM job_states WHERE state = 'completed'")
        )
        assert all(completions[j] == 1 for _, j, _ in jobs), completions
        pixels_of: dict[str, list[str]] = {}  # sha256 of each frame's pixels (headers name the job)
        for key, job_id, _ in jobs:
            rows = db.execute(
                "SELECT frame_index, frame_number, relpath, sha256 FROM frames WHERE job_id = ? ORDER BY frame_index",
                (job_id,),
            ).fetchall()
            assert [r[0] for r in rows] == list(range(FRAMES)), (key, [r[0] for r in rows])
            files = sorted((data / "jobs" / job_id / "frames").iterdir())
            assert [f.name for f in files] == [Path(r[2]).name for r in rows], "a stray or missing frame file"
            for index, number, relpath, sha in rows:
                path = data / relpath
                assert sha256_file(path) == sha, (key, index)
                pixels, header = read_exr(path, check_finite=True)
                assert pixels.shape == (16, 16, 4)
                assert header["ttt_studio/job_id"] == job_id and header["ttt_studio/frame"] == number
            pixels_of[key] = [hashlib.sha256(read_exr(data / r[2])[0].tobytes()).hexdigest() for r in rows]
        interrupted = db.execute(
            "SELECT COUNT(DISTINCT job_id) FROM job_states WHERE message = 'requeued after a server restart'"
        ).fetchone()[0]
    assert not list((data / "tmp").iterdir()), "partial files left behind"
    for i in range(JOBS // 2):
        assert pixels_of[KEYS[i]] == pixels_of[KEYS[i + JOBS // 2]], f"jobs {i} and {i + JOBS // 2} differ"
    attempts = Counter(a for _, _, a in jobs)
    print(
        f"chaos: {KILLS} kills, {interrupted} job(s) interrupted mid-run, attempts per job {dict(attempts)}"
    )
