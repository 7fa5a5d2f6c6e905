"""Job store behaviour that the first mutation run showed untested (docs/reliability.md, "Mutation testing").

The server's own tests reach these paths through a running server; here each rule of server.store is
checked directly on a real SQLite file: frames recorded once and listed in order, plate uploads only
for their owner, the work log, results, finishing times, listing and paging, queue counts, cancelling
a running job, recovery of a decoding job, refusing an unknown schema, and rolled-back transactions.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from server.errors import AlreadyExistsError, NotFoundError, ResourceExhaustedError
from server.jobs import EventKind, FrameRecord, JobSpec, JobState, Priority, UploadRecord
from server.store import Store

SPEC = JobSpec(storyboard=[{"text": "x"}], params={"steps": 1}, shot_name="s", n_segments=1, total_frames=9)


def _job_id(n: int) -> str:
    return f"{n:032x}"


def _add(
    store: Store, n: int, owner: str = "alice", priority: Priority = Priority.FINAL, key: str = ""
) -> str:
    job, _ = store.create_job(_job_id(n), owner, priority, SPEC, f"h{n}", key, max_queued_per_owner=100)
    return job.job_id


def _frame(job_id: str, index: int, sha: str = "ab") -> FrameRecord:
    return FrameRecord(
        job_id, index, 1001 + index, 0, f"s.{1001 + index}.exr", f"{job_id}/{index}", 10, sha, 1.0
    )


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "db.sqlite3")
    yield s
    s.close()


def test_frames_are_recorded_once_listed_in_order_and_counted(store: Store) -> None:
    job = _add(store, 1)
    for index in (2, 0, 1):
        store.add_frame(_frame(job, index))
    store.add_frame(_frame(job, 1, sha="second"))  # a repeated index keeps the first record
    assert [f.index for f in store.frames(job)] == [0, 1, 2]
    assert store.frames(job)[1] == _frame(job, 1)
    assert [f.index for f in store.frames(job, start=1)] == [1, 2]
    assert store.frame_indices(job) == {0, 1, 2}
    assert store.get_job(job).frames_ready == 3
    assert store.frames(_add(store, 2)) == []


def test_an_upload_is_found_only_by_its_owner(store: Store) -> None:
    upload = UploadRecord("u" + "1" * 32, "alice", "plate.exr", 1234, "cd" * 32, 64, 48, ("R", "G", "B"), 5.0)
    store.add_upload(upload)
    assert store.get_upload(upload.upload_id, "alice") == upload
    with pytest.raises(NotFoundError, match=f"no plate upload '{upload.upload_id}'"):
        store.get_upload(upload.upload_id, "bob")
    with pytest.raises(NotFoundError, match="no plate upload"):
        store.get_upload("u" + "2" * 32, "alice")


def test_work_log_records_kind_segment_and_this_process(store: Store) -> None:
    job = _add(store, 1)
    store.log_work(job, "sample")
    store.log_work(job, "decode", segment=2)
    rows = store.work_log(job)
    assert [(kind, segment, pid) for kind, segment, pid, _ in rows] == [
        ("sample", None, os.getpid()),
        ("decode", 2, os.getpid()),
    ]
    assert rows[0][3] <= rows[1][3]
    assert store.work_log(_add(store, 2)) == []


def test_complete_stores_the_result_and_the_finishing_time(store: Store) -> None:
    job = _add(store, 1)
    store.claim_next()
    store.complete(_add(store, 2), "{}")
    assert store.get_job(_job_id(2)).message == ""
    store.complete(job, '{"OTIO_SCHEMA": "Timeline.1"}', "done")
    record = store.get_job(job)
    assert record.state == JobState.COMPLETED and record.message == "done"
    assert record.finished is not None and record.finished >= record.started
    assert store.result_otio(job) == '{"OTIO_SCHEMA": "Timeline.1"}'
    assert store.result_otio(_job_id(99)) is None
    assert store.state_history(job)[-1][:2] == ("completed", "done")


def test_only_terminal_states_set_the_finishing_time(store: Store) -> None:
    running, failing = _add(store, 1), _add(store, 2)
    store.set_state(running, JobState.DECODING)
    assert store.get_job(running).finished is None
    assert store.get_job(running).message == "", "no message given, none stored"
    store.set_state(failing, JobState.FAILED, "out of memory")
    failed = store.get_job(failing)
    assert failed.finished is not None and failed.message == "out of memory"


def test_list_jobs_is_per_owner_newest_first_filtered_and_paged(store: Store) -> None:
    for n in range(1, 6):
        _add(store, n)
    _add(store, 6, owner="bob")
    store.set_state(_job_id(2), JobState.FAILED, "x")
    alice = store.list_jobs("alice")
    assert [j.job_id for j in alice] == [_job_id(n) for n in (5, 4, 3, 2, 1)]
    assert [j.job_id for j in store.list_jobs("alice", limit=2)] == [_job_id(5), _job_id(4)]
    page2 = store.list_jobs("alice", limit=2, before_seq=alice[1].seq)
    assert [j.job_id for j in page2] == [_job_id(3), _job_id(2)]
    assert [j.job_id for j in store.list_jobs("alice", states=[JobState.FAILED])] == [_job_id(2)]
    both = store.list_jobs("alice", states=[JobState.FAILED, JobState.QUEUED])
    assert len(both) == 5
    assert [j.job_id for j in store.list_jobs("bob")] == [_job_id(6)]


def test_queue_counts_and_positions_cover_only_queued_jobs(store: Store) -> None:
    _add(store, 1)
    _add(store, 2, priority=Priority.PREVIEW)
    _add(store, 3)
    store.claim_next()  # the preview starts
    assert store.queue_counts() == {Priority.PREVIEW: 0, Priority.FINAL: 2}
    assert store.get_job(_job_id(2)).queue_position == 0
    assert [store.get_job(_job_id(n)).queue_position for n in (1, 3)] == [1, 2]


def test_unknown_jobs_are_named_in_not_found_errors(store: Store) -> None:
    with pytest.raises(NotFoundError, match=f"no job '{_job_id(7)}'"):
        store.job_state(_job_id(7))
    with pytest.raises(NotFoundError, match=f"no job '{_job_id(7)}'"):
        store.get_job(_job_id(7))
    job = _add(store, 1)
    assert store.job_state(job) == JobState.QUEUED
    with pytest.raises(NotFoundError, match=f"no job '{job}'"):
        store.get_job(job, owner="bob")


def test_cancelling_a_running_job_flags_it_and_a_finished_job_is_left_alone(store: Store) -> None:
    job = _add(store, 1)
    store.claim_next()
    assert store.state_history(job)[-1][:2] == ("sampling", "started")
    with pytest.raises(NotFoundError, match=f"no job '{job}'"):
        store.request_cancel(job, "bob")
    flagged = store.request_cancel(job, "alice")
    assert flagged.state == JobState.SAMPLING and flagged.cancel_requested
    done = _add(store, 2)
    store.set_state(done, JobState.COMPLETED, "ok")
    again = store.request_cancel(done, "alice")
    assert again.state == JobState.COMPLETED and not again.cancel_requested


def test_a_queued_cancel_is_final_and_recorded(store: Store) -> None:
    job = _add(store, 1)
    cancelled = store.request_cancel(job, "alice")
    assert cancelled.state == JobState.CANCELLED and cancelled.finished is not None
    assert store.state_history(job)[-1][:2] == ("cancelled", "cancelled by the caller while queued")
    assert store.claim_next() is None


def test_recover_requeues_decoding_jobs_and_leaves_others(store: Store) -> None:
    decoding, queued, failed = _add(store, 1), _add(store, 2), _add(store, 3)
    store.set_state(decoding, JobState.DECODING, "decoding")
    store.set_state(failed, JobState.FAILED, "x")
    assert [j.job_id for j in store.recover()] == [decoding]
    assert store.job_state(decoding) == JobState.QUEUED
    assert store.job_state(queued) == JobState.QUEUED and store.job_state(failed) == JobState.FAILED
    assert store.state_history(decoding)[-1][:2] == ("queued", "requeued after a server restart")


def test_recover_cancels_a_job_whose_cancel_was_asked_before_the_restart(store: Store) -> None:
    job = _add(store, 1)
    store.claim_next()
    store.request_cancel(job, "alice")
    assert store.recover() == []
    record = store.get_job(job)
    assert record.state == JobState.CANCELLED and record.finished is not None
    assert store.state_history(job)[-1][:2] == ("cancelled", "cancel requested before a server restart")


def test_an_empty_idempotency_key_never_deduplicates(store: Store) -> None:
    first, dedup1 = store.create_job(_job_id(1), "alice", Priority.FINAL, SPEC, "h", "", 100)
    second, dedup2 = store.create_job(_job_id(2), "alice", Priority.FINAL, SPEC, "h", "", 100)
    assert (dedup1, dedup2) == (False, False) and first.job_id != second.job_id
    assert first.idempotency_key is None


def test_a_job_reads_back_as_submitted(store: Store) -> None:
    job, _ = store.create_job(_job_id(1), "alice", Priority.PREVIEW, SPEC, "h", "take-1", 100)
    record = store.get_job(job.job_id)
    assert record.priority is Priority.PREVIEW and record.idempotency_key == "take-1"
    assert record.spec == SPEC and record.owner == "alice" and record.state == JobState.QUEUED
    assert isinstance(record.created, float) and record.created == record.updated
    store.set_state(job.job_id, JobState.SAMPLING)
    assert store.get_job(job.job_id).updated >= record.created


def test_a_refused_submit_leaves_nothing_behind(store: Store) -> None:
    _add(store, 1)
    version = store.version
    with pytest.raises(ResourceExhaustedError, match="already has 1 queued jobs"):
        store.create_job(_job_id(2), "alice", Priority.FINAL, SPEC, "h2", None, max_queued_per_owner=1)
    with pytest.raises(sqlite3.IntegrityError):
        store.create_job(_job_id(1), "alice", Priority.FINAL, SPEC, "h3", None, max_queued_per_owner=100)
    assert [j.job_id for j in store.list_jobs("alice")] == [_job_id(1)]
    assert store.version == version, "a rolled-back submit wakes nobody"
    assert [e.seq for e in store.events_after(_job_id(1), 0)] == [1]


def test_events_after_honours_its_limit_and_keeps_blobs(store: Store) -> None:
    job = _add(store, 1)
    store.add_event(job, EventKind.PREVIEW, {"step": 1}, b"\x89PNG")
    store.add_event(job, EventKind.PROGRESS, {"step": 2})
    events = store.events_after(job, 0, limit=2)
    assert [(e.seq, e.kind) for e in events] == [(1, EventKind.STATE), (2, EventKind.PREVIEW)]
    assert events[1].blob == b"\x89PNG" and events[1].data == {"step": 1}
    assert all(e.job_id == job and isinstance(e.time, float) for e in events)
    assert store.events_after(job, 2)[0].data == {"step": 2}


def test_waiters_time_out_without_a_change_and_wake_all_wakes_them(store: Store) -> None:
    _add(store, 1)
    version = store.version
    assert store.wait_for_change(version, timeout=0.01) == version
    store.wake_all()
    assert store.wait_for_change(version, timeout=0.01) == version + 1


def test_a_waiter_blocks_until_a_write(store: Store) -> None:
    job = _add(store, 1)
    version = store.version
    waiter = threading.Thread(target=store.wait_for_change, args=(version, 30))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive(), "nothing was written, so the waiter must still be waiting"
    store.set_state(job, JobState.SAMPLING)
    waiter.join(10)
    assert not waiter.is_alive()


def test_a_database_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=7")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 7; this server knows 1"):
        Store(path)


def test_a_database_survives_reopening_with_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "db.sqlite3"  # the folders are made
    store = Store(path)
    job = _add(store, 1)
    store.close()
    reopened = Store(path)
    assert reopened.get_job(job).spec == SPEC
    reopened.close()


def test_a_job_is_submitted_with_its_first_event_and_a_reused_key_names_the_job(store: Store) -> None:
    job, _ = store.create_job(_job_id(1), "alice", Priority.FINAL, SPEC, "h1", "key", 100)
    first = store.events_after(job.job_id, 0)
    assert [(e.seq, e.kind, e.data) for e in first] == [
        (1, EventKind.STATE, {"state": "queued", "message": "submitted"})
    ]
    assert store.state_history(job.job_id)[0][:2] == ("queued", "submitted")
    with pytest.raises(AlreadyExistsError, match=f"\\(job {job.job_id}\\)"):
        store.create_job(_job_id(2), "alice", Priority.FINAL, SPEC, "h2", "key", 100)


def test_add_event_returns_the_event_as_stored(store: Store) -> None:
    job = _add(store, 1)
    added = store.add_event(job, EventKind.PREVIEW, {"step": 3}, b"png")
    assert added == store.events_after(job, 1)[0]
    assert (added.job_id, added.seq, added.kind, added.data, added.blob) == (
        job,
        2,
        EventKind.PREVIEW,
        {"step": 3},
        b"png",
    )


def test_the_store_is_shared_by_threads(store: Store) -> None:
    # the server's workers and servicer threads share one connection
    job = _add(store, 1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            store.claim_next()
            store.add_frame(_frame(job, 0))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert errors == []
    assert store.get_job(job).state == JobState.SAMPLING and store.frame_indices(job) == {0}
