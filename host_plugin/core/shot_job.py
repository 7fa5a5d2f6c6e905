"""The flow every host runs: shot requests -> submit -> watch (progress to the host) -> fetch -> place.

Two entry points share one implementation (`generate_shot`):
- `generate_shot(client, request, settings)`: synchronous, for `ttt-studio fill` and scripts;
- `ShotJob(host, requests, settings).start()`: the same work in a JobRunner worker thread. The host's
  main thread calls `pump()` from its timer (Blender: bpy.app.timers; Resolve: a UIDispatcher timer), or
  `start_forwarding()` hands every event to `host.run_on_main_thread` (Nuke's executeInMainThread).
  Finished shots are placed one by one on the main thread through `host.place_sequence`.

Cancel (the host's cancel button, `host.is_cancelled()`, or `ShotJob.cancel()` from any thread) reaches
the server: CancelJob is sent from a short-lived thread, never from the host's main thread, and the
worker ends when the server reports the job CANCELLED.

Frames are placed frame for frame: generated frame i sits on record frame request.record_start + i,
whatever the model's native fps (recorded in the result's metadata); nothing is retimed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from host_plugin.core.errors import (
    ClientError,
    JobCancelled,
    JobFailedError,
    RequestError,
    ServerMismatchError,
)
from host_plugin.core.placement import GENERATED_TRACK_NAME, ShotResult
from host_plugin.core.requests import ShotRequest

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
_SHOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
PLATE_MODES = ("restyle", "continue")


@dataclass(frozen=True)
class ServerSettings:
    """Where the server is and how to prove who we are. root_cert: path to the CA's PEM (turns TLS on)."""

    address: str
    token: Optional[str] = None
    root_cert: Optional[str] = None
    tls: bool = False
    timeout_s: float = 60.0
    retries: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or ":" not in self.address:
            raise ValueError(f"server address must be 'host:port', got {self.address!r}")

    def client(self, interceptors: Sequence[Any] = ()) -> Any:
        """A TTTClient for these settings (grpc is imported here, so hosts without it still load)."""
        from host_plugin.core.client import TTTClient

        return TTTClient(
            self.address,
            token=self.token,
            root_certificates=self.root_cert or None,
            tls=self.tls,
            timeout_s=self.timeout_s,
            retries=self.retries,
            interceptors=interceptors,
        )


@dataclass(frozen=True)
class GenerationSettings:
    """What to ask the server for; 0 / None leave the server's defaults. output_dir gets one folder per
    job: <output_dir>/<shot>_<job id[:8]>/<shot>.<frame>.exr."""

    output_dir: str
    height: int = 0
    width: int = 0
    steps: int = 0
    guidance_scale: Optional[float] = None
    seed: Optional[int] = None
    priority: str = "final"
    start_frame: int = 1001
    preview_every: int = 0
    model: Optional[str] = None
    required_capabilities: Tuple[str, ...] = (
        "storyboard",
        "idempotent_submit",
        "watch_resume",
        "fetch_resume",
    )

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("GenerationSettings.output_dir must be a folder path, got an empty value")
        for name in ("height", "width", "steps", "preview_every", "start_frame"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"GenerationSettings.{name} must be an int >= 0, got {value!r}")
        if self.priority not in ("preview", "final"):
            raise ValueError(
                f"GenerationSettings.priority must be 'preview' or 'final', got {self.priority!r}"
            )


@dataclass(frozen=True)
class Plates:
    """EXR frames of the edit sent with a request, in frame order, and how the server uses them.

    mode "restyle": the plate covers the shot (one frame per shot frame; the last is held to fill the
    video's extra frames) and is re-imagined with `strength` in (0, 1] (small keeps more of it).
    mode "continue": 1 + 4k frames the generated video starts with (e.g. the plate's last frame); the
    shot placed after the plate starts with the first NEW frame, so those frames are not placed again.
    """

    paths: Tuple[str, ...]
    mode: str = "restyle"
    strength: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(os.fspath(p) for p in self.paths))
        if self.mode not in PLATE_MODES:
            raise ValueError(f"plate mode must be one of {PLATE_MODES}, got {self.mode!r}")
        if not self.paths:
            raise ValueError("Plates needs at least one EXR path")
        if self.mode == "restyle" and (self.strength is None or not 0.0 < self.strength <= 1.0):
            raise ValueError(
                "restyling a plate needs a strength in (0, 1] (e.g. 0.6: the share of the denoising redone), "
                f"got {self.strength!r}"
            )
        if self.mode == "continue" and self.strength not in (None, 1.0):
            raise ValueError(f"continuing a plate takes no strength, got {self.strength!r}")


