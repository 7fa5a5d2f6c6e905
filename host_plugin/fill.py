"""File-based fill: read an OTIO edit, generate the shots it asks for, write the edit with the results.

Used by `ttt-studio fill IN.otio -o OUT.otio`; the generate callable is where the gRPC client plugs in.

Which items are requests: host_plugin.core.requests (marked items; unmarked gaps or long clips only when
asked for with `sources`, named items with `select`). Requests that cannot be generated as written are
refused with a reason before anything is generated.

Partial results are kept: every request that succeeds is placed; one that fails (or is refused) is
reported in FillReport.failures and the others go on (keep_going=False stops at the first failure).
OUT is written to a temporary file next to it and renamed over it, with whatever was placed, so the
edit always matches the frames on disk (when keep_going is off and a request is refused, nothing is
generated and OUT is left as it was).

Resume: when OUT already exists (a previous fill), every generated clip in it whose request id and
frames still match a request of IN, and whose frames are all on disk, is carried over instead of
generated again. The generate callable of `ttt-studio fill` also submits with an idempotency key
derived from the request and the generation settings, so a job that finished on the server after the
previous run stopped is fetched, not generated again. A carried shot with takes goes through `refresh`
first (`ttt-studio fill`: the server's approval now), so a take approved since the last run becomes
the clip.

Input is bounded before it is parsed: a .otio file larger than OtioLimits.max_bytes or nested deeper
than OtioLimits.max_depth is refused by a streaming pre-scan (OTIO's own parser takes seconds at ten
thousand levels and crashes at a hundred thousand); everything else is left to the installed OTIO.
"""

from __future__ import annotations

import collections.abc
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import opentimelineio as otio

from host_plugin.core.errors import FillError, HostPluginError
from host_plugin.core.placement import DEFAULT_MEDIA_KEY, ShotResult, place_generated_shot
from host_plugin.core.requests import (
    Refusal,
    ShotRequest,
    is_generated_track,
    item_record_ranges,
    plain,
    scan_shot_requests,
    timeline_rate,
    timeline_start_frame,
    ttt_metadata,
)
from host_plugin.core.takes import TakeInfo

log = logging.getLogger(__name__)

GenerateFn = Callable[[ShotRequest], ShotResult]
RefreshFn = Callable[[ShotResult], ShotResult]


@dataclass(frozen=True)
class OtioLimits:
    """Bounds on a .otio (JSON) file, checked before OTIO parses it.

    max_depth: JSON nesting levels ([ and {); each nested Stack/Track pair takes about four, so 512
    allows over a hundred nested compositions while OTIO still parses in milliseconds.
    max_bytes: file size; an hour-long feature edit is tens of MB.
    chunk_bytes: how much of the file the pre-scan holds at once.
    """

    max_bytes: int = 256 * 1024 * 1024
    max_depth: int = 512
    chunk_bytes: int = 1024 * 1024


DEFAULT_LIMITS = OtioLimits()
_OUTSIDE_STRING = re.compile(rb'["\[\]{}]')
_INSIDE_STRING = re.compile(rb'["\\]')


@dataclass(frozen=True)
class Failure:
    """A request that was not placed: refused before generation, failed, or not tried after a stop."""

    request_id: str
    name: str
    message: str

    def to_dict(self) -> Dict[str, str]:
        return {"request_id": self.request_id, "name": self.name, "message": self.message}


@dataclass
class FillReport:
    """What fill_timeline did: the requests found, what was placed (generated now or carried over from
    an earlier OUT), what failed, what a nest's trim hides, and whether OUT was written."""

    in_path: str
    out_path: str
    requests: List[ShotRequest] = field(default_factory=list)
    results: List[ShotResult] = field(default_factory=list)
    carried: List[str] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)
    hidden: List[Refusal] = field(default_factory=list)
    written: bool = False

    @property
    def ok(self) -> bool:
        """True when every request was placed."""
        return not self.failures

    def to_dict(self) -> Dict[str, Any]:
        return {
            "in_path": self.in_path,
            "out_path": self.out_path,
            "requests": [r.to_dict() for r in self.requests],
            "results": [r.to_dict() for r in self.results],
            "carried": list(self.carried),
            "failures": [f.to_dict() for f in self.failures],
            "hidden": [h.to_dict() for h in self.hidden],
            "written": self.written,
        }


def prescan_otio_json(path: str, limits: OtioLimits = DEFAULT_LIMITS) -> None:
    """Refuse a JSON file too large or nested too deep for OTIO's parser, reading it in chunks.

    Only brackets outside strings count; the scan keeps its string and escape state across chunks.
    Everything else (syntax, schemas) is left to OTIO.
    """
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise FillError(
            f"{path}: {size} bytes; an OTIO edit read by ttt-studio may have at most {limits.max_bytes}"
        )
    depth, offset, in_string, escaped = 0, 0, False, False
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(limits.chunk_bytes)
            if not chunk:
                return
            i = 0
            while i < len(chunk):
                if escaped:
                    i, escaped = i + 1, False
                    continue
                match = (_INSIDE_STRING if in_string else _OUTSIDE_STRING).search(chunk, i)
                if match is None:
                    break
                i, char = match.end(), match.group()
                if in_string:
                    escaped, in_string = char == b"\\", char != b'"'
                elif char == b'"':
                    in_string = True
                elif char in b"[{":
                    depth += 1
                    if depth > limits.max_depth:
                        raise FillError(
                            f"{path}: JSON nested deeper than {limits.max_depth} levels (at byte "
                            f"{offset + match.start()}); an OTIO edit needs far fewer: the file is damaged or "
                            "not an edit"
                        )
                else:
                    depth -= 1
            offset += len(chunk)


