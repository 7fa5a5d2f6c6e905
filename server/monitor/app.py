"""The monitor's Starlette app: the page, its JSON endpoints and one server-sent-events stream per page.

Every endpoint but sign-in needs the session cookie; each one turns into gRPC calls made with that
session's token (server.monitor.gateway), and a gRPC error comes back as JSON {"error": "..."} with the
HTTP status that matches its code, the server's message kept. A token the server stops accepting
(UNAUTHENTICATED) ends the session.

    POST /api/signin {"token"}        GetServerInfo with the token; sets the cookie
    POST /api/signout                 GET /api/me
    GET  /api/jobs                    ListJobs             GET /api/jobs/{id}   GetJob
    POST /api/jobs/{id}/cancel        CancelJob
    POST /api/jobs/{id}/takes/{k}/approve                  ApproveTake
    GET  /api/jobs/{id}/takes/{k}/playback[?draft=1]       the take's playback sheet: layout and rate
    GET  /api/jobs/{id}/takes/{k}/sheet.jpg[?draft=1]      the sheet itself (FetchFrames, EXR -> sRGB)
    GET  /api/stream                  text/event-stream: "jobs" (the queue, when it changes), "event"
                                      (WatchJob events of unfinished jobs: state, progress, preview, frames),
                                      "server" (connection lost / back), "signed-out"
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import TERMINAL
from server.monitor.config import MonitorConfig
from server.monitor.gateway import (
    UINT32_MAX,
    Gateway,
    Sheet,
    SheetError,
    build_sheet,
    event_json,
    job_json,
    shot_rate,
)
from server.monitor.sessions import Session, SessionStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "ttt_monitor_session"
HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""gRPC status -> HTTP status of the JSON error; any other code is 502 (the server failed the call)."""
PAGE_HEADERS = {
    # the page loads only its own files; previews arrive as data: URLs
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
RETRY_S = 2.0
"""After the server is unreachable, the page's stream asks again this often."""
STREAM_QUEUE = 64
"""Events waiting for a slow browser; the watch streams wait (gRPC flow control) beyond this."""


class NotSignedIn(Exception):
    """The request has no live session (never signed in, signed out, expired, or the token was refused)."""


class BadRequest(Exception):
    """A request the monitor refuses before calling the server; the message says what to fix."""


class Monitor:
    """The app's state: the settings, the sessions, the gRPC gateway and the playback sheets made so far."""

    def __init__(self, config: MonitorConfig, gateway: Gateway | None = None) -> None:
        self.config = config
        self.sessions = SessionStore(config.session_idle_s, config.max_sessions)
        self.gateway = gateway or Gateway(config)
        self._sheets: OrderedDict[tuple[str, str, int, bool], Sheet] = OrderedDict()
        self._sheet_locks: dict[tuple[str, str, int, bool], asyncio.Lock] = {}

    def session(self, request: Request) -> Session:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise NotSignedIn("not signed in: sign in with your ttt-studio token")
        return session

    async def sheet(self, session: Session, job_id: str, take: int, draft: bool) -> Sheet:
        """The take's playback sheet, made once per user, job, take and draft (kept in a small LRU)."""
        key = (session.caller, job_id, take, draft)
        lock = self._sheet_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._sheets:
                self._sheets.move_to_end(key)
                return self._sheets[key]
            frames = self.gateway.frames(session.token, job_id, take, draft)
            try:
                sheet = await build_sheet(frames, self.config)
            except SheetError as exc:
                raise SheetError(f"take {take} of job {job_id}: {exc}") from exc
            finally:
                await frames.aclose()
            self._sheets[key] = sheet
            while len(self._sheets) > self.config.sheet_cache:
                self._sheets.popitem(last=False)
        self._sheet_locks.pop(key, None)
        return sheet


# ---------------------------------------------------------------------- helpers


def _monitor(request: Request) -> Monitor:
    return request.app.state.monitor


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def _take(request: Request) -> int:
    take = request.path_params["take"]
    if not 0 <= take <= UINT32_MAX:
        raise BadRequest(f"take must be a take index 0..{UINT32_MAX}, got {take}")
    return take


def _draft(request: Request) -> bool:
    value = request.query_params.get("draft", "0")
    if value not in ("0", "1"):
        raise BadRequest(f"draft must be 0 or 1, got {value!r}")
    return value == "1"


def _playable(job: pb.Job, take: int, draft: bool) -> None:
    """Raise BadRequest unless the take has all its (draft) frames stored."""
    takes = {t.index: t for t in job.takes}
    if not takes:  # a server from before takes: the job is take 0
        if take != 0:
            raise BadRequest(f"job {job.job_id} has one take (0), not take {take}")
        ready = job.state == pb.JOB_STATE_COMPLETED and not draft
    elif take not in takes:
        raise BadRequest(f"job {job.job_id} has takes 0..{len(takes) - 1}, not take {take}")
    else:
        ready = takes[take].draft_complete if draft else takes[take].state == pb.JOB_STATE_COMPLETED
    if not ready:
        kind = "draft" if draft else "final frames"
        raise BadRequest(f"take {take} of job {job.job_id} has no complete {kind} yet")


# ---------------------------------------------------------------------- endpoints


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


async def sign_in(request: Request) -> Response:
    monitor = _monitor(request)
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest('sign-in expects JSON {"token": "..."}') from None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise BadRequest("enter your ttt-studio token (made by `ttt-studio token add USER` on the server)")
    token = token.strip()
    try:
        info = await monitor.gateway.server_info(token)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            message = (
                f"sign-in refused: the server at {monitor.config.server} does not accept this token; check it, or "
                f"ask for one (`ttt-studio token add USER` on the server). The server said: {exc.details()}"
            )
            return _json({"error": message}, 401)
        raise
    fps = info.native_fps_num / (info.native_fps_den or 1) if info.native_fps_num else info.fps
    session_id = monitor.sessions.create(token, info.caller, fps)
    response = _json({"caller": info.caller, "server": monitor.config.server})
    response.set_cookie(
        COOKIE,
        session_id,  # a browser-session cookie: the monitor ends idle sessions itself
        httponly=True,
        samesite="strict",
        secure=monitor.config.https,
    )
    log.info("monitor sign-in", extra={"caller": info.caller})
    return response


async def sign_out(request: Request) -> Response:
    _monitor(request).sessions.drop(request.cookies.get(COOKIE))
    response = _json({"signed_out": True})
    response.delete_cookie(COOKIE)
    return response


async def me(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    return _json({"caller": session.caller, "server": monitor.config.server})


async def list_jobs(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    jobs = await monitor.gateway.list_jobs(session.token)
    return _json({"jobs": [job_json(job, session.native_fps) for job in jobs]})


async def get_job(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    job = await monitor.gateway.get_job(session.token, request.path_params["job_id"])
    return _json(job_json(job, session.native_fps))


async def cancel_job(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    job = await monitor.gateway.cancel(session.token, request.path_params["job_id"])
    log.info("monitor cancel", extra={"caller": session.caller, "job_id": job.job_id})
    return _json(job_json(job, session.native_fps))


async def approve_take(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    job = await monitor.gateway.approve(session.token, request.path_params["job_id"], _take(request))
    log.info("monitor approve", extra={"caller": session.caller, "job_id": job.job_id})
    return _json(job_json(job, session.native_fps))


async def playback(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    job_id, take, draft = request.path_params["job_id"], _take(request), _draft(request)
    job = await monitor.gateway.get_job(session.token, job_id)
    _playable(job, take, draft)
    sheet = await monitor.sheet(session, job.job_id, take, draft)
    rate = shot_rate(job, session.native_fps)
    layout = sheet.layout
    return _json(
        {
            "job_id": job.job_id,
            "take": take,
            "draft": draft,
            "rate": f"{rate.numerator}/{rate.denominator}",
            "fps": float(rate),
            "frames": layout.frames,
            "columns": layout.columns,
            "frame_width": layout.frame_width,
            "frame_height": layout.frame_height,
            "sheet": f"/api/jobs/{job.job_id}/takes/{take}/sheet.jpg?draft={int(draft)}",
        }
    )


async def sheet_image(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    job_id, take, draft = request.path_params["job_id"], _take(request), _draft(request)
    job = await monitor.gateway.get_job(session.token, job_id)  # the user may see this job
    _playable(job, take, draft)
    sheet = await monitor.sheet(session, job.job_id, take, draft)
    return Response(sheet.jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _sse(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(request: Request) -> Response:
    monitor = _monitor(request)
    session = monitor.session(request)
    return StreamingResponse(
        _page_events(monitor, session, request.cookies.get(COOKIE, "")),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _page_events(monitor: Monitor, session: Session, session_id: str) -> AsyncIterator[str]:
    """The queue (ListJobs every poll interval, sent when it changes) and the events of every unfinished job
    (one WatchJob per job, resumed after its last seq if it drops), merged into one event stream."""
    config, gateway = monitor.config, monitor.gateway
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(STREAM_QUEUE)
    watches: dict[str, asyncio.Task[None]] = {}
    last_seq: dict[str, int] = {}

    async def watch(job_id: str) -> None:
        try:
            async for event in gateway.watch(session.token, job_id, last_seq.get(job_id, 0)):
                last_seq[job_id] = event.seq
                try:
                    data = event_json(event)
                except ValueError as exc:  # e.g. a preview in a format this monitor does not know
                    log.warning("monitor skipped event %d of job %s: %s", event.seq, job_id, exc)
                    continue
                await queue.put(("event", data))
        except grpc.aio.AioRpcError as exc:
            log.info("monitor watch of %s ended: %s", job_id, exc.code().name)
        finally:
            watches.pop(job_id, None)

    async def poll() -> None:
        sent: Any = None
        reachable = True
        while True:
            try:
                jobs = await gateway.list_jobs(session.token)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    await queue.put(
                        (
                            "signed-out",
                            {"error": f"the server no longer accepts your token ({exc.details()})"},
                        )
                    )
                    return
                if reachable:
                    await queue.put(("server", {"ok": False, "error": f"{exc.code().name}: {exc.details()}"}))
                reachable = False
                await asyncio.sleep(RETRY_S)
                continue
            if not reachable:
                await queue.put(("server", {"ok": True}))
                reachable = True
            rows = [job_json(job, session.native_fps) for job in jobs]
            if rows != sent:
                await queue.put(("jobs", rows))
                sent = rows
            for job in jobs:
                if job.state not in TERMINAL and job.job_id not in watches:
                    watches[job.job_id] = asyncio.create_task(watch(job.job_id))
            await asyncio.sleep(config.poll_interval_s)

    poller = asyncio.create_task(poll())
    try:
        while True:
            try:
                name, data = await asyncio.wait_for(queue.get(), config.heartbeat_s)
            except TimeoutError:
                if poller.done():
                    poller.result()  # re-raise what stopped it
                    return
                yield ": keep-alive\n\n"
                continue
            yield _sse(name, data)
            if name == "signed-out":
                monitor.sessions.drop(session_id)
                return
    finally:
        poller.cancel()
        for task in list(watches.values()):
            task.cancel()


# ---------------------------------------------------------------------- errors and the app


async def _grpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        _monitor(request).sessions.drop(request.cookies.get(COOKIE))
    status = HTTP_OF_GRPC.get(code, 502)
    message = f"{code.name}: {exc.details()}"
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"the ttt-studio server at {_monitor(request).config.server} is unreachable ({message})"
    return _json({"error": message, "code": code.name}, status)


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    return _json({"error": str(exc)}, 401)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _json({"error": str(exc)}, 400)


async def _sheet_error(request: Request, exc: Exception) -> Response:
    log.warning("monitor could not show a take: %s", exc)
    return _json({"error": str(exc)}, 502)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _json({"error": exc.detail}, exc.status_code)


def create_app(config: MonitorConfig, gateway: Gateway | None = None) -> Starlette:
    """The monitor's ASGI app (serve it with uvicorn: server.cli.monitor)."""
    monitor = Monitor(config, gateway)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await monitor.gateway.open()  # the aio channel belongs to the serving event loop
        try:
            yield
        finally:
            await monitor.gateway.close()

    routes = [
        Route("/", index),
        Route("/api/signin", sign_in, methods=["POST"]),
        Route("/api/signout", sign_out, methods=["POST"]),
        Route("/api/me", me),
        Route("/api/jobs", list_jobs),
        Route("/api/stream", stream),
        Route("/api/jobs/{job_id}", get_job),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/jobs/{job_id}/takes/{take:int}/approve", approve_take, methods=["POST"]),
        Route("/api/jobs/{job_id}/takes/{take:int}/playback", playback),
        Route("/api/jobs/{job_id}/takes/{take:int}/sheet.jpg", sheet_image),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            grpc.aio.AioRpcError: _grpc_error,
            NotSignedIn: _not_signed_in,
            BadRequest: _bad_request,
            SheetError: _sheet_error,
            HTTPException: _http_error,
        },
    )
    app.state.monitor = monitor
    return app
