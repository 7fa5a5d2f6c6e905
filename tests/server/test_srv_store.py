"""SQLite store and queue: priority then FIFO order, persistence across reopen, crash recovery,
idempotency, per-caller limits. Real SQLite files, no server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from srv_helpers import ROOT

from server.errors import AlreadyExistsError, NotFoundError, ResourceExhaustedError
from server.jobs import JobSpec, JobState, Priority
from server.queue import JobQueue
from server.store import Store

SPEC = JobSpec(storyboard=[{"text": "x"}], params={"steps": 1}, shot_name="s", n_segments=1, total_frames=9)


def _add(
    store: Store, n: int, priority: Priority = Priority.FINAL, owner: str = "alice", key: str = ""
) -> str:
    job, _ = store.create_job(f"{n:032x}", owner, priority, SPEC, "h", key or None, max_queued_per_owner=100)
    return job.job_id


def test_previews_run_ahead_of_finals_fifo_within_a_priority(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    order = [(1, Priority.FINAL), (2, Priority.PREVIEW), (3, Priority.FINAL), (4, Priority.PREVIEW)]
    for n, p in order:
        _add(store, n, p)
    positions = {j.job_id: j.queue_position for j in store.list_jobs("alice")}
    assert positions == {f"{2:032x}": 1, f"{4:032x}": 2, f"{1:032x}": 3, f"{3:032x}": 4}
    queue = JobQueue(store)
    taken = [queue.take(timeout=0.1).job_id for _ in range(4)]
    assert taken == [f"{n:032x}" for n in (2, 4, 1, 3)]
    assert queue.take(timeout=0.1) is None


def test_queue_survives_reopen_and_running_jobs_are_requeued_in_place(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    for n in range(1, 4):
        _add(store, n)
    running = store.claim_next()
    assert running.job_id == f"{1:032x}" and running.state == JobState.SAMPLING
    flagged = store.claim_next()
    store.request_cancel(flagged.job_id, "alice")
    store.close()  # as if the process died here

    store = Store(path)
    requeued = store.recover()
    assert [j.job_id for j in requeued] == [f"{1:032x}"]
    assert store.get_job(f"{2:032x}").state == JobState.CANCELLED, "a cancel asked before the crash holds"
    again = store.claim_next()
    assert again.job_id == f"{1:032x}" and again.attempts == 2, "back at its original place"
    history = [s for s, _, _ in store.state_history(again.job_id)]
    assert history == ["queued", "sampling", "queued", "sampling"]


def test_idempotency_and_per_caller_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    job, dedup = store.create_job("a" * 32, "alice", Priority.FINAL, SPEC, "h1", "k", 2)
    again, dedup2 = store.create_job("b" * 32, "alice", Priority.FINAL, SPEC, "h1", "k", 2)
    assert (again.job_id, dedup, dedup2) == (job.job_id, False, True)
    bobs, _ = store.create_job("c" * 32, "bob", Priority.FINAL, SPEC, "h1", "k", 2)  # keys are per caller
    assert bobs.job_id != job.job_id
    with pytest.raises(AlreadyExistsError, match="idempotency key 'k'"):
        store.create_job("d" * 32, "alice", Priority.FINAL, SPEC, "h2", "k", 2)
    store.create_job("e" * 32, "alice", Priority.FINAL, SPEC, "h3", None, 2)
    with pytest.raises(ResourceExhaustedError, match="max_queued_jobs_per_caller is 2"):
        store.create_job("f" * 32, "alice", Priority.FINAL, SPEC, "h4", None, 2)
    with pytest.raises(NotFoundError):
        store.get_job(job.job_id, owner="bob")
    with pytest.raises(NotFoundError):
        store.request_cancel(job.job_id, "bob")
    assert store.get_job(job.job_id).state == JobState.QUEUED


def test_events_are_numbered_per_job_and_wake_waiters(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    job_id = _add(store, 1)
    version = store.version
    woke = threading.Event()
    thread = threading.Thread(target=lambda: (store.wait_for_change(version, 10), woke.set()))
    thread.start()
    time.sleep(0.05)
    store.set_state(job_id, JobState.SAMPLING, "go")
    thread.join(5)
    assert woke.is_set()
    events = store.events_after(job_id, 0)
    assert [e.seq for e in events] == [1, 2] and events[1].data == {"state": "sampling", "message": "go"}
    assert store.events_after(job_id, 1) == events[1:]
    # a transaction that changes nothing wakes nobody (idle workers would spin otherwise)
    assert store.claim_next() is None  # the only job is running: nothing queued
    before = store.version
    assert store.claim_next() is None
    assert store.version == before


def test_engine_is_grpc_free() -> None:
    code = "import sys, server.engine, server.worker, server.store; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