def shot_name_for(request: ShotRequest) -> str:
    """A server-safe shot name ([A-Za-z0-9_-]{1,64}) from the request's name, else its id."""
    name = _SHOT_NAME.sub("_", request.name or "").strip("_") or _SHOT_NAME.sub("_", request.id).strip("_")
    return (name or "shot")[:64]


def storyboard_for(request: ShotRequest, info: Any, frames: Optional[int] = None) -> List[Dict[str, Any]]:
    """The segments to send for `request` on a server described by `info` (a client.ServerInfo).

    A single prompt is repeated over as many segments as `frames` (default: the shot's duration) needs;
    a storyboard must already make at least that many (extra frames are generated and left unplaced).
    """
    frames = request.duration if frames is None else frames
    needed = info.segments_for(frames)
    limit = int(info.limits.get("max_segments") or needed)
    where = f"request {request.id} ({request.kind} {request.name!r}, {frames} frames)"
    if needed > limit:
        raise RequestError(
            f"{where} needs {needed} segments on this server ({info.first_segment_frames} + "
            f"{info.frames_per_segment} frames each after the first) but it allows max_segments={limit}; "
            f"split the shot into pieces of at most {info.num_frames(limit)} frames"
        )
    if request.storyboard:
        segments = [dict(s) for s in request.storyboard]
        if len(segments) < needed:
            raise RequestError(
                f"{where}: its storyboard has {len(segments)} segment(s) = {info.num_frames(len(segments))} "
                f"frames on this server; the shot needs {frames}: give at least {needed} segments "
                "or use a single prompt"
            )
        return segments
    if request.prompt:
        return [{"text": request.prompt, "neg_text": "", "requires_scene_transition": False}] * needed
    raise RequestError(
        f"{where} has neither a storyboard nor a prompt: set metadata['ttt_studio']['prompt'] (or "
        "'storyboard') on it, or give a prompt in the plugin"
    )


