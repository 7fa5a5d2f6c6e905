"""Host interface and JobRunner: real threads, real queue, events drained on the test's (main) thread."""

from __future__ import annotations

import threading
from pathlib import Path

import opentimelineio as otio
import pytest

from host_plugin.core.delivery import Format
from host_plugin.core.errors import JobCancelled
from host_plugin.core.exr_io import validate_plate, write_sequence
from host_plugin.core.placement import DeliveredMedia
from host_plugin.hosts.base import CANCELLED, DONE, ERROR, PROGRESS, Host, JobEvent, JobRunner

MEDIA = DeliveredMedia(rate=24, width=2, height=2, colorspace="lin_ap1_scene")


def test_host_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Host()  # type: ignore[abstract]

    class Partial(Host):
        def read_edit(self) -> otio.schema.Timeline:
            return otio.schema.Timeline()

    with pytest.raises(TypeError, match="place_sequence"):
        Partial()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="target_format"):  # a host must say what a shot becomes
        Partial()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="working_colorspace"):
        Partial()  # type: ignore[abstract]


class FileHost(Host):
    """A minimal host over files: what a test double of Resolve / Nuke / Blender must provide."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.placed: list[tuple[list[str], int, str, DeliveredMedia]] = []
        self.progress: list[tuple[float, str]] = []
        self.main_thread_calls: list[str] = []
        self.pending: list = []

    def read_edit(self) -> otio.schema.Timeline:
        return otio.schema.Timeline("edit", global_start_time=otio.opentime.RationalTime(86400, 24))

    def plate_frames(self, request, first: int, last: int) -> list[str]:
        import numpy as np

        frames = (np.zeros((2, 2, 4), np.float32) for _ in range(last - first + 1))
        return write_sequence(self.root, "plate.", frames, start=first)

    def target_format(self) -> Format:
        return Format(2, 2)

    def working_colorspace(self) -> str:
        return "lin_ap1_scene"

    def place_sequence(
        self, paths: list[str], record_frame: int, track_hint: str, media: DeliveredMedia
    ) -> None:
        self.placed.append((paths, record_frame, track_hint, media))

    def place_takes(self, takes, chosen: int, record_frame: int, track_hint: str, media: DeliveredMedia):
        self.placed.append((takes[chosen], record_frame, track_hint, media))
        return list(takes)

    def switch_take(self, handle, index: int) -> None:
        self.placed[-1] = (handle[index], *self.placed[-1][1:])

    def place_element(
        self, takes, chosen: int, record_frame: int, plate_track: int, media: DeliveredMedia, mattes
    ):
        self.placed.append((takes[chosen], record_frame, f"above track {plate_track}", media))
        return list(takes)

    def mark_draft(self, handle) -> None:
        self.placed.append(("draft", handle))

    def replace_media(self, handle, takes, media: DeliveredMedia) -> None:
        self.placed.append(("replaced", handle, takes, media))

    def report_progress(self, fraction: float, message: str) -> None:
        self.progress.append((fraction, message))

    def is_cancelled(self) -> bool:
        return False

    def run_on_main_thread(self, fn, *args) -> None:
        self.pending.append((fn, args))  # the host's event loop would run these


def test_a_complete_host_runs_a_job_through_the_runner(tmp_path: Path) -> None:
    host = FileHost(tmp_path)
    main = threading.get_ident()
    paths = host.plate_frames(None, 1001, 1003)
    assert [validate_plate(p).width for p in paths] == [2, 2, 2]

    def work(ctx) -> list[str]:
        ctx.progress(0.5, "generating")
        return paths

    def handle(event: JobEvent) -> None:
        assert threading.get_ident() == main  # events reach the host on its own thread
        if event.kind == PROGRESS:
            host.report_progress(event.fraction, event.message)
        elif event.kind == DONE:
            host.place_sequence(event.result, 86400, "TTT generated", MEDIA)

    assert JobRunner(work).start().wait_and_drain(handle, timeout=10)
    assert host.progress == [(0.5, "generating")]
    assert host.placed == [(paths, 86400, "TTT generated", MEDIA)]


def test_events_arrive_in_order() -> None:
    release = threading.Event()

    def work(ctx) -> str:
        for i in range(1, 6):
            ctx.progress(i / 10, f"step {i}")
        release.wait(5)
        return "frames"

    runner = JobRunner(work).start()
    seen: list[JobEvent] = []
    assert runner.drain(seen.append) is True  # not finished while the worker waits
    release.set()
    assert runner.wait_and_drain(seen.append, timeout=10)
    assert [e.seq for e in seen] == list(range(6))
    assert [e.kind for e in seen] == [PROGRESS] * 5 + [DONE]
    assert [e.message for e in seen[:5]] == [f"step {i}" for i in range(1, 6)]
    assert seen[-1].result == "frames" and seen[-1].fraction == 1.0
    assert runner.finished and runner.poll() == []


def test_worker_exception_becomes_an_error_event() -> None:
    def work(ctx) -> None:
        ctx.progress(0.1, "connecting")
        raise ConnectionError("server at localhost:50051 refused the connection")

    seen: list[JobEvent] = []
    assert JobRunner(work, name="failing").start().wait_and_drain(seen.append, timeout=10)
    assert [e.kind for e in seen] == [PROGRESS, ERROR]
    error = seen[-1]
    assert isinstance(error.error, ConnectionError)
    assert error.message == "ConnectionError: server at localhost:50051 refused the connection"
    assert "raise ConnectionError" in error.traceback


def test_bad_progress_fraction_is_an_error_event() -> None:
    seen: list[JobEvent] = []
    JobRunner(lambda ctx: ctx.progress(1.5)).start().wait_and_drain(seen.append, timeout=10)
    assert [e.kind for e in seen] == [ERROR]
    assert "within [0, 1], got 1.5" in seen[0].message


def test_cancel_gives_a_cancelled_event() -> None:
    started = threading.Event()

    def work(ctx) -> None:
        started.set()
        while True:
            ctx.raise_if_cancelled()
            threading.Event().wait(0.005)

    runner = JobRunner(work).start()
    assert started.wait(5)
    runner.cancel()
    seen: list[JobEvent] = []
    assert runner.wait_and_drain(seen.append, timeout=10)
    assert [e.kind for e in seen] == [CANCELLED]
    assert isinstance(seen[0].error, JobCancelled)


def test_runner_starts_once() -> None:
    runner = JobRunner(lambda ctx: None).start()
    with pytest.raises(RuntimeError, match="already started"):
        runner.start()
    assert runner.wait_and_drain(lambda e: None, timeout=10)
