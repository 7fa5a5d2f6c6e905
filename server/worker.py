"""One worker thread per device: takes jobs from the queue and runs them with its own pipeline.

A job is a list of runs (take_runs: every take's draft when the job has one, then every take's final);
Worker.run_take makes one run, and a run whose frames are all stored is skipped, so a resumed job picks
up at the run it stopped in. Each run has its own seed (take_params), latents, frames, events (tagged
take and draft) and conform report. A run goes through two resumable phases:
1. sampling: pipe.sample(...) with a callback that records progress and previews, and should_stop
   checked before every step (cancel or shutdown). The latents are then saved (atomically) in the frame
   store. A job killed during sampling samples again on restart (same seed, same result).
   A job with plates reads them from the server's upload store (never a client path), checks their
   count and size against the request again and passes them to the pipeline as init frames.
   With a delivery, plates are edit frames in their own colour space: they are conformed in
   (ttt_engine.pipeline.deliver.conform_plates) to the model's rate, size and space first. An element
   job's mattes go the same way, as coverage (server.element_job), and its frames get their alpha.
2. decoding and conform: ONE VAE pass (pipe.iter_decode) over the native segments the still-missing
   delivered frames read (a segment's frames need the latents before it, so a per-segment decode would
   re-decode the prefix each time); the pass hands the segments over one by one, a FrameDeliverer
   (the conform library: retime to the delivery rate, scale to its format, OCIO into its colour space)
   turns them into delivered frames, and each missing delivered frame is written (tmp file, fsync,
   rename, then the index row) and announced before the next segment, so a finished frame is never
   made again and a restart after a crash decodes only what is missing. Frames are "delivered frames":
   exactly the delivery's duration at its rate (a native job: the model's frames, converted into the
   output colour space).
Every sampling run and every segment written is recorded in the store's work log (kill -9 tests count
them there).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.adapters import AdapterRegistry, adapter_attributes, applied_for
from server.config import ServerConfig
from server.conform_job import conform_report_path, delivery_from_spec, read_conform_report
from server.disk import DiskReserve, disk_full_message, is_disk_full
from server.element_job import ElementMattes
from server.frames import FrameStore, sha256_file
from server.jobs import EventKind, FrameRecord, JobRecord, JobSpec, JobState
from server.logging_setup import job_context
from server.metrics import Metrics
from server.queue import JobQueue
from server.result import build_result_otio
from server.store import Store

log = logging.getLogger(__name__)

DEFAULT_PLATE_SPACE = "lin_rec709_scene"
"""Plates of jobs stored before plate colour spaces were recorded: scene-linear Rec.709 (the EXR default)."""


class _Stop(Exception):
    """Internal: leave the job (cancel or shutdown) between decode segments."""


class CancelRegistry:
    """In-memory cancel flags for running jobs (the store keeps the persistent flag)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: set[str] = set()

    def request(self, job_id: str) -> None:
        with self._lock:
            self._flags.add(job_id)

    def requested(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._flags

    def clear(self, job_id: str) -> None:
        with self._lock:
            self._flags.discard(job_id)


def encode_preview(preview: np.ndarray, max_side: int, max_frames: int = 4) -> tuple[bytes, int, int, int]:
    """uint8 RGB frames [F, h, w, 3] -> PNG of up to max_frames evenly spaced frames side by side.

    Returns (png bytes, width, height, frames shown). Frames are scaled so each is at most max_side.
    """
    from PIL import Image

    frames = np.asarray(preview)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"preview must be uint8 RGB [F, h, w, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    count = min(max_frames, len(frames))
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    images = [Image.fromarray(frames[i]) for i in picks]
    scale = min(1.0, max_side / max(images[0].size))
    size = (max(1, round(images[0].width * scale)), max(1, round(images[0].height * scale)))
    strip = Image.new("RGB", (size[0] * count, size[1]))
    for i, image in enumerate(images):
        strip.paste(image.resize(size, Image.Resampling.BILINEAR), (i * size[0], 0))
    out = io.BytesIO()
    strip.save(out, format="PNG", optimize=False)
    return out.getvalue(), strip.width, strip.height, count


class Worker(threading.Thread):
    """Runs jobs on one device with one pipeline until the queue is closed."""

    def __init__(
        self,
        name: str,
        device: str,
        pipe: Any,
        store: Store,
        queue: JobQueue,
        frames: FrameStore,
        cancels: CancelRegistry,
        metrics: Metrics,
        config: ServerConfig,
        shutting_down: Callable[[], bool],
        adapters: AdapterRegistry | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.device = device
        self.pipe = pipe
        self.store = store
        self.queue = queue
        self.frames = frames
        self.cancels = cancels
        self.metrics = metrics
        self.config = config
        self._shutting_down = shutting_down
        self.adapters = adapters
        self.current_job: str | None = None
        self.reserve = DiskReserve(config.data_dir / "disk.reserve", config.resources.disk_reserve_bytes)
        self._decode_s_per_frame: float | None = None

    def run(self) -> None:
        self.reserve.ensure()
        log.info("worker %s on %s ready", self.name, self.device)
        while True:
            job = self.queue.take(timeout=None)
            if job is None:
                break
            self.current_job = job.job_id
            try:
                with job_context(job.job_id):
                    self.run_job(job)
            except Exception:  # noqa: BLE001 - e.g. the database itself on a full disk: keep the worker
                log.exception(
                    "job %s could not be recorded as finished; it resumes at the next start", job.job_id
                )
            finally:
                self.current_job = None
                self.cancels.clear(job.job_id)
        log.info("worker %s stopped", self.name)

    # ------------------------------------------------------------------ one job

    def _should_stop(self, job_id: str) -> bool:
        return self.cancels.requested(job_id) or self._shutting_down()

    def run_job(self, job: JobRecord) -> None:
        """Every run of the job (take_runs: drafts, then finals), then the job is completed."""
        from ttt_engine.pipeline import GenerationCancelled, GenerationParams

        job_id = job.job_id
        self.reserve.ensure()
        self.metrics.job_duration.labels(phase="queue_wait").observe(max(0.0, time.time() - job.created))
        log.info("job started (attempt %d, priority %s)", job.attempts, job.priority.name.lower())
        started = time.monotonic()
        try:
            plan = self._plan(job)
            params = GenerationParams.from_dict(job.spec.params)
            context = _JobContext(job, plan, lambda: self._read_plates(job, params, plan))
            for run in take_runs(job.spec):
                self.run_take(context, run)
            otio_json = build_result_otio(
                self.store.get_job(job_id), self.pipe, self.store.frames(job_id), self._conform_report(job_id)
            )
        except (GenerationCancelled, _Stop):
            self._stopped(job)
            return
        except Exception as exc:  # noqa: BLE001 - any failure ends the job as FAILED, the server stays up
            log.exception("job failed")
            reason = "DiskFull" if is_disk_full(exc) else type(exc).__name__
            if reason == "DiskFull":
                self.reserve.release()  # room for the database to record the failure
            message = (
                disk_full_message(self.config.data_dir, "writing the job's files")
                if reason == "DiskFull"
                else f"{reason}: {exc}"
            )
            self.metrics.job_failures.labels(reason=reason).inc()
            self.metrics.jobs_finished.labels(state="failed").inc()
            self.store.set_state(job_id, JobState.FAILED, message)
            return
        self.store.complete(job_id, otio_json, "all frames stored")
        self.metrics.jobs_finished.labels(state="completed").inc()
        self.metrics.job_duration.labels(phase="total").observe(time.monotonic() - started)
        log.info("job completed in %.2f s", time.monotonic() - started)

    def _conform_report(self, job_id: str, take: int = 0, draft: bool = False) -> dict[str, Any]:
        return read_conform_report(self.frames, job_id, take, draft)

    def run_take(self, context: _JobContext, run: TakeRun) -> None:
        """One take's draft or final: sample (or reuse its saved latents), then decode the frames it still
        misses. A run whose frames are all stored is only marked done (a resumed job skips it)."""
        job = context.job
        spec = job.spec
        if len(self.store.frame_indices(job.job_id, run.take, run.draft)) < spec.total_frames:
            if self._should_stop(job.job_id):
                raise _Stop
            self.store.set_take_state(job.job_id, run.take, JobState.SAMPLING)
            latents = self._latents(context, run)
            self.store.set_take_state(job.job_id, run.take, JobState.DECODING)
            self._decode(context, latents, run)
        if run.draft:
            self.store.set_draft_complete(job.job_id, run.take)
        else:
            self.store.set_take_state(job.job_id, run.take, JobState.COMPLETED)
        log.info("%s done", run.describe(spec))

    def _job_state(self, context: _JobContext, state: JobState, run: TakeRun) -> None:
        """Set the job's state when it changes (a one-take job without a draft reads as before takes)."""
        if context.state != state:
            self.store.set_state(context.job.job_id, state, f"{state}{run.suffix(context.job.spec)}")
            context.state = state

    def _stopped(self, job: JobRecord) -> None:
        if self.cancels.requested(job.job_id):
            self.store.set_state(job.job_id, JobState.CANCELLED, "cancelled by the caller")
            self.metrics.jobs_finished.labels(state="cancelled").inc()
            log.info("job cancelled")
        else:  # shutdown: back to the queue, resumed by the next server start
            self.store.set_state(job.job_id, JobState.QUEUED, "interrupted by server shutdown; will resume")
            log.info("job interrupted by shutdown, requeued")

    def _plan(self, job: JobRecord) -> Any:
        """The job's DeliveryPlan, from its stored (validated) spec: the same plan submit checked."""
        from ttt_engine.pipeline.deliver import plan_delivery

        spec = job.spec
        size = (int(spec.params["width"]), int(spec.params["height"]))
        output = spec.output_colorspace or self.config.colour_interop_id
        plan = plan_delivery(self.pipe, spec.storyboard, delivery_from_spec(spec.delivery), output, size)
        if plan.total_frames != spec.total_frames:
            raise RuntimeError(
                f"the pipeline plans {plan.total_frames} delivered frames for this job, it expects "
                f"{spec.total_frames}"
            )
        return plan

    def _latents(self, context: _JobContext, run: TakeRun) -> Any:
        """The run's saved latents when a previous attempt got that far, else sample (and save)."""
        from ttt_engine.pipeline import GenerationParams, load_latents, save_latents
        from ttt_engine.storyboard import Storyboard

        job = context.job
        spec = job.spec
        path = self.frames.latents_path(job.job_id, run.take, run.draft)
        run_params = spec.take_params(run.take, run.draft)
        fingerprint = _fingerprint(
            spec.storyboard, run_params, spec.plate_ids, spec.adapters, _matte_key(spec)
        )
        if path.exists():
            try:
                latents, meta = load_latents(path)
                if meta.get("fingerprint") == fingerprint:
                    log.info("resuming from saved latents", extra={"latents": str(path)})
                    return latents
                log.warning("saved latents belong to another request; sampling again")
            except Exception:  # noqa: BLE001 - a damaged file is re-made, not fatal
                log.exception("saved latents unreadable; sampling again")
        self._job_state(context, JobState.SAMPLING, run)
        storyboard = Storyboard.from_list(spec.storyboard)
        params = GenerationParams.from_dict(run_params)
        self.store.log_work(job.job_id, "sample", take=run.take, draft=run.draft)
        last = [time.monotonic()]
        tags = {"take": run.take, "draft": run.draft}

        def on_step(info: Any) -> None:
            now = time.monotonic()
            self.metrics.step_duration.observe(now - last[0])
            last[0] = now
            mean = info.elapsed_s / max(info.step, 1)
            eta = mean * (info.total - info.step) + self._decode_estimate(spec.total_frames)
            self.store.add_event(
                job.job_id,
                EventKind.PROGRESS,
                {
                    "step": info.step,
                    "total": info.total,
                    "timestep": float(info.timestep),
                    "elapsed_s": float(info.elapsed_s),
                    "eta_s": eta,
                    **tags,
                },
            )
            if info.preview is not None:
                png, width, height, count = encode_preview(info.preview, self.config.preview_max_side)
                self.store.add_event(
                    job.job_id,
                    EventKind.PREVIEW,
                    {
                        "step": info.step,
                        "width": width,
                        "height": height,
                        "format": "png",
                        "frames": count,
                        **tags,
                    },
                    png,
                )
            if self.config.debug_step_delay_s:
                time.sleep(self.config.debug_step_delay_s)

        element: dict[str, Any] = {}  # an element job: its matte frames and feather for the pipeline
        if spec.matte_feather is not None:
            mattes = ElementMattes(self.frames, spec)
            plan = context.plan
            element = {"matte": mattes.native(plan), "matte_feather": mattes.sampling_feather(plan)}
        t0 = time.monotonic()
        with applied_for(self.pipe, self.adapters, spec.adapters):  # the base is restored on exit
            latents = self.pipe.sample(
                storyboard,
                params,
                callback=on_step,
                should_stop=lambda: self._should_stop(job.job_id),
                init_frames=context.plates() if spec.plate_ids else None,
                **element,
            )
        self.metrics.job_duration.labels(phase="sampling").observe(time.monotonic() - t0)
        save_latents(
            path,
            latents,
            {"job_id": job.job_id, "fingerprint": fingerprint, "take": run.take, "draft": run.draft},
        )
        return latents

    def _read_plates(self, job: JobRecord, params: Any, plan: Any) -> np.ndarray:
        """The job's plates from the upload store (each distinct file read once), in the order of
        plate_ids, conformed into the model's frames: float32 [T, H, W, 3] in its colour space at the
        generation size (a native job's plates must already be that size)."""
        from host_plugin.core.exr_io import read_exr
        from ttt_engine.pipeline.deliver import conform_plates

        ids = job.spec.plate_ids
        read: dict[str, np.ndarray] = {}
        for i, upload_id in enumerate(ids):
            if upload_id in read:
                continue
            if self._should_stop(job.job_id):
                raise _Stop
            path = self.frames.upload_path(upload_id)
            if not path.is_file():
                raise FileNotFoundError(
                    f"plate {upload_id} (plate_upload_ids[{i}]) is missing from the upload store"
                )
            rgba, _ = read_exr(path, check_finite=True)  # (H, W, 4) float32
            if plan.delivery is None and rgba.shape[:2] != (params.height, params.width):
                raise ValueError(
                    f"plate {upload_id} (plate_upload_ids[{i}]) is {rgba.shape[1]}x{rgba.shape[0]}; the job "
                    f"generates {params.width}x{params.height}"
                )
            read[upload_id] = rgba[..., :3]
        frames = [read[u] for u in ids]
        log.info("%d plate frame(s) read (%d file(s))", len(ids), len(read))
        space = job.spec.plate_colorspace or DEFAULT_PLATE_SPACE
        return conform_plates(
            plan, np.stack(frames) if plan.delivery is None else frames, space, params.plate_mode
        )

    def _decode_estimate(self, frames: int) -> float:
        return 0.0 if self._decode_s_per_frame is None else self._decode_s_per_frame * frames

    def _decode(self, context: _JobContext, latents: Any, run: TakeRun) -> None:
        """One VAE pass over the native segments the run's missing delivered frames read; each segment's
        frames go through the conform and the delivered frames they complete are written and indexed
        before the next segment."""
        from ttt_engine.pipeline.deliver import FrameDeliverer

        job, plan = context.job, context.plan
        spec = job.spec
        job_id = job.job_id
        self._job_state(context, JobState.DECODING, run)
        ranges = self.pipe.segment_frame_ranges(spec.n_segments)
        if ranges[-1][1] != plan.native_count:
            raise RuntimeError(
                f"pipeline reports {ranges[-1][1]} frames for {spec.n_segments} segments, the job expects "
                f"{plan.native_count}"
            )
        done = self.store.frame_indices(job_id, run.take, run.draft)
        report = _ConformLog(conform_report_path(self.frames, job_id, run.take, run.draft))
        segment_of = [0]
        mattes = ElementMattes(self.frames, spec) if spec.matte_feather is not None else None

        def write(frame: Any) -> None:
            if mattes is not None:  # an element: the matte's alpha, RGB premultiplied
                frame = mattes.apply(plan, frame)
            self._write_frame(job, frame, segment_of[0], report, run)

        deliverer = FrameDeliverer(plan, write, done)
        if not deliverer.missing:
            return
        if self._should_stop(job_id):
            raise _Stop
        segments = deliverer.segments_needed(ranges)
        ready = len(done)
        t0 = time.monotonic()
        self.metrics.decode_calls.inc()
        with applied_for(self.pipe, self.adapters, spec.adapters):  # a decoder LoRA draws while decoding
            pieces = self.pipe.iter_decode(latents, segments=segments)  # the VAE pass runs here
        self._decode_s_per_frame = (time.monotonic() - t0) / max(1, ranges[segments[-1]][1])
        for segment, rgb in pieces:  # (T_seg, H, W, 3) in the model's colour space, ascending segments
            if self._should_stop(job_id):
                raise _Stop
            first, end = ranges[segment]
            if len(rgb) != end - first:
                raise RuntimeError(
                    f"decode of segment {segment} returned {len(rgb)} frames, expected {end - first}"
                )
            self.store.log_work(job_id, "decode", segment, take=run.take, draft=run.draft)
            segment_of[0] = segment
            written = deliverer.feed(first, rgb)
            ready += len(written)
            report.save(deliverer.report())
            self.store.add_event(
                job_id,
                EventKind.FRAMES,
                {
                    "ready": ready,
                    "total": spec.total_frames,
                    "segment": segment,
                    "take": run.take,
                    "draft": run.draft,
                },
            )
            log.info(
                "%s segment %d decoded: %d frame(s) delivered", run.describe(spec), segment, len(written)
            )
            if self.config.debug_segment_delay_s:
                time.sleep(self.config.debug_segment_delay_s)
        if deliverer.missing:
            raise RuntimeError(f"the conform left delivered frames {deliverer.missing[:5]} unwritten")
        self.metrics.job_duration.labels(phase="decoding").observe(time.monotonic() - t0)

    def _write_frame(
        self, job: JobRecord, frame: Any, segment: int, report: _ConformLog, run: TakeRun
    ) -> None:
        from ttt_engine.conform import write_delivered
        from ttt_engine.conform.conform import METADATA_PREFIX, DeliveredFrame
        from ttt_engine.pipeline.params import GenerationParams, sampling_attributes

        spec = job.spec
        index = frame.index
        relpath = self.frames.frame_relpath(job.job_id, index, run.take, run.draft)
        final = self.frames.path_of(relpath)
        tmp = self.frames.temp_path(".exr")
        attributes = {
            **frame.attributes,
            "ttt_studio/job_id": job.job_id,
            "ttt_studio/frame": spec.start_frame + index,
            "ttt_studio/shot": spec.shot_name,
            "ttt_studio/take": run.take,
            "ttt_studio/draft": int(run.draft),
            **sampling_attributes(GenerationParams.from_dict(spec.take_params(run.take, run.draft))),
            **adapter_attributes(spec.adapters),
        }
        try:
            write_delivered(str(tmp), DeliveredFrame(index, frame.rgba, attributes))
            self.frames.commit(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)  # a partial file (e.g. on a full disk) gives its space back
        if frame.attributes.get(METADATA_PREFIX + "flow_fallback") == "1":
            report.fallback(index)
        self.store.add_frame(
            FrameRecord(
                job_id=job.job_id,
                index=index,
                number=spec.start_frame + index,
                segment=segment,
                filename=spec.frame_filename(index),
                relpath=relpath,
                size=final.stat().st_size,
                sha256=sha256_file(final),
                created=time.time(),
                take=run.take,
                draft=run.draft,
            )
        )
        self.metrics.frames_written.inc()


@dataclass(frozen=True)
class TakeRun:
    """One sampling-and-decoding run of a job: take `take`'s draft (fewer steps) or its final."""

    take: int
    draft: bool

    def suffix(self, spec: JobSpec) -> str:
        """' (take 1, draft)' for messages; '' for the one run of a one-take job without a draft."""
        if spec.takes == 1 and not spec.draft_steps:
            return ""
        return f" (take {self.take}{', draft' if self.draft else ''})"

    def describe(self, spec: JobSpec) -> str:
        return f"take {self.take}{' draft' if self.draft else ''}" if self.suffix(spec) else "run"


def take_runs(spec: JobSpec) -> list[TakeRun]:
    """The runs of a job in the order they are made: every take's draft first, then every take's final.

    Why drafts first: on set the director's question is "which take?", and a draft answers it for every
    take within about a quarter of the final's time each; choosing (and approving) can start before any
    final exists, and a cancel after the drafts costs no final at all. Finals next, in take order, so
    take 0 (what a plugin places before an approval) is the first whole result.

    Takes run one after another, not as one batch: VideoPipeline.sample draws noise and returns latents
    for a batch of one ([1, F, C, h, w]) and its plate, preview and cancel paths assume it. Sequential
    takes also give each take its own events, saved latents (a kill -9 resumes the take it stopped in)
    and early frames; on the 2-core CPU a batch would be no faster, sampling being compute-bound. A
    batched sample() is the way to fill a GPU with several takes.
    """
    drafts = [TakeRun(take, True) for take in range(spec.takes)] if spec.draft_steps else []
    return drafts + [TakeRun(take, False) for take in range(spec.takes)]


class _JobContext:
    """What every run of one job shares: the job, its delivery plan, its plates (read once, when the first
    run samples), and the job state last set by this worker."""

    def __init__(self, job: JobRecord, plan: Any, read_plates: Callable[[], np.ndarray]) -> None:
        self.job = job
        self.plan = plan
        self.state = job.state
        self._read_plates = read_plates
        self._plates: np.ndarray | None = None

    def plates(self) -> np.ndarray:
        if self._plates is None:
            self._plates = self._read_plates()
        return self._plates


class _ConformLog:
    """The job's conform report on disk (conform.json), kept across restarts: delivered frames that fell
    back from flow to blend are recorded by index, so a resumed job still counts the earlier ones."""

    def __init__(self, path: Path) -> None:
        self.path = path
        previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        self._fallbacks: set[int] = set(previous.get("flow_fallback_frames", ()))

    def fallback(self, index: int) -> None:
        self._fallbacks.add(index)

    def save(self, report: dict[str, Any]) -> None:
        data = dict(report)
        if "flow_fallbacks" in data:
            data["flow_fallbacks"] = len(self._fallbacks)
            data["flow_fallback_frames"] = sorted(self._fallbacks)
        tmp = self.path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def _matte_key(spec: Any) -> dict[str, Any] | None:
    """An element job's mattes and feather (what its latents depend on beyond the plates)."""
    if spec.matte_feather is None:
        return None
    return {"matte_ids": list(spec.matte_ids), "matte_feather": spec.matte_feather}


def _fingerprint(
    storyboard: list[dict[str, Any]],
    params: dict[str, Any],
    plate_ids: tuple[str, ...] = (),
    adapters: tuple[dict[str, Any], ...] = (),
    mattes: dict[str, Any] | None = None,
) -> str:
    """What the latents depend on: a resumed job reuses saved latents only for the same request."""
    data: dict[str, Any] = {"storyboard": storyboard, "params": params}
    if plate_ids:
        data["plate_ids"] = list(plate_ids)
    if adapters:
        data["adapters"] = list(adapters)
    if mattes is not None:
        data["mattes"] = mattes
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