def generate_shot(
    client: Any,
    request: ShotRequest,
    settings: GenerationSettings,
    plates: Optional[Plates] = None,
    progress: Optional[ProgressFn] = None,
    cancelled: Optional[Callable[[], bool]] = None,
    on_submitted: Optional[Callable[[str], None]] = None,
    idempotency_key: Optional[str] = None,
) -> ShotResult:
    """Run one request on the server and fetch its frames; returns the ShotResult to place.

    plates: EXR frames sent with it (restyle or continue). progress(fraction, message) gets 0..1
    updates; cancelled() is polled between events (when true the job is cancelled on the server and
    JobCancelled raised once the server confirms); on_submitted(job_id) lets a caller cancel from
    elsewhere. Raises JobFailedError when the server's job fails.
    """
    report = progress or (lambda fraction, message: None)
    is_cancelled = cancelled or (lambda: False)
    info = client.info
    shot = shot_name_for(request)
    skip = len(plates.paths) if plates is not None and plates.mode == "continue" else 0
    segments = storyboard_for(request, info, request.duration + skip)
    height, width = settings.height, settings.width
    plate_ids: List[str] = []
    if plates is not None:
        plate_ids, (height, width) = _upload_plates(client, request, plates, settings, report, is_cancelled)
        if plates.mode == "restyle":
            total = info.num_frames(len(segments))
            plate_ids += [plate_ids[-1]] * (total - len(plate_ids))  # hold the last frame to the video's end
    report(0.02, f"{shot}: submitting")
    submitted = client.submit(
        segments,
        height=height,
        width=width,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        seed=settings.seed,
        preview_every=settings.preview_every,
        strength=plates.strength if plates is not None and plates.mode == "restyle" else None,
        plate_mode=plates.mode if plates is not None else "",
        priority=settings.priority,
        shot_name=shot,
        start_frame=settings.start_frame,
        request_id=request.id,
        record_start=request.record_start,
        plate_upload_ids=plate_ids,
        idempotency_key=idempotency_key,
    )
    job = submitted.job
    if on_submitted is not None:
        on_submitted(job.job_id)
    needed = request.duration + skip
    if job.total_frames and job.total_frames < needed:
        client.cancel(job.job_id)
        raise RequestError(
            f"request {request.id}: the server makes {job.total_frames} frames for {len(segments)} segments, "
            f"the shot needs {needed}"
        )
    log.info(
        "request %s -> job %s (%d segments, key %s)",
        request.id,
        job.job_id,
        len(segments),
        submitted.idempotency_key,
    )
    final = _watch(client, job.job_id, shot, report, is_cancelled)
    if final.state == "cancelled":
        raise JobCancelled(f"{shot}: job {job.job_id} cancelled on the server ({final.message})")
    if final.state != "completed":
        raise JobFailedError(
            f"{shot}: job {job.job_id} ended {final.state}: {final.message}", code=final.state.upper()
        )
    folder = os.path.join(os.fspath(settings.output_dir), f"{shot}_{job.job_id[:8]}")

    def fetched(frame: Any, total: int) -> None:
        report(
            0.9 + 0.1 * (frame.index + 1) / max(total, 1), f"{shot}: fetched frame {frame.index + 1}/{total}"
        )

    frames = client.fetch_frames(job.job_id, folder, on_frame=fetched)
    expected = [f"{shot}.{settings.start_frame + i:04d}.exr" for i in range(len(frames))]
    names = [os.path.basename(f.path) for f in frames]
    if names != expected or len(frames) < needed:
        raise ClientError(
            f"{shot}: job {job.job_id} gave {len(frames)} frames named {names[:2]}...; expected at least "
            f"{needed} named {expected[:2]}..."
        )
    return ShotResult(
        request_id=request.id,
        job_id=job.job_id,
        directory=os.path.abspath(folder),
        name_prefix=f"{shot}.",
        frame_count=len(frames) - skip,  # continue: the kept plate frames are not placed again
        rate=request.rate,
        start_frame=settings.start_frame + skip,
        padding=4,
        seed=final.seed,
        model=info.model_name,
        storyboard=[] if request.prompt and not request.storyboard else segments,
        prompt=request.prompt,
        metadata={
            "server": client.address,
            "server_fps": info.fps,
            "segments": len(segments),
            "plate_mode": plates.mode if plates is not None else None,
            "plate_frames": len(plates.paths) if plates is not None else 0,
        },
    )


def _upload_plates(
    client: Any,
    request: ShotRequest,
    plates: Plates,
    settings: GenerationSettings,
    report: ProgressFn,
    is_cancelled: Callable[[], bool],
) -> Tuple[List[str], Tuple[int, int]]:
    """Upload each distinct plate file once; (ids in frame order, (height, width) of the plates)."""
    capability = f"plates_{plates.mode}"
    if capability not in client.info.capabilities:
        raise ServerMismatchError(
            f"server {client.address} cannot {plates.mode} plates (no {capability!r} capability); upgrade it",
            code="CAPABILITY",
        )
    if plates.mode == "restyle" and len(plates.paths) != request.duration:
        raise RequestError(
            f"request {request.id}: restyle takes one plate frame per shot frame; got {len(plates.paths)} plate "
            f"frames for {request.duration} shot frames"
        )
    shot = shot_name_for(request)
    uploads: Dict[str, Any] = {}
    for i, path in enumerate(plates.paths):
        if is_cancelled():
            raise JobCancelled(f"{shot}: cancelled while uploading plates")
        if path not in uploads:
            uploads[path] = client.upload_plate(path)
        report(0.02 * (i + 1) / len(plates.paths), f"{shot}: uploaded plate {i + 1}/{len(plates.paths)}")
    sizes = {(u.height, u.width) for u in uploads.values()}
    if len(sizes) != 1:
        raise RequestError(
            f"request {request.id}: plate frames differ in size (height, width) {sorted(sizes)}"
        )
    height, width = sizes.pop()
    for name, value in (("height", settings.height), ("width", settings.width)):
        if value and value != (height if name == "height" else width):
            raise RequestError(
                f"request {request.id}: {name} {value} is set but the plate is {width}x{height}; plates are not "
                f"resized: leave {name} at 0 (the plate's size) or resize the plate"
            )
    return [uploads[p].upload_id for p in plates.paths], (height, width)


