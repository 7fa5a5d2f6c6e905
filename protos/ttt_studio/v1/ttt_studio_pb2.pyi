import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_PREVIEW: _ClassVar[Priority]
    PRIORITY_FINAL: _ClassVar[Priority]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_SAMPLING: _ClassVar[JobState]
    JOB_STATE_DECODING: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_PREVIEW: Priority
PRIORITY_FINAL: Priority
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_SAMPLING: JobState
JOB_STATE_DECODING: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class Segment(_message.Message):
    __slots__ = ("text", "neg_text", "requires_scene_transition")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NEG_TEXT_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_SCENE_TRANSITION_FIELD_NUMBER: _ClassVar[int]
    text: str
    neg_text: str
    requires_scene_transition: bool
    def __init__(self, text: _Optional[str] = ..., neg_text: _Optional[str] = ..., requires_scene_transition: _Optional[bool] = ...) -> None: ...

class Storyboard(_message.Message):
    __slots__ = ("segments",)
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    def __init__(self, segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ...) -> None: ...

class GenerationParameters(_message.Message):
    __slots__ = ("height", "width", "steps", "guidance_scale", "sampler", "seed", "dtype", "preview_every", "strength", "plate_mode", "takes", "matte_feather", "draft_steps")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PLATE_MODE_FIELD_NUMBER: _ClassVar[int]
    TAKES_FIELD_NUMBER: _ClassVar[int]
    MATTE_FEATHER_FIELD_NUMBER: _ClassVar[int]
    DRAFT_STEPS_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    steps: int
    guidance_scale: float
    sampler: str
    seed: int
    dtype: str
    preview_every: int
    strength: float
    plate_mode: str
    takes: int
    matte_feather: float
    draft_steps: int
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., sampler: _Optional[str] = ..., seed: _Optional[int] = ..., dtype: _Optional[str] = ..., preview_every: _Optional[int] = ..., strength: _Optional[float] = ..., plate_mode: _Optional[str] = ..., takes: _Optional[int] = ..., matte_feather: _Optional[float] = ..., draft_steps: _Optional[int] = ...) -> None: ...

class ShotContext(_message.Message):
    __slots__ = ("shot_name", "start_frame", "otio_json", "request_id", "record_start")
    SHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    OTIO_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_START_FIELD_NUMBER: _ClassVar[int]
    shot_name: str
    start_frame: int
    otio_json: str
    request_id: str
    record_start: int
    def __init__(self, shot_name: _Optional[str] = ..., start_frame: _Optional[int] = ..., otio_json: _Optional[str] = ..., request_id: _Optional[str] = ..., record_start: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("rate_num", "rate_den", "duration", "width", "height", "pixel_aspect", "fit", "filter", "retime", "colorspace")
    RATE_NUM_FIELD_NUMBER: _ClassVar[int]
    RATE_DEN_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_ASPECT_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RETIME_FIELD_NUMBER: _ClassVar[int]
    COLORSPACE_FIELD_NUMBER: _ClassVar[int]
    rate_num: int
    rate_den: int
    duration: int
    width: int
    height: int
    pixel_aspect: float
    fit: str
    filter: str
    retime: str
    colorspace: str
    def __init__(self, rate_num: _Optional[int] = ..., rate_den: _Optional[int] = ..., duration: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., pixel_aspect: _Optional[float] = ..., fit: _Optional[str] = ..., filter: _Optional[str] = ..., retime: _Optional[str] = ..., colorspace: _Optional[str] = ...) -> None: ...

class SubmitShotRequest(_message.Message):
    __slots__ = ("storyboard", "parameters", "priority", "idempotency_key", "context", "plate_upload_ids", "delivery", "plate_colorspace", "adapters", "matte_upload_ids")
    STORYBOARD_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PLATE_UPLOAD_IDS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    PLATE_COLORSPACE_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    MATTE_UPLOAD_IDS_FIELD_NUMBER: _ClassVar[int]
    storyboard: Storyboard
    parameters: GenerationParameters
    priority: Priority
    idempotency_key: str
    context: ShotContext
    plate_upload_ids: _containers.RepeatedScalarFieldContainer[str]
    delivery: Delivery
    plate_colorspace: str
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterRef]
    matte_upload_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, storyboard: _Optional[_Union[Storyboard, _Mapping]] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ..., idempotency_key: _Optional[str] = ..., context: _Optional[_Union[ShotContext, _Mapping]] = ..., plate_upload_ids: _Optional[_Iterable[str]] = ..., delivery: _Optional[_Union[Delivery, _Mapping]] = ..., plate_colorspace: _Optional[str] = ..., adapters: _Optional[_Iterable[_Union[AdapterRef, _Mapping]]] = ..., matte_upload_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AdapterRef(_message.Message):
    __slots__ = ("name", "scale", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    sha256: str
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ..., sha256: _Optional[str] = ...) -> None: ...

