"""The plugin's client of the ttt-studio gRPC service (protos/ttt_studio/v1): one blocking class, Python 3.9+.

    client = TTTClient("gpu-box:50051", token="...", root_certificates="ca.pem")
    info = client.connect()                       # GetServerInfo; ServerMismatchError names what is missing
    job = client.submit([{"text": "..."}], shot_name="sh010", idempotency_key=key)
    for event in client.watch(job.job_id): ...    # resumes after a dropped connection from the last seq
    frames = client.fetch_frames(job.job_id, "/shots/sh010/gen")  # resumable, atomic files

Conform (issue 22): a shot is delivered in the edit's time, format and colour when submit gets a
host_plugin.core.delivery.Delivery; without one it is "native" (the model's frames, rate and size):

    submit(segments, *, ..., delivery: Optional[Delivery] = None, plate_colorspace: str = "") -> SubmitResult
    info.segments_for(duration: int, rate: RateLike) -> int     # storyboard segments a delivery needs
    info.segments_for(frames: int) -> int                       # native frames (no delivery)
    info.native_fps: Fraction; info.sizes: ((width, height), ...); info.size_multiple: int
    info.model_colourspace / info.default_colourspace: str; info.segment_seconds: int (3)
    result(job_id).rate: Fraction (the delivered rate); .conform: dict (the conform report)

Takes and elements (issue 25): submit(..., takes=N) asks for N takes (seeds seed, seed + 1, ...);
get_job(...).takes lists them (TakeState: seed, state, frames, approval) and .approved_take the approved
one; fetch_frames(..., take=i) fetches one take's frames; approve_take(job_id, i) approves take i for
every client of the user; result(job_id, take=None) is the approved take's (else take 0's).
submit(..., plate_mode="element", matte_upload_ids=..., matte_feather=...) generates inside mattes
uploaded with upload_plate (single-channel EXRs; none: the plates' alpha).

Every call sends `authorization: Bearer <token>`. Unary calls are retried on UNAVAILABLE /
DEADLINE_EXCEEDED; SubmitShot always carries an idempotency key (chosen here when the caller gives none)
so a retry after a lost response returns the same job instead of queueing a second one. Results are plain
dataclasses, never protobuf messages, so hosts and tests do not depend on the generated code. gRPC
failures become the ClientError family of host_plugin.core.errors, mapped in one place (_client_error).

Hosts call this only from worker threads: every method blocks on the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from host_plugin.core.delivery import SEGMENT_SECONDS, Delivery, RateLike
from host_plugin.core.delivery import segments_for as delivery_segments_for
from host_plugin.core.errors import (
    AuthenticationError,
    ClientError,
    ServerMismatchError,
    ServerUnavailableError,
)

try:
    import grpc

    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
    from protos.ttt_studio.v1 import ttt_studio_pb2_grpc as pb_grpc
except Exception as _exc:  # noqa: BLE001 - ImportError, protobuf VersionError, grpc's RuntimeError
    raise ImportError(
        f"the ttt-studio client cannot load grpc / protobuf / the generated protos here ({type(_exc).__name__}: "
        f"{_exc}); install the plugin's wheels for this Python with `ttt-studio install-plugin <host> "
        "--python-version X.Y`"
    ) from _exc

log = logging.getLogger(__name__)

API_VERSION = "ttt_studio.v1"
TOKEN_ENV = "TTT_STUDIO_TOKEN"
# what the plugin's flow relies on; connect() refuses a server that lacks one of them
REQUIRED_CAPABILITIES = ("storyboard", "idempotent_submit", "watch_resume", "fetch_resume")
DEFAULT_MESSAGE_BYTES = 64 << 20
MiB = 1 << 20
STATES = ("unspecified", "queued", "sampling", "decoding", "completed", "failed", "cancelled")
TERMINAL_STATES = ("completed", "failed", "cancelled")
PRIORITIES = ("preview", "final")
PLATE_MODES = ("", "restyle", "continue", "element")
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_MANIFEST = ".ttt_fetch_{job_id}.json"

PathOrBytes = Union[str, "os.PathLike[str]", bytes]


# ---------------------------------------------------------------------------------------- plain results


@dataclass(frozen=True)
class AdapterInfo:
    """One of the server's LoRA adapters this caller may use (ServerInfo.adapters)."""

    name: str
    sha256: str = ""
    kind: str = ""
    trigger: str = ""
    rank: int = 0
    owner: str = ""
    published: bool = False
    description: str = ""


