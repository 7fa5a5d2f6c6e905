"""A worker of the Ray pool: an actor holding a warm pipeline that runs one job at a time with the local
worker's own job code (server.worker.Worker.run_job), streaming what that code records back to the front
end instead of writing it to a database.

The one rule: an actor never touches the front end's database or data dir. The Worker it drives gets a
RelayStore in place of the Store and a FrameStore in a scratch folder of the actor's own; every write the
job makes (events, states, the work log, frames, latents, the conform report, metrics) becomes a Relay
message, yielded by `PoolWorkerImpl.run` (a Ray streaming generator, one object per message: frame bytes
travel through the object store), and the front end (server.ray_pool) applies them to its store in order.
What a job resumes from (frames stored, saved latents, the conform report, its plates) comes in with the
job as JobInputs, so a job requeued after a worker died continues on any other worker, on any node.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.config import ServerConfig
from server.frames import FrameStore
from server.jobs import EventKind, FrameRecord, JobRecord, JobState
from server.logging_setup import job_context
from server.worker import CancelRegistry, Worker

log = logging.getLogger(__name__)

MAX_BATCH = 64
"""Most Relay messages in one streamed object (progress, metrics and states go together)."""
TEST_CRASH_ENV = "TTT_STUDIO_RAY_TEST_CRASH_SHOT"
"""Test-only fault injection: an actor whose environment names a shot here exits (os._exit) when it is
given a job of that shot name, as a worker killed by the job would (tests/server/test_srv_ray.py)."""
TEST_CRASH_EXIT_CODE = 70

JOB_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Files of a job dir that travel between the actor and the front end (latents.safetensors, conform.json);
frames travel one by one with their index rows, partial writes (*.tmp) never."""

Relay = tuple[str, tuple[Any, ...]]
"""One recorded write: (kind, arguments). Kinds: event (kind, data, blob), state (state, message),
complete (otio_json, message), work (kind, segment, pid), frame (FrameRecord, bytes), file (name, bytes),
metric (name, labels, method, value), and the stream's last message, end ()."""


@dataclass(frozen=True)
class WorkerSource:
    """How an actor builds its pipeline: the shipped tiny random model or a model folder that exists at
    the same path on every node; device "cuda" (the GPU Ray assigned) or "cpu" with `threads` threads."""

    tiny_random: bool
    seed: int
    model: str | None
    device: str
    threads: int


@dataclass(frozen=True)
class JobInputs:
    """A job as the front end hands it to an actor: the record, the frames already stored (the worker
    decodes only the missing ones), the job dir's files (saved latents, the conform report), the plates."""

    job: JobRecord
    frames: list[FrameRecord] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    plates: dict[str, bytes] = field(default_factory=dict)
    cancel_requested: bool = False


def job_files(job_dir: Path) -> dict[str, tuple[int, int]]:
    """The job dir's travelling files (name -> (size, mtime_ns))."""
    if not job_dir.is_dir():
        return {}
    out = {}
    for entry in os.scandir(job_dir):
        if entry.is_file() and JOB_FILE_NAME.match(entry.name) and not entry.name.endswith(".tmp"):
            stat = entry.stat()
            out[entry.name] = (stat.st_size, stat.st_mtime_ns)
    return out


