"""The monitor's gRPC side: calls made with the signed-in user's token, and the wire messages as JSON.

One grpc.aio channel serves every user (it belongs to the event loop that opened it, so the app opens it
at startup); each call carries its own user's `authorization` metadata, so the server checks every
request against that user exactly as it checks the command-line client.

Takes' frames reach the page as one JPEG "playback sheet" per take: every frame fetched with FetchFrames,
read with the project's EXR reader, converted from the colour space its header declares to the sRGB
display with the conform's OpenColorIO processors, scaled down and laid out in rows; the page animates
the sheet at the shot's rate (one HTTP request per take however long the shot).
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import grpc
import numpy as np

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from protos.ttt_studio.v1 import ttt_studio_pb2_grpc as pb_grpc
from server.client import TERMINAL, state_name
from server.monitor.config import JPEG_MAX_SIDE, MonitorConfig

MIN_SHEET_FRAME_HEIGHT = 16
"""A sheet never shrinks frames below this: a shot that would need smaller frames is refused instead."""
MAX_SHEET_PIXELS = 16_000_000
"""A sheet's pixels (a tablet's browser decodes it whole: 64 MB as RGBA); longer shots get smaller frames."""
UINT32_MAX = 2**32 - 1


class SheetError(ValueError):
    """A take's frames could not be made into a playback sheet; the message names the frame and the fault."""


class Gateway:
    """The ttt-studio server as the monitor's users see it; every method takes the user's token."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.TTTStudioStub | None = None

    async def open(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if self.config.tls or self.config.tls_ca is not None:
            roots = self.config.tls_ca.read_bytes() if self.config.tls_ca is not None else None
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.aio.secure_channel(self.config.server, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(self.config.server, options=options)
        self._stub = pb_grpc.TTTStudioStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @property
    def stub(self) -> pb_grpc.TTTStudioStub:
        if self._stub is None:
            raise RuntimeError("Gateway.open() has not run: the app's startup opens the channel")
        return self._stub

    @staticmethod
    def metadata(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),) if token else ()

    async def _unary(self, method: Any, request: Any, token: str) -> Any:
        return await method(request, metadata=self.metadata(token), timeout=self.config.rpc_timeout_s)

    async def server_info(self, token: str) -> pb.ServerInfo:
        return await self._unary(self.stub.GetServerInfo, pb.GetServerInfoRequest(), token)

    async def list_jobs(self, token: str) -> list[pb.Job]:
        request = pb.ListJobsRequest(limit=self.config.list_limit)
        return list((await self._unary(self.stub.ListJobs, request, token)).jobs)

    async def get_job(self, token: str, job_id: str) -> pb.Job:
        return await self._unary(self.stub.GetJob, pb.GetJobRequest(job_id=job_id), token)

    async def cancel(self, token: str, job_id: str) -> pb.Job:
        return await self._unary(self.stub.CancelJob, pb.CancelJobRequest(job_id=job_id), token)

    async def approve(self, token: str, job_id: str, take: int) -> pb.Job:
        request = pb.ApproveTakeRequest(job_id=job_id, take=take)
        return await self._unary(self.stub.ApproveTake, request, token)

    async def watch(self, token: str, job_id: str, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        """The job's events after after_seq until it finishes (the stream is cancelled if the caller stops)."""
        call = self.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), metadata=self.metadata(token)
        )
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()

    async def frames(
        self, token: str, job_id: str, take: int, draft: bool
    ) -> AsyncIterator[tuple[int, bytes]]:
        """(total frames, EXR bytes) of each frame of one take, in order."""
        request = pb.FetchFramesRequest(job_id=job_id, take=take, draft=draft)
        call = self.stub.FetchFrames(request, metadata=self.metadata(token))
        parts: list[bytes] = []
        try:
            async for chunk in call:
                if chunk.offset == 0:
                    parts = []
                parts.append(chunk.data)
                if chunk.last:
                    yield chunk.total_frames, b"".join(parts)
        finally:
            call.cancel()


# ---------------------------------------------------------------------- wire messages as JSON


def shot_rate(job: pb.Job, native_fps: float) -> Fraction:
    """The rate the job's frames play at: its delivery's edit rate, else the model's native rate."""
    if job.HasField("delivery") and job.delivery.rate_num:
        return Fraction(job.delivery.rate_num, job.delivery.rate_den or 1)
    return Fraction(native_fps).limit_denominator(1001)