def _watch(client: Any, job_id: str, shot: str, report: ProgressFn, is_cancelled: Callable[[], bool]) -> Any:
    """Follow the job to its end, turning events into progress; cancels on the server when asked."""
    cancel_sent = False
    for event in client.watch(job_id):
        if is_cancelled() and not cancel_sent:
            client.cancel(job_id)
            cancel_sent = True
            report(0.0, f"{shot}: cancelling job {job_id}")
        fraction, message = _describe(event, shot)
        if message:
            report(fraction, message)
    return client.get_job(job_id)


def _describe(event: Any, shot: str) -> Tuple[float, str]:
    if event.kind == "state":
        position = f" (position {event.queue_position})" if event.queue_position else ""
        fraction = {"queued": 0.02, "sampling": 0.05, "decoding": 0.8, "completed": 0.9}.get(event.state, 0.0)
        return fraction, f"{shot}: {event.state}{position}"
    if event.kind == "progress" and event.total:
        eta = f", {event.eta_s:.0f} s left" if event.eta_s >= 0 else ""
        return 0.05 + 0.75 * event.step / event.total, f"{shot}: step {event.step}/{event.total}{eta}"
    if event.kind == "frames" and event.total:
        return 0.8 + 0.1 * event.ready / event.total, f"{shot}: decoded {event.ready}/{event.total} frames"
    return 0.0, ""


# ---------------------------------------------------------------------------------------- in a host


@dataclass
class PlacedShot:
    request: ShotRequest
    result: ShotResult
    paths: List[str] = field(default_factory=list)