@dataclass(frozen=True)
class ServerInfo:
    """What GetServerInfo said, as plain values.

    fps / native_fps: the model's native rate (it generates at that rate; a delivery is retimed from it).
    frames_per_segment: native frames of every segment after the first; first_segment_frames: native
    frames of segment 0 (= frames of a one-segment native job; 0 given: derived, see __post_init__).
    sizes: the (width, height) the model generates at, preferred first; size_multiple, min_side,
    max_side: other sizes it accepts (0: none). model_colourspace: the model's own colour space;
    default_colourspace: what a delivery without a colour space is delivered in.
    """

    address: str
    server_version: str
    api_version: str
    model: Dict[str, str]
    capabilities: Tuple[str, ...]
    limits: Dict[str, int]
    fps: float
    frames_per_segment: int
    caller: str
    colour_interop_id: str = ""
    defaults: Dict[str, Any] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)
    first_segment_frames: int = 0
    native_fps: Optional[Fraction] = None
    sizes: Tuple[Tuple[int, int], ...] = ()
    size_multiple: int = 0
    min_side: int = 0
    max_side: int = 0
    model_colourspace: str = ""
    default_colourspace: str = ""
    segment_seconds: int = SEGMENT_SECONDS
    delivery_rates: Tuple[Fraction, ...] = ()
    adapters: Tuple[AdapterInfo, ...] = ()

    def __post_init__(self) -> None:
        # older servers do not send these: derive them as those servers behaved
        if not self.first_segment_frames:
            # the model's value when reported, else the causal-VAE layout (first frame alone, then
            # frames_per_segment) that every ttt-studio model has (paper: 49 = 1 + 48)
            raw = self.model.get("first_segment_frames")
            derived = int(raw) if raw not in (None, "") else 1 + self.frames_per_segment
            object.__setattr__(self, "first_segment_frames", derived)
        if self.native_fps is None and self.fps > 0:
            object.__setattr__(self, "native_fps", Fraction(self.fps).limit_denominator(1001))
        if not self.default_colourspace:
            object.__setattr__(self, "default_colourspace", self.colour_interop_id)

    def num_frames(self, segments: int) -> int:
        """Native frames a storyboard of `segments` segments makes on this server (no delivery)."""
        if segments < 1:
            raise ValueError(f"segments must be >= 1, got {segments}")
        return self.first_segment_frames + (segments - 1) * self.frames_per_segment

    def segments_for(self, duration: int, rate: Optional[RateLike] = None) -> int:
        """Storyboard segments a shot needs.

        With `rate` (a delivery): ceil(duration / (segment_seconds x rate)), as the server checks it
        (host_plugin.core.delivery.segments_for). Without: the fewest segments whose native video has at
        least `duration` frames (a request without a delivery).
        """
        if rate is not None:
            return delivery_segments_for(duration, rate)
        if duration < 1:
            raise ValueError(f"frames must be >= 1, got {duration}")
        if duration <= self.first_segment_frames:
            return 1
        per = max(1, self.frames_per_segment)
        return 1 + -(-(duration - self.first_segment_frames) // per)  # ceil division

    def supports_delivery(self) -> bool:
        """True when the server conforms to a Delivery (older servers only generate natively)."""
        return "delivery" in self.capabilities

    @property
    def model_name(self) -> str:
        return self.model.get("name") or self.model.get("source") or ""


@dataclass(frozen=True)
class TakeState:
    """One take of a job as the server reports it (Job.takes): index 0-based, its seed, its state and
    frames, and the director's approval (who; when as an RFC 3339 string, "" when not approved)."""

    index: int
    seed: int
    state: str
    frames_ready: int = 0
    total_frames: int = 0
    approved: bool = False
    approved_by: str = ""
    approved_at: str = ""
    draft_frames_ready: int = 0
    draft_complete: bool = False

    @property
    def draft_stored(self) -> bool:
        """Every frame of the take's draft is stored (fetchable). The server announces the draft's last
        frame (FramesReady) a moment before it marks the draft complete, so a client acting on that event
        asks for the frames, not the flag."""
        return self.draft_complete or 0 < self.total_frames <= self.draft_frames_ready


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str
    message: str = ""
    total_frames: int = 0
    frames_ready: int = 0
    queue_position: int = 0
    cancel_requested: bool = False
    shot_name: str = ""
    start_frame: int = 1001
    request_id: str = ""
    record_start: Optional[int] = None
    seed: Optional[int] = None
    segments: int = 0
    plate_upload_ids: Tuple[str, ...] = ()
    delivery: Optional[Delivery] = None
    native_frames: int = 0
    generation_size: Tuple[int, int] = (0, 0)  # (width, height) the model generates at
    takes: Tuple[TakeState, ...] = ()  # one per take (parameters.takes); empty from older servers
    approved_take: Optional[int] = None
    plate_mode: str = ""
    matte_upload_ids: Tuple[str, ...] = ()
    adapters: Tuple[Tuple[str, float, str], ...] = ()  # (name, scale, sha256 of the file) the job applies

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class SubmitResult:
    job: JobInfo
    deduplicated: bool
    idempotency_key: str

    @property
    def job_id(self) -> str:
        return self.job.job_id


@dataclass(frozen=True)
class JobUpdate:
    """One WatchJob event. kind: "state" | "progress" | "preview" | "frames"; unused fields stay 0/""."""

    job_id: str
    seq: int
    kind: str
    state: str = ""
    message: str = ""
    queue_position: int = 0
    step: int = 0
    total: int = 0
    eta_s: float = -1.0
    ready: int = 0
    segment: int = 0
    preview: bytes = b""
    preview_format: str = ""
    preview_size: Tuple[int, int] = (0, 0)
    take: int = 0
    draft: bool = False


@dataclass(frozen=True)
class UploadInfo:
    upload_id: str
    bytes: int
    width: int
    height: int
    channels: Tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class FrameFile:
    """A fetched frame: index (0-based in the shot), its frame number, local path and sha256."""

    index: int
    number: int
    path: str
    sha256: str


@dataclass(frozen=True)
class ResultInfo:
    job_id: str
    otio_json: str
    frames: Tuple[Tuple[int, int, str, str], ...]  # (index, number, filename, sha256)
    fps: float
    width: int
    height: int
    colour_interop_id: str
    rate: Optional[Fraction] = None  # the delivered rate exactly (fps as a fraction)
    pixel_aspect: float = 1.0
    conform: Dict[str, Any] = field(default_factory=dict)  # the conform report (empty from older servers)
    take: int = 0  # the take this result is (its OTIO clip lists the others)


# ---------------------------------------------------------------------------------------- checks


def check_server_info(
    info: ServerInfo,
    required_capabilities: Sequence[str] = REQUIRED_CAPABILITIES,
    model: Optional[str] = None,
    api_version: str = API_VERSION,
) -> ServerInfo:
    """Raise ServerMismatchError when the server cannot do what the plugin needs; else return info."""
    where = f"server {info.address} (ttt-studio {info.server_version or '?'})"
    if info.api_version != api_version:
        raise ServerMismatchError(
            f"{where} speaks API {info.api_version or '(none)'!r}; this plugin speaks {api_version!r}. "
            "Install the plugin that matches the server (ttt-studio install-plugin) or upgrade the server.",
            code="API_VERSION",
        )
    missing = [c for c in required_capabilities if c not in info.capabilities]
    if missing:
        raise ServerMismatchError(
            f"{where} lacks capabilities {missing}; it offers {sorted(info.capabilities)}. "
            "Upgrade the server or turn off the plugin feature that needs them.",
            code="CAPABILITY",
        )
    if model is not None and model not in (info.model.get("name"), info.model.get("source")):
        raise ServerMismatchError(
            f"{where} runs model {info.model_name!r}, not {model!r}; start the server with that model "
            "(--model PATH) or pick the model it runs",
            code="MODEL",
        )
    if info.frames_per_segment < 1 or info.fps <= 0:
        raise ServerMismatchError(
            f"{where} reports frames_per_segment={info.frames_per_segment} and fps={info.fps}; "
            "expected positive values (is its model loaded?)",
            code="MODEL",
        )
    return info


def _client_error(exc: Exception, what: str, address: str) -> ClientError:
    """The one place where a grpc.RpcError becomes a ClientError subclass."""
    code_fn = getattr(exc, "code", None)
    code = code_fn().name if callable(code_fn) and code_fn() is not None else "UNKNOWN"
    details_fn = getattr(exc, "details", None)
    details = (details_fn() if callable(details_fn) else None) or str(exc)
    message = f"{what} on {address}: {code}: {details}"
    if code == "UNAUTHENTICATED":
        return AuthenticationError(
            message + " (check the token; its administrator issues them with `ttt-studio token add USER`)",
            code,
        )
    if code in _RETRYABLE:
        return ServerUnavailableError(message + " (is the server running and reachable?)", code)
    return ClientError(message, code)


def _code(exc: Exception) -> str:
    code_fn = getattr(exc, "code", None)
    code = code_fn() if callable(code_fn) else None
    return code.name if code is not None else "UNKNOWN"


def _state(value: int) -> str:
    return STATES[value] if 0 <= value < len(STATES) else f"state_{value}"


def delivery_message(delivery: Delivery) -> Any:
    """The wire form of a Delivery (ttt_studio.v1.Delivery)."""
    if not isinstance(delivery, Delivery):
        raise ValueError(
            f"delivery must be a host_plugin.core.delivery.Delivery, got {type(delivery).__name__}"
        )
    return pb.Delivery(
        rate_num=delivery.rate.numerator,
        rate_den=delivery.rate.denominator,
        duration=delivery.duration,
        width=delivery.width or 0,
        height=delivery.height or 0,
        pixel_aspect=float(delivery.pixel_aspect),
        fit=delivery.fit,
        filter=delivery.filter,
        retime=delivery.retime,
        colorspace=delivery.colorspace,
    )


def delivery_from_message(msg: Any) -> Optional[Delivery]:
    """A wire Delivery as a Delivery (None when the message has no duration: native)."""
    if not msg.duration:
        return None
    return Delivery(
        rate=Fraction(msg.rate_num, msg.rate_den or 1),
        duration=int(msg.duration),
        width=int(msg.width) or None,
        height=int(msg.height) or None,
        pixel_aspect=float(msg.pixel_aspect) or 1.0,
        fit=msg.fit or "fit",
        filter=msg.filter or "lanczos",
        retime=msg.retime or "flow",
        colorspace=msg.colorspace,
    )


def _job(msg: Any) -> JobInfo:
    ctx = msg.context
    return JobInfo(
        job_id=msg.job_id,
        state=_state(msg.state),
        message=msg.message,
        total_frames=msg.total_frames,
        frames_ready=msg.frames_ready,
        queue_position=msg.queue_position,
        cancel_requested=msg.cancel_requested,
        shot_name=ctx.shot_name,
        start_frame=ctx.start_frame if ctx.HasField("start_frame") else 1001,
        request_id=ctx.request_id,
        record_start=ctx.record_start if ctx.HasField("record_start") else None,
        seed=msg.parameters.seed if msg.parameters.HasField("seed") else None,
        segments=len(msg.storyboard.segments),
        plate_upload_ids=tuple(msg.plate_upload_ids),
        delivery=delivery_from_message(msg.delivery) if msg.HasField("delivery") else None,
        native_frames=msg.native_frames,
        generation_size=(msg.generation_width, msg.generation_height),
        adapters=tuple((a.name, a.scale, a.sha256) for a in msg.adapters),
        takes=tuple(_take(t) for t in msg.takes),
        approved_take=msg.approved_take if msg.HasField("approved_take") else None,
        plate_mode=msg.parameters.plate_mode,
        matte_upload_ids=tuple(msg.matte_upload_ids),
    )


def _take(msg: Any) -> TakeState:
    return TakeState(
        index=msg.index,
        seed=msg.seed,
        state=_state(msg.state),
        frames_ready=msg.frames_ready,
        total_frames=msg.total_frames,
        approved=msg.approved,
        approved_by=msg.approved_by,
        approved_at=msg.approved_at.ToJsonString() if msg.HasField("approved_at") else "",
        draft_frames_ready=msg.draft_frames_ready,
        draft_complete=msg.draft_complete,
    )


def _update(msg: Any) -> JobUpdate:
    kind = msg.WhichOneof("kind") or ""
    common = {"job_id": msg.job_id, "seq": msg.seq, "kind": kind}
    if kind == "state":
        s = msg.state
        return JobUpdate(state=_state(s.state), message=s.message, queue_position=s.queue_position, **common)
    if kind == "progress":
        p = msg.progress
        return JobUpdate(step=p.step, total=p.total, eta_s=p.eta_s, take=p.take, draft=p.draft, **common)
    if kind == "preview":
        v = msg.preview
        return JobUpdate(
            step=v.step,
            preview=v.data,
            preview_format=v.format,
            preview_size=(v.width, v.height),
            take=v.take,
            draft=v.draft,
            **common,
        )
    if kind == "frames":
        f = msg.frames
        return JobUpdate(
            ready=f.ready, total=f.total, segment=f.segment, take=f.take, draft=f.draft, **common
        )
    return JobUpdate(**common)


# ---------------------------------------------------------------------------------------- the client


class TTTClient:
    """Blocking client of one server.

    token: bearer token (default: env TTT_STUDIO_TOKEN; None only for a loopback server run with
    --insecure-no-auth). root_certificates: PEM bytes or a path to the CA that signed the server's
    certificate (turns TLS on); tls=True with no root certificates uses the system roots.
    interceptors: grpc client interceptors (logging, tests).
    """

    def __init__(
        self,
        address: str,
        token: Optional[str] = None,
        root_certificates: Union[None, bytes, str, os.PathLike[str]] = None,
        tls: bool = False,
        timeout_s: float = 60.0,
        retries: int = 4,
        retry_delay_s: float = 0.2,
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
        interceptors: Sequence[Any] = (),
    ) -> None:
        if not isinstance(address, str) or ":" not in address or address.rsplit(":", 1)[1] == "":
            raise ValueError(f"server address must be 'host:port', got {address!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.address = address
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        if token is not None and (not token.strip() or any(c.isspace() for c in token.strip())):
            raise ValueError(f"token must be a non-empty string without spaces, got {len(token)} characters")
        self.token = token.strip() if token else None
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.retry_delay_s = float(retry_delay_s)
        self.reconnects: List[Tuple[str, str, int]] = []  # (call, job id, resumed from seq / frame index)
        self._info: Optional[ServerInfo] = None
        self._closed = threading.Event()
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            # reconnect soon after a drop: watch / fetch resume right away instead of after grpc's 1 s+ backoff
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        pem = _read_pem(root_certificates)
        if tls or pem is not None:
            channel = grpc.secure_channel(
                address, grpc.ssl_channel_credentials(root_certificates=pem), options
            )
        else:
            channel = grpc.insecure_channel(address, options=options)
        self._raw_channel = channel
        if interceptors:
            channel = grpc.intercept_channel(channel, *interceptors)
        self._stub = pb_grpc.TTTStudioStub(channel)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        """Close the channel; watch() / fetch_frames() running in other threads end with ClientError."""
        self._closed.set()
        self._raw_channel.close()

    def __enter__(self) -> TTTClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def metadata(self) -> List[Tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _pause(self, attempt: int) -> None:
        time.sleep(min(2.0, self.retry_delay_s * (2**attempt)))

    def _unary(self, what: str, method: Callable[..., Any], request: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return method(request, metadata=self.metadata, timeout=self.timeout_s)
            except grpc.RpcError as exc:
                if _code(exc) not in _RETRYABLE or attempt == self.retries or self._closed.is_set():
                    raise _client_error(exc, what, self.address) from None
                log.info(
                    "%s on %s: %s; retry %d/%d", what, self.address, _code(exc), attempt + 1, self.retries
                )
                self._pause(attempt)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ connect

    def server_info(self) -> ServerInfo:
        """GetServerInfo as plain values (no checks)."""
        msg = self._unary("GetServerInfo", self._stub.GetServerInfo, pb.GetServerInfoRequest())
        d = msg.defaults
        defaults: Dict[str, Any] = {
            "height": d.height,
            "width": d.width,
            "steps": d.steps,
            "sampler": d.sampler,
            "dtype": d.dtype,
            "preview_every": d.preview_every,
        }
        if d.HasField("guidance_scale"):
            defaults["guidance_scale"] = d.guidance_scale
        lim = msg.limits
        # every limit the server reports (sizes, counts, input bounds), by its ServerInfo.limits name
        limits = {field.name: getattr(lim, field.name) for field in lim.DESCRIPTOR.fields}
        limits = {k: v if isinstance(v, float) else int(v) for k, v in limits.items()}
        return ServerInfo(
            address=self.address,
            server_version=msg.server_version,
            api_version=msg.api_version,
            model=dict(msg.model),
            capabilities=tuple(msg.capabilities),
            limits=limits,
            fps=msg.fps,
            frames_per_segment=msg.frames_per_segment,
            caller=msg.caller,
            colour_interop_id=msg.colour_interop_id,
            defaults=defaults,
            versions=dict(msg.versions),
            first_segment_frames=msg.first_segment_frames,
            native_fps=Fraction(msg.native_fps_num, msg.native_fps_den or 1) if msg.native_fps_num else None,
            sizes=tuple((s.width, s.height) for s in msg.sizes),
            size_multiple=msg.size_constraints.multiple_of,
            min_side=msg.size_constraints.min_side,
            max_side=msg.size_constraints.max_side,
            model_colourspace=msg.model_colorspace,
            default_colourspace=msg.default_colorspace,
            segment_seconds=msg.segment_seconds or SEGMENT_SECONDS,
            delivery_rates=tuple(Fraction(r) for r in msg.delivery_rates),
            adapters=tuple(
                AdapterInfo(
                    name=a.name,
                    sha256=a.sha256,
                    kind=a.kind,
                    trigger=a.trigger,
                    rank=a.rank,
                    owner=a.owner,
                    published=a.published,
                    description=a.description,
                )
                for a in msg.adapters
            ),
        )

    def connect(
        self,
        required_capabilities: Sequence[str] = REQUIRED_CAPABILITIES,
        model: Optional[str] = None,
        api_version: str = API_VERSION,
    ) -> ServerInfo:
        """Ask the server what it runs and check it can serve the plugin (ServerMismatchError if not)."""
        info = check_server_info(self.server_info(), required_capabilities, model, api_version)
        self._info = info
        log.info(
            "connected to %s as %s: %s, %s fps, %d frames/segment",
            self.address,
            info.caller,
            info.model_name,
            info.fps,
            info.frames_per_segment,
        )
        return info

    @property
    def info(self) -> ServerInfo:
        """The ServerInfo of the last connect() (connects when there was none)."""
        return self._info if self._info is not None else self.connect()

    # ------------------------------------------------------------------ jobs

    def submit(
        self,
        segments: Iterable[Dict[str, Any]],
        *,
        height: int = 0,
        width: int = 0,
        steps: int = 0,
        guidance_scale: Optional[float] = None,
        seed: Optional[int] = None,
        sampler: str = "",
        dtype: str = "",
        preview_every: int = 0,
        strength: Optional[float] = None,
        plate_mode: str = "",
        priority: str = "final",
        shot_name: str = "",
        start_frame: Optional[int] = None,
        request_id: str = "",
        record_start: Optional[int] = None,
        otio_json: str = "",
        plate_upload_ids: Sequence[str] = (),
        idempotency_key: Optional[str] = None,
        delivery: Optional[Delivery] = None,
        plate_colorspace: str = "",
        takes: int = 0,
        adapters: Sequence[Tuple[str, float]] = (),
        matte_upload_ids: Sequence[str] = (),
        matte_feather: Optional[float] = None,
        draft_steps: int = 0,
    ) -> SubmitResult:
        """Queue a shot. Unset values take the server's defaults. The idempotency key (a new uuid when not
        given) travels with every retry, so a response lost to a dropped connection never makes two jobs.

        delivery: what the frames must become (host_plugin.core.delivery.Delivery: rate, duration,
        format, fit, filter, retime, colour space); the storyboard then needs
        info.segments_for(delivery.duration, delivery.rate) segments. None: native frames (the model's
        rate, size and frame count; height / width pick the generation size).
        plate_upload_ids are in frame order (an id may repeat: a held frame). plate_mode "restyle": one
        plate per output frame (with a delivery: per delivered frame, any size, conformed in by the
        server), strength in (0, 1] required; "continue": the first frames (without a delivery 1 + 4k
        plates), strength unset; "element": one plate per output frame as restyle, generated only inside
        a matte (matte_upload_ids: single-channel EXRs uploaded with upload_plate, one per plate; none:
        each plate's alpha), returned RGBA with the matte as alpha; matte_feather: its soft edge in
        output pixels (None: the server's). plate_colorspace overrides the plates' own colorInteropID /
        chromaticities. takes: how many takes (seeds seed, seed + 1, ...; 0: one). draft_steps: the steps
        of the draft a priority "preview" job makes of the whole shot before its final (0: the server's
        default; the server makes none when it would not be fewer steps than the final's)."""
        if plate_mode not in PLATE_MODES:
            raise ValueError(f"plate_mode must be one of {PLATE_MODES[1:]}, got {plate_mode!r}")
        if isinstance(takes, bool) or not isinstance(takes, int) or takes < 0:
            raise ValueError(f"takes must be an int >= 0 (0: one take), got {takes!r}")
        if isinstance(draft_steps, bool) or not isinstance(draft_steps, int) or draft_steps < 0:
            raise ValueError(
                f"draft_steps must be an int >= 0 (0: the server's default), got {draft_steps!r}"
            )
        if draft_steps and priority != "preview":
            raise ValueError(f"draft_steps is for priority 'preview' (a draft first), not {priority!r}")
        if (matte_upload_ids or matte_feather is not None) and plate_mode != "element":
            raise ValueError(f"mattes belong to plate_mode 'element', not {plate_mode or 'no plates'!r}")
        if matte_feather is not None and not float(matte_feather) >= 0.0:
            raise ValueError(f"matte_feather must be >= 0 output pixels, got {matte_feather!r}")
        if strength is not None and not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength!r}")
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        segs = [dict(s) for s in segments]
        if not segs:
            raise ValueError("a shot needs at least one storyboard segment, got none")
        for i, s in enumerate(segs):
            if not isinstance(s.get("text"), str) or not s["text"].strip():
                raise ValueError(f"segment {i}: 'text' must be a non-empty string, got {s.get('text')!r}")
        key = idempotency_key or uuid.uuid4().hex
        params = pb.GenerationParameters(
            height=height,
            width=width,
            steps=steps,
            sampler=sampler,
            dtype=dtype,
            preview_every=preview_every,
            takes=takes,
            draft_steps=draft_steps,
        )
        if guidance_scale is not None:
            params.guidance_scale = float(guidance_scale)
        if seed is not None:
            params.seed = int(seed)
        if strength is not None:
            params.strength = float(strength)
        if plate_mode:
            params.plate_mode = plate_mode
        if matte_feather is not None:
            params.matte_feather = float(matte_feather)
        context = pb.ShotContext(shot_name=shot_name, otio_json=otio_json, request_id=request_id)
        if start_frame is not None:
            context.start_frame = int(start_frame)
        if record_start is not None:
            context.record_start = int(record_start)
        request = pb.SubmitShotRequest(
            storyboard=pb.Storyboard(
                segments=[
                    pb.Segment(
                        text=s["text"],
                        neg_text=s.get("neg_text", "") or "",
                        requires_scene_transition=bool(s.get("requires_scene_transition", False)),
                    )
                    for s in segs
                ]
            ),
            parameters=params,
            priority=pb.PRIORITY_PREVIEW if priority == "preview" else pb.PRIORITY_FINAL,
            idempotency_key=key,
            context=context,
            plate_upload_ids=list(plate_upload_ids),
            plate_colorspace=plate_colorspace,
            adapters=[pb.AdapterRef(name=name, scale=float(scale)) for name, scale in adapters],
            matte_upload_ids=list(matte_upload_ids),
        )
        if delivery is not None:
            request.delivery.CopyFrom(delivery_message(delivery))
        response = self._unary("SubmitShot", self._stub.SubmitShot, request)
        return SubmitResult(job=_job(response.job), deduplicated=response.deduplicated, idempotency_key=key)

    def upload_plate(
        self, source: PathOrBytes, display_name: str = "", chunk_bytes: Optional[int] = None
    ) -> UploadInfo:
        """Send one EXR plate (a file or its bytes) as numbered chunks, in order; returns its upload id.

        The stream is not resumable (the server discards a broken upload), so a dropped connection
        re-sends the whole plate, up to `retries` times.
        """
        if isinstance(source, (bytes, bytearray)):
            data, name = bytes(source), display_name or "plate.exr"
        else:
            path = os.fspath(source)
            if not os.path.isfile(path):
                raise ValueError(f"plate {path!r} does not exist or is not a file")
            with open(path, "rb") as handle:
                data = handle.read()
            name = display_name or os.path.basename(path)
        if not data:
            raise ValueError(f"plate {name!r} is empty")
        limit = (self._info.limits.get("max_message_bytes") if self._info else 0) or 4 * MiB
        size = chunk_bytes or min(MiB, max(1024, limit - 64 * 1024))
        if size < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {size}")
        digest = hashlib.sha256(data).hexdigest()

        def chunks() -> Iterator[Any]:
            header = pb.PlateHeader(display_name=name[:200], total_bytes=len(data), sha256=digest)
            for seq, offset in enumerate(range(0, len(data), size)):
                chunk = pb.UploadPlateChunk(sequence=seq, data=data[offset : offset + size])
                if seq == 0:
                    chunk.header.CopyFrom(header)
                yield chunk

        for attempt in range(self.retries + 1):
            try:
                msg = self._stub.UploadPlate(chunks(), metadata=self.metadata, timeout=self.timeout_s)
                break
            except grpc.RpcError as exc:
                if _code(exc) not in _RETRYABLE or attempt == self.retries or self._closed.is_set():
                    raise _client_error(exc, f"UploadPlate {name!r}", self.address) from None
                self._pause(attempt)
        if msg.sha256 and msg.sha256 != digest:
            raise ClientError(f"plate {name!r}: the server stored sha256 {msg.sha256}, we sent {digest}")
        return UploadInfo(
            upload_id=msg.upload_id,
            bytes=msg.bytes,
            width=msg.width,
            height=msg.height,
            channels=tuple(msg.channels),
            sha256=msg.sha256,
        )

    def watch(self, job_id: str, after_seq: int = 0) -> Iterator[JobUpdate]:
        """The job's events after `after_seq` until the job ends. A dropped stream is reopened from the
        last seq seen (no event twice, none lost), up to `retries` consecutive failures."""
        last = int(after_seq)
        failures = 0
        while True:
            call = self._stub.WatchJob(
                pb.WatchJobRequest(job_id=job_id, after_seq=last), metadata=self.metadata
            )
            try:
                for msg in call:
                    if msg.seq <= last:
                        continue  # a server replaying an event we have: never hand it out twice
                    last = msg.seq
                    failures = 0
                    yield _update(msg)
                return
            except grpc.RpcError as exc:
                if _code(exc) not in _RETRYABLE or failures >= self.retries or self._closed.is_set():
                    raise _client_error(exc, f"WatchJob {job_id}", self.address) from None
                failures += 1
                self.reconnects.append(("WatchJob", job_id, last))
                log.info("watch of %s dropped (%s); resuming after event %d", job_id, _code(exc), last)
                self._pause(failures - 1)
            finally:
                call.cancel()  # the caller may stop iterating early: end the stream on the server too

    def fetch_frames(
        self,
        job_id: str,
        dest_dir: Union[str, os.PathLike[str]],
        start_frame: Optional[int] = None,
        follow: bool = False,
        on_frame: Optional[Callable[[FrameFile, int], None]] = None,
        chunk_bytes: int = 0,
        take: int = 0,
        draft: bool = False,
    ) -> List[FrameFile]:
        """Write the job's frames into dest_dir under the server's file names; returns every frame held.

        Each frame goes to a hidden .part file, is checked against the server's sha256 and renamed into
        place, so a reader never sees half a frame. A manifest (.ttt_fetch_<job>.json) records finished
        frames: start_frame=None resumes after the last frame already on disk (a fetch cut short by a
        crash or a closed host picks up there), and a dropped stream resumes from the next frame index.
        on_frame(frame, total_frames) is called after each frame lands. take: which take's frames
        (0-based); each take keeps a manifest of its own. draft: the take's draft frames (a preview job's
        fewer-step run of the whole shot) instead of its final ones; they keep a manifest of their own.
        """
        if isinstance(take, bool) or not isinstance(take, int) or take < 0:
            raise ValueError(f"take must be an int >= 0, got {take!r}")
        dest = os.fspath(dest_dir)
        os.makedirs(dest, exist_ok=True)
        manifest = _MANIFEST.format(job_id=_safe_id(job_id))
        if take:
            manifest = manifest.replace(".json", f".take{take}.json")
        if draft:
            manifest = manifest.replace(".json", ".draft.json")
        manifest_path = os.path.join(dest, manifest)
        held = _read_manifest(manifest_path, dest)
        next_index = _first_missing(held) if start_frame is None else int(start_frame)
        if next_index < 0:
            raise ValueError(f"start_frame must be >= 0, got {start_frame}")
        failures = 0
        while True:
            try:
                self._fetch_stream(
                    job_id, dest, next_index, follow, chunk_bytes, held, manifest_path, on_frame, take, draft
                )
                break
            except grpc.RpcError as exc:
                next_index = _first_missing(held, start=next_index)
                if _code(exc) not in _RETRYABLE or failures >= self.retries or self._closed.is_set():
                    raise _client_error(exc, f"FetchFrames {job_id}", self.address) from None
                failures += 1
                self.reconnects.append(("FetchFrames", job_id, next_index))
                log.info("fetch of %s dropped (%s); resuming at frame %d", job_id, _code(exc), next_index)
                self._pause(failures - 1)
        return [held[i] for i in sorted(held)]

    def _fetch_stream(
        self,
        job_id: str,
        dest: str,
        start: int,
        follow: bool,
        chunk_bytes: int,
        held: Dict[int, FrameFile],
        manifest_path: str,
        on_frame: Optional[Callable[[FrameFile, int], None]],
        take: int = 0,
        draft: bool = False,
    ) -> None:
        request = pb.FetchFramesRequest(
            job_id=job_id, start_frame=start, follow=follow, chunk_bytes=chunk_bytes, take=take, draft=draft
        )
        handle = None
        digest = None
        part = ""
        try:
            for chunk in self._stub.FetchFrames(request, metadata=self.metadata):
                name = chunk.filename
                if not _SAFE_NAME.match(name):
                    raise ClientError(f"FetchFrames {job_id}: the server sent an unsafe frame name {name!r}")
                if chunk.take != take:
                    raise ClientError(
                        f"FetchFrames {job_id}: asked for take {take}, the server sent take {chunk.take}'s "
                        f"frame {name}"
                    )
                if chunk.draft != draft:
                    want, got = ("draft", "final") if draft else ("final", "draft")
                    raise ClientError(
                        f"FetchFrames {job_id}: asked for {want} frames, the server sent {got} frame {name}"
                    )
                if chunk.offset == 0:
                    if handle is not None:
                        handle.close()
                    fd, part = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
                    handle = os.fdopen(fd, "wb")
                    digest = hashlib.sha256()
                if handle is None or digest is None:
                    raise ClientError(
                        f"FetchFrames {job_id}: frame {chunk.frame_index} chunk at offset {chunk.offset} "
                        "came without its start"
                    )
                handle.write(chunk.data)
                digest.update(chunk.data)
                if not chunk.last:
                    continue
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                handle = None
                sha = digest.hexdigest()
                if chunk.sha256 and sha != chunk.sha256:
                    os.unlink(part)
                    raise ClientError(
                        f"FetchFrames {job_id}: frame {name} arrived damaged (sha256 {sha}, server says "
                        f"{chunk.sha256})"
                    )
                final = os.path.join(dest, name)
                os.replace(part, final)
                frame = FrameFile(index=chunk.frame_index, number=chunk.frame_number, path=final, sha256=sha)
                held[frame.index] = frame
                _write_manifest(manifest_path, job_id, held)
                if on_frame is not None:
                    on_frame(frame, chunk.total_frames)
        finally:
            if handle is not None:
                handle.close()
                try:
                    os.unlink(part)
                except OSError:
                    pass

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel one of the caller's jobs: at once when queued, at the next step when running."""
        return _job(
            self._unary(f"CancelJob {job_id}", self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id))
        )

    def get_job(self, job_id: str) -> JobInfo:
        return _job(self._unary(f"GetJob {job_id}", self._stub.GetJob, pb.GetJobRequest(job_id=job_id)))

    def list_jobs(self, states: Sequence[str] = (), limit: int = 0) -> List[JobInfo]:
        """The caller's jobs, newest first, every page (at most `limit` when > 0); states by name."""
        bad = [s for s in states if s not in STATES[1:]]
        if bad:
            raise ValueError(f"unknown job states {bad}; expected some of {STATES[1:]}")
        wanted = [STATES.index(s) for s in states]
        jobs: List[JobInfo] = []
        token = ""
        while True:
            page = self._unary(
                "ListJobs",
                self._stub.ListJobs,
                # a page is at most the server's max_list_page (1000 by default); more come page by page
                pb.ListJobsRequest(states=wanted, limit=min(limit or 100, 1000), page_token=token),
            )
            jobs.extend(_job(j) for j in page.jobs)
            token = page.next_page_token
            if not token or (limit and len(jobs) >= limit):
                return jobs[: limit or None]

    def approve_take(self, job_id: str, take: int) -> JobInfo:
        """Mark take `take` (0-based) of one of the caller's jobs approved; replaces an earlier approval."""
        if isinstance(take, bool) or not isinstance(take, int) or take < 0:
            raise ValueError(f"take must be an int >= 0, got {take!r}")
        request = pb.ApproveTakeRequest(job_id=job_id, take=take)
        return _job(self._unary(f"ApproveTake {job_id} take {take}", self._stub.ApproveTake, request))

    def result(self, job_id: str, take: Optional[int] = None) -> ResultInfo:
        """The completed job's result: of take `take` (0-based); None: the approved take, else take 0."""
        request = pb.GetJobResultRequest(job_id=job_id)
        if take is not None:
            request.take = int(take)
        msg = self._unary(f"GetJobResult {job_id}", self._stub.GetJobResult, request)
        return ResultInfo(
            job_id=msg.job_id,
            otio_json=msg.otio_json,
            frames=tuple((f.frame_index, f.frame_number, f.filename, f.sha256) for f in msg.frames),
            fps=msg.fps,
            width=msg.width,
            height=msg.height,
            colour_interop_id=msg.colour_interop_id,
            rate=Fraction(msg.rate_num, msg.rate_den or 1) if msg.rate_num else None,
            pixel_aspect=msg.pixel_aspect or 1.0,
            conform=json.loads(msg.conform_json) if msg.conform_json else {},
            take=msg.take,
        )


# ---------------------------------------------------------------------------------------- helpers


def _read_pem(value: Union[None, bytes, str, os.PathLike[str]]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    path = os.fspath(value)
    if not os.path.isfile(path):
        raise ValueError(
            f"root certificate file {path!r} does not exist; expected a PEM file of the server's CA"
        )
    with open(path, "rb") as handle:
        data = handle.read()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"root certificate file {path!r} is not PEM (no BEGIN CERTIFICATE line)")
    return data


def _safe_id(job_id: str) -> str:
    if not re.match(r"^[A-Za-z0-9_-]{1,128}$", job_id or ""):
        raise ValueError(f"job id {job_id!r} is not a server job id (letters, digits, '_' and '-')")
    return job_id


def _read_manifest(path: str, dest: str) -> Dict[int, FrameFile]:
    """Frames a previous fetch finished, kept only while the file is still there with its size."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        frames = {}
        for entry in data.get("frames", []):
            full = os.path.join(dest, entry["filename"])
            if (
                _SAFE_NAME.match(entry["filename"])
                and os.path.isfile(full)
                and os.path.getsize(full) == entry["bytes"]
            ):
                frames[int(entry["index"])] = FrameFile(
                    int(entry["index"]), int(entry["number"]), full, entry["sha256"]
                )
        return frames
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("fetch manifest %s is unreadable (%s); fetching every frame again", path, exc)
        return {}


def _write_manifest(path: str, job_id: str, held: Dict[int, FrameFile]) -> None:
    data = {
        "job_id": job_id,
        "frames": [
            {
                "index": f.index,
                "number": f.number,
                "filename": os.path.basename(f.path),
                "bytes": os.path.getsize(f.path),
                "sha256": f.sha256,
            }
            for _, f in sorted(held.items())
        ],
    }
    fd, tmp = tempfile.mkstemp(prefix=".ttt_manifest.", suffix=".tmp", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _first_missing(held: Dict[int, FrameFile], start: int = 0) -> int:
    index = start
    while index in held:
        index += 1
    return index