def _time(stamp: Any) -> str | None:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None


def takes_json(job: pb.Job) -> list[dict[str, Any]]:
    """The job's takes; a server from before takes (an empty Job.takes) made one, take 0, the job itself."""
    if not job.takes:
        return [
            {
                "index": 0,
                "seed": job.parameters.seed,
                "state": state_name(job.state),
                "frames_ready": job.frames_ready,
                "total_frames": job.total_frames,
                "approved": False,
                "approved_by": "",
                "approved_at": None,
                "draft_steps": 0,
                "draft_frames_ready": 0,
                "draft_complete": False,
            }
        ]
    return [
        {
            "index": take.index,
            "seed": take.seed,
            "state": state_name(take.state),
            "frames_ready": take.frames_ready,
            "total_frames": take.total_frames,
            "approved": take.approved,
            "approved_by": take.approved_by,
            "approved_at": _time(take.approved_at),
            "draft_steps": take.draft_steps,
            "draft_frames_ready": take.draft_frames_ready,
            "draft_complete": take.draft_complete,
        }
        for take in job.takes
    ]


def job_json(job: pb.Job, native_fps: float) -> dict[str, Any]:
    """What the page shows of a job (the queue row and the takes panel)."""
    segments = job.storyboard.segments
    rate = shot_rate(job, native_fps)
    return {
        "job_id": job.job_id,
        "state": state_name(job.state),
        "terminal": job.state in TERMINAL,
        "priority": pb.Priority.Name(job.priority).removeprefix("PRIORITY_").lower(),
        "shot": job.context.shot_name,
        "text": segments[0].text if segments else "",
        "segments": len(segments),
        "created": _time(job.created),
        "updated": _time(job.updated),
        "message": job.message,
        "frames_ready": job.frames_ready,
        "total_frames": job.total_frames,
        "queue_position": job.queue_position,
        "cancel_requested": job.cancel_requested,
        "steps": job.parameters.steps,
        "width": job.generation_width or job.parameters.width,
        "height": job.generation_height or job.parameters.height,
        "rate": f"{rate.numerator}/{rate.denominator}",
        "fps": float(rate),
        "takes": takes_json(job),
        "approved_take": job.approved_take if job.HasField("approved_take") else None,
    }


def preview_data_url(preview: pb.Preview) -> str:
    """The preview as a data: URL the page can put in an <img> (PNG as sent; raw rgb8 rows encoded as PNG)."""
    if preview.format == "png":
        data = preview.data
    elif preview.format == "rgb8":
        from PIL import Image

        expected = preview.width * preview.height * 3
        if len(preview.data) != expected:
            raise ValueError(
                f"rgb8 preview of {preview.width}x{preview.height} has {len(preview.data)} bytes, expected {expected}"
            )
        out = io.BytesIO()
        Image.frombytes("RGB", (preview.width, preview.height), preview.data).save(out, format="PNG")
        data = out.getvalue()
    else:
        raise ValueError(f"unknown preview format {preview.format!r}: expected 'png' or 'rgb8'")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def event_json(event: pb.JobEvent) -> dict[str, Any]:
    """One WatchJob event for the page: {job_id, seq, kind, ...the kind's fields}."""
    kind = event.WhichOneof("kind")
    out: dict[str, Any] = {"job_id": event.job_id, "seq": event.seq, "kind": kind}
    if kind == "state":
        out.update(
            state=state_name(event.state.state),
            message=event.state.message,
            queue_position=event.state.queue_position,
        )
    elif kind == "progress":
        p = event.progress
        out.update(step=p.step, total=p.total, eta_s=p.eta_s, take=p.take, draft=p.draft)
    elif kind == "preview":
        p = event.preview
        out.update(
            step=p.step,
            width=p.width,
            height=p.height,
            frames=p.frames,
            take=p.take,
            draft=p.draft,
            image=preview_data_url(p),
        )
    elif kind == "frames":
        f = event.frames
        out.update(ready=f.ready, total=f.total, segment=f.segment, take=f.take, draft=f.draft)
    return out


# ---------------------------------------------------------------------- playback sheets


