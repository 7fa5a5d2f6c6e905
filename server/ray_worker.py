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
A job's uploads (plates, an element job's mattes) and its adapters' files travel with it too: each adapter
is checked against the sha256 the job recorded and loaded into a registry of the actor's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
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

from server.adapters import check_adapter_name
from server.config import ServerConfig
from server.frames import FrameStore
from server.jobs import EventKind, FrameRecord, JobRecord, JobState, TakeRecord
from server.logging_setup import job_context
from server.worker import CancelRegistry, Worker

log = logging.getLogger(__name__)

MAX_BATCH = 64
"""Most Relay messages in one streamed object (progress, metrics and states go together)."""
TEST_CRASH_ENV = "TTT_STUDIO_RAY_TEST_CRASH_SHOT"
"""Test-only fault injection: an actor whose environment names a shot here exits (os._exit) when it is
given a job of that shot name, as a worker killed by the job would (tests/server/test_srv_ray.py)."""
TEST_CRASH_EXIT_CODE = 70

JOB_FILE = re.compile(r"^(take[0-9]{1,6}/(draft|final)/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Files of a job dir that travel between the actor and the front end, by path relative to the job dir:
each run's latents.safetensors and conform.json (take 0's final at the top, the others under
take<k>/<final|draft>/, server.frames); frames travel one by one with their index rows, partial writes
(*.tmp) never."""

Relay = tuple[str, tuple[Any, ...]]
"""One recorded write: (kind, arguments). Kinds: event (kind, data, blob), state (state, message),
complete (otio_json, message), work (kind, segment, pid), frame (FrameRecord, bytes), file (name, bytes),
metric (name, labels, method, value), take_state (take, state), draft_complete (take,), and the
stream's last message, end (). The work message is (kind, segment, pid, take, draft)."""


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
class AdapterFiles:
    """One adapter a job names, as its files: the weights (whose sha256 the job recorded) and, for an
    adapter folder, its adapter_config.json (None for a self-contained .safetensors file)."""

    name: str
    sha256: str
    weights: bytes
    config: bytes | None = None


@dataclass(frozen=True)
class JobInputs:
    """A job as the front end hands it to an actor: the record, the frames already stored (every take's
    finals and drafts; the worker decodes only the missing ones), the job dir's files (saved latents,
    conform reports), its uploads (plates and mattes, by upload id) and its adapters' files."""

    job: JobRecord
    frames: list[FrameRecord] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    adapters: list[AdapterFiles] = field(default_factory=list)
    cancel_requested: bool = False


def job_files(job_dir: Path) -> dict[str, tuple[int, int]]:
    """The job dir's travelling files (path relative to the job dir -> (size, mtime_ns))."""
    out: dict[str, tuple[int, int]] = {}
    folders = [job_dir, *sorted(job_dir.glob("take*/draft")), *sorted(job_dir.glob("take*/final"))]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            name = Path(entry.path).relative_to(job_dir).as_posix()
            if entry.is_file() and JOB_FILE.match(name) and not name.endswith(".tmp"):
                stat = entry.stat()
                out[name] = (stat.st_size, stat.st_mtime_ns)
    return out