class SubmitShotResponse(_message.Message):
    __slots__ = ("job_id", "deduplicated", "job")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    deduplicated: bool
    job: Job
    def __init__(self, job_id: _Optional[str] = ..., deduplicated: _Optional[bool] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class UploadPlateChunk(_message.Message):
    __slots__ = ("sequence", "data", "header")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    data: bytes
    header: PlateHeader
    def __init__(self, sequence: _Optional[int] = ..., data: _Optional[bytes] = ..., header: _Optional[_Union[PlateHeader, _Mapping]] = ...) -> None: ...

class PlateHeader(_message.Message):
    __slots__ = ("display_name", "total_bytes", "sha256")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    total_bytes: int
    sha256: str
    def __init__(self, display_name: _Optional[str] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadPlateResponse(_message.Message):
    __slots__ = ("upload_id", "bytes", "width", "height", "channels", "sha256")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    bytes: int
    width: int
    height: int
    channels: _containers.RepeatedScalarFieldContainer[str]
    sha256: str
    def __init__(self, upload_id: _Optional[str] = ..., bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[_Iterable[str]] = ..., sha256: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "priority", "storyboard", "parameters", "context", "created", "updated", "message", "total_frames", "frames_ready", "queue_position", "attempts", "plate_upload_ids", "cancel_requested", "delivery", "native_frames", "generation_width", "generation_height", "adapters", "takes", "approved_take", "matte_upload_ids")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STORYBOARD_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_READY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PLATE_UPLOAD_IDS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_WIDTH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    TAKES_FIELD_NUMBER: _ClassVar[int]
    APPROVED_TAKE_FIELD_NUMBER: _ClassVar[int]
    MATTE_UPLOAD_IDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    priority: Priority
    storyboard: Storyboard
    parameters: GenerationParameters
    context: ShotContext
    created: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    message: str
    total_frames: int
    frames_ready: int
    queue_position: int
    attempts: int
    plate_upload_ids: _containers.RepeatedScalarFieldContainer[str]
    cancel_requested: bool
    delivery: Delivery
    native_frames: int
    generation_width: int
    generation_height: int
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterRef]
    takes: _containers.RepeatedCompositeFieldContainer[Take]
    approved_take: int
    matte_upload_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., storyboard: _Optional[_Union[Storyboard, _Mapping]] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., context: _Optional[_Union[ShotContext, _Mapping]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., total_frames: _Optional[int] = ..., frames_ready: _Optional[int] = ..., queue_position: _Optional[int] = ..., attempts: _Optional[int] = ..., plate_upload_ids: _Optional[_Iterable[str]] = ..., cancel_requested: _Optional[bool] = ..., delivery: _Optional[_Union[Delivery, _Mapping]] = ..., native_frames: _Optional[int] = ..., generation_width: _Optional[int] = ..., generation_height: _Optional[int] = ..., adapters: _Optional[_Iterable[_Union[AdapterRef, _Mapping]]] = ..., takes: _Optional[_Iterable[_Union[Take, _Mapping]]] = ..., approved_take: _Optional[int] = ..., matte_upload_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Take(_message.Message):
    __slots__ = ("index", "seed", "state", "frames_ready", "total_frames", "approved", "approved_by", "approved_at", "draft_steps", "draft_frames_ready", "draft_complete")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_READY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_STEPS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FRAMES_READY_FIELD_NUMBER: _ClassVar[int]
    DRAFT_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    index: int
    seed: int
    state: JobState
    frames_ready: int
    total_frames: int
    approved: bool
    approved_by: str
    approved_at: _timestamp_pb2.Timestamp
    draft_steps: int
    draft_frames_ready: int
    draft_complete: bool
    def __init__(self, index: _Optional[int] = ..., seed: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., frames_ready: _Optional[int] = ..., total_frames: _Optional[int] = ..., approved: _Optional[bool] = ..., approved_by: _Optional[str] = ..., approved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., draft_steps: _Optional[int] = ..., draft_frames_ready: _Optional[int] = ..., draft_complete: _Optional[bool] = ...) -> None: ...

class ApproveTakeRequest(_message.Message):
    __slots__ = ("job_id", "take")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    take: int
    def __init__(self, job_id: _Optional[str] = ..., take: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "state", "progress", "preview", "frames")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    state: StateChanged
    progress: Progress
    preview: Preview
    frames: FramesReady
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[StateChanged, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., frames: _Optional[_Union[FramesReady, _Mapping]] = ...) -> None: ...

class StateChanged(_message.Message):
    __slots__ = ("state", "message", "queue_position")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    message: str
    queue_position: int
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ..., queue_position: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total", "timestep", "elapsed_s", "eta_s", "take", "draft")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TIMESTEP_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    timestep: float
    elapsed_s: float
    eta_s: float
    take: int
    draft: bool
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ..., timestep: _Optional[float] = ..., elapsed_s: _Optional[float] = ..., eta_s: _Optional[float] = ..., take: _Optional[int] = ..., draft: _Optional[bool] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("step", "width", "height", "format", "data", "frames", "take", "draft")
    STEP_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    step: int
    width: int
    height: int
    format: str
    data: bytes
    frames: int
    take: int
    draft: bool
    def __init__(self, step: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[str] = ..., data: _Optional[bytes] = ..., frames: _Optional[int] = ..., take: _Optional[int] = ..., draft: _Optional[bool] = ...) -> None: ...

class FramesReady(_message.Message):
    __slots__ = ("ready", "total", "segment", "take", "draft")
    READY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    ready: int
    total: int
    segment: int
    take: int
    draft: bool
    def __init__(self, ready: _Optional[int] = ..., total: _Optional[int] = ..., segment: _Optional[int] = ..., take: _Optional[int] = ..., draft: _Optional[bool] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "limit", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    limit: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FetchFramesRequest(_message.Message):
    __slots__ = ("job_id", "start_frame", "follow", "chunk_bytes", "take", "draft")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    start_frame: int
    follow: bool
    chunk_bytes: int
    take: int
    draft: bool
    def __init__(self, job_id: _Optional[str] = ..., start_frame: _Optional[int] = ..., follow: _Optional[bool] = ..., chunk_bytes: _Optional[int] = ..., take: _Optional[int] = ..., draft: _Optional[bool] = ...) -> None: ...

class FrameChunk(_message.Message):
    __slots__ = ("frame_index", "frame_number", "filename", "offset", "total_bytes", "data", "last", "sha256", "total_frames", "take", "draft")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    frame_number: int
    filename: str
    offset: int
    total_bytes: int
    data: bytes
    last: bool
    sha256: str
    total_frames: int
    take: int
    draft: bool
    def __init__(self, frame_index: _Optional[int] = ..., frame_number: _Optional[int] = ..., filename: _Optional[str] = ..., offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., sha256: _Optional[str] = ..., total_frames: _Optional[int] = ..., take: _Optional[int] = ..., draft: _Optional[bool] = ...) -> None: ...

class GetJobResultRequest(_message.Message):
    __slots__ = ("job_id", "take")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    take: int
    def __init__(self, job_id: _Optional[str] = ..., take: _Optional[int] = ...) -> None: ...

class FrameInfo(_message.Message):
    __slots__ = ("frame_index", "frame_number", "filename", "bytes", "sha256", "created")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    frame_number: int
    filename: str
    bytes: int
    sha256: str
    created: _timestamp_pb2.Timestamp
    def __init__(self, frame_index: _Optional[int] = ..., frame_number: _Optional[int] = ..., filename: _Optional[str] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("job_id", "otio_json", "frames", "fps", "width", "height", "colour_interop_id", "rate_num", "rate_den", "pixel_aspect", "conform_json", "take")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OTIO_JSON_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    COLOUR_INTEROP_ID_FIELD_NUMBER: _ClassVar[int]
    RATE_NUM_FIELD_NUMBER: _ClassVar[int]
    RATE_DEN_FIELD_NUMBER: _ClassVar[int]
    PIXEL_ASPECT_FIELD_NUMBER: _ClassVar[int]
    CONFORM_JSON_FIELD_NUMBER: _ClassVar[int]
    TAKE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    otio_json: str
    frames: _containers.RepeatedCompositeFieldContainer[FrameInfo]
    fps: float
    width: int
    height: int
    colour_interop_id: str
    rate_num: int
    rate_den: int
    pixel_aspect: float
    conform_json: str
    take: int
    def __init__(self, job_id: _Optional[str] = ..., otio_json: _Optional[str] = ..., frames: _Optional[_Iterable[_Union[FrameInfo, _Mapping]]] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., colour_interop_id: _Optional[str] = ..., rate_num: _Optional[int] = ..., rate_den: _Optional[int] = ..., pixel_aspect: _Optional[float] = ..., conform_json: _Optional[str] = ..., take: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_frames", "max_segments", "max_height", "max_width", "max_steps", "max_message_bytes", "max_upload_bytes", "max_queued_jobs_per_caller", "max_adapter_bytes", "max_adapters_per_job", "max_adapter_scale", "max_takes", "max_otio_bytes", "max_otio_depth", "max_otio_elements", "max_otio_token_bytes", "max_segment_text_bytes", "max_storyboard_text_bytes", "max_id_chars", "max_start_frame", "max_record_start", "max_guidance_scale", "max_list_page", "max_plate_channels", "max_plate_header_bytes", "max_plate_decode_bytes")
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_JOBS_PER_CALLER_FIELD_NUMBER: _ClassVar[int]
    MAX_ADAPTER_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ADAPTERS_PER_JOB_FIELD_NUMBER: _ClassVar[int]
    MAX_ADAPTER_SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_TAKES_FIELD_NUMBER: _ClassVar[int]
    MAX_OTIO_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_OTIO_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_OTIO_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_OTIO_TOKEN_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEGMENT_TEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STORYBOARD_TEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ID_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_START_FRAME_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORD_START_FIELD_NUMBER: _ClassVar[int]
    MAX_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_LIST_PAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_PLATE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MAX_PLATE_HEADER_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PLATE_DECODE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_frames: int
    max_segments: int
    max_height: int
    max_width: int
    max_steps: int
    max_message_bytes: int
    max_upload_bytes: int
    max_queued_jobs_per_caller: int
    max_adapter_bytes: int
    max_adapters_per_job: int
    max_adapter_scale: float
    max_takes: int
    max_otio_bytes: int
    max_otio_depth: int
    max_otio_elements: int
    max_otio_token_bytes: int
    max_segment_text_bytes: int
    max_storyboard_text_bytes: int
    max_id_chars: int
    max_start_frame: int
    max_record_start: int
    max_guidance_scale: int
    max_list_page: int
    max_plate_channels: int
    max_plate_header_bytes: int
    max_plate_decode_bytes: int
    def __init__(self, max_frames: _Optional[int] = ..., max_segments: _Optional[int] = ..., max_height: _Optional[int] = ..., max_width: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_upload_bytes: _Optional[int] = ..., max_queued_jobs_per_caller: _Optional[int] = ..., max_adapter_bytes: _Optional[int] = ..., max_adapters_per_job: _Optional[int] = ..., max_adapter_scale: _Optional[float] = ..., max_takes: _Optional[int] = ..., max_otio_bytes: _Optional[int] = ..., max_otio_depth: _Optional[int] = ..., max_otio_elements: _Optional[int] = ..., max_otio_token_bytes: _Optional[int] = ..., max_segment_text_bytes: _Optional[int] = ..., max_storyboard_text_bytes: _Optional[int] = ..., max_id_chars: _Optional[int] = ..., max_start_frame: _Optional[int] = ..., max_record_start: _Optional[int] = ..., max_guidance_scale: _Optional[int] = ..., max_list_page: _Optional[int] = ..., max_plate_channels: _Optional[int] = ..., max_plate_header_bytes: _Optional[int] = ..., max_plate_decode_bytes: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("server_version", "api_version", "model", "capabilities", "limits", "versions", "defaults", "workers", "devices", "fps", "frames_per_segment", "caller", "colour_interop_id", "first_segment_frames", "native_fps_num", "native_fps_den", "sizes", "size_constraints", "model_colorspace", "segment_seconds", "default_colorspace", "delivery_rates", "adapters", "resources", "caller_usage")
    class ModelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    COLOUR_INTEROP_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEGMENT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FPS_NUM_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FPS_DEN_FIELD_NUMBER: _ClassVar[int]
    SIZES_FIELD_NUMBER: _ClassVar[int]
    SIZE_CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_COLORSPACE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_COLORSPACE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_RATES_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    CALLER_USAGE_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    model: _containers.ScalarMap[str, str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    versions: _containers.ScalarMap[str, str]
    defaults: GenerationParameters
    workers: int
    devices: _containers.RepeatedScalarFieldContainer[str]
    fps: float
    frames_per_segment: int
    caller: str
    colour_interop_id: str
    first_segment_frames: int
    native_fps_num: int
    native_fps_den: int
    sizes: _containers.RepeatedCompositeFieldContainer[Size]
    size_constraints: SizeConstraints
    model_colorspace: str
    segment_seconds: int
    default_colorspace: str
    delivery_rates: _containers.RepeatedScalarFieldContainer[str]
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterInfo]
    resources: ResourcePolicy
    caller_usage: ResourceUsage
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., model: _Optional[_Mapping[str, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., versions: _Optional[_Mapping[str, str]] = ..., defaults: _Optional[_Union[GenerationParameters, _Mapping]] = ..., workers: _Optional[int] = ..., devices: _Optional[_Iterable[str]] = ..., fps: _Optional[float] = ..., frames_per_segment: _Optional[int] = ..., caller: _Optional[str] = ..., colour_interop_id: _Optional[str] = ..., first_segment_frames: _Optional[int] = ..., native_fps_num: _Optional[int] = ..., native_fps_den: _Optional[int] = ..., sizes: _Optional[_Iterable[_Union[Size, _Mapping]]] = ..., size_constraints: _Optional[_Union[SizeConstraints, _Mapping]] = ..., model_colorspace: _Optional[str] = ..., segment_seconds: _Optional[int] = ..., default_colorspace: _Optional[str] = ..., delivery_rates: _Optional[_Iterable[str]] = ..., adapters: _Optional[_Iterable[_Union[AdapterInfo, _Mapping]]] = ..., resources: _Optional[_Union[ResourcePolicy, _Mapping]] = ..., caller_usage: _Optional[_Union[ResourceUsage, _Mapping]] = ...) -> None: ...

class ResourcePolicy(_message.Message):
    __slots__ = ("max_bytes_per_user", "max_uploads_per_user", "max_queued_jobs_per_user", "job_max_age_s", "upload_max_age_s", "max_total_bytes", "gc_interval_s")
    MAX_BYTES_PER_USER_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOADS_PER_USER_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_JOBS_PER_USER_FIELD_NUMBER: _ClassVar[int]
    JOB_MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    GC_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    max_bytes_per_user: int
    max_uploads_per_user: int
    max_queued_jobs_per_user: int
    job_max_age_s: float
    upload_max_age_s: float
    max_total_bytes: int
    gc_interval_s: float
    def __init__(self, max_bytes_per_user: _Optional[int] = ..., max_uploads_per_user: _Optional[int] = ..., max_queued_jobs_per_user: _Optional[int] = ..., job_max_age_s: _Optional[float] = ..., upload_max_age_s: _Optional[float] = ..., max_total_bytes: _Optional[int] = ..., gc_interval_s: _Optional[float] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("bytes", "uploads", "queued_jobs", "quota_exempt")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_EXEMPT_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    uploads: int
    queued_jobs: int
    quota_exempt: bool
    def __init__(self, bytes: _Optional[int] = ..., uploads: _Optional[int] = ..., queued_jobs: _Optional[int] = ..., quota_exempt: _Optional[bool] = ...) -> None: ...

class Size(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class SizeConstraints(_message.Message):
    __slots__ = ("multiple_of", "min_side", "max_side")
    MULTIPLE_OF_FIELD_NUMBER: _ClassVar[int]
    MIN_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    multiple_of: int
    min_side: int
    max_side: int
    def __init__(self, multiple_of: _Optional[int] = ..., min_side: _Optional[int] = ..., max_side: _Optional[int] = ...) -> None: ...

class AdapterInfo(_message.Message):
    __slots__ = ("name", "sha256", "kind", "trigger", "rank", "alpha", "target_modules", "owner", "published", "bytes", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    kind: str
    trigger: str
    rank: int
    alpha: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    owner: str
    published: bool
    bytes: int
    description: str
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., kind: _Optional[str] = ..., trigger: _Optional[str] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., published: _Optional[bool] = ..., bytes: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class UploadAdapterChunk(_message.Message):
    __slots__ = ("sequence", "data", "header")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    data: bytes
    header: AdapterHeader
    def __init__(self, sequence: _Optional[int] = ..., data: _Optional[bytes] = ..., header: _Optional[_Union[AdapterHeader, _Mapping]] = ...) -> None: ...

class AdapterHeader(_message.Message):
    __slots__ = ("name", "total_bytes", "sha256", "publish")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    name: str
    total_bytes: int
    sha256: str
    publish: bool
    def __init__(self, name: _Optional[str] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., publish: _Optional[bool] = ...) -> None: ...
