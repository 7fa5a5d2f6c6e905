"""`serve --ray ADDRESS`: the front end keeps auth, the job store, the queue and its priorities; jobs run
on a pool of Ray actors (server.ray_worker), each holding a warm model on one GPU (or a CPU thread budget).

The one rule: only the front end writes its database and data dir. Each pool slot is a thread of the
front end paired with one actor: it claims the next job from the store's queue (on-set previews first,
so the next free worker always gets the most urgent job), hands it to its actor with what the job resumes
from, and applies the actor's stream of Relay messages (events, states, frames as bytes) as they arrive.

Faults. An actor that dies mid-job (its process killed, its node lost) is replaced, and its job goes back
to the queue at its old place and resumes on the next free worker from the frames and latents already
stored; a job whose workers died max_worker_deaths times is failed with a message saying so (the deaths
are counted in its state history). The actors are owned by the front end, not detached: when the front
end dies (kill -9) Ray ends them with it, and the restarted front end requeues the jobs that were running
(Store.recover) and builds a fresh pool, so there is never an orphaned worker writing for a dead owner
(docs/scaling.md argues the choice).

Pool size: RayPoolConfig.workers (None: follow the cluster, one worker per GPU or per `threads` CPUs, as
nodes join and leave), changed while serving through <data_dir>/ray_workers (`ttt-studio pool`). A slot
removed while it runs a job finishes the job first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.adapters import AdapterRegistry
from server.config import RAY_LOCAL, RayPoolConfig, ServerConfig
from server.disk import DiskReserve, disk_full_message, is_disk_full
from server.engine import Engine, ServerInfoData
from server.frames import FrameStore
from server.jobs import EventKind, FrameRecord, JobRecord, JobState
from server.logging_setup import job_context
from server.metrics import Metrics
from server.queue import JobQueue
from server.ray_worker import (
    JOB_FILE,
    AdapterFiles,
    JobInputs,
    PoolWorkerImpl,
    Relay,
    WorkerSource,
    job_files,
)
from server.store import Store
from server.worker import CancelRegistry

log = logging.getLogger(__name__)

POOL_FILE = "ray_workers"
"""<data_dir>/ray_workers: the pool size wanted now ("3" or "auto"), read every poll_s while serving."""
AUTO = "auto"
WORKER_DIED = "worker died"
"""Start of the message of a requeue after a worker death: the deaths of a job are counted from these."""
_METRICS = frozenset(
    {"job_duration", "step_duration", "decode_calls", "frames_written", "jobs_finished", "job_failures"}
)
"""The metrics an actor's worker may update (server.metrics.Metrics attributes)."""


# ---------------------------------------------------------------------- pool size