class ShotJob:
    """Generate `requests` one after another in a worker thread and place each on the host's main thread.

    client_factory() -> TTTClient is called in the worker (so even connecting happens off the main
    thread); plates maps a request id to the Plates sent with it. State: "idle" | "running" | "done"
    | "error" | "cancelled"; `placed` lists what landed; `error` holds the failure.
    """

    def __init__(
        self,
        host: Any,
        requests: Sequence[ShotRequest],
        settings: GenerationSettings,
        client_factory: Callable[[], Any],
        plates: Optional[Dict[str, Plates]] = None,
        track_hint: str = GENERATED_TRACK_NAME,
    ) -> None:
        from host_plugin.hosts.base import JobRunner

        if not requests:
            raise RequestError("nothing to generate: no shot requests were found or given")
        self.host = host
        self.requests = list(requests)
        self.settings = settings
        self.plates = dict(plates or {})
        self.track_hint = track_hint
        self.placed: List[PlacedShot] = []
        self.state = "idle"
        self.error: Optional[BaseException] = None
        self.message = ""
        self._client_factory = client_factory
        self._client: Any = None
        self._job_ids: List[str] = []
        self._lock = threading.Lock()
        self._cancel_sent: set = set()
        self._runner = JobRunner(self._work, name="ttt-shot-job")
        self._forwarder: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ any thread

    def start(self) -> ShotJob:
        self.state = "running"
        self._runner.start()
        return self

    @property
    def job_ids(self) -> List[str]:
        with self._lock:
            return list(self._job_ids)

    @property
    def finished(self) -> bool:
        return self._runner.finished

    def cancel(self) -> None:
        """Stop: the worker stops between steps and CancelJob goes to the server from a helper thread."""
        self._runner.cancel()
        threading.Thread(target=self._cancel_on_server, name="ttt-cancel", daemon=True).start()

    def _cancel_on_server(self) -> None:
        with self._lock:
            client, pending = self._client, [j for j in self._job_ids if j not in self._cancel_sent]
            self._cancel_sent.update(pending)
        for job_id in pending:
            try:
                client.cancel(job_id)
                log.info("cancel of job %s sent", job_id)
            except Exception as exc:  # noqa: BLE001 - the worker still stops; the reason is logged
                log.warning("cancel of job %s failed: %s", job_id, exc)

    # ------------------------------------------------------------------ worker thread

    def _work(self, context: Any) -> List[Tuple[str, str]]:
        client = self._client_factory()
        with self._lock:
            self._client = client
        try:
            client.connect(self.settings.required_capabilities, self.settings.model)
            done = []
            total = len(self.requests)
            for i, request in enumerate(self.requests):
                context.raise_if_cancelled()

                def progress(fraction: float, message: str, i: int = i) -> None:
                    context.progress(min(1.0, (i + min(max(fraction, 0.0), 1.0)) / total), message)

                result = generate_shot(
                    client,
                    request,
                    self.settings,
                    plates=self.plates.get(request.id),
                    progress=progress,
                    cancelled=context.cancelled,
                    on_submitted=self._submitted,
                )
                context.deliver(result, (i + 1) / total, f"{result.name_prefix.rstrip('.')}: ready")
                done.append((request.id, result.job_id))
            return done
        finally:
            client.close()

    def _submitted(self, job_id: str) -> None:
        with self._lock:
            self._job_ids.append(job_id)
        if self._runner.cancel_requested:  # cancelled while the submit was in flight
            self._cancel_on_server()

    # ------------------------------------------------------------------ main thread

    def pump(self) -> bool:
        """Main thread: check the host's cancel button, handle waiting events, place finished shots.
        True while the job runs (a timer keeps calling), False once it ended."""
        if self.state == "running" and not self._runner.cancel_requested and self.host.is_cancelled():
            self.cancel()
        for event in self._runner.poll():
            self._handle(event)
        return not self._runner.finished

    def wait(self, timeout: float = 300.0, interval: float = 0.02) -> bool:
        """Pump on this thread until the job ends (Blender --background, scripts, tests); True if it ended."""
        deadline = time.monotonic() + timeout
        while self.pump():
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)
        return True

    def start_forwarding(self, interval: float = 0.05) -> threading.Thread:
        """For hosts without a timer (Nuke): a thread polls the job, reports progress and cancel from there
        (host.report_progress / is_cancelled may be called off the main thread) and hands every other event
        to host.run_on_main_thread."""
        from host_plugin.hosts.base import DONE, PROGRESS

        def forward() -> None:
            while True:
                if not self._runner.cancel_requested and self.host.is_cancelled():
                    self.cancel()
                for event in self._runner.poll():
                    if event.kind in (PROGRESS, DONE):
                        self.host.report_progress(event.fraction, event.message or event.kind)
                        if event.kind == PROGRESS and event.result is None:
                            continue
                    self.host.run_on_main_thread(self._handle, event, False)
                if self._runner.finished:
                    end = getattr(self.host, "end_progress", None)  # e.g. Nuke drops its ProgressTask
                    if end is not None:
                        end()
                    return
                time.sleep(interval)

        self._forwarder = threading.Thread(target=forward, name="ttt-forward", daemon=True)
        self._forwarder.start()
        return self._forwarder

    def _handle(self, event: Any, report: bool = True) -> None:
        from host_plugin.hosts.base import CANCELLED, DONE, ERROR

        if event.result is not None and isinstance(event.result, ShotResult):
            self._place(event.result)
        if report and event.kind not in (ERROR,):
            self.host.report_progress(event.fraction, event.message or ("done" if event.kind == DONE else ""))
        if event.kind == DONE:
            self.state, self.message = "done", f"{len(self.placed)} shot(s) placed"
        elif event.kind == CANCELLED:
            self.state, self.message = "cancelled", event.message
        elif event.kind == ERROR:
            self.state, self.error, self.message = "error", event.error, event.message
            self.host.report_error(event.message)

    def _place(self, result: ShotResult) -> None:
        request = next(r for r in self.requests if r.id == result.request_id)
        paths = result.frame_paths()[: request.duration]
        self.host.place_sequence(paths, request.record_start, self.track_hint)
        self.placed.append(PlacedShot(request, result, paths))
        log.info("placed %s (%d frames) at %d", result.job_id, len(paths), request.record_start)
