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

A shot arrives in the edit's time, format and colour. Each request becomes a Delivery
(host_plugin.core.delivery): its record rate R and duration D, the target format (the host's:
Nuke's root format, Resolve's timeline resolution, Blender's scene resolution; or --format) with a fit,
filter and retime method, and the working colour space (the host's, ACEScg in ACES projects, or the
user's choice). A storyboard segment is three seconds of edit time, so a shot needs
ceil(D / 3R) segments (a prompt is repeated over them; a 2-s marker at 24 fps is one segment). The
server generates at the model's native rate and size and conforms: it returns exactly D frames at R,
scaled to the format, in the colour space. Delivered frame i sits on record frame
request.record_start + i; its EXR framesPerSecond is R, the rate the host places it at.

Takes (host_plugin.core.takes): GenerationSettings.takes > 1 asks the server for that many takes (seeds
seed, seed + 1, ...); every take's frames are fetched into <job folder>/take_NN/ and the host places the
approved take (else take 0) with the others at hand (`Host.place_takes`). `ApprovalCheck` asks the
server later which take is approved and switches the host to it (`Host.switch_take`).

Drafts: a priority "preview" job makes a draft of the whole shot (fewer steps) before its final. When the
job reports every take's draft complete, generate_shot fetches the draft frames into <job folder>/draft/
(take_NN/ under it for takes) and hands them to `on_draft` as a ShotResult with draft=True; a ShotJob
places that at once, marked as a draft (`Host.mark_draft`), and when the final arrives swaps the placed
media to the final frames in place (`Host.replace_media`: the same node, strip or clip, no second one).
A job cancelled after its draft leaves the draft placed and marked.

Elements (Plates mode "element"): the plates go with a matte (Plates.mattes: single-channel EXRs, one
per plate, uploaded like plates; none: each plate's alpha); the server generates only inside it and
returns RGBA with the matte as alpha, which the host composites over the plate (`Host.place_element`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from host_plugin.core.adapters import AdapterChoice, adapters_from_metadata, check_choices
from host_plugin.core.delivery import FILTERS, FIT_METHODS, RETIME_METHODS, Delivery, Format
from host_plugin.core.errors import (
    ClientError,
    HostPluginError,
    JobCancelled,
    JobFailedError,
    PlacementError,
    RequestError,
    ServerMismatchError,
)
from host_plugin.core.placement import GENERATED_TRACK_NAME, DeliveredMedia, ShotResult
from host_plugin.core.requests import ShotRequest
from host_plugin.core.takes import TakeInfo, take_folder, with_approval

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
_SHOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
PLATE_MODES = ("restyle", "continue", "element")
TAKES_CAPABILITY = "takes"
DRAFT_FOLDER = "draft"  # a job's draft frames: <job folder>/draft/ (take_NN/ under it for takes)
DELIVERY_DEFAULTS: Dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Delivery)}
"""Delivery's own defaults (fit "fit", filter "lanczos", retime "flow"): what the panels offer first."""
PIXEL_ASPECT_TOLERANCE = 1e-3  # a delivered pixelAspectRatio this close to the asked one is that one


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
class DeliverySettings:
    """How the shots of a job are delivered; each request adds its own rate and duration (`for_request`).

    format: the frame to fill (None: the host's, see `for_host`; with no host, e.g. fill without
    --format, the generation size). colorspace: a colorInteropID or a known name ("ACEScg"); "": the
    host's working space, with no host the server's default. fit / filter / retime: Delivery's.
    """

    format: Optional[Format] = None
    fit: str = DELIVERY_DEFAULTS["fit"]
    filter: str = DELIVERY_DEFAULTS["filter"]
    retime: str = DELIVERY_DEFAULTS["retime"]
    colorspace: str = ""

    def __post_init__(self) -> None:
        for name, allowed in (("fit", FIT_METHODS), ("filter", FILTERS), ("retime", RETIME_METHODS)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"delivery {name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if self.colorspace:
            from host_plugin.hosts.colour import interop_id

            try:
                object.__setattr__(self, "colorspace", interop_id(self.colorspace))
            except HostPluginError as exc:
                raise ValueError(str(exc)) from None

    def for_host(self, host: Any) -> DeliverySettings:
        """These settings with what they leave open taken from `host` (main thread): its target format and
        its working colour space."""
        return dataclasses.replace(
            self,
            format=self.format or host.target_format(),
            colorspace=self.colorspace or host.working_colorspace(),
        )

    def for_request(self, request: ShotRequest, extra_frames: int = 0) -> Delivery:
        """The Delivery of `request`: its rate, its duration (+ extra_frames delivered before it, e.g. a
        continued plate's frames), these settings' format, fit, filter, retime and colour space."""
        fmt = self.format
        try:
            return Delivery(
                rate=request.rate,
                duration=request.duration + extra_frames,
                width=fmt.width if fmt is not None else None,
                height=fmt.height if fmt is not None else None,
                pixel_aspect=float(fmt.pixel_aspect) if fmt is not None else 1.0,
                fit=self.fit,
                filter=self.filter,
                retime=self.retime,
                colorspace=self.colorspace,
            )
        except ValueError as exc:
            raise RequestError(f"request {request.id} ({request.kind} {request.name!r}): {exc}") from exc


def add_delivery_arguments(
    parser: Any, format_help: str = "the generation size", colorspace_help: str = "the server's default"
) -> None:
    """--format, --fit, --filter, --retime, --colorspace on an argparse parser (fill, Resolve's script)."""
    parser.add_argument(
        "--format",
        default=None,
        metavar="WxH[:PA]",
        help=f"the frame shots are delivered in, e.g. 1920x1080 or 2048x858:2 (default: {format_help})",
    )
    parser.add_argument("--fit", choices=FIT_METHODS, default=DELIVERY_DEFAULTS["fit"])
    parser.add_argument("--filter", choices=FILTERS, default=DELIVERY_DEFAULTS["filter"])
    parser.add_argument("--retime", choices=RETIME_METHODS, default=DELIVERY_DEFAULTS["retime"])
    parser.add_argument(
        "--colorspace",
        default="",
        help=f"delivered colour space, e.g. ACEScg or lin_ap1_scene (default: {colorspace_help})",
    )


def delivery_settings_from(args: Any) -> DeliverySettings:
    """The DeliverySettings of add_delivery_arguments' options; ValueError names a bad one."""
    fmt = Format.parse(args.format) if args.format else None
    return DeliverySettings(
        format=fmt, fit=args.fit, filter=args.filter, retime=args.retime, colorspace=args.colorspace
    )


@dataclass(frozen=True)
class GenerationSettings:
    """What to ask the server for; 0 / None leave the server's defaults. output_dir gets one folder per
    job: <output_dir>/<shot>_<job id[:8]>/<shot>.<frame>.exr. height / width: the generation size (0:
    the server picks its supported size nearest the delivery format's aspect); delivery: what the frames
    become (format, fit, filter, retime, colour space)."""

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
    delivery: DeliverySettings = DeliverySettings()
    takes: int = 1
    draft_steps: int = 0  # priority "preview": the draft's steps (0: the server's default)
    adapters: Tuple[AdapterChoice, ...] = ()  # every shot's, unless its request names its own
    required_capabilities: Tuple[str, ...] = (
        "storyboard",
        "idempotent_submit",
        "watch_resume",
        "fetch_resume",
        "delivery",
    )

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("GenerationSettings.output_dir must be a folder path, got an empty value")
        if isinstance(self.takes, bool) or not isinstance(self.takes, int) or self.takes < 1:
            raise ValueError(f"GenerationSettings.takes must be an int >= 1, got {self.takes!r}")
        for name in ("height", "width", "steps", "preview_every", "start_frame", "draft_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"GenerationSettings.{name} must be an int >= 0, got {value!r}")
        if self.priority not in ("preview", "final"):
            raise ValueError(
                f"GenerationSettings.priority must be 'preview' or 'final', got {self.priority!r}"
            )
        if self.draft_steps and self.priority != "preview":
            raise ValueError(
                f"GenerationSettings.draft_steps={self.draft_steps} needs priority 'preview' (only a preview job "
                f"makes a draft first), got priority {self.priority!r}"
            )
        object.__setattr__(self, "adapters", tuple(self.adapters))
        if not all(isinstance(a, AdapterChoice) for a in self.adapters):
            raise ValueError(
                f"GenerationSettings.adapters must be AdapterChoice values, got {self.adapters!r}"
            )
        if not isinstance(self.delivery, DeliverySettings):
            raise ValueError(
                f"GenerationSettings.delivery must be a DeliverySettings, got {type(self.delivery).__name__}"
            )


@dataclass(frozen=True)
class Plates:
    """EXR frames of the edit sent with a request, in frame order, and how the server uses them.

    mode "restyle": the plate covers the shot (one frame per shot frame, at the edit's rate; the server
    conforms it into the model's rate, size and colour space) and is re-imagined with `strength` in
    (0, 1] (small keeps more of it).
    mode "continue": frames the generated video starts with (e.g. the plate's last frame); the shot
    placed after the plate starts with the first NEW frame, so those frames are not placed again.
    mode "element": as restyle (one plate per shot frame, a strength), generated only inside a matte:
    `mattes`, single-channel EXRs one per plate, or none: each plate's alpha. The result is RGBA (the
    matte as alpha), placed over the plate. matte_feather: the matte's soft edge in output pixels
    (None: the server's).
    """

    paths: Tuple[str, ...]
    mode: str = "restyle"
    strength: Optional[float] = None
    mattes: Tuple[str, ...] = ()
    matte_feather: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(os.fspath(p) for p in self.paths))
        object.__setattr__(self, "mattes", tuple(os.fspath(p) for p in self.mattes))
        if (self.mattes or self.matte_feather is not None) and self.mode != "element":
            raise ValueError(f"mattes belong to plate mode 'element', not {self.mode!r}")
        if self.mattes and len(self.mattes) != len(self.paths):
            raise ValueError(
                f"an element takes one matte per plate frame; got {len(self.mattes)} mattes for "
                f"{len(self.paths)} plate frames"
            )
        if self.matte_feather is not None and not self.matte_feather >= 0.0:
            raise ValueError(f"matte_feather must be >= 0 output pixels, got {self.matte_feather!r}")
        if self.mode not in PLATE_MODES:
            raise ValueError(f"plate mode must be one of {PLATE_MODES}, got {self.mode!r}")
        if not self.paths:
            raise ValueError("Plates needs at least one EXR path")
        if self.mode != "continue" and (self.strength is None or not 0.0 < self.strength <= 1.0):
            raise ValueError(
                f"{'restyling' if self.mode == 'restyle' else 'an element in'} a plate needs a strength in (0, 1] "
                "(e.g. 0.6: the share of the denoising redone), "
                f"got {self.strength!r}"
            )
        if self.mode == "continue" and self.strength not in (None, 1.0):
            raise ValueError(f"continuing a plate takes no strength, got {self.strength!r}")


def shot_name_for(request: ShotRequest) -> str:
    """A server-safe shot name ([A-Za-z0-9_-]{1,64}) from the request's name, else its id."""
    name = _SHOT_NAME.sub("_", request.name or "").strip("_") or _SHOT_NAME.sub("_", request.id).strip("_")
    return (name or "shot")[:64]


def storyboard_for(request: ShotRequest, info: Any, delivery: Delivery) -> List[Dict[str, Any]]:
    """The segments to send for `request` on a server described by `info` (a client.ServerInfo).

    A segment is three seconds of edit time: the delivery needs delivery.segments =
    ceil(duration / 3 rate) of them (the last one trimmed). A single prompt is repeated over that many;
    a storyboard must have exactly that many (a beat past the shot's end would never be seen).
    """
    needed = delivery.segments
    limit = int(info.limits.get("max_segments") or needed)
    where = f"request {request.id} ({request.kind} {request.name!r}, {delivery.duration} frames at {request.rate} fps)"
    seconds = f"{info.segment_seconds} s of edit time each"
    if needed > limit:
        raise RequestError(
            f"{where} needs {needed} segments ({seconds}) but this server allows max_segments={limit}; "
            f"split the shot into pieces of at most {limit * info.segment_seconds} seconds"
        )
    if request.storyboard:
        segments = [dict(s) for s in request.storyboard]
        if len(segments) != needed:
            advice = "add segments or use a single prompt" if len(segments) < needed else "lengthen the shot"
            raise RequestError(
                f"{where}: its storyboard has {len(segments)} segment(s) ({seconds}); the shot needs exactly "
                f"{needed}: {advice}"
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
    on_draft: Optional[Callable[[ShotResult], None]] = None,
) -> ShotResult:
    """Run one request on the server and fetch its delivered frames; returns the ShotResult to place.

    plates: EXR frames sent with it (restyle or continue). progress(fraction, message) gets 0..1
    updates; cancelled() is polled between events (when true the job is cancelled on the server and
    JobCancelled raised once the server confirms); on_submitted(job_id) lets a caller cancel from
    elsewhere. on_draft(result): called once, during the job, with the draft's frames (a ShotResult
    with draft=True) when the job makes a draft (priority "preview") and every take's draft is complete;
    without it drafts are not fetched. Raises JobFailedError when the server's job fails, ClientError when the frames it
    delivered are not what was asked (count, rate, format or colour space).
    """
    report = progress or (lambda fraction, message: None)
    is_cancelled = cancelled or (lambda: False)
    info = client.info
    if not info.supports_delivery():
        raise ServerMismatchError(
            f"server {client.address} does not conform shots to the edit (no 'delivery' capability); upgrade it",
            code="CAPABILITY",
        )
    shot = shot_name_for(request)
    _check_takes_wanted(client, request, settings, plates)
    skip = len(plates.paths) if plates is not None and plates.mode == "continue" else 0
    delivery = settings.delivery.for_request(request, extra_frames=skip)
    segments = storyboard_for(request, info, delivery)
    where = f"request {request.id} ({request.kind} {request.name!r})"
    adapters = adapters_from_metadata(request.metadata, where) or settings.adapters
    check_choices(adapters, info, where)
    plate_ids: List[str] = []
    matte_ids: List[str] = []
    if plates is not None:
        _check_mattes(request, plates)
        plate_ids = _upload_plates(client, request, plates, report, is_cancelled)
        if plates.mattes:
            matte_ids = _upload_mattes(client, request, plates, is_cancelled)
    report(0.02, f"{shot}: submitting")
    submitted = client.submit(
        segments,
        height=settings.height,
        width=settings.width,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        seed=settings.seed,
        preview_every=settings.preview_every,
        strength=plates.strength if plates is not None and plates.mode != "continue" else None,
        plate_mode=plates.mode if plates is not None else "",
        priority=settings.priority,
        shot_name=shot,
        start_frame=settings.start_frame,
        request_id=request.id,
        record_start=request.record_start,
        plate_upload_ids=plate_ids,
        idempotency_key=idempotency_key,
        delivery=delivery,
        takes=settings.takes if settings.takes > 1 else 0,
        matte_upload_ids=matte_ids,
        matte_feather=plates.matte_feather if plates is not None else None,
        adapters=[(a.name, a.scale) for a in adapters],
        draft_steps=settings.draft_steps,
    )
    job = submitted.job
    if on_submitted is not None:
        on_submitted(job.job_id)
    if job.total_frames and job.total_frames != delivery.duration:
        client.cancel(job.job_id)
        raise ClientError(
            f"request {request.id}: the server would deliver {job.total_frames} frames; the shot needs exactly "
            f"{delivery.duration} at {request.rate} fps"
        )
    log.info(
        "request %s -> job %s (%d segments, %d frames at %s fps, key %s)",
        request.id,
        job.job_id,
        len(segments),
        delivery.duration,
        delivery.rate,
        submitted.idempotency_key,
    )
    folder = os.path.join(os.fspath(settings.output_dir), f"{shot}_{job.job_id[:8]}")
    expected = [f"{shot}.{settings.start_frame + i:04d}.exr" for i in range(delivery.duration)]

    def build(
        takes: List[TakeInfo], chosen: int, directory: str, seed: Optional[int], draft: bool
    ) -> ShotResult:
        """The ShotResult of fetched frames (the final's, or the draft's with draft=True)."""
        first_frame = os.path.join(directory, expected[0])
        media = delivered_media(first_frame, delivery)
        conform = {} if draft else dict(client.result(job.job_id, take=chosen if takes else None).conform)
        return ShotResult(
            request_id=request.id,
            job_id=job.job_id,
            directory=directory,
            name_prefix=f"{shot}.",
            frame_count=len(expected) - skip,  # continue: the kept plate frames are not placed again
            rate=request.rate,
            start_frame=settings.start_frame + skip,
            padding=4,
            seed=seed,
            model=info.model_name,
            storyboard=[] if request.prompt and not request.storyboard else segments,
            prompt=request.prompt,
            metadata={
                "server": client.address,
                "server_fps": info.fps,
                "segments": len(segments),
                "plate_mode": plates.mode if plates is not None else None,
                "plate_frames": len(plates.paths) if plates is not None else 0,
                "delivery": delivery.as_metadata(),
            },
            media=media,
            conform=conform,
            takes=takes,
            take=chosen,
            draft=draft,
        )

    def fetch(state: Any, into: str, draft: bool) -> ShotResult:
        """Fetch every take's frames (final or draft) of the job `state` into `into`; their ShotResult."""
        if settings.takes > 1:
            takes = _fetch_takes(client, state, into, expected, shot, report, draft)
            chosen = state.approved_take if state.approved_take is not None else 0
            return build(takes, chosen, takes[chosen].directory, takes[chosen].seed, draft)
        _fetch_take(client, job.job_id, into, 0, expected, shot, report, 1, draft)
        return build([], 0, os.path.abspath(into), state.seed, draft)

    drafts_done: set = set()

    def on_frames(event: Any) -> None:
        """When every take's draft is stored: fetch the draft and hand it to on_draft (once)."""
        if on_draft is None or not event.draft or event.ready < event.total or event.take in drafts_done:
            return
        drafts_done.add(event.take)
        if len(drafts_done) == settings.takes:
            report(0.5, f"{shot}: draft complete; fetching it")
            on_draft(fetch(client.get_job(job.job_id), os.path.join(folder, DRAFT_FOLDER), True))

    final = _watch(client, job.job_id, shot, report, is_cancelled, on_frames)
    if final.state == "cancelled":
        raise JobCancelled(f"{shot}: job {job.job_id} cancelled on the server ({final.message})")
    if final.state != "completed":
        raise JobFailedError(
            f"{shot}: job {job.job_id} ended {final.state}: {final.message}", code=final.state.upper()
        )
    return fetch(final, folder, False)


def _check_takes_wanted(
    client: Any, request: ShotRequest, settings: GenerationSettings, plates: Optional[Plates]
) -> None:
    """Refuse, before anything is uploaded, takes the server cannot make or the plugin cannot place."""
    if settings.takes == 1:
        return
    info = client.info
    if TAKES_CAPABILITY not in info.capabilities:
        raise ServerMismatchError(
            f"server {client.address} makes one take per job (no {TAKES_CAPABILITY!r} capability); ask for "
            "takes=1 or upgrade it",
            code="CAPABILITY",
        )
    limit = int(info.limits.get("max_takes") or 0)
    if limit and settings.takes > limit:
        raise RequestError(
            f"request {request.id}: {settings.takes} takes asked; this server makes at most max_takes={limit}"
        )


def _fetch_take(
    client: Any,
    job_id: str,
    folder: str,
    take: int,
    expected: List[str],
    shot: str,
    report: ProgressFn,
    takes: int,
    draft: bool = False,
) -> List[str]:
    """Fetch one take's frames (its draft's with draft=True) into `folder`; ClientError unless they are
    exactly `expected` by name."""

    def fetched(frame: Any, total: int) -> None:
        done = (take + (frame.index + 1) / max(total, 1)) / takes
        report(0.9 + 0.1 * done, f"{shot}: take {take + 1}/{takes}: fetched frame {frame.index + 1}/{total}")

    frames = client.fetch_frames(job_id, folder, on_frame=fetched, take=take, draft=draft)
    names = [os.path.basename(f.path) for f in frames]
    if names != expected:
        raise ClientError(
            f"{shot}: job {job_id} take {take}{' draft' if draft else ''} gave {len(frames)} frames named {names[:2]}...; expected "
            f"exactly {len(expected)} named {expected[:2]}..."
        )
    return [f.path for f in frames]


def _fetch_takes(
    client: Any,
    job: Any,
    folder: str,
    expected: List[str],
    shot: str,
    report: ProgressFn,
    draft: bool = False,
) -> List[TakeInfo]:
    """Every take of a completed job (draft: every take's complete draft) fetched into <folder>/take_NN/,
    with its seed and approval."""
    if not job.takes:
        raise ClientError(f"{shot}: job {job.job_id} was asked for takes but reports none")
    takes = []
    for state in sorted(job.takes, key=lambda t: t.index):
        if not (state.draft_stored if draft else state.state == "completed"):
            raise JobFailedError(
                f"{shot}: job {job.job_id} take {state.index}{' draft' if draft else ''} is not complete "
                f"({state.state})",
                code=state.state.upper(),
            )
        directory = os.path.abspath(take_folder(folder, state.index))
        _fetch_take(client, job.job_id, directory, state.index, expected, shot, report, len(job.takes), draft)
        takes.append(TakeInfo(state.index, state.seed, directory, state.approved, state.approved_by))
    return takes


def delivered_media(path: str, delivery: Delivery) -> DeliveredMedia:
    """What the delivered frame at `path` is (its EXR header), checked against `delivery`: rate, format
    and colour space must be the ones asked for. ClientError names the first difference."""
    from host_plugin.core.exr_io import read_exr

    _, header = read_exr(path)
    try:
        media = DeliveredMedia.from_exr_header(header, fit=delivery.fit, where=path)
    except PlacementError as exc:
        raise ClientError(str(exc)) from exc
    problems = []
    if media.rate != delivery.rate:
        problems.append(f"framesPerSecond {media.rate} (asked {delivery.rate})")
    if delivery.has_format and (media.width, media.height) != (delivery.width, delivery.height):
        problems.append(f"format {media.width}x{media.height} (asked {delivery.width}x{delivery.height})")
    if (
        delivery.has_format
        and abs(media.pixel_aspect - float(delivery.pixel_aspect)) > PIXEL_ASPECT_TOLERANCE
    ):
        problems.append(f"pixelAspectRatio {media.pixel_aspect:g} (asked {float(delivery.pixel_aspect):g})")
    if delivery.colorspace and media.colorspace != delivery.colorspace:
        problems.append(f"colorInteropID {media.colorspace!r} (asked {delivery.colorspace!r})")
    if problems:
        raise ClientError(f"{path}: the server delivered {'; '.join(problems)}")
    return media


def _check_mattes(request: ShotRequest, plates: Plates) -> None:
    """Before anything is uploaded: every matte file is a single-channel EXR."""
    from host_plugin.core.exr_io import matte_channels

    for path in sorted(set(plates.mattes)):
        channels = matte_channels(path)
        if len(channels) != 1:
            raise RequestError(
                f"request {request.id}: matte {path} has channels {channels}; a matte is one channel "
                "(e.g. A or Y); leave the mattes out to use the plates' alpha"
            )


def _upload_mattes(
    client: Any, request: ShotRequest, plates: Plates, is_cancelled: Callable[[], bool]
) -> List[str]:
    """Upload each distinct matte file once (single-channel EXRs); the upload ids in frame order."""
    uploads: Dict[str, Any] = {}  # the plates went first: _upload_plates checked 'plates_element'
    for path in plates.mattes:
        if is_cancelled():
            raise JobCancelled(f"{shot_name_for(request)}: cancelled while uploading mattes")
        if path not in uploads:
            uploads[path] = client.upload_plate(path)
    return [uploads[p].upload_id for p in plates.mattes]


def _upload_plates(
    client: Any,
    request: ShotRequest,
    plates: Plates,
    report: ProgressFn,
    is_cancelled: Callable[[], bool],
) -> List[str]:
    """Upload each distinct plate file once; the upload ids in frame order."""
    capability = f"plates_{plates.mode}"
    if capability not in client.info.capabilities:
        raise ServerMismatchError(
            f"server {client.address} cannot {plates.mode} plates (no {capability!r} capability); upgrade it",
            code="CAPABILITY",
        )
    if plates.mode != "continue" and len(plates.paths) != request.duration:
        raise RequestError(
            f"request {request.id}: {plates.mode} takes one plate frame per shot frame; got {len(plates.paths)} plate "
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
    return [uploads[p].upload_id for p in plates.paths]


def _watch(
    client: Any,
    job_id: str,
    shot: str,
    report: ProgressFn,
    is_cancelled: Callable[[], bool],
    on_frames: Callable[[Any], None],
) -> Any:
    """Follow the job to its end, turning events into progress and handing "frames" events to on_frames;
    cancels on the server when asked."""
    cancel_sent = False
    for event in client.watch(job_id):
        if event.kind == "frames":
            on_frames(event)
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
    """What a ShotJob placed: the request, its result (for takes: the take shown and every take; a draft
    until the final replaced it) and the paths shown; handle: what the host's place_* returned (e.g.
    Nuke's Read or Switch node name), handed back to Host.switch_take / mark_draft / replace_media."""

    request: ShotRequest
    result: ShotResult
    paths: List[str] = field(default_factory=list)
    handle: Any = None

    @property
    def draft(self) -> bool:
        """True while what is placed is the job's draft (a cancel after the draft leaves it so)."""
        return self.result.draft


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
        # the host's format and working colour space are read here, on its main thread
        self.settings = dataclasses.replace(settings, delivery=settings.delivery.for_host(host))
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
    def client_factory(self) -> Callable[[], Any]:
        """What makes this job's clients (an ApprovalCheck of its takes asks the same server)."""
        return self._client_factory

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

                def draft(result: ShotResult, i: int = i) -> None:
                    context.deliver(
                        result, (i + 0.5) / total, f"{result.name_prefix.rstrip('.')}: draft ready"
                    )

                result = generate_shot(
                    client,
                    request,
                    self.settings,
                    plates=self.plates.get(request.id),
                    progress=progress,
                    cancelled=context.cancelled,
                    on_submitted=self._submitted,
                    on_draft=draft,
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
        paths = result.frame_paths()
        if len(paths) != request.duration or result.media is None:
            raise PlacementError(
                f"result {result.job_id} has {len(paths)} frames (media {result.media}); request {request.id} "
                f"needs exactly {request.duration} delivered frames"
            )
        shown = next((p for p in self.placed if p.draft and p.result.job_id == result.job_id), None)
        if shown is not None:
            self._replace_draft(shown, result, paths)
            return
        plates = self.plates.get(request.id)
        takes = [result.take_frame_paths(t.index) for t in result.takes]
        if plates is not None and plates.mode == "element":
            handle = self.host.place_element(
                takes or [paths],
                result.take,
                request.record_start,
                request.track_index,
                result.media,
                list(plates.mattes),
            )
        elif result.takes:
            handle = self.host.place_takes(
                takes, result.take, request.record_start, self.track_hint, result.media
            )
        else:
            handle = self.host.place_sequence(paths, request.record_start, self.track_hint, result.media)
        if result.draft:
            self.host.mark_draft(handle)
        self.placed.append(PlacedShot(request, result, paths, handle))
        what = "the draft of " if result.draft else ""
        log.info("placed %s%s (%d frames) at %d", what, result.job_id, len(paths), request.record_start)

    def _replace_draft(self, shown: PlacedShot, result: ShotResult, paths: List[str]) -> None:
        """Main thread: the final of a placed draft: the host swaps the placed media to the final frames in
        place (every take's), then shows the final's chosen take when an approval moved it."""
        if result.draft:
            raise PlacementError(
                f"job {result.job_id} delivered a second draft of request {result.request_id}"
            )
        takes = [result.take_frame_paths(t.index) for t in result.takes] if result.takes else [paths]
        self.host.replace_media(shown.handle, takes, result.media)
        if result.takes and result.take != shown.result.take:
            self.host.switch_take(shown.handle, result.take)
        shown.result, shown.paths = result, paths
        log.info("replaced the draft of %s with its final", result.job_id)


def approved_result(result: ShotResult, approved: Optional[int], approved_by: str = "") -> ShotResult:
    """`result` showing the approved take (none approved: take 0), the approval recorded on its takes."""
    if not result.takes:
        raise PlacementError(f"shot {result.request_id!r} (job {result.job_id}) was placed with one take")
    takes = with_approval(result.takes, approved, approved_by)
    chosen = approved if approved is not None else 0
    return dataclasses.replace(
        result, takes=takes, take=chosen, directory=takes[chosen].directory, seed=takes[chosen].seed
    )


def apply_approval(host: Any, placed: PlacedShot, approved: Optional[int], approved_by: str = "") -> bool:
    """Main thread: show the approved take of a placed shot (none approved: take 0) and record the
    approval on its result; True when the host switched. PlacementError for a shot placed without takes."""
    result = approved_result(placed.result, approved, approved_by)
    switched = result.take != placed.result.take
    if switched:
        host.switch_take(placed.handle, result.take)
    placed.result = result
    placed.paths = result.frame_paths()
    return switched


class ApprovalCheck:
    """Ask the server which take of each placed shot is approved (worker thread) and switch the host to
    it (main thread, `pump` / `wait`). switched lists (request id, take) for every switch made."""

    def __init__(self, host: Any, placed: Sequence[PlacedShot], client_factory: Callable[[], Any]) -> None:
        from host_plugin.hosts.base import JobRunner

        self.host = host
        self.placed = [p for p in placed if p.result.takes]
        self.switched: List[Tuple[str, int]] = []
        self.error: Optional[BaseException] = None
        self._client_factory = client_factory
        self._runner = JobRunner(self._work, name="ttt-approvals")

    def start(self) -> ApprovalCheck:
        self._runner.start()
        return self

    def _work(self, context: Any) -> None:
        client = self._client_factory()
        try:
            for i, shot in enumerate(self.placed):
                job = client.get_job(shot.result.job_id)
                by = next((t.approved_by for t in job.takes if t.approved), "")
                context.deliver((i, job.approved_take, by), (i + 1) / len(self.placed))
        finally:
            client.close()

    @property
    def finished(self) -> bool:
        return self._runner.finished

    def pump(self) -> bool:
        """Main thread: apply what the worker learned; True while it runs."""
        for event in self._runner.poll():
            self._handle(event)
        return not self._runner.finished

    def start_forwarding(self, interval: float = 0.05) -> threading.Thread:
        """For hosts without a timer (Nuke): a thread hands every event to host.run_on_main_thread."""

        def forward() -> None:
            while True:
                for event in self._runner.poll():
                    self.host.run_on_main_thread(self._handle, event)
                if self._runner.finished:
                    return
                time.sleep(interval)

        thread = threading.Thread(target=forward, name="ttt-approvals-forward", daemon=True)
        thread.start()
        return thread

    def _handle(self, event: Any) -> None:
        """Main thread: switch a shot to its approved take, or report the check's failure."""
        from host_plugin.hosts.base import DONE, ERROR

        if event.result is not None and event.kind != DONE:
            index, approved, by = event.result
            shot = self.placed[index]
            if apply_approval(self.host, shot, approved, by):
                self.switched.append((shot.request.id, shot.result.take))
        elif event.kind == ERROR:
            self.error = event.error
            self.host.report_error(event.message)

    def wait(self, timeout: float = 60.0, interval: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while self.pump():
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)
        return True