class RelayStore:
    """What server.worker.Worker calls on its store, turned into Relay messages for one job at a time.

    Reads (frame_indices, frames) are answered from the frames the front end sent plus those written
    since. Before each message, job-dir files written since the last one (latents before the DECODING
    state, the conform report before each FRAMES event) are sent, so the front end has them first.
    """

    def __init__(self, frames: FrameStore) -> None:
        self._store_dir = frames
        self._emit: Callable[[Relay], None] = lambda message: None
        self._frames: dict[int, FrameRecord] = {}
        self._sent: dict[str, tuple[int, int]] = {}
        self._job_id = ""

    def begin(self, job_id: str, frames: list[FrameRecord], emit: Callable[[Relay], None]) -> None:
        self._job_id = job_id
        self._frames = {f.index: f for f in frames}
        self._emit = emit
        self._sent = job_files(self._store_dir.job_dir(job_id))  # what came with the job

    def _send(self, job_id: str, kind: str, *args: Any) -> None:
        if job_id != self._job_id:
            raise RuntimeError(f"the relay runs job {self._job_id}; a write for job {job_id} came in")
        job_dir = self._store_dir.job_dir(job_id)
        for name, facts in job_files(job_dir).items():
            if self._sent.get(name) != facts:
                self._emit(("file", (name, (job_dir / name).read_bytes())))
                self._sent[name] = facts
        self._emit((kind, args))

    # writes
    def add_event(
        self, job_id: str, kind: EventKind, data: dict[str, Any], blob: bytes | None = None
    ) -> None:
        self._send(job_id, "event", str(kind), data, blob)

    def set_state(self, job_id: str, state: JobState, message: str = "") -> None:
        self._send(job_id, "state", str(state), message)

    def complete(self, job_id: str, result_otio: str, message: str = "") -> None:
        self._send(job_id, "complete", result_otio, message)

    def log_work(self, job_id: str, kind: str, segment: int | None = None) -> None:
        self._send(job_id, "work", kind, segment, os.getpid())

    def add_frame(self, frame: FrameRecord) -> None:
        """Send the frame file (written and committed by the worker) with its index row, then drop it:
        the front end's copy is the one that counts."""
        path = self._store_dir.path_of(frame.relpath)
        data = path.read_bytes()
        self._send(frame.job_id, "frame", frame, data)
        self._frames.setdefault(frame.index, frame)
        path.unlink(missing_ok=True)

    # reads
    def frame_indices(self, job_id: str) -> set[int]:
        return set(self._frames) if job_id == self._job_id else set()

    def frames(self, job_id: str, start: int = 0) -> list[FrameRecord]:
        if job_id != self._job_id:
            return []
        return [self._frames[i] for i in sorted(self._frames) if i >= start]


class _MetricRelay:
    """A prometheus metric as the worker uses it (.labels(...).inc() / .observe()), relayed."""

    def __init__(
        self, name: str, emit: Callable[[Relay], None], labels: dict[str, str] | None = None
    ) -> None:
        self._name, self._emit, self._labels = name, emit, labels or {}

    def labels(self, **labels: str) -> _MetricRelay:
        return _MetricRelay(self._name, self._emit, {**self._labels, **labels})

    def inc(self, amount: float = 1.0) -> None:
        self._emit(("metric", (self._name, self._labels, "inc", float(amount))))

    def observe(self, value: float) -> None:
        self._emit(("metric", (self._name, self._labels, "observe", float(value))))


class MetricsRelay:
    """Stands for server.metrics.Metrics inside an actor: every metric the worker updates is relayed."""

    def __init__(self) -> None:
        self.emit: Callable[[Relay], None] = lambda message: None

    def __getattr__(self, name: str) -> _MetricRelay:
        if name.startswith("_"):
            raise AttributeError(name)
        return _MetricRelay(name, lambda message: self.emit(message))


