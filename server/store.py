"""SQLite persistence: jobs, their state history and event log, the frames index, uploads, a work log.

One connection shared by all threads behind a lock (the server's write rate is a few rows per denoising
step, far below what one SQLite connection does), WAL journal so a kill -9 never leaves a torn database,
and a change counter with a condition so watchers wake when something is committed.

The queue of waiting jobs is the jobs table itself (state 'queued', ordered by priority then submit
order), so it survives any crash with nothing extra to persist.

Schema version 2 (takes): frames are keyed by (job, take, draft, index); a takes table holds each take's
seed, state and draft facts, an approvals table the one approved take of a job (who, when). A version 1
database is migrated in place when it is opened (`_migrate_1_to_2`), in one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, ResourceExhaustedError
from server.jobs import (
    AdapterRecord,
    Event,
    EventKind,
    FrameRecord,
    JobRecord,
    JobSpec,
    JobState,
    Priority,
    TakeRecord,
    UploadRecord,
)

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    result_otio TEXT,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE TABLE IF NOT EXISTS job_states (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS job_states_job ON job_states (job_id, id);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    blob BLOB,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    display_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    channels TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS work_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    segment INTEGER,
    pid INTEGER NOT NULL,
    at REAL NOT NULL,
    take INTEGER NOT NULL DEFAULT 0,
    draft INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS work_log_job ON work_log (job_id, id);
CREATE TABLE IF NOT EXISTS adapters (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    published INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    path TEXT NOT NULL,
    info TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE IF NOT EXISTS expired_jobs (
    job_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    bytes INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""
# Tables of schema version 2, one statement each (the migration runs them inside its transaction).
_FRAMES_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    job_id TEXT NOT NULL,
    take INTEGER NOT NULL DEFAULT 0,
    draft INTEGER NOT NULL DEFAULT 0,
    frame_index INTEGER NOT NULL,
    frame_number INTEGER NOT NULL,
    segment INTEGER NOT NULL,
    filename TEXT NOT NULL,
    relpath TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (job_id, take, draft, frame_index)
)"""
_TAKES_TABLE = """
CREATE TABLE IF NOT EXISTS takes (
    job_id TEXT NOT NULL,
    take INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    draft_steps INTEGER NOT NULL DEFAULT 0,
    draft_complete INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, take)
)"""
_APPROVALS_TABLE = """
CREATE TABLE IF NOT EXISTS approvals (
    job_id TEXT PRIMARY KEY,
    take INTEGER NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at REAL NOT NULL
)"""
_V2_TABLES = (_FRAMES_TABLE.format(name="frames"), _TAKES_TABLE, _APPROVALS_TABLE)

_TAKE_FOLLOWS = frozenset({JobState.QUEUED, JobState.FAILED, JobState.CANCELLED})
"""Job states that unfinished takes take over (requeued, failed, cancelled)."""

_JOB_COLUMNS = (
    "seq, job_id, owner, idempotency_key, priority, state, spec, message, attempts, cancel_requested, "
    "created, updated, started, finished"
)


