-- The job store's schema version 1 (server/store.py before takes), verbatim: tests/server/test_srv_migration.py
-- builds a version-1 database from it and opens it with the current Store.

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
CREATE TABLE IF NOT EXISTS frames (
    job_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    frame_number INTEGER NOT NULL,
    segment INTEGER NOT NULL,
    filename TEXT NOT NULL,
    relpath TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (job_id, frame_index)
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
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS work_log_job ON work_log (job_id, id);
CREATE TABLE IF NOT EXISTS expired_jobs (
    job_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    bytes INTEGER NOT NULL,
    reason TEXT NOT NULL
);