def read_timeline(path: str, limits: OtioLimits = DEFAULT_LIMITS) -> otio.schema.Timeline:
    """Read an OTIO file that must hold a Timeline; FillError names the file and what is wrong."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FillError(f"{path}: no such OTIO file")
    if path.endswith(".otio"):
        prescan_otio_json(path, limits)
    try:
        obj = otio.adapters.read_from_file(path)
    except Exception as exc:  # noqa: BLE001 - OTIO raises ValueError/KeyError/adapter errors
        raise FillError(f"{path}: not a readable OTIO file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, otio.schema.Timeline):
        raise FillError(f"{path}: holds a {_schema_of(obj)}, expected a Timeline (Timeline.1)")
    return obj


def fill_timeline(
    in_path: str,
    out_path: str,
    generate: GenerateFn,
    include_plain_gaps: bool = False,
    sources: Sequence[str] = (),
    select: Sequence[str] = (),
    keep_going: bool = True,
    resume: bool = True,
    refresh: Optional[RefreshFn] = None,
) -> FillReport:
    """Generate the shots requested in IN and write the edit with the generated clips placed to OUT.

    generate(request) -> ShotResult is called once per request still to do, in edit order. sources,
    select: which unmarked items are requests too (see scan_shot_requests); include_plain_gaps adds
    "gaps". keep_going: go on after a failed request (False: stop at the first failure or refusal).
    resume: carry over the clips an existing OUT already holds for unchanged requests; refresh(result)
    -> result is applied to a carried result with takes (e.g. to show the take approved since).
    Returns the report (report.ok is False when anything failed); raises FillError (writing nothing)
    only when IN or an existing OUT cannot be read or OUT cannot be written.
    """
    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    timeline = read_timeline(in_path)
    wanted = tuple(sources) + (("gaps",) if include_plain_gaps else ())
    try:
        scan = scan_shot_requests(timeline, sources=wanted, select=select)
    except HostPluginError as exc:
        raise FillError(f"{in_path}: {exc}") from exc
    report = FillReport(in_path=in_path, out_path=out_path, requests=scan.requests, hidden=scan.hidden)
    report.failures = [Failure(r.id, r.name, r.message) for r in scan.refused]
    for hidden in scan.hidden:
        log.warning("%s: %s", in_path, hidden.message)
    if report.failures and not keep_going:
        return report  # stopped before generating anything: OUT is left as it was
    previous = _previous_results(out_path, timeline) if resume and not _same_file(in_path, out_path) else {}
    if not scan.requests:
        log.warning("%s: no shot requests found (sources %s)", in_path, list(wanted) or "marked only")
    for index, request in enumerate(scan.requests):
        where = _where(request)
        carried = previous.get((request.id, request.record_start, request.duration))
        if carried is not None and carried.takes and refresh is not None:
            try:
                carried = refresh(carried)
                _check_frames_exist(carried)
            except Exception as exc:  # noqa: BLE001 - the shot is kept as it was; the reason is reported
                report.failures.append(
                    Failure(request.id, request.name, f"{where}: takes not refreshed: {exc}")
                )
                log.error("%s: %s: takes not refreshed: %s", in_path, where, exc)
        if carried is not None and _carry(timeline, request, carried, where):
            report.carried.append(request.id)
            continue
        try:
            result = generate(request)
            if not isinstance(result, ShotResult):
                raise FillError(f"generate returned {type(result).__name__}, expected ShotResult")
            _check_frames_exist(result)
            place_generated_shot(timeline, request, result)
        except Exception as exc:  # noqa: BLE001 - one request's failure is reported, the others go on
            message = f"{where}: {type(exc).__name__}: {exc}"
            report.failures.append(Failure(request.id, request.name, message))
            log.error("%s: %s", in_path, message)
            if not keep_going:
                for rest in scan.requests[index + 1 :]:
                    report.failures.append(
                        Failure(rest.id, rest.name, f"{_where(rest)}: not tried (stopped at {request.id})")
                    )
                break
            continue
        report.results.append(result)
    _write_atomically(timeline, out_path)
    report.written = True
    log.info(
        "%s: %d shot(s) generated, %d kept, %d failed; written to %s",
        in_path,
        len(report.results),
        len(report.carried),
        len(report.failures),
        out_path,
    )
    return report


def _carry(timeline: otio.schema.Timeline, request: ShotRequest, result: ShotResult, where: str) -> bool:
    """Place a result an earlier fill made for this request; False (logged) when it no longer fits."""
    try:
        place_generated_shot(timeline, request, result)
    except HostPluginError as exc:
        log.warning(
            "%s: the earlier result (job %s) no longer fits (%s); generated again", where, result.job_id, exc
        )
        return False
    log.info("%s: already placed by an earlier fill (job %s); kept", where, result.job_id)
    return True


def _where(request: ShotRequest) -> str:
    try:
        at = request.record_timecode
    except (HostPluginError, ValueError):  # a frame beyond what a timecode can say
        at = f"frame {request.record_start}"
    return f"request {request.id} ({request.kind} {request.name!r} at {at})"


def _same_file(a: str, b: str) -> bool:
    return os.path.exists(b) and os.path.samefile(a, b)


def _previous_results(out_path: str, timeline: otio.schema.Timeline) -> Dict[Any, ShotResult]:
    """{(request id, record start, duration): result} of the generated clips an existing OUT holds
    whose frames are all on disk; {} when there is no OUT."""
    if not os.path.exists(out_path):
        return {}
    try:
        previous = read_timeline(out_path)
    except FillError as exc:
        raise FillError(
            f"{exc}; it is the output of this fill: remove it, or pass --no-resume to overwrite it"
        ) from exc
    try:
        rate = timeline_rate(previous)
        if rate != timeline_rate(timeline):
            log.warning("%s is at %s fps, the edit at another rate: nothing carried over", out_path, rate)
            return {}
        origin = timeline_start_frame(previous, rate)
        found = {}
        for track in previous.video_tracks():
            if not is_generated_track(track):
                continue
            for start, duration, item in item_record_ranges(track, rate, origin):
                result = _result_of(item) if isinstance(item, otio.schema.Clip) else None
                if result is None:
                    continue
                try:
                    _check_frames_exist(result)
                except FillError as exc:
                    log.warning("%s: %s; generated again", out_path, exc)
                    continue
                found[(result.request_id, start, duration)] = result
        return found
    except (HostPluginError, ValueError) as exc:
        raise FillError(
            f"{out_path}: its generated tracks cannot be read back ({exc}); pass --no-resume"
        ) from exc


def _result_of(clip: otio.schema.Clip) -> Optional[ShotResult]:
    """The ShotResult a generated clip was placed from (its sequence reference and metadata)."""
    meta = ttt_metadata(clip) or {}
    ref = clip.media_references().get(DEFAULT_MEDIA_KEY)
    if (
        not meta.get("request_id")
        or not meta.get("job_id")
        or not isinstance(ref, otio.schema.ImageSequenceReference)
    ):
        return None
    extra = {k: v for k, v in meta.items() if k not in _RESULT_KEYS}
    return ShotResult(
        request_id=str(meta["request_id"]),
        job_id=str(meta["job_id"]),
        directory=ref.target_url_base,
        name_prefix=ref.name_prefix,
        frame_count=ref.number_of_images_in_sequence(),
        rate=ref.rate,
        start_frame=ref.start_frame,
        padding=ref.frame_zero_padding,
        name_suffix=ref.name_suffix,
        seed=meta.get("seed"),
        model=str(meta.get("model") or ""),
        storyboard=list(plain(meta.get("storyboard") or [])),
        prompt=meta.get("prompt"),
        metadata=extra,
        takes=[TakeInfo.from_dict(dict(plain(t))) for t in meta.get("takes") or []],
        take=int(meta.get("take") or 0),
    )


_RESULT_KEYS = (
    "request_id",
    "job_id",
    "request_kind",
    "storyboard",
    "prompt",
    "seed",
    "model",
    "takes",
    "take",
)


def _check_frames_exist(result: ShotResult) -> None:
    if not result.target_url_base.startswith("file://"):
        return  # remote media: the server owns it
    missing = [p for p in result.frame_paths() if not os.path.isfile(p)]
    if missing:
        raise FillError(
            f"result {result.job_id!r} is missing {len(missing)} of {result.frame_count} frames, first {missing[0]}"
        )


def _write_atomically(timeline: otio.schema.Timeline, out_path: str) -> None:
    directory = os.path.dirname(os.path.abspath(out_path))
    suffix = os.path.splitext(out_path)[1] or ".otio"
    handle, temp = tempfile.mkstemp(suffix=suffix, prefix=".ttt_fill_", dir=directory)
    os.close(handle)
    try:
        otio.adapters.write_to_file(timeline, temp)
        os.replace(temp, out_path)
    except Exception as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise FillError(
            f"{out_path}: could not write the filled timeline: {type(exc).__name__}: {exc}"
        ) from exc


def _schema_of(obj: Any) -> str:
    name = getattr(obj, "original_schema_name", None)
    if name:
        return f"{name}.{getattr(obj, 'original_schema_version', '?')} (a schema this OTIO does not know)"
    if not hasattr(obj, "schema_name"):  # a bare JSON list or object without OTIO_SCHEMA
        return f"JSON {'list' if isinstance(obj, collections.abc.Sequence) else 'object'} without OTIO_SCHEMA"
    return f"{obj.schema_name()}.{obj.schema_version()}"
