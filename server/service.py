"""The gRPC servicer: parse the request, ask the engine, build the response. Nothing else.

Who is calling comes from the bearer token (server.auth); every error is a typed exception that the
`grpc_errors` decorator maps to its status code, in one place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from protos.ttt_studio.v1 import ttt_studio_pb2_grpc as pb_grpc
from server import wire
from server.auth import Authenticator
from server.engine import Engine
from server.errors import grpc_errors
from server.limits import check_request


def _on_disconnect(context: grpc.ServicerContext) -> Callable[[], bool]:
    """A flag that turns true when the client goes away (stops server streams promptly)."""
    gone = threading.Event()
    context.add_callback(gone.set)
    return gone.is_set


def add_studio_servicer(servicer: StudioServicer, server: grpc.Server) -> None:
    """pb_grpc.add_TTTStudioServicer_to_server, except that FetchFrames sends the chunks its servicer
    serialized itself (wire.serialize_frame_chunk instead of FrameChunk.SerializeToString)."""
    captured: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    class _Recorder:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass

        def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
            captured[service] = dict(handlers)

    pb_grpc.add_TTTStudioServicer_to_server(servicer, _Recorder())
    ((service, handlers),) = captured.items()
    handlers["FetchFrames"] = handlers["FetchFrames"]._replace(response_serializer=wire.serialize_frame_chunk)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


class StudioServicer(pb_grpc.TTTStudioServicer):
    def __init__(self, engine: Engine, authenticator: Authenticator) -> None:
        self._engine = engine
        self._auth = authenticator

    def _caller(self, context: grpc.ServicerContext) -> str:
        return self._auth.caller(context.invocation_metadata())

    def _check(self, request: Any) -> None:
        """Every numeric and enum field of the request inside its limit (server.limits), or INVALID_ARGUMENT."""
        check_request(request, self._engine.limits)

    def _checked_stream(self, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self._check(request)
            yield request

    @grpc_errors
    def GetServerInfo(self, request: pb.GetServerInfoRequest, context: Any) -> pb.ServerInfo:
        self._check(request)
        info = self._engine.server_info(self._caller(context))
        message = wire.server_info_message(info, self._engine.limits, self._engine.config.colour_interop_id)
        policy, usage = wire.resources_message(*self._engine.resources_of(info.caller))
        message.resources.CopyFrom(policy)
        message.caller_usage.CopyFrom(usage)
        return message

    @grpc_errors
    def SubmitShot(self, request: pb.SubmitShotRequest, context: Any) -> pb.SubmitShotResponse:
        self._check(request)
        job, dedup = self._engine.submit(self._caller(context), wire.submit_request(request))
        return pb.SubmitShotResponse(job_id=job.job_id, deduplicated=dedup, job=wire.job_message(job))

    @grpc_errors
    def UploadPlate(
        self, request_iterator: Iterator[pb.UploadPlateChunk], context: Any
    ) -> pb.UploadPlateResponse:
        upload = self._engine.upload_plate(
            self._caller(context), wire.upload_chunks(self._checked_stream(request_iterator))
        )
        return wire.upload_message(upload)

    @grpc_errors
    def UploadAdapter(
        self, request_iterator: Iterator[pb.UploadAdapterChunk], context: Any
    ) -> pb.AdapterInfo:
        record = self._engine.upload_adapter(
            self._caller(context), wire.adapter_chunks(self._checked_stream(request_iterator))
        )
        return wire.adapter_info(record)

    @grpc_errors
    def WatchJob(self, request: pb.WatchJobRequest, context: Any) -> Iterator[pb.JobEvent]:
        self._check(request)
        events = self._engine.watch(
            self._caller(context), request.job_id, request.after_seq, _on_disconnect(context)
        )
        for event in events:
            yield wire.event_message(event)

    @grpc_errors
    def FetchFrames(self, request: pb.FetchFramesRequest, context: Any) -> Iterator[bytes]:
        """Serialized FrameChunks (wire.frame_chunk_bytes; registered with wire.serialize_frame_chunk)."""
        self._check(request)
        chunks = self._engine.fetch_frames(
            self._caller(context),
            request.job_id,
            start_frame=request.start_frame,
            follow=request.follow,
            chunk_bytes=request.chunk_bytes,
            is_done=_on_disconnect(context),
            take=request.take,
            draft=request.draft,
        )
        for chunk in chunks:
            yield wire.frame_chunk_bytes(chunk)

    @grpc_errors
    def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.Job:
        self._check(request)
        return wire.job_message(self._engine.cancel(self._caller(context), request.job_id))

    @grpc_errors
    def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        self._check(request)
        jobs, token = self._engine.list_jobs(
            self._caller(context), wire.job_states(request.states), request.limit, request.page_token
        )
        return pb.ListJobsResponse(jobs=[wire.job_message(j) for j in jobs], next_page_token=token)

    @grpc_errors
    def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        self._check(request)
        return wire.job_message(self._engine.get_job(self._caller(context), request.job_id))

    @grpc_errors
    def GetJobResult(self, request: pb.GetJobResultRequest, context: Any) -> pb.JobResult:
        self._check(request)
        take = request.take if request.HasField("take") else None
        return wire.result_message(self._engine.job_result(self._caller(context), request.job_id, take))

    @grpc_errors
    def ApproveTake(self, request: pb.ApproveTakeRequest, context: Any) -> pb.Job:
        self._check(request)
        return wire.job_message(
            self._engine.approve_take(self._caller(context), request.job_id, request.take)
        )
