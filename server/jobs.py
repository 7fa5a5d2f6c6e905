"""Domain types of the job system (no grpc, no SQL): states, priorities, specs, records, events."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
UPLOAD_ID = re.compile(r"^u[0-9a-f]{32}$")
SHOT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_START_FRAME = 1001


class JobState(enum.StrEnum):
    QUEUED = "queued"
    SAMPLING = "sampling"
    DECODING = "decoding"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def running(self) -> bool:
        return self in (JobState.SAMPLING, JobState.DECODING)


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class Priority(enum.IntEnum):
    """Lower runs first: on-set previews ahead of finals."""

    PREVIEW = 0
    FINAL = 1


class EventKind(enum.StrEnum):
    STATE = "state"
    PROGRESS = "progress"
    PREVIEW = "preview"
    FRAMES = "frames"


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run a job, validated at submit; stored as JSON in the jobs table.

    storyboard: the format-3 list. params: GenerationParams fields, fully resolved (seed chosen; height
    and width are the generation size). delivery: the resolved delivery (Delivery.as_metadata() form)
    or None for a native job; total_frames: frames delivered (= delivery duration, or native_frames for
    a native job); native_frames: frames the model generates. output_colorspace: what the delivered
    frames are in (interop id); plate_colorspace: the plates' space ("" without plates). adapters: the
    LoRA adapters applied, {"name", "scale", "sha256"} each (server.adapters: the hash is what runs).
    plate_mode "element": matte_ids (one per plate; empty: each plate's A) and matte_feather (the soft
    edge in output pixels, resolved; None for other jobs).
    takes: how many takes (seeds params["seed"], + 1, ...); draft_steps: steps of the draft each take
    gets first (0: no draft). A spec stored before takes existed reads as one take without a draft.
    draft_unguided_steps: the draft's first steps run without guidance (GenerationParams.unguided_steps:
    one forward each, so the first preview comes sooner); the final's params are never changed by it.
    """

    storyboard: list[dict[str, Any]]
    params: dict[str, Any]
    shot_name: str
    start_frame: int = DEFAULT_START_FRAME
    request_id: str = ""
    record_start: int | None = None
    otio_context: str = ""
    plate_ids: tuple[str, ...] = ()
    n_segments: int = 0
    total_frames: int = 0
    delivery: dict[str, Any] | None = None
    native_frames: int = 0
    output_colorspace: str = ""
    plate_colorspace: str = ""
    scene_starts: tuple[int, ...] = ()
    adapters: tuple[dict[str, Any], ...] = ()  # {"name", "scale", "sha256"} each, in the request's order
    matte_ids: tuple[str, ...] = ()
    matte_feather: float | None = None
    takes: int = 1
    draft_steps: int = 0
    draft_unguided_steps: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        data["plate_ids"] = tuple(data.get("plate_ids", ()))
        data["scene_starts"] = tuple(data.get("scene_starts", ()))
        data["adapters"] = tuple(data.get("adapters", ()))
        data["matte_ids"] = tuple(data.get("matte_ids", ()))
        return cls(**data)

    @property
    def upload_ids(self) -> tuple[str, ...]:
        """Every upload the job reads: its plates and its mattes."""
        return self.plate_ids + self.matte_ids

    @property
    def native(self) -> bool:
        """A job without a delivery: the model's frames at its rate and size (see the proto's Delivery)."""
        return self.delivery is None

    def take_seed(self, take: int) -> int:
        """Take `take`'s noise seed: the request's seed plus the take's index."""
        if not 0 <= take < self.takes:
            raise ValueError(f"take {take} is out of range: the job has {self.takes} take(s)")
        return int(self.params.get("seed") or 0) + take  # the engine always resolves the seed

    def take_params(self, take: int, draft: bool) -> dict[str, Any]:
        """GenerationParams fields of one take's final (draft=False) or draft run."""
        params = {**self.params, "seed": self.take_seed(take)}
        if draft:
            if not self.draft_steps:
                raise ValueError("this job has no draft (draft_steps is 0)")
            params["steps"] = self.draft_steps
            if self.draft_unguided_steps:  # only then: drafts stored before it keep their fingerprint
                params["unguided_steps"] = self.draft_unguided_steps
        return params

    def frame_filename(self, index: int) -> str:
        """The name a client gives frame `index` (0-based): shot.1001.exr. A name, never a path."""
        return f"{self.shot_name}.{self.start_frame + index:04d}.exr"