class ShippedAdapters:
    """The adapters that came with the job the actor runs, as server.adapters.applied_for looks them up
    (load(name, sha256)); the files are checked against the sha256 the job recorded before loading."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._loaded: dict[str, Any] = {}

    def receive(self, adapters: list[AdapterFiles]) -> None:
        """Write and load the job's adapters (replacing the previous job's)."""
        from ttt_engine.adapters.format import CONFIG_NAME, WEIGHTS_NAME, load_adapter

        self._loaded = {}
        shutil.rmtree(self.root, ignore_errors=True)
        for item in adapters:
            check_adapter_name(item.name, "adapter name")
            digest = hashlib.sha256(item.weights).hexdigest()
            if digest != item.sha256:
                raise ValueError(
                    f"adapter {item.name!r} arrived with sha256 {digest}; the job recorded {item.sha256}"
                )
            folder = self.root / item.sha256
            folder.mkdir(parents=True, exist_ok=True)
            if item.config is None:
                path = folder / f"{item.name}.safetensors"
                path.write_bytes(item.weights)
            else:
                (folder / WEIGHTS_NAME).write_bytes(item.weights)
                (folder / CONFIG_NAME).write_bytes(item.config)
                path = folder
            adapter = load_adapter(path)
            if str(adapter.sha256) != item.sha256:
                raise ValueError(
                    f"adapter {item.name!r} loaded with sha256 {adapter.sha256}, not {item.sha256}"
                )
            self._loaded[item.sha256] = adapter

    def load(self, name: str, sha256: str) -> Any:
        adapter = self._loaded.get(sha256)
        if adapter is None:
            raise FileNotFoundError(f"adapter {name!r} (sha256 {sha256}) did not come with the job")
        return adapter


class RelayStore:
    """What server.worker.Worker calls on its store, turned into Relay messages for one job at a time.

    Reads (frame_indices, frames, get_job) are answered from the frames and the record the front end sent
    plus what was written since (get_job: the record with its takes' states and frame counts brought up
    to date, for the result OTIO the worker builds). Before each message, job-dir files written since the last one (latents before the DECODING
    state, the conform report before each FRAMES event) are sent, so the front end has them first.
    """

    def __init__(self, frames: FrameStore) -> None:
        self._store_dir = frames
        self._emit: Callable[[Relay], None] = lambda message: None
        self._frames: dict[tuple[int, bool, int], FrameRecord] = {}
        self._sent: dict[str, tuple[int, int]] = {}
        self._job: JobRecord | None = None
        self._job_id = ""

    def begin(self, job: JobRecord, frames: list[FrameRecord], emit: Callable[[Relay], None]) -> None:
        self._job = job
        self._job_id = job.job_id
        self._frames = {(f.take, f.draft, f.index): f for f in frames}
        self._emit = emit
        self._sent = job_files(self._store_dir.job_dir(job.job_id))  # what came with the job

    def _send(self, job_id: str, kind: str, *args: Any) -> None:
        if job_id != self._job_id:
            raise RuntimeError(f"the relay runs job {self._job_id}; a write for job {job_id} came in")
        job_dir = self._store_dir.job_dir(job_id)
        for name, facts in job_files(job_dir).items():  # latents, conform reports
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

    def log_work(
        self, job_id: str, kind: str, segment: int | None = None, take: int = 0, draft: bool = False
    ) -> None:
        self._send(job_id, "work", kind, segment, os.getpid(), take, draft)

    def set_take_state(self, job_id: str, take: int, state: JobState) -> None:
        self._send(job_id, "take_state", take, str(state))
        self._update_take(take, state=state)

    def set_draft_complete(self, job_id: str, take: int) -> None:
        """As Store.set_draft_complete: the take goes back to queued for its final unless completed."""
        self._send(job_id, "draft_complete", take)
        record = self._take(take)
        state = record.state if record.state == JobState.COMPLETED else JobState.QUEUED
        self._update_take(take, draft_complete=True, state=state)

    def _take(self, take: int) -> TakeRecord:
        assert self._job is not None
        for record in self._job.takes:
            if record.index == take:
                return record
        raise RuntimeError(f"job {self._job_id} has no take {take}")

    def _update_take(self, take: int, **changes: Any) -> None:
        assert self._job is not None
        takes = tuple(dataclasses.replace(t, **changes) if t.index == take else t for t in self._job.takes)
        self._job = dataclasses.replace(self._job, takes=takes)

    def add_frame(self, frame: FrameRecord) -> None:
        """Send the frame file (written and committed by the worker) with its index row, then drop it:
        the front end's copy is the one that counts."""
        path = self._store_dir.path_of(frame.relpath)
        data = path.read_bytes()
        self._send(frame.job_id, "frame", frame, data)
        self._frames.setdefault((frame.take, frame.draft, frame.index), frame)
        path.unlink(missing_ok=True)

    # reads
    def frame_indices(self, job_id: str, take: int = 0, draft: bool = False) -> set[int]:
        if job_id != self._job_id:
            return set()
        return {i for t, d, i in self._frames if (t, d) == (take, draft)}

    def frames(self, job_id: str, start: int = 0, take: int = 0, draft: bool = False) -> list[FrameRecord]:
        return [
            self._frames[(take, draft, i)]
            for i in sorted(self.frame_indices(job_id, take, draft))
            if i >= start
        ]

    def get_job(self, job_id: str) -> JobRecord:
        if self._job is None or job_id != self._job_id:
            raise RuntimeError(f"the relay runs job {self._job_id}; job {job_id} was asked for")
        takes = tuple(
            dataclasses.replace(
                t,
                frames_ready=len(self.frame_indices(job_id, t.index, False)),
                draft_frames_ready=len(self.frame_indices(job_id, t.index, True)),
            )
            for t in self._job.takes
        )
        return dataclasses.replace(self._job, takes=takes, frames_ready=len(self.frame_indices(job_id)))


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
        self.adapters = ShippedAdapters(self.scratch / "adapters")
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
            adapters=self.adapters,  # type: ignore[arg-type] - load(name, sha256) as AdapterRegistry's
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
        self.store.begin(job, inputs.frames, messages.put)
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
            for upload_id in inputs.uploads:
                self.frames.upload_path(upload_id).unlink(missing_ok=True)
            self.adapters.receive([])

    def _unpack(self, inputs: JobInputs) -> None:
        job_dir = self.frames.job_dir(inputs.job.job_id)
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        for name, data in inputs.files.items():
            if not JOB_FILE.match(name):
                raise ValueError(f"job file {name!r} is not a run's plain file (pattern {JOB_FILE.pattern})")
            (job_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (job_dir / name).write_bytes(data)
        for upload_id, data in inputs.uploads.items():
            self.frames.upload_path(upload_id).write_bytes(data)
        self.adapters.receive(inputs.adapters)


def _ends_batch(message: Relay | BaseException) -> bool:
    return isinstance(message, BaseException) or message[0] in ("frame", "end")


def _build_pipeline(source: WorkerSource) -> Any:
    from ttt_engine.pipeline import VideoPipeline

    if source.tiny_random:
        return VideoPipeline.tiny_random(seed=source.seed, device=source.device)
    if source.model is None:
        raise ValueError("WorkerSource: give a model folder or tiny_random")
    return VideoPipeline.from_folder(source.model, device=source.device)
