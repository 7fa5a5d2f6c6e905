"""The job engine: everything the service does, with no grpc in sight.

Engine(config, pipelines) owns the store, the frame store, the queue and one worker per pipeline.
Its methods take the caller's user name and plain domain values (server.jobs) and raise the typed
errors of server.errors; server.service turns wire messages into these calls and errors into statuses.
Callers only ever see their own jobs and uploads: another caller's id is NOT_FOUND, like a missing one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from server.adapters import AdapterRegistry
from server.config import ServerConfig
from server.conform_job import (
    check_colourspace,
    delivery_from_spec,
    delivery_of,
    plate_colourspace,
    read_conform_report,
)
from server.disk import disk_full_message, is_disk_full
from server.element_job import check_element, check_plate_channels
from server.errors import (
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from server.frames import FrameStore, iter_frame_chunks, prefetch
from server.jobs import (
    DEFAULT_START_FRAME,
    JOB_ID,
    SHOT_NAME,
    AdapterRecord,
    Event,
    FrameChunkData,
    JobRecord,
    JobResult,
    JobSpec,
    JobState,
    Priority,
    SubmitRequest,
    UploadChunk,
    UploadRecord,
)
from server.limits import INT64_MAX, check_otio_context, check_storyboard_text, parse_page_token
from server.metrics import Metrics
from server.queue import JobQueue
from server.quotas import Usage, check_adapter_upload, check_submit, check_upload, usage_of
from server.resources import ResourcePolicy
from server.result import build_result_otio
from server.retention import Collector, FrameLeases, PeriodicCollector
from server.store import Store
from server.uploads import receive_plate
from server.worker import CancelRegistry, Worker

log = logging.getLogger(__name__)

SERVER_VERSION = "0.1.0"
API_VERSION = "ttt_studio.v1"
CAPABILITIES = (
    "storyboard",
    "priority",
    "idempotent_submit",
    "plates_exr",
    "watch_resume",
    "preview_png",
    "fetch_resume",
    "fetch_follow",
    "otio_result",
    "crash_resume",
    "plates_restyle",
    "plates_continue",
    "plates_element",
    "delivery",
    "adapters",
    "takes",
    "draft_first",
)
WATCH_POLL_S = 1.0


@dataclass(frozen=True)
class ServerInfoData:
    caller: str
    model: dict[str, str]
    devices: list[str]
    workers: int
    fps: float
    frames_per_segment: int
    defaults: dict[str, Any]
    versions: dict[str, str]
    first_segment_frames: int = 0
    native_fps: Fraction = Fraction(0)
    sizes: tuple[tuple[int, int], ...] = ()
    size_multiple: int = 0
    min_side: int = 0
    max_side: int = 0
    model_colorspace: str = ""
    default_colorspace: str = ""
    adapters: tuple[AdapterRecord, ...] = ()


class Engine:
    """Jobs in, events and frames out. Start with start(), stop with stop()."""

    def __init__(
        self,
        config: ServerConfig,
        pipelines: Sequence[tuple[str, Any]],
        metrics: Metrics | None = None,
    ) -> None:
        if not pipelines:
            raise ValueError("Engine needs at least one (device, pipeline) pair")
        self.config = config
        self.limits = config.limits
        self.metrics = metrics or Metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = lock_data_dir(config.data_dir)
        self.store = Store(config.db_path)
        self.frames = FrameStore(config.data_dir)
        self.queue = JobQueue(self.store)
        self.cancels = CancelRegistry()
        self._stopping = threading.Event()
        self.policy = config.resources
        self.leases = FrameLeases()
        self.collector = Collector(self.store, self.frames, self.policy, self.leases)
        self.quota_exempt: Callable[[str], bool] = lambda user: False  # set by the server: admin users
        self.is_admin: Callable[[str], bool] = lambda user: False  # set by the server: may publish adapters
        self._gc_thread: PeriodicCollector | None = None
        self.pipe = pipelines[0][1]  # for facts shared by all workers (fps, frame counts)
        try:
            self.adapters = AdapterRegistry(
                self.store,
                self.frames,
                config.adapters_dir,
                getattr(self.pipe, "transformer", None),
                getattr(self.pipe, "vae", None),
            )
        except ValueError:  # a bad adapters folder stops the start: release the data dir first
            self.store.close()
            self._lock_file.close()
            raise
        self.devices = [device for device, _ in pipelines]
        self.workers = [
            Worker(
                f"worker-{i}",
                device,
                pipe,
                self.store,
                self.queue,
                self.frames,
                self.cancels,
                self.metrics,
                config,
                self._stopping.is_set,
                adapters=self.adapters,
            )
            for i, (device, pipe) in enumerate(pipelines)
        ]
        self.metrics.track_queue(self.queue.lengths, {p: p.name.lower() for p in Priority})
        self.metrics.track_gpu_memory(self.devices)
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> list[JobRecord]:
        """Recover jobs a crash left running, then start the workers. Returns the requeued jobs."""
        removed = self.frames.clear_tmp()
        if removed:
            log.info("removed %d partial file(s) left by an interrupted write", removed)
        requeued = self.store.recover()
        for job in requeued:
            log.info("requeued after restart", extra={"job_id": job.job_id})
        for worker in self.workers:
            worker.start()
        if self.policy.gc_interval_s:
            self._gc_thread = PeriodicCollector(self.collector, self._stopping)
            self._gc_thread.start()
        self._started = True
        return requeued

    def request_stop(self) -> None:
        """Refuse new work, end open streams, and make a running job stop at its next step."""
        self._stopping.set()
        self.queue.close()

    def stop(self, timeout: float = 30.0) -> None:
        """request_stop, then wait for the workers (their running job goes back to the queue)."""
        self.request_stop()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))
        if self._gc_thread is not None:  # a collection in progress finishes before the store closes
            self._gc_thread.join(max(0.0, deadline - time.monotonic()))
        alive = [w.name for w in self.workers if w.is_alive()]
        if alive:
            log.warning("workers still running after %.0f s: %s", timeout, alive)

    def close(self) -> None:
        """Release the database and the data dir lock (after stop)."""
        if any(w.is_alive() for w in self.workers):
            log.warning("closing the engine while a worker still runs; leaving the database open")
            return
        self.store.close()
        self._lock_file.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # ------------------------------------------------------------------ info

    def server_info(self, caller: str) -> ServerInfoData:
        import google.protobuf
        import torch

        model = self.pipe.model_info() if hasattr(self.pipe, "model_info") else {}
        spec = self.pipe.spec
        versions = {
            "server": SERVER_VERSION,
            "api": API_VERSION,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "protobuf": google.protobuf.__version__,
        }
        return ServerInfoData(
            caller=caller,
            model={str(k): _text(v) for k, v in dict(model).items()},
            devices=list(self.devices),
            workers=len(self.workers),
            fps=float(self.pipe.fps),
            frames_per_segment=int(self.pipe.frames_per_segment),
            defaults={**self.default_params(), **self.default_takes()},
            versions=versions,
            # what a one-segment job really makes (issue 23: frames_per_segment alone said 24 for 25)
            first_segment_frames=int(self.pipe.num_frames(1)),
            native_fps=spec.fps,
            sizes=spec.sizes,
            size_multiple=spec.multiple_of,
            min_side=spec.min_side,
            max_side=spec.max_side,
            model_colorspace=spec.colorspace,
            default_colorspace=self.config.colour_interop_id,
            adapters=tuple(self.adapters.usable(caller)),
        )

    def resources_of(self, caller: str) -> tuple[ResourcePolicy, Usage, int, bool]:
        """(policy, the caller's usage, the queued-jobs quota, whether the caller is exempt)."""
        exempt = self.quota_exempt(caller)
        return self.policy, usage_of(self.store, caller), self.limits.max_queued_jobs_per_caller, exempt

    def default_params(self) -> dict[str, Any]:
        """What a request's unset parameters become: the model's own sampling defaults (model_index.json
        "sampling"), GenerationParams' for the rest, and the model's native size."""
        defaults = self.pipe.generation_params().to_dict()
        height, width = self._native_size()
        defaults.update(height=height, width=width)
        return defaults

    def default_takes(self) -> dict[str, int]:
        """Takes and draft steps of a request that leaves them unset (a preview job's draft)."""
        steps = int(self.pipe.generation_params().steps)
        return {"takes": 1, "draft_steps": self.config.default_draft_steps(steps)}

    def _draft_steps(self, request: SubmitRequest, params: Any) -> int:
        """The draft a job makes first: only preview jobs have one; the request's draft_steps or the
        server's default, and none when that would not be fewer steps than the final."""
        if request.priority != Priority.PREVIEW:
            if request.draft_steps:
                raise InvalidArgumentError(
                    f"parameters.draft_steps={request.draft_steps} is for PRIORITY_PREVIEW jobs only (a final "
                    "job makes no draft); leave it 0 or submit with priority PRIORITY_PREVIEW"
                )
            return 0
        steps = request.draft_steps or self.config.default_draft_steps(params.steps)
        if steps >= params.steps:
            return 0
        from ttt_engine.pipeline import GenerationParams

        try:
            GenerationParams.from_dict({**params.to_dict(), "steps": steps})
        except ValueError as exc:
            raise InvalidArgumentError(f"parameters.draft_steps={steps}: {exc}") from None
        return steps

    def _native_size(self) -> tuple[int, int]:
        """(height, width) the model was trained at: the default when a request leaves them unset."""
        height, width = self.pipe.default_size
        return int(height), int(width)

    # ------------------------------------------------------------------ submit

    def submit(self, caller: str, request: SubmitRequest) -> tuple[JobRecord, bool]:
        """Validate and queue a shot; returns (job, deduplicated)."""
        self._check_running()
        spec = self._validate(caller, request)

        def admit() -> None:  # asked only for a new job: a retried submit still gets its job back
            if not self.quota_exempt(caller):
                check_submit(self.policy, self.store, caller)

        key = request.idempotency_key
        max_id = self.limits.input.max_id_chars
        if len(key) > max_id:
            raise InvalidArgumentError(
                f"idempotency_key is {len(key)} characters; the server limit is max_id_chars={max_id}"
            )
        request_hash = _request_hash(request)
        job, dedup = self.store.create_job(
            job_id=uuid.uuid4().hex,
            owner=caller,
            priority=request.priority,
            spec=spec,
            request_hash=request_hash,
            idempotency_key=key or None,
            max_queued_per_owner=self.limits.max_queued_jobs_per_caller,
            admit=admit,
        )
        if not dedup:
            self.metrics.jobs_submitted.labels(priority=request.priority.name.lower()).inc()
            log.info("job submitted by %s", caller, extra={"job_id": job.job_id})
        return job, dedup

    def _validate(self, caller: str, request: SubmitRequest) -> JobSpec:
        from ttt_engine.pipeline import GenerationParams
        from ttt_engine.pipeline.deliver import plan_delivery
        from ttt_engine.storyboard import Storyboard

        lim = self.limits
        check_storyboard_text(request.storyboard, lim.input)
        try:
            storyboard = Storyboard.from_list(list(request.storyboard))
            storyboard.validate(max_segments=max(len(storyboard.segments), 1))
        except ValueError as exc:
            raise InvalidArgumentError(f"storyboard: {exc}") from None
        n_segments = len(storyboard)
        max_segments = min(lim.max_segments, int(self.pipe.max_segments))
        if n_segments > max_segments:
            raise InvalidArgumentError(
                f"storyboard has {n_segments} segments; the server limit is max_segments={max_segments}"
            )
        params = self.default_params()
        given = {k: v for k, v in request.params.items() if v is not None}
        params.update(given)
        if "seed" not in request.params or request.params["seed"] is None:
            params["seed"] = random.randrange(2**31)
        for name, value, limit in (
            ("height", params["height"], lim.max_height),
            ("width", params["width"], lim.max_width),
            ("steps", params["steps"], lim.max_steps),
        ):
            if isinstance(value, int) and value > limit:
                raise InvalidArgumentError(
                    f"parameters.{name}={value} exceeds the server limit max_{name}={limit}"
                )
        delivery = delivery_of(request.delivery)
        if delivery is not None and delivery.has_format:
            for name, value, limit in (
                ("width", delivery.width, lim.max_width),
                ("height", delivery.height, lim.max_height),
            ):
                if value > limit:
                    raise InvalidArgumentError(
                        f"delivery.{name}={value} exceeds the server limit max_{name}={limit}"
                    )
        uploads = self._plate_uploads(caller, request)
        plate_space = ""
        if uploads:
            paths = [self.frames.upload_path(u.upload_id) for u in {u.upload_id: u for u in uploads}.values()]
            plate_space = plate_colourspace(paths, request.plate_colorspace)
        elif request.plate_colorspace:
            raise InvalidArgumentError("plate_colorspace is set but the request has no plate_upload_ids")
        output_space = check_colourspace(
            (delivery.colorspace if delivery else "") or plate_space or self.config.colour_interop_id,
            "delivery.colorspace",
        )
        explicit = (
            (int(given["width"]), int(given["height"])) if "width" in given and "height" in given else None
        )
        if delivery is None and explicit is None:
            explicit = (int(params["width"]), int(params["height"]))
        try:
            plan = plan_delivery(self.pipe, storyboard.to_list(), delivery, output_space, explicit)
        except ValueError as exc:
            field = "storyboard" if "storyboard has" in str(exc) else "delivery"
            if explicit is not None and "cannot generate" in str(exc):
                field = "parameters.width / parameters.height"
            raise InvalidArgumentError(f"{field}: {exc}") from None
        params["width"], params["height"] = plan.generation_size
        try:
            resolved = GenerationParams.from_dict(params)
            self.pipe.check_size(resolved.height, resolved.width)
        except ValueError as exc:
            raise InvalidArgumentError(f"parameters: {exc}") from None
        for what, count in (("frames", plan.total_frames), ("native frames", plan.native_count)):
            if count > lim.max_frames:
                raise InvalidArgumentError(
                    f"the shot makes {count} {what}; the server limit is max_frames={lim.max_frames}"
                )
        shot_name = request.shot_name or "ttt_shot"
        if not SHOT_NAME.match(shot_name):
            raise InvalidArgumentError(
                f"context.shot_name {shot_name!r} must match {SHOT_NAME.pattern} (it names files; never a path)"
            )
        start = DEFAULT_START_FRAME if request.start_frame is None else request.start_frame
        if not 0 <= start <= lim.input.max_start_frame:
            raise InvalidArgumentError(
                f"context.start_frame must be 0..{lim.input.max_start_frame} (max_start_frame), got {start}"
            )
        if request.otio_context:
            check_otio_context(request.otio_context, lim.input)
        if len(request.request_id) > lim.input.max_id_chars:
            raise InvalidArgumentError(
                f"context.request_id is {len(request.request_id)} characters; the server limit is "
                f"max_id_chars={lim.input.max_id_chars}"
            )
        self._check_plates(request, uploads, resolved, n_segments, plan)
        adapters = self.adapters.resolve_refs(caller, request.adapters, lim)
        feather = check_element(
            self.store, caller, request, uploads, resolved.plate_mode, self.config.matte_feather
        )
        takes = request.takes or 1
        if takes > lim.max_takes:
            raise InvalidArgumentError(
                f"parameters.takes={takes} exceeds the server limit max_takes={lim.max_takes}"
            )
        if int(resolved.seed) + takes - 1 > INT64_MAX:
            raise InvalidArgumentError(
                f"parameters.seed={resolved.seed} with {takes} takes (seeds seed .. seed + {takes - 1}) passes "
                f"{INT64_MAX}; choose a smaller seed"
            )
        draft_steps = self._draft_steps(request, resolved)
        return JobSpec(
            storyboard=storyboard.to_list(),
            params=resolved.to_dict(),
            shot_name=shot_name,
            start_frame=start,
            request_id=request.request_id,
            record_start=request.record_start,
            otio_context=request.otio_context,
            plate_ids=tuple(request.plate_ids),
            n_segments=n_segments,
            total_frames=plan.total_frames,
            delivery=None if delivery is None else delivery.as_metadata(),
            native_frames=plan.native_count,
            output_colorspace=plan.output_colorspace,
            plate_colorspace=plate_space,
            scene_starts=plan.scene_starts,
            adapters=adapters,
            matte_ids=tuple(request.matte_ids),
            matte_feather=feather,
            takes=takes,
            draft_steps=draft_steps,
            draft_unguided_steps=min(self.config.draft_unguided_steps, draft_steps),
        )

    def _plate_uploads(self, caller: str, request: SubmitRequest) -> list[UploadRecord]:
        """The request's plates: the caller's own uploads (NotFoundError otherwise), in frame order."""
        if len(request.plate_ids) > self.limits.max_frames:
            raise InvalidArgumentError(
                f"plate_upload_ids has {len(request.plate_ids)} ids; the server limit is max_frames="
                f"{self.limits.max_frames}"
            )
        return [self.store.get_upload(u, caller) for u in request.plate_ids]

    def _check_plates(
        self, request: SubmitRequest, uploads: list[UploadRecord], params: Any, n_segments: int, plan: Any
    ) -> None:
        """Native jobs: plates exactly the generation size, as many as plate_mode needs. With a delivery:
        edit frames of any size, `duration` of them for restyle, fewer for continue (conformed in by the
        worker). Restyle plates need an explicit strength (its default 1.0 would ignore them)."""
        from ttt_engine.pipeline.deliver import continue_native_count

        if not uploads:
            if params.strength != 1 or params.plate_mode != "restyle":
                raise InvalidArgumentError(
                    f"parameters.strength={params.strength} / plate_mode={params.plate_mode!r} need plates: "
                    "upload them with UploadPlate and pass their ids in plate_upload_ids"
                )
            return
        check_plate_channels(uploads)
        if params.plate_mode != "continue" and request.params.get("strength") is None:
            raise InvalidArgumentError(
                f"{len(uploads)} plate(s) given for plate_mode {params.plate_mode!r} without parameters.strength: set it "
                "in (0, 1] (the share of the denoising redone on the plate, e.g. 0.6; at 1.0 the plate has no "
                "effect)"
            )
        delivery = plan.delivery
        if delivery is not None:
            count = len(uploads)
            if params.plate_mode != "continue" and count != delivery.duration:
                raise InvalidArgumentError(
                    f"plate_upload_ids: got {count} plates for plate_mode {params.plate_mode!r}; expected exactly "
                    f"delivery.duration={delivery.duration}, one per delivered frame"
                )
            if params.plate_mode == "continue":
                if not 1 <= count < delivery.duration:
                    raise InvalidArgumentError(
                        f"plate_upload_ids: got {count} plates for plate_mode 'continue'; expected 1 to "
                        f"{delivery.duration - 1} (the shot's first frames)"
                    )
                count = continue_native_count(count, delivery.rate, plan.native_fps)
            else:
                count = plan.native_count
            height, width = params.height, params.width
        else:
            for i, upload in enumerate(uploads):
                if (upload.width, upload.height) != (params.width, params.height):
                    raise InvalidArgumentError(
                        f"plate_upload_ids[{i}] ({upload.upload_id}) is {upload.width}x{upload.height}; "
                        f"expected {params.width}x{params.height}, the generation size parameters.width x "
                        "parameters.height (plates of a request without a delivery are not resized)"
                    )
            count, height, width = len(uploads), params.height, params.width
        try:
            self.pipe.check_plate(n_segments, params, count, height, width)
        except ValueError as exc:
            raise InvalidArgumentError(f"plate_upload_ids: {exc}") from None

    def upload_plate(self, caller: str, chunks: Iterator[UploadChunk]) -> UploadRecord:
        self._check_running()

        def admit(total_bytes: int) -> None:
            if not self.quota_exempt(caller):
                check_upload(self.policy, self.store, caller, total_bytes)

        try:
            return receive_plate(
                caller,
                chunks,
                self.store,
                self.frames,
                limits=self.limits,
                admit=admit,
            )
        except OSError as exc:
            if is_disk_full(exc):
                raise ResourceExhaustedError(
                    disk_full_message(self.config.data_dir, "storing the plate")
                ) from None
            raise

    def upload_adapter(self, caller: str, chunks: Iterator[UploadChunk]) -> AdapterRecord:
        """Store an uploaded adapter (server.adapters); publish needs an admin token; quotas count its bytes."""
        self._check_running()

        def admit(total_bytes: int) -> None:
            if not self.quota_exempt(caller):
                check_adapter_upload(self.policy, self.store, caller, total_bytes)

        try:
            return self.adapters.receive(caller, chunks, self.limits, self.is_admin(caller), admit)
        except OSError as exc:
            if is_disk_full(exc):
                raise ResourceExhaustedError(
                    disk_full_message(self.config.data_dir, "storing the adapter")
                ) from None
            raise

    # ------------------------------------------------------------------ jobs

    def get_job(self, caller: str, job_id: str) -> JobRecord:
        return self.store.get_job(_job_id(job_id), owner=caller)

    def list_jobs(
        self, caller: str, states: Sequence[JobState] = (), limit: int = 100, page_token: str = ""
    ) -> tuple[list[JobRecord], str]:
        """The caller's jobs, newest first, `limit` per page; returns (jobs, next page token or "")."""
        max_page = self.limits.input.max_list_page
        if limit > max_page:
            raise InvalidArgumentError(f"limit={limit} is above the server limit max_list_page={max_page}")
        limit = 100 if limit <= 0 else limit
        before = parse_page_token(page_token)
        jobs = self.store.list_jobs(caller, states, limit + 1, before)
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return jobs, (str(jobs[-1].seq) if more else "")

    def cancel(self, caller: str, job_id: str) -> JobRecord:
        """Cancel the caller's job: at once when queued, at the next step when running."""
        job = self.store.request_cancel(_job_id(job_id), caller)
        if job.state.running:
            self.cancels.request(job.job_id)
            log.info("cancel requested", extra={"job_id": job.job_id})
        elif job.state == JobState.CANCELLED:
            self.metrics.jobs_finished.labels(state="cancelled").inc()
        return job

    def approve_take(self, caller: str, job_id: str, take: int) -> JobRecord:
        """Mark one take of the caller's job approved by the caller (now), replacing an earlier approval."""
        job = self.store.approve_take(_job_id(job_id), caller, take, approved_by=caller)
        log.info("take %d approved by %s", take, caller, extra={"job_id": job.job_id})
        return job

    def watch(
        self, caller: str, job_id: str, after_seq: int = 0, is_done: Callable[[], bool] = lambda: False
    ) -> Iterator[Event]:
        """The job's events after `after_seq`, then live ones until the job is finished (or is_done()).

        Resumable: a client that lost the stream passes the last seq it saw and misses nothing.
        """
        if not 0 <= after_seq <= INT64_MAX:
            raise InvalidArgumentError(f"after_seq={after_seq} is out of range: expected 0..{INT64_MAX}")
        job = self.get_job(caller, job_id)
        last = after_seq
        while True:
            version = self.store.version
            events = self.store.events_after(job.job_id, last)
            yield from events
            if events:
                last = events[-1].seq
                continue
            if self.store.job_state(job.job_id).terminal or is_done() or self._stopping.is_set():
                if not self.store.events_after(job.job_id, last, limit=1):
                    return
                continue
            self.store.wait_for_change(version, WATCH_POLL_S)

    def fetch_frames(
        self,
        caller: str,
        job_id: str,
        start_frame: int = 0,
        follow: bool = False,
        chunk_bytes: int = 0,
        is_done: Callable[[], bool] = lambda: False,
        take: int = 0,
        draft: bool = False,
    ) -> Iterator[FrameChunkData]:
        """One take's stored final (or draft) frames from index start_frame on, in chunks; with follow,
        waits for the rest.

        The stream holds a lease on the job: retention never deletes frames while they are fetched."""
        job = self.get_job(caller, job_id)
        self._check_take(job, take, draft)
        with self.leases.hold(job.job_id):
            self._check_not_expired(job.job_id)
            yield from self._fetch_frames(job, start_frame, follow, chunk_bytes, is_done, take, draft)

    @staticmethod
    def _check_take(job: JobRecord, take: int, draft: bool = False) -> None:
        if not 0 <= take < job.spec.takes:
            raise InvalidArgumentError(
                f"take {take} is out of range: job {job.job_id} has {job.spec.takes} take(s), 0 to "
                f"{job.spec.takes - 1}"
            )
        if draft and not job.spec.draft_steps:
            raise InvalidArgumentError(
                f"draft=true but job {job.job_id} makes no draft (only PRIORITY_PREVIEW jobs whose draft_steps "
                "is fewer than their steps do); fetch with draft=false"
            )

    def _check_not_expired(self, job_id: str) -> None:
        expired = self.store.expired(job_id)
        if expired is not None:
            at, reason = expired
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
            raise FailedPreconditionError(
                f"the frames of job {job_id} were removed at {when} by the retention policy ({reason}); "
                "submit the request again to regenerate them"
            )

    def _fetch_frames(
        self,
        job: JobRecord,
        start_frame: int,
        follow: bool,
        chunk_bytes: int,
        is_done: Callable[[], bool],
        take: int,
        draft: bool,
    ) -> Iterator[FrameChunkData]:
        total = job.spec.total_frames
        if start_frame > total:
            raise InvalidArgumentError(f"start_frame {start_frame} is beyond the job's {total} frames")
        ready = job.takes[take].draft_frames_ready if draft else job.takes[take].frames_ready
        if not follow and job.state != JobState.COMPLETED and ready == 0:
            what = f"take {take}'s {'draft' if draft else 'final'}" if job.spec.takes > 1 or draft else "it"
            raise FailedPreconditionError(
                f"job {job.job_id} is {job.state} and has no frames of {what} yet; fetch with follow=true to "
                "wait for them"
            )
        limit = self.limits.max_message_bytes - 16 * 1024
        size = self.config.chunk_bytes if chunk_bytes <= 0 else min(max(chunk_bytes, 1024), limit)
        next_index = start_frame
        while next_index < total:
            version = self.store.version
            frames = {f.index: f for f in self.store.frames(job.job_id, next_index, take, draft)}
            while next_index in frames:
                try:
                    chunks = iter_frame_chunks(self.frames, frames[next_index], size, total)
                    first = next(chunks)  # opens and reads the file
                except FileNotFoundError:
                    raise DataLossError(
                        f"frame {next_index} of job {job.job_id} is indexed but missing on disk"
                    ) from None
                if next_index + 1 in frames:  # the disk reads the next file while this one is sent
                    prefetch(self.frames, frames[next_index + 1])
                yield first
                yield from chunks
                next_index += 1
            if next_index >= total or not follow or is_done() or self._stopping.is_set():
                return
            if self.store.job_state(job.job_id).terminal:
                if next_index not in self.store.frame_indices(job.job_id, take, draft):
                    return  # a failed or cancelled job ends where its frames end
                continue
            self.store.wait_for_change(version, WATCH_POLL_S)

    def job_result(self, caller: str, job_id: str, take: int | None = None) -> JobResult:
        """The completed job's result for one take (None: the approved take, else take 0): its frames and
        an OTIO timeline whose clip lists every take in its ttt_studio metadata (built now, so it shows
        the current approval)."""
        job = self.get_job(caller, job_id)
        take = job.result_take if take is None else take
        self._check_take(job, take)
        if job.state != JobState.COMPLETED:
            raise FailedPreconditionError(
                f"job {job.job_id} is {job.state}; its result exists once it is completed"
            )
        self._check_not_expired(job.job_id)
        frames = self.store.frames(job.job_id, take=take)
        conform = read_conform_report(self.frames, job.job_id, take)
        otio_json = build_result_otio(job, self.pipe, frames, conform, take)
        spec = job.spec
        delivery = delivery_from_spec(spec.delivery)
        width, height = int(spec.params.get("width") or 0), int(spec.params.get("height") or 0)
        rate = Fraction(self.pipe.fps).limit_denominator(1001)
        if delivery is not None:
            rate = delivery.rate
            if delivery.has_format:
                width, height = int(delivery.width), int(delivery.height)
        return JobResult(
            job_id=job.job_id,
            otio_json=otio_json,
            frames=frames,
            fps=float(rate),
            width=width,
            height=height,
            colour_interop_id=spec.output_colorspace or self.config.colour_interop_id,
            rate=rate,
            pixel_aspect=float(delivery.pixel_aspect) if delivery is not None else 1.0,
            conform=conform,
            take=take,
        )

    def _check_running(self) -> None:
        if self._stopping.is_set():
            raise UnavailableError("the server is shutting down; retry on its next start")


def _job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise NotFoundError(f"no job {job_id!r}")
    return job_id


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _request_hash(request: SubmitRequest) -> str:
    data = {
        "storyboard": request.storyboard,
        "params": request.params,
        "priority": int(request.priority),
        "shot_name": request.shot_name,
        "start_frame": request.start_frame,
        "request_id": request.request_id,
        "record_start": request.record_start,
        "otio_context": request.otio_context,
        "plate_ids": list(request.plate_ids),
        "delivery": request.delivery,
        "plate_colorspace": request.plate_colorspace,
    }
    if request.adapters:  # only when named: the hashes of jobs stored before adapters stay the same
        data["adapters"] = [[name, float(scale)] for name, scale in request.adapters]
    if request.matte_ids or request.matte_feather is not None:  # only then: older jobs' hashes stay valid
        data.update(matte_ids=list(request.matte_ids), matte_feather=request.matte_feather)
    for name in ("takes", "draft_steps"):  # only when set: requests made before takes keep their hash
        if getattr(request, name):
            data[name] = getattr(request, name)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class _LockFile:
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def lock_data_dir(data_dir: Any) -> _LockFile:
    """One server per data dir: an exclusive flock (released by the OS even after kill -9)."""
    path = os.path.join(data_dir, "server.lock")
    handle = open(path, "a+")  # noqa: SIM115 - held for the engine's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"another ttt-studio server is using the data dir {data_dir} (locked {path})"
        ) from None
    return _LockFile(handle)