@dataclass(frozen=True)
class SheetLayout:
    """Frames of frame_width x frame_height, `columns` to a row, row after row."""

    frames: int
    columns: int
    frame_width: int
    frame_height: int

    @property
    def rows(self) -> int:
        return math.ceil(self.frames / self.columns)

    @property
    def size(self) -> tuple[int, int]:
        return self.columns * self.frame_width, self.rows * self.frame_height


def sheet_layout(frames: int, width: int, height: int, config: MonitorConfig) -> SheetLayout:
    """The layout of `frames` frames of width x height: scaled down to config.sheet_frame_height (never up),
    then further until the sheet fits MAX_SHEET_PIXELS and JPEG's side limit. ValueError when even frames
    MIN_SHEET_FRAME_HEIGHT high would not fit (the shot is too long for one sheet)."""
    if frames < 1 or width < 1 or height < 1:
        raise ValueError(
            f"a playback sheet needs frames >= 1 of a positive size, got {frames} of {width}x{height}"
        )
    frame_height = min(height, config.sheet_frame_height)
    while frame_height >= min(height, MIN_SHEET_FRAME_HEIGHT):
        frame_width = max(1, round(width * frame_height / height))
        if frame_width <= config.sheet_max_width:
            columns = min(frames, config.sheet_max_width // frame_width)
            layout = SheetLayout(frames, columns, frame_width, frame_height)
            sheet_w, sheet_h = layout.size
            if sheet_w * sheet_h <= MAX_SHEET_PIXELS and sheet_h <= JPEG_MAX_SIDE:
                return layout
        frame_height -= max(1, frame_height // 10)
    raise ValueError(
        f"{frames} frames of {width}x{height} do not fit one playback sheet of {MAX_SHEET_PIXELS} pixels "
        f"even at {MIN_SHEET_FRAME_HEIGHT} pixels high"
    )


def display_frame(exr: bytes, size: tuple[int, int]) -> Any:
    """One EXR frame -> a PIL RGB image of `size` in sRGB display encoding.

    The pixels are read with the project's EXR reader and converted from the space the file's header
    declares (colorInteropID, else chromaticities, else linear Rec.709) with the conform's OpenColorIO
    display processor."""
    from PIL import Image

    from host_plugin.core.exr_io import read_exr_bytes
    from ttt_engine.conform.colour import colourspace_of_header, to_display

    pixels, header = read_exr_bytes(exr)
    rgb = to_display(pixels[..., :3], colourspace_of_header(header))  # (H, W, 3) float32 in 0..1
    image = Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8), "RGB")
    return image.resize(size, Image.Resampling.BILINEAR) if image.size != size else image


def exr_size(exr: bytes) -> tuple[int, int]:
    """(width, height) of an EXR from its header."""
    from host_plugin.core.exr_io import validate_plate

    info = validate_plate(exr)
    return info.width, info.height


@dataclass(frozen=True)
class Sheet:
    layout: SheetLayout
    jpeg: bytes


async def build_sheet(frames: AsyncIterator[tuple[int, bytes]], config: MonitorConfig) -> Sheet:
    """Every frame of a take laid out on one JPEG (decoding runs off the event loop, one frame at a time)."""
    from PIL import Image

    sheet: Any = None
    layout: SheetLayout | None = None
    index = 0
    async for total, exr in frames:
        try:
            if layout is None:
                width, height = await asyncio.to_thread(exr_size, exr)
                layout = sheet_layout(total, width, height, config)
                sheet = Image.new("RGB", layout.size)
            size = (layout.frame_width, layout.frame_height)
            image = await asyncio.to_thread(display_frame, exr, size)
        except ValueError as exc:  # PlateError, an unknown colour space, a shot too long for one sheet
            raise SheetError(f"frame {index}: {exc}") from exc
        column, row = index % layout.columns, index // layout.columns
        sheet.paste(image, (column * layout.frame_width, row * layout.frame_height))
        index += 1
    if layout is None:
        raise SheetError("the take has no frames to play")
    if index != layout.frames:
        raise SheetError(f"the server sent {index} of the take's {layout.frames} frames")

    def encode() -> bytes:
        out = io.BytesIO()
        # 4:4:4: chroma subsampling would smear the colour of frames this small
        sheet.save(out, format="JPEG", quality=config.sheet_jpeg_quality, subsampling=0)
        return out.getvalue()

    return Sheet(layout, await asyncio.to_thread(encode))
