"""A small Python client for the ttt-studio server (used by the CLI and the tests).

    with StudioClient("127.0.0.1:50051", token="...") as client:
        job_id = client.submit([{"text": "..."}], height=32, width=32, steps=2)
        for event in client.watch(job_id):
            ...
        paths = client.fetch(job_id, "out/frames")

watch() and fetch() resume by themselves after a dropped connection (they pass the last event seq /
the next frame index back to the server); submit() retries with the same idempotency key, so a retry
never makes a second job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from protos.ttt_studio.v1 import ttt_studio_pb2_grpc as pb_grpc
from server.limits import InputLimits

log = logging.getLogger(__name__)

TOKEN_ENV = "TTT_STUDIO_TOKEN"
DEFAULT_MESSAGE_BYTES = 64 << 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
PRIORITIES = {"preview": pb.PRIORITY_PREVIEW, "final": pb.PRIORITY_FINAL}
TERMINAL = (pb.JOB_STATE_COMPLETED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"  # the weights file of an adapter folder
PAGE_SIZE = InputLimits().max_list_page  # ListJobs answers at most this many per page (a default server)


def state_name(state: int) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def event_take(event: pb.JobEvent) -> int | None:
    """The take a progress, preview or frames event belongs to; None for a state change (whole job)."""
    kind = event.WhichOneof("kind")
    return None if kind in (None, "state") else getattr(event, kind).take


class StudioClient:
    """Blocking client. token: the bearer token (default: env TTT_STUDIO_TOKEN; None for no-auth servers).
    root_certificates: PEM bytes of the CA for TLS (tls=True with None uses the system roots)."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
        retries: int = 5,
        timeout_s: float = 60.0,
    ) -> None:
        self.address = address
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if tls or root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.TTTStudioStub(self._channel)
        self.retries = retries
        self.timeout_s = timeout_s

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> StudioClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until the channel connects (raises grpc.FutureTimeoutError)."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def _unary(self, method: Callable[..., Any], request: Any, retry: bool = True) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return method(request, metadata=self.metadata, timeout=self.timeout_s)
            except grpc.RpcError as exc:
                if not retry or exc.code() not in _RETRYABLE or attempt == self.retries:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ calls

    def info(self) -> pb.ServerInfo:
        return self._unary(self.stub.GetServerInfo, pb.GetServerInfoRequest())

    def submit(
        self,
        storyboard: Iterable[dict[str, Any]] | Any,
        *,
        height: int = 0,
        width: int = 0,
        steps: int = 0,
        guidance_scale: float | None = None,
        sampler: str = "",
        seed: int | None = None,
        dtype: str = "",
        preview_every: int = 0,
        priority: str = "final",
        idempotency_key: str | None = None,
        shot_name: str = "",
        start_frame: int | None = None,
        request_id: str = "",
        record_start: int | None = None,
        otio_json: str = "",
        plate_upload_ids: Iterable[str] = (),
        strength: float | None = None,
        plate_mode: str = "",
        adapters: Iterable[tuple[str, float]] = (),
        matte_upload_ids: Iterable[str] = (),
        matte_feather: float | None = None,
        takes: int = 0,
        draft_steps: int = 0,
    ) -> pb.SubmitShotResponse:
        """Queue a shot; storyboard is the format-3 list (or a Storyboard). Unset values: server defaults.

        plate_upload_ids (in frame order) with plate_mode "restyle" (one plate per output frame, strength
        required), "continue" (the first 1 + 4k frames kept) or "element" (generated inside a matte:
        matte_upload_ids, one per plate, else the plates' alpha; matte_feather in output pixels); see
        GenerationParameters in the proto. adapters: (name, scale) pairs of the server's adapters
        (adapters() lists them). takes: how many takes (seeds seed, seed + 1, ...; 0: one). draft_steps:
        a preview job's draft (0: the server's default)."""
        if hasattr(storyboard, "to_list"):
            storyboard = storyboard.to_list()
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {sorted(PRIORITIES)}, got {priority!r}")
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
            params.guidance_scale = guidance_scale
        if seed is not None:
            params.seed = seed
        if strength is not None:
            params.strength = strength
        if plate_mode:
            params.plate_mode = plate_mode
        if matte_feather is not None:
            params.matte_feather = matte_feather
        context = pb.ShotContext(shot_name=shot_name, otio_json=otio_json, request_id=request_id)
        if start_frame is not None:
            context.start_frame = start_frame
        if record_start is not None:
            context.record_start = record_start
        request = pb.SubmitShotRequest(
            storyboard=pb.Storyboard(
                segments=[
                    pb.Segment(
                        text=s.get("text", ""),
                        neg_text=s.get("neg_text", ""),
                        requires_scene_transition=bool(s.get("requires_scene_transition", False)),
                    )
                    for s in storyboard
                ]
            ),
            parameters=params,
            priority=PRIORITIES[priority],
            idempotency_key=idempotency_key or uuid.uuid4().hex,  # retries below reuse it
            context=context,
            plate_upload_ids=list(plate_upload_ids),
            adapters=[pb.AdapterRef(name=name, scale=scale) for name, scale in adapters],
            matte_upload_ids=list(matte_upload_ids),
        )
        return self._unary(self.stub.SubmitShot, request)

    def upload_plate(
        self, source: str | os.PathLike[str] | bytes, chunk_bytes: int = 1 << 20, display_name: str = ""
    ) -> pb.UploadPlateResponse:
        """Send an EXR plate (a local file or bytes) in numbered chunks; returns its upload id."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        name = display_name or ("" if isinstance(source, bytes) else Path(source).name)

        def chunks() -> Iterator[pb.UploadPlateChunk]:
            header = pb.PlateHeader(
                display_name=name, total_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
            for seq, offset in enumerate(range(0, len(data), chunk_bytes)):
                chunk = pb.UploadPlateChunk(sequence=seq, data=data[offset : offset + chunk_bytes])
                if seq == 0:
                    chunk.header.CopyFrom(header)
                yield chunk

        return self.stub.UploadPlate(chunks(), metadata=self.metadata, timeout=self.timeout_s)

    def upload_adapter(
        self,
        source: str | os.PathLike[str] | bytes,
        name: str = "",
        publish: bool = False,
        chunk_bytes: int = 1 << 20,
    ) -> pb.AdapterInfo:
        """Send a LoRA adapter (one .safetensors file with its config in the metadata, or a folder holding
        pytorch_lora_weights.safetensors, or bytes) in numbered chunks. name: default the file's stem (the
        folder's name for pytorch_lora_weights.safetensors). publish: every user may use it (admin tokens only)."""
        if isinstance(source, bytes):
            data, default = source, ""
        else:
            path = Path(source)
            file = path / ADAPTER_WEIGHTS if path.is_dir() else path
            data, default = file.read_bytes(), file.parent.name if file.name == ADAPTER_WEIGHTS else file.stem
        name = name or default
        if not name:
            raise ValueError("upload_adapter: give a name for adapter bytes")

        def chunks() -> Iterator[pb.UploadAdapterChunk]:
            header = pb.AdapterHeader(
                name=name, total_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), publish=publish
            )
            for seq, offset in enumerate(range(0, len(data), chunk_bytes)):
                chunk = pb.UploadAdapterChunk(sequence=seq, data=data[offset : offset + chunk_bytes])
                if seq == 0:
                    chunk.header.CopyFrom(header)
                yield chunk

        return self.stub.UploadAdapter(chunks(), metadata=self.metadata, timeout=self.timeout_s)

    def adapters(self) -> list[pb.AdapterInfo]:
        """The adapters this caller may name in submit(adapters=...): published ones and their own."""
        return list(self.info().adapters)

    def watch(
        self, job_id: str, after_seq: int = 0, reconnect: bool = True, take: int | None = None
    ) -> Iterator[pb.JobEvent]:
        """The job's events until it finishes; after a dropped stream, resumes from the last seq seen.

        take: only that take's progress, previews and frames (state changes and approvals always pass);
        None: every take's. Each such event says its take and whether it belongs to the draft."""
        last = after_seq
        failures = 0
        while True:
            call = self.stub.WatchJob(
                pb.WatchJobRequest(job_id=job_id, after_seq=last), metadata=self.metadata
            )
            try:
                for event in call:
                    last = event.seq
                    failures = 0
                    if take is None or event_take(event) in (None, take):
                        yield event
                return
            except grpc.RpcError as exc:
                if not reconnect or exc.code() not in _RETRYABLE or failures >= self.retries:
                    raise
                failures += 1
                log.info("watch of %s dropped (%s); resuming after event %d", job_id, exc.code().name, last)
                time.sleep(min(2.0, 0.1 * 2**failures))
            finally:
                call.cancel()  # the caller may stop iterating early: end the stream on the server too

    def fetch(
        self,
        job_id: str,
        out_dir: str | os.PathLike[str],
        start_frame: int = 0,
        follow: bool = False,
        on_frame: Callable[[Path, pb.FrameChunk], None] | None = None,
        chunk_bytes: int = 0,
        take: int = 0,
        draft: bool = False,
    ) -> list[Path]:
        """Write one take's final (or draft) frames into out_dir under their server-given names; resumes
        after a drop. Every take's frames have the same names: give each take its own out_dir.

        Each frame is written to a .part file, checked against the server's sha256, then renamed.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        next_index = start_frame
        failures = 0
        while True:
            try:
                handle = None
                digest = None
                request = pb.FetchFramesRequest(
                    job_id=job_id,
                    start_frame=next_index,
                    follow=follow,
                    chunk_bytes=chunk_bytes,
                    take=take,
                    draft=draft,
                )
                for chunk in self.stub.FetchFrames(request, metadata=self.metadata):
                    if not _SAFE_NAME.match(chunk.filename) or chunk.filename.startswith("."):
                        raise ValueError(f"server sent an unsafe frame name {chunk.filename!r}")
                    part = out / (chunk.filename + ".part")
                    if chunk.offset == 0:
                        handle = open(part, "wb")  # noqa: SIM115 - closed on the last chunk
                        digest = hashlib.sha256()
                    if handle is None or digest is None:
                        raise ValueError(
                            f"frame {chunk.frame_index}: chunk at offset {chunk.offset} without its start"
                        )
                    handle.write(chunk.data)
                    digest.update(chunk.data)
                    if chunk.last:
                        handle.close()
                        handle = None
                        if chunk.sha256 and digest.hexdigest() != chunk.sha256:
                            part.unlink(missing_ok=True)
                            raise ValueError(f"frame {chunk.filename}: sha256 mismatch after transfer")
                        final = out / chunk.filename
                        os.replace(part, final)
                        written.append(final)
                        next_index = chunk.frame_index + 1
                        failures = 0
                        if on_frame is not None:
                            on_frame(final, chunk)
                return written
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE or failures >= self.retries:
                    raise
                failures += 1
                log.info(
                    "fetch of %s dropped (%s); resuming at frame %d", job_id, exc.code().name, next_index
                )
                time.sleep(min(2.0, 0.1 * 2**failures))

    def cancel(self, job_id: str) -> pb.Job:
        return self._unary(self.stub.CancelJob, pb.CancelJobRequest(job_id=job_id))

    def job(self, job_id: str) -> pb.Job:
        return self._unary(self.stub.GetJob, pb.GetJobRequest(job_id=job_id))

    def jobs(self, states: Iterable[str] = (), limit: int = 0) -> list[pb.Job]:
        """The caller's jobs, newest first (states by name: 'queued', 'completed', ...); all pages."""
        wanted = [pb.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states]
        jobs: list[pb.Job] = []
        token = ""
        while True:
            size = min(limit or 100, PAGE_SIZE)  # a bigger limit is fetched page by page
            page = self._unary(
                self.stub.ListJobs, pb.ListJobsRequest(states=wanted, limit=size, page_token=token)
            )
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token or (limit and len(jobs) >= limit):
                return jobs[: limit or None]

    def result(self, job_id: str, take: int | None = None) -> pb.JobResult:
        """The completed job's result for `take` (None: the approved take, else take 0)."""
        request = pb.GetJobResultRequest(job_id=job_id)
        if take is not None:
            request.take = take
        return self._unary(self.stub.GetJobResult, request)

    def approve_take(self, job_id: str, take: int) -> pb.Job:
        """Mark take `take` of the job approved (by this token's user, now); replaces an earlier approval."""
        return self._unary(self.stub.ApproveTake, pb.ApproveTakeRequest(job_id=job_id, take=take))

    def wait(self, job_id: str, on_event: Callable[[pb.JobEvent], None] | None = None) -> pb.Job:
        """Watch until the job finishes; returns its final state."""
        for event in self.watch(job_id):
            if on_event is not None:
                on_event(event)
        return self.job(job_id)

    def fetch_result(
        self, job_id: str, out_dir: str | os.PathLike[str], take: int | None = None
    ) -> tuple[list[Path], str]:
        """Fetch one take's frames (None: the approved take, else take 0) into out_dir and return
        (paths, the result OTIO pointing at them)."""
        from server.result import relocate_result

        result = self.result(job_id, take)
        paths = self.fetch(job_id, out_dir, take=result.take)
        return paths, relocate_result(result.otio_json, str(Path(out_dir).resolve()))
