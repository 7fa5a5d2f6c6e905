"""The job store opens a schema-version-1 database (made with the version-1 schema, verbatim in
tests/server/data/store_schema_v1.sql) and migrates it to version 2: every frame becomes take 0's final
frame, every job gets its take 0 with its seed, and the job keeps working (queue, approval, new takes)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from server.errors import InvalidArgumentError
from server.jobs import FrameRecord, JobSpec, JobState
from server.store import SCHEMA_VERSION, Store

V1_SCHEMA = Path(__file__).parent / "data" / "store_schema_v1.sql"
DONE, QUEUED = "a" * 32, "b" * 32


def _v1_database(path: Path) -> None:
    """A version-1 database as the version-1 server left it: a completed job with two frames and its
    work log, and a queued job."""
    spec = JobSpec(
        storyboard=[{"text": "x"}], params={"seed": 1234, "steps": 2}, shot_name="sh", total_frames=2
    )
    now = time.time()
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA.read_text(encoding="utf-8"))
    for seq, (job_id, state) in enumerate(((DONE, "completed"), (QUEUED, "queued")), start=1):
        db.execute(
            "INSERT INTO jobs (seq, job_id, owner, request_hash, priority, state, spec, created, updated) "
            "VALUES (?, ?, 'alice', 'h', 1, ?, ?, ?, ?)",
            (seq, job_id, state, spec.to_json(), now, now),
        )
    for index in range(2):
        db.execute(
            "INSERT INTO frames (job_id, frame_index, frame_number, segment, filename, relpath, size, sha256, "
            "created) VALUES (?, ?, ?, 0, ?, ?, 100, ?, ?)",
            (
                DONE,
                index,
                1001 + index,
                f"sh.{1001 + index}.exr",
                f"jobs/{DONE}/frames/{index:06d}.exr",
                "d",
                now,
            ),
        )
    db.execute(
        "INSERT INTO work_log (job_id, kind, segment, pid, at) VALUES (?, 'sample', NULL, 7, ?)", (DONE, now)
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_a_version_1_database_is_migrated_to_takes(tmp_path: Path) -> None:
    path = tmp_path / "studio.sqlite3"
    _v1_database(path)
    store = Store(path)
    try:
        assert store._query("PRAGMA user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 2
        job = store.get_job(DONE)
        assert job.frames_ready == 2 and job.approved_take is None
        (take,) = job.takes
        assert (take.index, take.seed, take.state, take.frames_ready) == (0, 1234, JobState.COMPLETED, 2)
        assert (take.draft_steps, take.draft_frames_ready, take.draft_complete, take.approved) == (
            0,
            0,
            False,
            False,
        )
        assert [(f.index, f.take, f.draft, f.relpath) for f in store.frames(DONE)] == [
            (i, 0, False, f"jobs/{DONE}/frames/{i:06d}.exr") for i in range(2)
        ]
        assert store.frames(DONE, draft=True) == [] and store.frame_indices(DONE, take=1) == set()
        assert store._query("SELECT kind, take, draft FROM work_log") == [("sample", 0, 0)]
        assert store.get_job(QUEUED).takes[0].state == JobState.QUEUED

        # the migrated jobs work on: approval, frames of another (take, draft) at the same index, the queue
        assert store.approve_take(DONE, "alice", 0, "alice").approved_take == 0
        with pytest.raises(InvalidArgumentError, match="take 1 is out of range"):
            store.approve_take(DONE, "alice", 1, "alice")
        draft = FrameRecord(
            DONE,
            0,
            1001,
            0,
            "sh.1001.exr",
            f"jobs/{DONE}/take0/draft/frames/000000.exr",
            9,
            "e",
            0.0,
            0,
            True,
        )
        store.add_frame(draft)
        assert store.frames(DONE, draft=True) == [draft] and store.get_job(DONE).frames_ready == 2
        assert store.claim_next().job_id == QUEUED
    finally:
        store.close()
    Store(path).close()  # a version-2 database opens as it is


def test_a_failed_migration_leaves_version_1(tmp_path: Path) -> None:
    path = tmp_path / "studio.sqlite3"
    _v1_database(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE takes (job_id TEXT)")  # in the way of the migration's takes table: it fails
    db.commit()
    db.close()
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert [r[1] for r in db.execute("PRAGMA table_info(frames)")][:2] == ["job_id", "frame_index"]
    assert db.execute("SELECT COUNT(*) FROM frames").fetchone() == (2,)
    db.close()