@dataclass(frozen=True)
class TakeRecord:
    """One take of a job as the store has it: its seed, state, stored frames and approval."""

    index: int
    seed: int
    state: JobState
    frames_ready: int = 0
    draft_steps: int = 0
    draft_frames_ready: int = 0
    draft_complete: bool = False
    approved_by: str = ""
    approved_at: float | None = None

    @property
    def approved(self) -> bool:
        return bool(self.approved_by)


@dataclass(frozen=True)
class JobRecord:
    """A job as the store has it, plus computed fields (queue position, frames ready: take 0's final
    frames, what a FetchFrames without a take returns)."""

    job_id: str
    owner: str
    state: JobState
    priority: Priority
    spec: JobSpec
    created: float
    updated: float
    message: str = ""
    attempts: int = 0
    cancel_requested: bool = False
    frames_ready: int = 0
    queue_position: int = 0
    idempotency_key: str | None = None
    started: float | None = None
    finished: float | None = None
    seq: int = 0
    takes: tuple[TakeRecord, ...] = ()
    approved_take: int | None = None

    @property
    def result_take(self) -> int:
        """The take a result means when none is named: the approved one, else take 0."""
        return 0 if self.approved_take is None else self.approved_take


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log. seq is 1, 2, 3, ... per job; blob holds preview image bytes."""

    job_id: str
    seq: int
    time: float
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)
    blob: bytes | None = None


@dataclass(frozen=True)
class FrameRecord:
    """A stored frame: index 0-based in the shot, its number (start_frame + index), file facts."""

    job_id: str
    index: int
    number: int
    segment: int
    filename: str
    relpath: str
    size: int
    sha256: str
    created: float
    take: int = 0
    draft: bool = False


@dataclass(frozen=True)
class UploadRecord:
    upload_id: str
    owner: str
    display_name: str
    size: int
    sha256: str
    width: int
    height: int
    channels: tuple[str, ...]
    created: float


@dataclass(frozen=True)
class AdapterRecord:
    """A LoRA adapter the server knows: from its adapters folder (owner "", published) or uploaded
    (owner: the uploader; published when an admin uploaded it with publish). path: the file, relative to
    the data dir for an upload, absolute for the folder's. sha256: of the adapter file's bytes."""

    name: str
    owner: str
    published: bool
    sha256: str
    size: int
    path: str
    kind: str = ""
    trigger: str = ""
    rank: int = 0
    alpha: float = 0.0
    target_modules: tuple[str, ...] = ()
    description: str = ""
    created: float = 0.0


@dataclass(frozen=True)
class SubmitRequest:
    """A submit as parsed from the wire, not yet validated (the engine validates)."""

    storyboard: list[dict[str, Any]]
    params: dict[str, Any]
    priority: Priority = Priority.FINAL
    idempotency_key: str = ""
    shot_name: str = ""
    start_frame: int | None = None
    request_id: str = ""
    record_start: int | None = None
    otio_context: str = ""
    plate_ids: tuple[str, ...] = ()
    delivery: dict[str, Any] | None = None  # wire fields (rate_num, rate_den, duration, ...); None: native
    plate_colorspace: str = ""
    adapters: tuple[tuple[str, float], ...] = ()  # (name, scale) as the request names them
    matte_ids: tuple[str, ...] = ()
    matte_feather: float | None = None  # output pixels; None: the server's default
    takes: int = 0  # 0: one take
    draft_steps: int = 0  # 0: the server's default for a preview job


@dataclass(frozen=True)
class UploadChunk:
    """One chunk of a plate or adapter upload as parsed from the wire (display_name: an adapter's name;
    publish: an adapter header's publish flag)."""

    sequence: int
    data: bytes
    has_header: bool = False
    display_name: str = ""
    total_bytes: int = 0
    sha256: str = ""
    publish: bool = False


@dataclass(frozen=True)
class FrameChunkData:
    """One chunk of a stored frame on its way to a client (data: a slice of the file, bytes or memoryview)."""

    index: int
    number: int
    filename: str
    offset: int
    total_bytes: int
    data: bytes | memoryview
    last: bool
    sha256: str
    total_frames: int
    take: int = 0
    draft: bool = False


@dataclass(frozen=True)
class JobResult:
    job_id: str
    otio_json: str
    frames: list[FrameRecord]
    fps: float
    width: int
    height: int
    colour_interop_id: str
    rate: Fraction = Fraction(0)
    pixel_aspect: float = 1.0
    conform: dict[str, Any] = field(default_factory=dict)
    take: int = 0