class Store:
    """Thread-safe access to the server database at `path` (created with its schema if new)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        self._conn.execute("PRAGMA foreign_keys=ON")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise RuntimeError(
                f"database {self.path} has schema version {version}; this server knows 1 and {SCHEMA_VERSION}"
            )
        if version == 1:
            self._migrate_1_to_2()
        self._conn.executescript(_SCHEMA)
        for statement in _V2_TABLES:
            self._conn.execute(statement)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._changed = threading.Condition()
        self._version = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate_1_to_2(self) -> None:
        """Version 1 -> 2, all or nothing (a crash leaves version 1, migrated again at the next start).

        frames gains take and draft (defaults 0: a version-1 frame is take 0's final frame). They join
        its primary key, which SQLite cannot change with ALTER TABLE ... ADD COLUMN, so the table is
        rebuilt (create, copy, drop, rename: SQLite's documented way). work_log gains take and draft by
        ALTER TABLE ... ADD COLUMN with defaults 0. Every job gets its take 0, with the seed of its spec
        and the job's state; no approvals exist yet.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_FRAMES_TABLE.format(name="frames_v2"))
            conn.execute(
                "INSERT INTO frames_v2 (job_id, frame_index, frame_number, segment, filename, relpath, size, "
                "sha256, created) SELECT job_id, frame_index, frame_number, segment, filename, relpath, size, "
                "sha256, created FROM frames"
            )
            conn.execute("DROP TABLE frames")
            conn.execute("ALTER TABLE frames_v2 RENAME TO frames")
            conn.execute("ALTER TABLE work_log ADD COLUMN take INTEGER NOT NULL DEFAULT 0")
            conn.execute("ALTER TABLE work_log ADD COLUMN draft INTEGER NOT NULL DEFAULT 0")
            conn.execute(_TAKES_TABLE)
            conn.execute(_APPROVALS_TABLE)
            conn.execute(
                "INSERT INTO takes (job_id, take, seed, state) SELECT job_id, 0, "
                "COALESCE(json_extract(spec, '$.params.seed'), 0), state FROM jobs"
            )
            conn.execute("PRAGMA user_version=2")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction under the lock; watchers are woken after the commit."""
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # also after a failed COMMIT (e.g. a full disk)
                    self._conn.execute("ROLLBACK")
                raise
            changed = self._conn.total_changes != before
        if not changed:  # a read-only transaction wakes nobody (idle workers would spin otherwise)
            return
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    @property
    def version(self) -> int:
        """Incremented after every committed write."""
        with self._changed:
            return self._version

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until a write after version `since` (or timeout); returns the current version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != since, timeout=timeout)
            return self._version

    def wake_all(self) -> None:
        """Wake every waiter (used at shutdown)."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    @staticmethod
    def _add_event(
        conn: sqlite3.Connection, job_id: str, kind: EventKind, data: dict, blob: bytes | None
    ) -> Event:
        now = time.time()
        seq = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO events (job_id, seq, at, kind, data, blob) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, seq, now, str(kind), json.dumps(data), blob),
        )
        return Event(job_id, seq, now, kind, data, blob)

    def _set_state(
        self, conn: sqlite3.Connection, job_id: str, state: JobState, message: str, **cols: Any
    ) -> None:
        now = time.time()
        sets = ", ".join(f"{k} = ?" for k in cols)
        conn.execute(
            f"UPDATE jobs SET state = ?, message = ?, updated = ?{', ' + sets if sets else ''} WHERE job_id = ?",
            (str(state), message, now, *cols.values(), job_id),
        )
        conn.execute(
            "INSERT INTO job_states (job_id, state, message, at) VALUES (?, ?, ?, ?)",
            (job_id, str(state), message, now),
        )
        if (
            state in _TAKE_FOLLOWS
        ):  # the takes the job left unfinished share its fate (the worker sets the rest)
            conn.execute(
                "UPDATE takes SET state = ? WHERE job_id = ? AND state != 'completed'", (str(state), job_id)
            )
        self._add_event(conn, job_id, EventKind.STATE, {"state": str(state), "message": message}, None)

    def _row_to_job(self, row: tuple) -> JobRecord:
        (
            seq,
            job_id,
            owner,
            key,
            priority,
            state,
            spec,
            message,
            attempts,
            cancel,
            created,
            updated,
            started,
            finished,
        ) = row
        state = JobState(state)
        takes, approved = self._takes(job_id)
        ready = takes[0].frames_ready if takes else 0
        position = 0
        if state == JobState.QUEUED:
            position = self._conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND (priority < ? OR (priority = ? AND seq <= ?))",
                (priority, priority, seq),
            ).fetchone()[0]
        return JobRecord(
            job_id=job_id,
            owner=owner,
            state=state,
            priority=Priority(priority),
            spec=JobSpec.from_json(spec),
            created=created,
            updated=updated,
            message=message,
            attempts=attempts,
            cancel_requested=bool(cancel),
            frames_ready=ready,
            queue_position=position,
            idempotency_key=key,
            started=started,
            finished=finished,
            seq=seq,
            takes=takes,
            approved_take=approved,
        )

    def _takes(self, job_id: str) -> tuple[tuple[TakeRecord, ...], int | None]:
        """The job's takes (with their stored frame counts and approval) and the approved take's index."""
        counts = {
            (take, bool(draft)): n
            for take, draft, n in self._conn.execute(
                "SELECT take, draft, COUNT(*) FROM frames WHERE job_id = ? GROUP BY take, draft", (job_id,)
            )
        }
        approval = self._conn.execute(
            "SELECT take, approved_by, approved_at FROM approvals WHERE job_id = ?", (job_id,)
        ).fetchone()
        rows = self._conn.execute(
            "SELECT take, seed, state, draft_steps, draft_complete FROM takes WHERE job_id = ? ORDER BY take",
            (job_id,),
        ).fetchall()
        takes = tuple(
            TakeRecord(
                index=take,
                seed=seed,
                state=JobState(state),
                frames_ready=counts.get((take, False), 0),
                draft_steps=draft_steps,
                draft_frames_ready=counts.get((take, True), 0),
                draft_complete=bool(draft_complete),
                approved_by=approval[1] if approval is not None and approval[0] == take else "",
                approved_at=approval[2] if approval is not None and approval[0] == take else None,
            )
            for take, seed, state, draft_steps, draft_complete in rows
        )
        return takes, None if approval is None else approval[0]

    # ------------------------------------------------------------------ jobs

    def create_job(
        self,
        job_id: str,
        owner: str,
        priority: Priority,
        spec: JobSpec,
        request_hash: str,
        idempotency_key: str | None,
        max_queued_per_owner: int,
        admit: Callable[[], None] = lambda: None,
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job; returns (job, deduplicated).

        The same (owner, idempotency_key) with the same request hash returns the existing job; with a
        different hash raises AlreadyExistsError. A caller at its queued-job limit gets ResourceExhaustedError;
        admit() may refuse a new job too (quotas; it runs inside the transaction, after deduplication).
        """
        with self._tx() as conn:
            if idempotency_key:
                row = conn.execute(
                    "SELECT job_id, request_hash FROM jobs WHERE owner = ? AND idempotency_key = ?",
                    (owner, idempotency_key),
                ).fetchone()
                if row is not None:
                    if row[1] != request_hash:
                        raise AlreadyExistsError(
                            f"idempotency key {idempotency_key!r} was already used for a different request "
                            f"(job {row[0]}); use a new key for a new request"
                        )
                    return self._get(conn, row[0]), True
            queued = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state = 'queued'", (owner,)
            ).fetchone()[0]
            if queued >= max_queued_per_owner:
                raise ResourceExhaustedError(
                    f"caller {owner!r} already has {queued} queued jobs; max_queued_jobs_per_caller is "
                    f"{max_queued_per_owner}. Wait for some to start or cancel some."
                )
            admit()
            now = time.time()
            conn.execute(
                "INSERT INTO jobs (job_id, owner, idempotency_key, request_hash, priority, state, spec, created, "
                "updated) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (
                    job_id,
                    owner,
                    idempotency_key or None,
                    request_hash,
                    int(priority),
                    spec.to_json(),
                    now,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO job_states (job_id, state, message, at) VALUES (?, 'queued', 'submitted', ?)",
                (job_id, now),
            )
            conn.executemany(
                "INSERT INTO takes (job_id, take, seed, state, draft_steps) VALUES (?, ?, ?, 'queued', ?)",
                [(job_id, take, spec.take_seed(take), spec.draft_steps) for take in range(spec.takes)],
            )
            self._add_event(conn, job_id, EventKind.STATE, {"state": "queued", "message": "submitted"}, None)
            return self._get(conn, job_id), False

    def _get(self, conn: sqlite3.Connection, job_id: str) -> JobRecord:
        row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        return self._row_to_job(row)

    def get_job(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job; with owner, another owner's job raises NotFoundError exactly like a missing one."""
        with self._lock:
            job = self._get(self._conn, job_id)
        if owner is not None and job.owner != owner:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def job_state(self, job_id: str) -> JobState:
        """Just the state (cheap; watchers poll it)."""
        rows = self._query("SELECT state FROM jobs WHERE job_id = ?", (job_id,))
        if not rows:
            raise NotFoundError(f"no job {job_id!r}")
        return JobState(rows[0][0])

    def list_jobs(
        self, owner: str, states: Iterable[JobState] = (), limit: int = 100, before_seq: int | None = None
    ) -> list[JobRecord]:
        """The owner's jobs, newest first."""
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ?"
        args: list[Any] = [owner]
        states = [str(s) for s in states]
        if states:
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            args += states
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [self._row_to_job(r) for r in self._conn.execute(sql, args).fetchall()]

    def claim_next(self) -> JobRecord | None:
        """Take the first queued job (previews first, FIFO within a priority) and mark it sampling."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT job_id FROM jobs WHERE state = 'queued' ORDER BY priority, seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            job_id = row[0]
            conn.execute(
                "UPDATE jobs SET attempts = attempts + 1, started = COALESCE(started, ?) WHERE job_id = ?",
                (time.time(), job_id),
            )
            self._set_state(conn, job_id, JobState.SAMPLING, "started")
            return self._get(conn, job_id)

    def set_state(self, job_id: str, state: JobState, message: str = "") -> None:
        extra: dict[str, Any] = {"finished": time.time()} if state.terminal else {}
        with self._tx() as conn:
            self._set_state(conn, job_id, state, message, **extra)

    def complete(self, job_id: str, result_otio: str, message: str = "") -> None:
        with self._tx() as conn:
            self._set_state(
                conn, job_id, JobState.COMPLETED, message, finished=time.time(), result_otio=result_otio
            )

    def request_cancel(self, job_id: str, owner: str) -> JobRecord:
        """Cancel a queued job at once, flag a running one (the worker stops at its next step)."""
        with self._tx() as conn:
            job = self._get(conn, job_id)
            if job.owner != owner:
                raise NotFoundError(f"no job {job_id!r}")
            if job.state.terminal:
                return job
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
            if job.state == JobState.QUEUED:
                self._set_state(
                    conn,
                    job_id,
                    JobState.CANCELLED,
                    "cancelled by the caller while queued",
                    finished=time.time(),
                )
            return self._get(conn, job_id)

    def recover(self) -> list[JobRecord]:
        """After a restart: jobs left sampling/decoding go back to the queue at their old place (or are
        cancelled, when a cancel was requested before the crash). Returns the requeued jobs."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT job_id, cancel_requested FROM jobs WHERE state IN ('sampling', 'decoding') ORDER BY seq"
            ).fetchall()
            requeued = []
            for job_id, cancel in rows:
                if cancel:
                    self._set_state(
                        conn,
                        job_id,
                        JobState.CANCELLED,
                        "cancel requested before a server restart",
                        finished=time.time(),
                    )
                else:
                    self._set_state(conn, job_id, JobState.QUEUED, "requeued after a server restart")
                    requeued.append(job_id)
            return [self._get(conn, j) for j in requeued]

    def queue_counts(self) -> dict[Priority, int]:
        rows = self._query("SELECT priority, COUNT(*) FROM jobs WHERE state = 'queued' GROUP BY priority")
        counts = dict.fromkeys(Priority, 0)
        counts.update({Priority(p): n for p, n in rows})
        return counts

    def state_history(self, job_id: str) -> list[tuple[str, str, float]]:
        return [
            (s, m, t)
            for s, m, t in self._query(
                "SELECT state, message, at FROM job_states WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ]

    def result_otio(self, job_id: str) -> str | None:
        rows = self._query("SELECT result_otio FROM jobs WHERE job_id = ?", (job_id,))
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ events

    def add_event(
        self, job_id: str, kind: EventKind, data: dict[str, Any], blob: bytes | None = None
    ) -> Event:
        with self._tx() as conn:
            return self._add_event(conn, job_id, kind, data, blob)

    def events_after(self, job_id: str, after_seq: int, limit: int = 256) -> list[Event]:
        rows = self._query(
            "SELECT seq, at, kind, data, blob FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        )
        return [Event(job_id, s, at, EventKind(k), json.loads(d), b) for s, at, k, d, b in rows]

    # ------------------------------------------------------------------ frames

    def add_frame(self, frame: FrameRecord) -> None:
        """Record a stored frame; a (take, draft, index) is recorded once (the first record wins)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO frames (job_id, take, draft, frame_index, frame_number, segment, filename, "
                "relpath, size, sha256, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    frame.job_id,
                    frame.take,
                    int(frame.draft),
                    frame.index,
                    frame.number,
                    frame.segment,
                    frame.filename,
                    frame.relpath,
                    frame.size,
                    frame.sha256,
                    frame.created,
                ),
            )

    def frames(self, job_id: str, start: int = 0, take: int = 0, draft: bool = False) -> list[FrameRecord]:
        """One take's final (or draft) frames from index `start` on, in order."""
        rows = self._query(
            "SELECT frame_index, frame_number, segment, filename, relpath, size, sha256, created FROM frames "
            "WHERE job_id = ? AND take = ? AND draft = ? AND frame_index >= ? ORDER BY frame_index",
            (job_id, take, int(draft), start),
        )
        return [FrameRecord(job_id, *r, take=take, draft=draft) for r in rows]

    def frame_indices(self, job_id: str, take: int = 0, draft: bool = False) -> set[int]:
        return {
            r[0]
            for r in self._query(
                "SELECT frame_index FROM frames WHERE job_id = ? AND take = ? AND draft = ?",
                (job_id, take, int(draft)),
            )
        }

    # ------------------------------------------------------------------ takes

    def set_take_state(self, job_id: str, take: int, state: JobState) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE takes SET state = ? WHERE job_id = ? AND take = ?", (str(state), job_id, take)
            )

    def set_draft_complete(self, job_id: str, take: int) -> None:
        """Every draft frame of the take is stored; the take is queued again for its final (unless that
        is already complete: a resumed job passes its finished drafts again)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE takes SET draft_complete = 1, state = CASE state WHEN 'completed' THEN state "
                "ELSE 'queued' END WHERE job_id = ? AND take = ?",
                (job_id, take),
            )

    def approve_take(self, job_id: str, owner: str, take: int, approved_by: str) -> JobRecord:
        """Record `take` as the job's approved take (replacing an earlier approval) and announce it to
        watchers as a StateChanged event. Another owner's job is NotFoundError like a missing one; a take
        out of range is InvalidArgumentError naming it."""
        with self._tx() as conn:
            job = self._get(conn, job_id)
            if job.owner != owner:
                raise NotFoundError(f"no job {job_id!r}")
            if not 0 <= take < job.spec.takes:
                raise InvalidArgumentError(
                    f"take {take} is out of range: job {job_id} has {job.spec.takes} take(s), 0 to "
                    f"{job.spec.takes - 1}"
                )
            conn.execute(
                "INSERT OR REPLACE INTO approvals (job_id, take, approved_by, approved_at) VALUES (?, ?, ?, ?)",
                (job_id, take, approved_by, time.time()),
            )
            message = f"take {take} approved by {approved_by}"
            self._add_event(
                conn, job_id, EventKind.STATE, {"state": str(job.state), "message": message}, None
            )
            return self._get(conn, job_id)

    # ------------------------------------------------------------------ work log

    def log_work(
        self,
        job_id: str,
        kind: str,
        segment: int | None = None,
        take: int = 0,
        draft: bool = False,
        pid: int | None = None,
    ) -> None:
        """Record that a process (this one, or `pid`: a Ray worker's) started sampling (kind 'sample') or
        decoding a segment ('decode') of one take's final or draft run."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO work_log (job_id, kind, segment, pid, at, take, draft) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, kind, segment, os.getpid() if pid is None else pid, time.time(), take, int(draft)),
            )

    def work_log(self, job_id: str) -> list[tuple[str, int | None, int, float]]:
        """(kind, segment, pid, time) rows in order."""
        return [
            tuple(r)
            for r in self._query(
                "SELECT kind, segment, pid, at FROM work_log WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ]

    # ------------------------------------------------------------------ uploads

    def add_upload(self, upload: UploadRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO uploads (upload_id, owner, display_name, size, sha256, width, height, channels, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.upload_id,
                    upload.owner,
                    upload.display_name,
                    upload.size,
                    upload.sha256,
                    upload.width,
                    upload.height,
                    json.dumps(list(upload.channels)),
                    upload.created,
                ),
            )

    def get_upload(self, upload_id: str, owner: str) -> UploadRecord:
        rows = self._query(
            "SELECT upload_id, owner, display_name, size, sha256, width, height, channels, created FROM uploads "
            "WHERE upload_id = ?",
            (upload_id,),
        )
        if not rows or rows[0][1] != owner:
            raise NotFoundError(f"no plate upload {upload_id!r}")
        u = rows[0]
        return UploadRecord(u[0], u[1], u[2], u[3], u[4], u[5], u[6], tuple(json.loads(u[7])), u[8])

    # ------------------------------------------------------------------ quotas and retention

    def usage(self, owner: str) -> tuple[int, int, int]:
        """(bytes of the owner's uploads, adapters and kept frames, uploads kept, queued jobs)."""
        with self._lock:
            upload_bytes, uploads = self._conn.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM uploads WHERE owner = ?", (owner,)
            ).fetchone()
            frame_bytes = self._conn.execute(
                "SELECT COALESCE(SUM(f.size), 0) FROM frames f JOIN jobs j ON f.job_id = j.job_id "
                "WHERE j.owner = ?",
                (owner,),
            ).fetchone()[0]
            queued = self._conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state = 'queued'", (owner,)
            ).fetchone()[0]
            adapter_bytes = self._conn.execute(
                "SELECT COALESCE(SUM(size), 0) FROM adapters WHERE owner = ?", (owner,)
            ).fetchone()[0]
        return int(upload_bytes + frame_bytes + adapter_bytes), int(uploads), int(queued)

    def stored_bytes(self) -> int:
        """Bytes of every kept frame and upload."""
        rows = self._query(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM frames) + (SELECT COALESCE(SUM(size), 0) FROM uploads)"
        )
        return int(rows[0][0])

    def finished_jobs(self) -> list[tuple[str, str, float, int]]:
        """(job_id, owner, finished, bytes of frames) of finished jobs not yet expired, oldest first."""
        rows = self._query(
            "SELECT j.job_id, j.owner, COALESCE(j.finished, j.updated), "
            "(SELECT COALESCE(SUM(size), 0) FROM frames f WHERE f.job_id = j.job_id) FROM jobs j "
            "WHERE j.state IN ('completed', 'failed', 'cancelled') "
            "AND j.job_id NOT IN (SELECT job_id FROM expired_jobs) ORDER BY 3"
        )
        return [(j, o, float(t), int(b)) for j, o, t, b in rows]

    def unused_uploads(self) -> list[tuple[str, str, float, int]]:
        """(upload_id, owner, created, size) of uploads no queued or running job uses, oldest first."""
        with self._lock:
            specs = self._conn.execute(
                "SELECT spec FROM jobs WHERE state NOT IN ('completed', 'failed', 'cancelled')"
            ).fetchall()
            rows = self._conn.execute(
                "SELECT upload_id, owner, created, size FROM uploads ORDER BY created"
            ).fetchall()
        used = {u for (spec,) in specs for u in JobSpec.from_json(spec).upload_ids}
        return [(u, o, float(t), int(b)) for u, o, t, b in rows if u not in used]

    def expire_job(self, job_id: str, reason: str) -> int:
        """Forget a finished job's frames (the caller removes the files) and record why; returns bytes."""
        with self._tx() as conn:
            size = conn.execute(
                "SELECT COALESCE(SUM(size), 0) FROM frames WHERE job_id = ?", (job_id,)
            ).fetchone()[0]
            conn.execute("DELETE FROM frames WHERE job_id = ?", (job_id,))
            conn.execute(
                "INSERT OR REPLACE INTO expired_jobs (job_id, at, bytes, reason) VALUES (?, ?, ?, ?)",
                (job_id, time.time(), size, reason),
            )
            return int(size)

    def expired(self, job_id: str) -> tuple[float, str] | None:
        """(when, why) a job's frames were expired by the retention policy, or None."""
        rows = self._query("SELECT at, reason FROM expired_jobs WHERE job_id = ?", (job_id,))
        return (float(rows[0][0]), rows[0][1]) if rows else None

    def expired_job_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT job_id FROM expired_jobs")]

    def delete_upload(self, upload_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    # ------------------------------------------------------------------ adapters

    _ADAPTER_COLUMNS = "owner, name, published, sha256, size, path, info, created"

    @staticmethod
    def _row_to_adapter(row: tuple) -> AdapterRecord:
        owner, name, published, sha256, size, path, info, created = row
        facts = json.loads(info)
        facts["target_modules"] = tuple(facts.get("target_modules", ()))
        return AdapterRecord(
            name=name,
            owner=owner,
            published=bool(published),
            sha256=sha256,
            size=int(size),
            path=path,
            created=float(created),
            **facts,
        )

    def add_adapter(
        self, record: AdapterRecord, reserved: Callable[[str], bool] = lambda name: False
    ) -> None:
        """Record an uploaded adapter, keeping every name unambiguous for every caller: AlreadyExistsError
        when the owner already has one of that name, when a published one (or reserved(name): the adapters
        folder's) has it, or, for a published one, when anyone has it. Checked and inserted in one
        transaction."""
        info = {
            "kind": record.kind,
            "trigger": record.trigger,
            "rank": record.rank,
            "alpha": record.alpha,
            "target_modules": list(record.target_modules),
            "description": record.description,
        }
        with self._tx() as conn:
            clash = conn.execute(
                "SELECT owner, published FROM adapters WHERE name = ? AND (owner = ? OR published = 1 OR ?)",
                (record.name, record.owner, int(record.published)),
            ).fetchone()
            if clash is not None or reserved(record.name):
                whose = (
                    "the server's adapters folder"
                    if clash is None
                    else "a published adapter"
                    if clash[1]
                    else f"caller {clash[0]!r}"
                )
                raise AlreadyExistsError(
                    f"adapter name {record.name!r} is already taken by {whose}; upload it under another name"
                )
            conn.execute(
                f"INSERT INTO adapters ({self._ADAPTER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.owner,
                    record.name,
                    int(record.published),
                    record.sha256,
                    record.size,
                    record.path,
                    json.dumps(info, sort_keys=True),
                    record.created,
                ),
            )

    def adapters_for(self, owner: str) -> list[AdapterRecord]:
        """The uploaded adapters `owner` may use: their own and every published one, by name."""
        rows = self._query(
            f"SELECT {self._ADAPTER_COLUMNS} FROM adapters WHERE owner = ? OR published = 1 ORDER BY name, owner",
            (owner,),
        )
        return [self._row_to_adapter(r) for r in rows]

    def adapter_owners(self) -> dict[str, list[str]]:
        """{name: owners} of every uploaded adapter."""
        owners: dict[str, list[str]] = {}
        for name, owner in self._query("SELECT name, owner FROM adapters ORDER BY name, owner"):
            owners.setdefault(name, []).append(owner)
        return owners

    def adapter_by_sha256(self, sha256: str) -> AdapterRecord | None:
        """Any uploaded adapter with this content hash (the file is the same whoever uploaded it)."""
        rows = self._query(
            f"SELECT {self._ADAPTER_COLUMNS} FROM adapters WHERE sha256 = ? LIMIT 1", (sha256,)
        )
        return self._row_to_adapter(rows[0]) if rows else None