class PoolWorkerImpl:
    """The actor's body (server.ray_pool wraps it with ray.remote and its resources)."""

    def __init__(self, config: ServerConfig, source: WorkerSource, name: str) -> None:
        import torch

        from server.logging_setup import setup_logging

        setup_logging(config.log_level, config.log_json)
        if source.device == "cpu":
            torch.set_num_threads(source.threads)
        self.name = name
        self.source = source
        self.scratch = Path(tempfile.mkdtemp(prefix="ttt-studio-ray-"))
        # the worker's own files go to the scratch dir; the front end keeps the disk reserve
        config = dataclasses.replace(
            config,
            data_dir=self.scratch,
            resources=dataclasses.replace(config.resources, disk_reserve_bytes=0),
        )
        self.frames = FrameStore(self.scratch)
        self.store = RelayStore(self.frames)
        self.metrics = MetricsRelay()
        self.cancels = CancelRegistry()
        self._stopping = threading.Event()
        self.pipe = _build_pipeline(source)
        self.worker = Worker(
            name,
            source.device,
            self.pipe,
            self.store,  # type: ignore[arg-type] - the RelayStore has the Store methods a worker calls
            queue=None,  # type: ignore[arg-type] - run_job is called directly, nothing is taken
            frames=self.frames,
            cancels=self.cancels,
            metrics=self.metrics,  # type: ignore[arg-type]
            config=config,
            shutting_down=self._stopping.is_set,
        )
        log.info("ray worker %s ready on %s (pid %d)", name, source.device, os.getpid())

    def info(self) -> dict[str, Any]:
        """Where this worker runs (ServerInfo.devices, tests, the pool's log)."""
        import ray

        device = self.source.device
        if device == "cuda":
            device = f"cuda:{','.join(str(g) for g in ray.get_gpu_ids())}"
        else:
            device = f"cpu({self.source.threads} thread{'s' if self.source.threads > 1 else ''})"
        return {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "device": device,
        }

    def cancel(self, job_id: str) -> None:
        self.cancels.request(job_id)

    def stop(self) -> None:
        """The front end is shutting down: the running job stops at its next step and is requeued."""
        self._stopping.set()

    def run(self, inputs: JobInputs) -> Iterator[list[Relay]]:
        """Run one job; yields its Relay messages as they happen, ending with ("end", ()).

        Messages go in batches: each yield carries what was recorded since the last one (at most
        MAX_BATCH messages, and a batch ends with a frame, so every frame's bytes are an object of their
        own and reach the front end as soon as they are made)."""
        job = inputs.job
        crash_shot = os.environ.get(TEST_CRASH_ENV)
        if crash_shot and job.spec.shot_name == crash_shot:
            log.error("test fault injection: %s=%s, exiting", TEST_CRASH_ENV, crash_shot)
            os._exit(TEST_CRASH_EXIT_CODE)
        self._unpack(inputs)
        messages: queue.Queue[Relay | BaseException] = queue.Queue()
        if inputs.cancel_requested:
            self.cancels.request(job.job_id)
        self.store.begin(job.job_id, inputs.frames, messages.put)
        self.metrics.emit = messages.put

        def body() -> None:
            try:
                with job_context(job.job_id):
                    self.worker.run_job(job)
                messages.put(("end", ()))
            except BaseException as exc:  # noqa: BLE001 - handed to the generator, raised to the front end
                messages.put(exc)

        thread = threading.Thread(target=body, name=f"job-{job.job_id[:8]}", daemon=True)
        thread.start()
        try:
            while True:
                batch = [messages.get()]
                while len(batch) < MAX_BATCH and not _ends_batch(batch[-1]):
                    try:
                        batch.append(messages.get_nowait())
                    except queue.Empty:
                        break
                if isinstance(batch[-1], BaseException):
                    raise batch[-1]
                yield batch  # type: ignore[misc] - no exception in it (checked above)
                if batch[-1][0] == "end":
                    return
        finally:
            thread.join()
            self.cancels.clear(job.job_id)
            shutil.rmtree(self.frames.job_dir(job.job_id), ignore_errors=True)
            for upload_id in inputs.plates:
                self.frames.upload_path(upload_id).unlink(missing_ok=True)

    def _unpack(self, inputs: JobInputs) -> None:
        job_dir = self.frames.job_dir(inputs.job.job_id)
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        for name, data in inputs.files.items():
            if not JOB_FILE_NAME.match(name):
                raise ValueError(f"job file name {name!r} is not a plain file name")
            (job_dir / name).write_bytes(data)
        for upload_id, data in inputs.plates.items():
            self.frames.upload_path(upload_id).write_bytes(data)


def _ends_batch(message: Relay | BaseException) -> bool:
    return isinstance(message, BaseException) or message[0] in ("frame", "end")


def _build_pipeline(source: WorkerSource) -> Any:
    from ttt_engine.pipeline import VideoPipeline

    if source.tiny_random:
        return VideoPipeline.tiny_random(seed=source.seed, device=source.device)
    if source.model is None:
        raise ValueError("WorkerSource: give a model folder or tiny_random")
    return VideoPipeline.from_folder(source.model, device=source.device)
