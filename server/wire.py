"""Conversions between the wire messages (ttt_studio.v1) and the engine's domain values. Parsing only:
no validation beyond what the message types imply (the engine validates and names the bad field)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from host_plugin.core.delivery import SEGMENT_SECONDS, STANDARD_RATES
from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.engine import ServerInfoData
from server.jobs import (
    AdapterRecord,
    Event,
    EventKind,
    FrameChunkData,
    FrameRecord,
    JobRecord,
    JobResult,
    JobState,
    Priority,
    SubmitRequest,
    TakeRecord,
    UploadChunk,
    UploadRecord,
)

STATE_TO_PB = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.SAMPLING: pb.JOB_STATE_SAMPLING,
    JobState.DECODING: pb.JOB_STATE_DECODING,
    JobState.COMPLETED: pb.JOB_STATE_COMPLETED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}
PRIORITY_TO_PB = {Priority.PREVIEW: pb.PRIORITY_PREVIEW, Priority.FINAL: pb.PRIORITY_FINAL}
PB_TO_PRIORITY = {
    pb.PRIORITY_PREVIEW: Priority.PREVIEW,
    pb.PRIORITY_FINAL: Priority.FINAL,
    pb.PRIORITY_UNSPECIFIED: Priority.FINAL,
}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


# ---------------------------------------------------------------------- requests -> domain


def submit_request(msg: pb.SubmitShotRequest) -> SubmitRequest:
    p = msg.parameters
    params: dict[str, Any] = {}
    for name in ("height", "width", "steps", "preview_every"):
        if getattr(p, name):
            params[name] = int(getattr(p, name))
    for name in ("sampler", "dtype"):
        if getattr(p, name):
            params[name] = getattr(p, name)
    if p.HasField("guidance_scale"):
        params["guidance_scale"] = float(p.guidance_scale)
    if p.HasField("seed"):
        params["seed"] = int(p.seed)
    if p.HasField("strength"):
        params["strength"] = float(p.strength)
    if p.plate_mode:
        params["plate_mode"] = p.plate_mode
    ctx = msg.context
    return SubmitRequest(
        takes=int(p.takes),
        draft_steps=int(p.draft_steps),
        storyboard=[
            {"text": s.text, "neg_text": s.neg_text, "requires_scene_transition": s.requires_scene_transition}
            for s in msg.storyboard.segments
        ],
        params=params,
        priority=PB_TO_PRIORITY.get(msg.priority, Priority.FINAL),
        idempotency_key=msg.idempotency_key,
        shot_name=ctx.shot_name,
        start_frame=ctx.start_frame if ctx.HasField("start_frame") else None,
        request_id=ctx.request_id,
        record_start=ctx.record_start if ctx.HasField("record_start") else None,
        otio_context=ctx.otio_json,
        plate_ids=tuple(msg.plate_upload_ids),
        delivery=_delivery_fields(msg.delivery) if msg.HasField("delivery") else None,
        plate_colorspace=msg.plate_colorspace,
        adapters=tuple((a.name, float(a.scale)) for a in msg.adapters),
        matte_ids=tuple(msg.matte_upload_ids),
        matte_feather=float(p.matte_feather) if p.HasField("matte_feather") else None,
    )


_DELIVERY_FIELDS = (
    "rate_num",
    "rate_den",
    "duration",
    "width",
    "height",
    "pixel_aspect",
    "fit",
    "filter",
    "retime",
    "colorspace",
)


def _delivery_fields(msg: pb.Delivery) -> dict[str, Any]:
    return {name: getattr(msg, name) for name in _DELIVERY_FIELDS}


def delivery_message(delivery: dict[str, Any]) -> pb.Delivery:
    """A stored delivery (Delivery.as_metadata() form) as the wire message."""
    from fractions import Fraction

    rate = Fraction(delivery["rate"])
    return pb.Delivery(
        rate_num=rate.numerator,
        rate_den=rate.denominator,
        duration=int(delivery["duration"]),
        width=int(delivery.get("width") or 0),
        height=int(delivery.get("height") or 0),
        pixel_aspect=float(delivery.get("pixel_aspect") or 1.0),
        fit=str(delivery.get("fit") or ""),
        filter=str(delivery.get("filter") or ""),
        retime=str(delivery.get("retime") or ""),
        colorspace=str(delivery.get("colorspace") or ""),
    )


def upload_chunks(messages: Iterable[pb.UploadPlateChunk]) -> Iterator[UploadChunk]:
    for m in messages:
        yield UploadChunk(
            sequence=m.sequence,
            data=m.data,
            has_header=m.HasField("header"),
            display_name=m.header.display_name,
            total_bytes=m.header.total_bytes,
            sha256=m.header.sha256,
        )


def adapter_chunks(messages: Iterable[pb.UploadAdapterChunk]) -> Iterator[UploadChunk]:
    """UploadAdapter chunks as upload chunks (display_name: the adapter's name)."""
    for m in messages:
        yield UploadChunk(
            sequence=m.sequence,
            data=m.data,
            has_header=m.HasField("header"),
            display_name=m.header.name,
            total_bytes=m.header.total_bytes,
            sha256=m.header.sha256,
            publish=m.header.publish,
        )


def job_states(values: Iterable[int]) -> list[JobState]:
    return [PB_TO_STATE[v] for v in values if v in PB_TO_STATE]


# ---------------------------------------------------------------------- domain -> responses


def params_message(params: dict[str, Any]) -> pb.GenerationParameters:
    msg = pb.GenerationParameters(
        height=int(params.get("height") or 0),
        width=int(params.get("width") or 0),
        steps=int(params.get("steps") or 0),
        sampler=str(params.get("sampler") or ""),
        dtype=str(params.get("dtype") or ""),
        preview_every=int(params.get("preview_every") or 0),
    )
    if params.get("guidance_scale") is not None:
        msg.guidance_scale = float(params["guidance_scale"])
    if params.get("seed") is not None:
        msg.seed = int(params["seed"])
    if params.get("strength") is not None:
        msg.strength = float(params["strength"])
    msg.plate_mode = str(params.get("plate_mode") or "")
    msg.takes = int(params.get("takes") or 0)
    msg.draft_steps = int(params.get("draft_steps") or 0)
    return msg


def take_message(take: TakeRecord, total_frames: int) -> pb.Take:
    msg = pb.Take(
        index=take.index,
        seed=take.seed,
        state=STATE_TO_PB[take.state],
        frames_ready=take.frames_ready,
        total_frames=total_frames,
        approved=take.approved,
        approved_by=take.approved_by,
        draft_steps=take.draft_steps,
        draft_frames_ready=take.draft_frames_ready,
        draft_complete=take.draft_complete,
    )
    if take.approved_at is not None:
        msg.approved_at.CopyFrom(timestamp(take.approved_at))
    return msg


def job_message(job: JobRecord) -> pb.Job:
    spec = job.spec
    ctx = pb.ShotContext(
        shot_name=spec.shot_name,
        start_frame=spec.start_frame,
        otio_json=spec.otio_context,
        request_id=spec.request_id,
    )
    if spec.record_start is not None:
        ctx.record_start = spec.record_start
    parameters = params_message({**spec.params, "takes": spec.takes, "draft_steps": spec.draft_steps})
    if spec.matte_feather is not None:
        parameters.matte_feather = spec.matte_feather
    return pb.Job(
        job_id=job.job_id,
        state=STATE_TO_PB[job.state],
        priority=PRIORITY_TO_PB[job.priority],
        storyboard=pb.Storyboard(
            segments=[
                pb.Segment(
                    text=s["text"],
                    neg_text=s.get("neg_text", ""),
                    requires_scene_transition=bool(s.get("requires_scene_transition", False)),
                )
                for s in spec.storyboard
            ]
        ),
        parameters=parameters,
        context=ctx,
        created=timestamp(job.created),
        updated=timestamp(job.updated),
        message=job.message,
        total_frames=spec.total_frames,
        frames_ready=job.frames_ready,
        queue_position=job.queue_position,
        attempts=job.attempts,
        plate_upload_ids=list(spec.plate_ids),
        matte_upload_ids=list(spec.matte_ids),
        cancel_requested=job.cancel_requested,
        native_frames=spec.native_frames,
        generation_width=int(spec.params.get("width") or 0),
        generation_height=int(spec.params.get("height") or 0),
        adapters=[pb.AdapterRef(name=a["name"], scale=a["scale"], sha256=a["sha256"]) for a in spec.adapters],
        **({"delivery": delivery_message(spec.delivery)} if spec.delivery is not None else {}),
        takes=[take_message(t, spec.total_frames) for t in job.takes],
        **({"approved_take": job.approved_take} if job.approved_take is not None else {}),
    )


def event_message(event: Event) -> pb.JobEvent:
    msg = pb.JobEvent(job_id=event.job_id, seq=event.seq, time=timestamp(event.time))
    d = event.data
    if event.kind == EventKind.STATE:
        msg.state.CopyFrom(
            pb.StateChanged(state=STATE_TO_PB[JobState(d["state"])], message=d.get("message", ""))
        )
    elif event.kind == EventKind.PROGRESS:
        msg.progress.CopyFrom(
            pb.Progress(
                step=d["step"],
                total=d["total"],
                timestep=d["timestep"],
                elapsed_s=d["elapsed_s"],
                eta_s=d.get("eta_s", -1.0),
                take=d.get("take", 0),
                draft=d.get("draft", False),
            )
        )
    elif event.kind == EventKind.PREVIEW:
        msg.preview.CopyFrom(
            pb.Preview(
                step=d["step"],
                width=d["width"],
                height=d["height"],
                format=d["format"],
                data=event.blob or b"",
                frames=d.get("frames", 1),
                take=d.get("take", 0),
                draft=d.get("draft", False),
            )
        )
    elif event.kind == EventKind.FRAMES:
        msg.frames.CopyFrom(
            pb.FramesReady(
                ready=d["ready"],
                total=d["total"],
                segment=d["segment"],
                take=d.get("take", 0),
                draft=d.get("draft", False),
            )
        )
    return msg


def frame_chunk_message(chunk: FrameChunkData) -> pb.FrameChunk:
    msg = _chunk_header(chunk)
    msg.data = bytes(chunk.data)
    return msg


def _chunk_header(chunk: FrameChunkData) -> pb.FrameChunk:
    return pb.FrameChunk(
        frame_index=chunk.index,
        frame_number=chunk.number,
        filename=chunk.filename,
        offset=chunk.offset,
        total_bytes=chunk.total_bytes,
        last=chunk.last,
        sha256=chunk.sha256,
        total_frames=chunk.total_frames,
        take=chunk.take,
        draft=chunk.draft,
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


_DATA_TAG = _varint(pb.FrameChunk.DESCRIPTOR.fields_by_name["data"].number << 3 | 2)  # length-delimited


def frame_chunk_bytes(chunk: FrameChunkData) -> bytes:
    """The serialized FrameChunk, built without putting the data into a message: the small header
    fields serialized by protobuf, then the data field appended by hand (the wire format allows fields
    in any order). The chunk's bytes are copied once, here, instead of into a message and out again.
    Parses to exactly frame_chunk_message(chunk)."""
    head = _chunk_header(chunk).SerializeToString()
    return b"".join((head, _DATA_TAG, _varint(len(chunk.data)), chunk.data))


def serialize_frame_chunk(message: bytes | pb.FrameChunk) -> bytes:
    """FetchFrames' response serializer: pre-serialized chunks (frame_chunk_bytes) pass through."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def frame_info(frame: FrameRecord) -> pb.FrameInfo:
    return pb.FrameInfo(
        frame_index=frame.index,
        frame_number=frame.number,
        filename=frame.filename,
        bytes=frame.size,
        sha256=frame.sha256,
        created=timestamp(frame.created),
    )


def result_message(result: JobResult) -> pb.JobResult:
    return pb.JobResult(
        job_id=result.job_id,
        otio_json=result.otio_json,
        frames=[frame_info(f) for f in result.frames],
        fps=result.fps,
        width=result.width,
        height=result.height,
        colour_interop_id=result.colour_interop_id,
        rate_num=result.rate.numerator,
        rate_den=result.rate.denominator,
        pixel_aspect=result.pixel_aspect,
        conform_json=json.dumps(result.conform, sort_keys=True) if result.conform else "",
        take=result.take,
    )


def upload_message(upload: UploadRecord) -> pb.UploadPlateResponse:
    return pb.UploadPlateResponse(
        upload_id=upload.upload_id,
        bytes=upload.size,
        width=upload.width,
        height=upload.height,
        channels=list(upload.channels),
        sha256=upload.sha256,
    )


def adapter_info(record: AdapterRecord) -> pb.AdapterInfo:
    return pb.AdapterInfo(
        name=record.name,
        sha256=record.sha256,
        kind=record.kind,
        trigger=record.trigger,
        rank=record.rank,
        alpha=record.alpha,
        target_modules=list(record.target_modules),
        owner=record.owner,
        published=record.published,
        bytes=record.size,
        description=record.description,
    )


def server_info_message(info: ServerInfoData, limits: Any, colour_interop_id: str) -> pb.ServerInfo:
    import grpc

    return pb.ServerInfo(
        server_version=info.versions.get("server", ""),
        api_version=info.versions.get("api", ""),
        model=info.model,
        capabilities=list(_capabilities()),
        limits=limits_message(limits),
        versions={**info.versions, "grpc": grpc.__version__},
        defaults=params_message(info.defaults),
        workers=info.workers,
        devices=info.devices,
        fps=info.fps,
        frames_per_segment=info.frames_per_segment,
        caller=info.caller,
        colour_interop_id=colour_interop_id,
        first_segment_frames=info.first_segment_frames,
        native_fps_num=info.native_fps.numerator,
        native_fps_den=info.native_fps.denominator,
        sizes=[pb.Size(width=w, height=h) for w, h in info.sizes],
        size_constraints=pb.SizeConstraints(
            multiple_of=info.size_multiple, min_side=info.min_side, max_side=info.max_side
        ),
        model_colorspace=info.model_colorspace,
        segment_seconds=SEGMENT_SECONDS,
        default_colorspace=info.default_colorspace,
        delivery_rates=[str(r) for r in STANDARD_RATES],
        adapters=[adapter_info(a) for a in info.adapters],
    )


def limits_message(limits: Any) -> pb.Limits:
    """Every limit of the typed config (server.config.Limits and its InputLimits), by field name."""
    from dataclasses import fields

    values = {f.name: getattr(limits, f.name) for f in fields(limits) if f.name != "input"}
    values.update({f.name: getattr(limits.input, f.name) for f in fields(limits.input)})
    return pb.Limits(**values)


def _capabilities() -> tuple[str, ...]:
    from server.engine import CAPABILITIES

    return CAPABILITIES


def resources_message(policy: Any, usage: Any, queued_limit: int, exempt: bool) -> tuple[Any, Any]:
    """(pb.ResourcePolicy, pb.ResourceUsage) of a server.resources.ResourcePolicy and a quotas.Usage."""
    return (
        pb.ResourcePolicy(
            max_bytes_per_user=policy.max_bytes_per_user,
            max_uploads_per_user=policy.max_uploads_per_user,
            max_queued_jobs_per_user=queued_limit,
            job_max_age_s=policy.job_max_age_s,
            upload_max_age_s=policy.upload_max_age_s,
            max_total_bytes=policy.max_total_bytes,
            gc_interval_s=policy.gc_interval_s,
        ),
        pb.ResourceUsage(
            bytes=usage.bytes, uploads=usage.uploads, queued_jobs=usage.queued_jobs, quota_exempt=exempt
        ),
    )