def write_pool_target(data_dir: Path, workers: int | None) -> Path:
    """Ask a running Ray front end on data_dir for `workers` workers (None: follow the cluster)."""
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 or auto, got {workers}")
    path = Path(data_dir) / POOL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(AUTO if workers is None else str(workers), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_pool_target(data_dir: Path, default: int | None) -> int | None:
    """The size <data_dir>/ray_workers asks for, else `default`; a malformed file is reported and ignored."""
    path = Path(data_dir) / POOL_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return default
    if text == AUTO:
        return None
    try:
        value = int(text)
        if value < 0:
            raise ValueError
    except ValueError:
        log.error(
            "%s holds %r; expected a worker count >= 0 or 'auto'; keeping the pool as it is", path, text
        )
        return default
    return value


# ---------------------------------------------------------------------- Ray


def connect(config: RayPoolConfig) -> bool:
    """Join the cluster (or start a local instance); returns whether this call initialised Ray."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'ttt-studio[ray]'") from None
    if ray.is_initialized():
        return False
    address = None if config.address == RAY_LOCAL else config.address
    ray.init(
        address=address,
        namespace=config.namespace,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    resources = ray.cluster_resources()
    log.info(
        "joined Ray at %s: %d node(s), %s CPU(s), %s GPU(s)",
        config.address,
        len([n for n in ray.nodes() if n.get("Alive")]),
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )
    return True


def _actor_class(gpu: bool, threads: int) -> Any:
    import ray

    # max_concurrency 2: cancel / stop / info reach an actor while it runs a job
    options: dict[str, Any] = {"max_concurrency": 2, "max_restarts": 0, "max_task_retries": 0}
    options.update({"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": threads})
    return ray.remote(**options)(PoolWorkerImpl)


def _is_worker_death(exc: BaseException) -> bool:
    import ray.exceptions as rex

    lost = (rex.RayActorError, rex.WorkerCrashedError, rex.ObjectLostError, rex.NodeDiedError)
    return isinstance(exc, lost)


# ---------------------------------------------------------------------- the pool


class PoolCancels(CancelRegistry):
    """The engine's cancel flags, forwarded to the actor that runs the job."""

    def __init__(self) -> None:
        super().__init__()
        self.on_request: Callable[[str], None] = lambda job_id: None

    def request(self, job_id: str) -> None:
        super().request(job_id)
        self.on_request(job_id)


class _Slot(threading.Thread):
    """One worker of the pool: a front-end thread and the actor it drives (re-made when it dies)."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        super().__init__(name=f"ray-worker-{index}", daemon=True)
        self.pool = pool
        self.retired = threading.Event()
        self.actor: Any = None
        self.info: dict[str, Any] | None = None
        self.job_id: str | None = None

    def run(self) -> None:
        pool = self.pool
        while not (pool.stopping() or self.retired.is_set()):
            if not self._ensure_actor():
                continue
            job = pool.queue.take(timeout=pool.cfg.poll_s)
            if job is None:
                continue
            self.job_id = job.job_id
            try:
                with job_context(job.job_id):
                    pool.run_job(self, job)
            except Exception:  # noqa: BLE001 - e.g. the database on a full disk: keep the slot
                log.exception(
                    "job %s could not be recorded as finished; it resumes at the next start", job.job_id
                )
            finally:
                self.job_id = None
        self.drop_actor()
        log.info("%s stopped", self.name)

    def _ensure_actor(self) -> bool:
        """A live actor with its model loaded (made when missing); False after a wait without one."""
        import ray

        pool = self.pool
        if self.actor is None:
            name = f"{self.name}-{uuid.uuid4().hex[:6]}"
            self.actor = pool.actor_class.remote(pool.config, pool.source, name)
            pool.starts.inc()
            log.info("%s: starting a worker actor (%s)", self.name, pool.source.device)
        try:
            self.info = ray.get(self.actor.info.remote(), timeout=pool.cfg.start_timeout_s)
            return True
        except ray.exceptions.GetTimeoutError:
            log.warning(
                "%s: no worker after %.0f s (is the cluster short of resources?)",
                self.name,
                pool.cfg.start_timeout_s,
            )
            return False
        except Exception as exc:  # noqa: BLE001 - the actor died before or while loading: make a new one
            log.error(
                "%s: worker actor unavailable (%s: %s); making a new one", self.name, type(exc).__name__, exc
            )
            self.drop_actor()
            time.sleep(pool.cfg.poll_s)  # a model that cannot load does not spin the CPU
            return False

    def drop_actor(self) -> None:
        """Kill the actor (if any); the slot makes a new one before its next job."""
        import ray

        if self.actor is not None:
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actor, self.info = None, None


class WorkerPool:
    """Slots that take jobs from the queue and run them on Ray actors; sized live (see module doc)."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        frames: FrameStore,
        queue: JobQueue,
        cancels: PoolCancels,
        metrics: Metrics,
        stopping: Callable[[], bool],
        adapters: AdapterRegistry | None = None,
    ) -> None:
        from prometheus_client import Counter, Gauge

        if config.ray is None:
            raise ValueError("WorkerPool needs ServerConfig.ray")
        self.config = config
        self.cfg: RayPoolConfig = config.ray
        self.store, self.frames, self.queue, self.metrics = store, frames, queue, metrics
        self.cancels = cancels
        self.adapters = adapters
        cancels.on_request = self.cancel
        self.stopping = stopping
        self.reserve = DiskReserve(config.data_dir / "disk.reserve", config.resources.disk_reserve_bytes)
        self.source: WorkerSource
        self.actor_class: Any = None
        self._lock = threading.Lock()
        self.slots: list[_Slot] = []
        self._started_ray = False
        self._watcher: threading.Thread | None = None
        registry = metrics.registry
        self.starts = Counter("ttt_pool_worker_starts", "Ray worker actors started", registry=registry)
        self.deaths = Counter(
            "ttt_pool_worker_deaths", "Ray workers that died while running a job", registry=registry
        )
        gauge = Gauge("ttt_pool_workers", "Ray workers of the pool by state", ["state"], registry=registry)
        for state in ("busy", "idle", "starting"):
            gauge.labels(state=state).set_function(lambda state=state: self.counts()[state])

    # lifecycle
    def connect(self) -> None:
        """Join Ray (a wrong address fails here, before the server listens)."""
        self._started_ray = connect(self.cfg)

    def start(self) -> None:
        import ray

        gpu = self.cfg.device == "gpu" or (
            self.cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0
        )
        model = None
        if not self.config.tiny_random:
            from server.main import resolve_model

            model = str(resolve_model(self.config).resolve())
        self.source = WorkerSource(
            self.config.tiny_random, self.config.seed, model, "cuda" if gpu else "cpu", self.cfg.threads
        )
        self.actor_class = _actor_class(self.source.device == "cuda", self.cfg.threads)
        self.resize(self.target())
        self._watcher = threading.Thread(target=self._watch, name="ray-pool-size", daemon=True)
        self._watcher.start()

    def stop(self, timeout: float) -> None:
        """Tell every worker to stop (a running job is requeued at its next step), wait for the slots."""
        for slot in list(self.slots):
            if slot.actor is not None:
                try:
                    slot.actor.stop.remote()
                except Exception:  # noqa: BLE001 - a dead actor needs no stopping
                    pass
        deadline = time.monotonic() + timeout
        for slot in list(self.slots):
            slot.join(max(0.0, deadline - time.monotonic()))
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> list[str]:
        return [s.name for s in self.slots if s.is_alive()]

    def close(self) -> None:
        import ray

        if self._started_ray and ray.is_initialized():
            ray.shutdown()

    # size
    def target(self) -> int:
        """Workers wanted now: the pool file, else the configuration; auto follows the cluster."""
        import ray

        wanted = read_pool_target(self.config.data_dir, self.cfg.workers)
        if wanted is not None:
            return wanted
        resources = ray.cluster_resources()
        if self.source.device == "cuda":
            return int(resources.get("GPU", 0))
        return max(1, int(resources.get("CPU", 0)) // self.cfg.threads)

    def resize(self, size: int) -> None:
        with self._lock:
            self.slots = [s for s in self.slots if s.is_alive() or not s.retired.is_set()]
            active = [s for s in self.slots if not s.retired.is_set()]
            if len(active) == size:
                return
            log.info("ray pool: %d -> %d worker(s)", len(active), size)
            for slot in active[size:]:
                slot.retired.set()  # finishes its job first
            used = {s.name for s in self.slots}
            index = 0
            for _ in range(size - len(active)):
                while f"ray-worker-{index}" in used:
                    index += 1
                slot = _Slot(self, index)
                used.add(slot.name)
                self.slots.append(slot)
                slot.start()

    def _watch(self) -> None:
        while not self.stopping():
            time.sleep(self.cfg.poll_s)
            if self.stopping():
                break
            try:
                self.resize(self.target())
            except Exception:  # noqa: BLE001 - the cluster may be briefly unreachable
                log.exception("ray pool: could not resize")

    # facts
    def counts(self) -> dict[str, int]:
        out = {"busy": 0, "idle": 0, "starting": 0}
        for slot in list(self.slots):
            if slot.retired.is_set() and slot.job_id is None:
                continue
            state = "busy" if slot.job_id else ("idle" if slot.info else "starting")
            out[state] += 1
        return out

    def devices(self) -> list[str]:
        """Each ready worker: "ray:<host>/<device>" (ServerInfo.devices)."""
        return [
            f"ray:{s.info['host']}/{s.info['device']}"
            for s in list(self.slots)
            if s.info is not None and not s.retired.is_set()
        ]

    # jobs
    def cancel(self, job_id: str) -> None:
        for slot in list(self.slots):
            if slot.job_id == job_id and slot.actor is not None:
                slot.actor.cancel.remote(job_id)

    def _inputs(self, job: JobRecord) -> JobInputs:
        """What the job needs on the actor: its stored frames (every take's finals and drafts), the job
        dir's files, its plates and mattes, its adapters' files (looked up by the sha256 it recorded)."""
        spec = job.spec
        job_dir = self.frames.job_dir(job.job_id)
        files = {name: (job_dir / name).read_bytes() for name in job_files(job_dir)}
        uploads = {u: self.frames.upload_path(u).read_bytes() for u in dict.fromkeys(spec.upload_ids)}
        frames = [
            frame
            for take in range(spec.takes)
            for draft in (False, True)
            for frame in self.store.frames(job.job_id, take=take, draft=draft)
        ]
        return JobInputs(
            job=job,
            frames=frames,
            files=files,
            uploads=uploads,
            adapters=[self._adapter_files(a["name"], a["sha256"]) for a in spec.adapters],
            cancel_requested=self.cancels.requested(job.job_id),
        )

    def _adapter_files(self, name: str, sha256: str) -> AdapterFiles:
        """An adapter's files as the registry has them (FileNotFoundError naming it when it is gone)."""
        from ttt_engine.adapters.format import CONFIG_NAME, WEIGHTS_NAME

        if self.adapters is None:
            raise RuntimeError("the job names adapters but this server has no adapter registry")
        adapter = self.adapters.load(name, sha256)
        weights_path = Path(adapter.path)
        weights = weights_path.read_bytes()
        digest = hashlib.sha256(weights).hexdigest()
        if digest != sha256:
            raise FileNotFoundError(
                f"adapter {name!r}: the file {weights_path.name} now has sha256 {digest}, the job was "
                f"submitted with {sha256}; submit the job again"
            )
        side = weights_path.parent / CONFIG_NAME
        config = side.read_bytes() if weights_path.name == WEIGHTS_NAME and side.is_file() else None
        return AdapterFiles(name, sha256, weights, config)

    def run_job(self, slot: _Slot, job: JobRecord) -> None:
        """Run a claimed job on the slot's actor, applying its messages; handle the worker dying."""
        import ray

        self.reserve.ensure()
        log.info(
            "job started on %s (attempt %d, priority %s)", slot.name, job.attempts, job.priority.name.lower()
        )
        failure: str | None = None
        ended = False
        try:
            inputs = self._inputs(job)
        except Exception as exc:  # noqa: BLE001 - e.g. an adapter gone since submit: the job fails
            log.exception("the job's inputs could not be read")
            self.cancels.clear(job.job_id)
            self._fail(job.job_id, f"{type(exc).__name__}: {exc}", type(exc).__name__)
            return
        try:
            stream = slot.actor.run.options(num_returns="streaming").remote(inputs)
            for ref in stream:
                for message in ray.get(ref):
                    if message[0] == "end":
                        ended = True
                    elif failure is None:
                        try:
                            self._apply(job.job_id, message)
                        except Exception as exc:  # noqa: BLE001 - the front end could not store it
                            failure = self._apply_failure(exc)
                            slot.actor.cancel.remote(job.job_id)  # drain the rest, store nothing more
        except Exception as exc:  # noqa: BLE001 - sorted below
            if _is_worker_death(exc):
                self._worker_died(slot, job, exc)
                return
            cause = getattr(exc, "cause", None) or exc
            failure = failure or f"worker error: {type(cause).__name__}: {cause}"
            log.error("job failed on %s: %s", slot.name, failure)
        finally:
            self.cancels.clear(job.job_id)
        if failure is not None:
            self._fail(job.job_id, failure, "WorkerError")
        elif not ended or self.store.job_state(job.job_id).running:
            self._fail(job.job_id, "the worker ended the job without a final state", "WorkerError")

    def _apply_failure(self, exc: Exception) -> str:
        log.exception("storing the worker's output failed")
        if is_disk_full(exc):
            self.reserve.release()
            return disk_full_message(self.config.data_dir, "writing the job's files")
        return f"{type(exc).__name__}: {exc}"

    def _fail(self, job_id: str, message: str, reason: str) -> None:
        if self.store.job_state(job_id).terminal:
            return
        self.metrics.job_failures.labels(reason=reason).inc()
        self.metrics.jobs_finished.labels(state="failed").inc()
        self.store.set_state(job_id, JobState.FAILED, message)

    def _worker_died(self, slot: _Slot, job: JobRecord, exc: BaseException) -> None:
        """The actor's process is gone: replace it; requeue the job, or fail it after too many deaths."""
        self.deaths.inc()
        who = f"{slot.name} (pid {slot.info['pid'] if slot.info else '?'})"
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.error("worker %s died while running the job: %s", who, why)
        slot.drop_actor()
        state = self.store.job_state(job.job_id)
        if state.terminal or state == JobState.QUEUED:  # it finished (or was requeued) before dying
            return
        if self.cancels.requested(job.job_id) or self.store.get_job(job.job_id).cancel_requested:
            self.store.set_state(job.job_id, JobState.CANCELLED, "cancelled by the caller")
            self.metrics.jobs_finished.labels(state="cancelled").inc()
            return
        if self.stopping():
            self.store.set_state(job.job_id, JobState.QUEUED, "interrupted by server shutdown; will resume")
            return
        deaths = 1 + sum(
            1
            for state_name, message, _ in self.store.state_history(job.job_id)
            if state_name == JobState.QUEUED and message.startswith(WORKER_DIED)
        )
        limit = self.cfg.max_worker_deaths
        if deaths >= limit:
            self._fail(
                job.job_id,
                f"{WORKER_DIED} {deaths} times while running this job (max_worker_deaths={limit}): the job "
                f"itself ends its worker process (e.g. out of memory, or a crash in native code), so it is "
                f"not retried. Last: {who}, {why}",
                "WorkerDied",
            )
        else:
            self.store.set_state(
                job.job_id,
                JobState.QUEUED,
                f"{WORKER_DIED}: {who}, {why}; requeued, resumes from its stored frames "
                f"({deaths} of max_worker_deaths={limit})",
            )

    def _apply(self, job_id: str, message: Relay) -> None:
        """One message of a worker's stream into the front end's store and data dir."""
        kind, args = message
        store = self.store
        if kind == "event":
            event_kind, data, blob = args
            store.add_event(job_id, EventKind(event_kind), data, blob)
        elif kind == "state":
            store.set_state(job_id, JobState(args[0]), args[1])
        elif kind == "complete":
            store.complete(job_id, args[0], args[1])
        elif kind == "work":
            work, segment, pid, take, draft = args
            store.log_work(job_id, work, segment, take=int(take), draft=bool(draft), pid=pid)
        elif kind == "take_state":
            take, state = args
            store.set_take_state(job_id, int(take), JobState(state))
        elif kind == "draft_complete":
            store.set_draft_complete(job_id, int(args[0]))
        elif kind == "frame":
            self._store_frame(job_id, *args)
        elif kind == "file":
            name, data = args
            if not JOB_FILE.match(name) or name.endswith(".tmp"):
                raise ValueError(f"the worker sent a job file named {name!r}; expected a run's plain file")
            self._write(self.frames.job_dir(job_id) / name, data)
        elif kind == "metric":
            name, labels, method, value = args
            if name not in _METRICS or method not in ("inc", "observe"):
                raise ValueError(f"the worker sent an unknown metric update {name}.{method}")
            metric = getattr(self.metrics, name)
            getattr(metric.labels(**labels) if labels else metric, method)(value)
        else:
            raise ValueError(f"the worker sent an unknown message kind {kind!r}")

    def _store_frame(self, job_id: str, frame: FrameRecord, data: bytes) -> None:
        expected = self.frames.frame_relpath(job_id, frame.index, frame.take, frame.draft)
        if frame.job_id != job_id or frame.relpath != expected:
            raise ValueError(
                f"the worker sent frame {frame.relpath!r} of job {frame.job_id}; expected {expected}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != frame.sha256 or len(data) != frame.size:
            raise ValueError(
                f"frame {frame.index} arrived with sha256 {digest} ({len(data)} bytes); the worker wrote "
                f"{frame.sha256} ({frame.size} bytes)"
            )
        self._write(self.frames.path_of(frame.relpath), data)
        self.store.add_frame(frame)

    def _write(self, final: Path, data: bytes) -> None:
        tmp = self.frames.temp_path(final.suffix)
        try:
            tmp.write_bytes(data)
            self.frames.commit(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the engine


class RayEngine(Engine):
    """The Engine with its jobs run by a WorkerPool instead of in-process workers.

    `pipelines` holds one pipeline on the front end's CPU: submit validates against it (sizes, frame
    counts, plates); it never samples.
    """

    def __init__(
        self,
        config: ServerConfig,
        pipelines: Sequence[tuple[str, Any]],
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(config, pipelines[:1], metrics)
        self.workers = []  # no in-process worker threads: the pool's slots run the jobs
        self.cancels = PoolCancels()
        self.pool = WorkerPool(
            config,
            self.store,
            self.frames,
            self.queue,
            self.cancels,
            self.metrics,
            self._stopping.is_set,
            self.adapters,
        )
        self.pool.connect()

    def start(self) -> list[JobRecord]:
        requeued = super().start()
        self.pool.start()
        return requeued

    def stop(self, timeout: float = 30.0) -> None:
        self.request_stop()
        self.pool.stop(timeout)
        super().stop(timeout)
        alive = self.pool.alive()
        if alive:
            log.warning("ray pool slots still running after %.0f s: %s", timeout, alive)

    def close(self) -> None:
        if self.pool.alive():
            log.warning("closing the engine while a pool slot still runs; leaving the database open")
            return
        self.pool.close()
        super().close()

    def server_info(self, caller: str) -> ServerInfoData:
        info = super().server_info(caller)
        devices = self.pool.devices()
        return replace(info, devices=devices, workers=len(devices))
