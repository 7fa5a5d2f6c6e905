"""File-based fill: read an OTIO edit, generate every shot it asks for, write the edit with the results.

Used by `ttt-studio fill IN.otio OUT.otio`; the generate callable is where the gRPC client plugs in.
All or nothing: every request is generated and placed on an in-memory copy, then OUT is written to a
temporary file next to it and renamed over it. If anything fails, OUT is not touched.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Tuple

import opentimelineio as otio

from host_plugin.core.errors import FillError, HostPluginError
from host_plugin.core.placement import ShotResult, place_generated_shot
from host_plugin.core.requests import ShotRequest, find_shot_requests

log = logging.getLogger(__name__)

GenerateFn = Callable[[ShotRequest], ShotResult]
# value types OTIO serialises with an OTIO_SCHEMA key but does not list in type_version_map()
_VALUE_SCHEMAS = ("RationalTime", "TimeRange", "TimeTransform", "Box2d", "V2d")


@dataclass
class FillReport:
    """What fill_timeline did: the requests found and the result placed for each."""

    in_path: str
    out_path: str
    requests: List[ShotRequest] = field(default_factory=list)
    results: List[ShotResult] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "in_path": self.in_path,
            "out_path": self.out_path,
            "requests": [r.to_dict() for r in self.requests],
            "results": [r.to_dict() for r in self.results],
        }


def read_timeline(path: str) -> otio.schema.Timeline:
    """Read an OTIO file that must hold a Timeline; FillError names the file and what is wrong."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FillError(f"{path}: no such OTIO file")
    if path.endswith(".otio"):
        _check_otio_json(path)
    try:
        obj = otio.adapters.read_from_file(path)
    except Exception as exc:  # noqa: BLE001 - OTIO raises ValueError/AttributeError/adapter errors
        raise FillError(f"{path}: not a readable OTIO file: {type(exc).__name__}: {exc}") from exc
    if obj.is_unknown_schema:
        raise FillError(
            f"{path}: top-level object has an unknown OTIO schema ({_schema_of(obj)}); expected Timeline.1"
        )
    if not isinstance(obj, otio.schema.Timeline):
        raise FillError(f"{path}: holds a {obj.schema_name()}, expected a Timeline")
    return obj


def fill_timeline(
    in_path: str,
    out_path: str,
    generate: GenerateFn,
    include_plain_gaps: bool = False,
) -> FillReport:
    """Generate every shot requested in IN and write the edit with generated clips placed to OUT.

    generate(request) -> ShotResult is called once per request, in order. Raises FillError (and writes
    nothing) when IN is malformed, a request is malformed, generate fails or returns frames that are
    missing on disk, or placement fails.
    """
    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    timeline = read_timeline(in_path)
    try:
        requests = find_shot_requests(timeline, include_plain_gaps=include_plain_gaps)
    except HostPluginError as exc:
        raise FillError(f"{in_path}: {exc}") from exc
    report = FillReport(in_path=in_path, out_path=out_path, requests=requests)
    if not requests:
        log.warning("%s: no shot requests found (include_plain_gaps=%s)", in_path, include_plain_gaps)
    for request in requests:
        where = f"request {request.id} ({request.kind} {request.name!r} at {request.record_timecode})"
        try:
            result = generate(request)
        except Exception as exc:  # noqa: BLE001 - any generator failure aborts the fill, named
            raise FillError(f"{in_path}: {where}: generate failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, ShotResult):
            raise FillError(
                f"{in_path}: {where}: generate returned {type(result).__name__}, expected ShotResult"
            )
        _check_frames_exist(result, where)
        try:
            place_generated_shot(timeline, request, result)
        except HostPluginError as exc:
            raise FillError(f"{in_path}: {where}: {exc}") from exc
        report.results.append(result)
    _write_atomically(timeline, out_path)
    log.info("%s: %d shots placed, written to %s", in_path, len(report.results), out_path)
    return report


def _check_otio_json(path: str) -> None:
    """Clear messages for the common ways a .otio (JSON) file is broken, before OTIO's own parser."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as exc:
        raise FillError(f"{path}: not a text OTIO file (bytes are not UTF-8: {exc})") from exc
    except json.JSONDecodeError as exc:
        raise FillError(f"{path}: bad JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict) or "OTIO_SCHEMA" not in data:
        kind = type(data).__name__
        raise FillError(f"{path}: top-level JSON {kind} has no OTIO_SCHEMA key; expected a Timeline.1 object")
    schema = data["OTIO_SCHEMA"]
    if not isinstance(schema, str) or not schema.startswith("Timeline."):
        raise FillError(f"{path}: top-level OTIO_SCHEMA is {schema!r}, expected 'Timeline.1'")
    known = dict(otio.core.type_version_map())
    known.update({name: 1 for name in _VALUE_SCHEMAS})
    for where, schema in _schemas(data, "timeline"):
        name, _, version = str(schema).partition(".")
        if name not in known:
            raise FillError(f"{path}: unknown OTIO schema {schema!r} at {where}")
        if version.isdigit() and int(version) > known[name]:
            raise FillError(
                f"{path}: schema {schema!r} at {where} is newer than opentimelineio {otio.__version__} reads "
                f"({name}.{known[name]}); write the file for OTIO {otio.__version__}"
            )


def _schemas(node: Any, where: str) -> Iterator[Tuple[str, Any]]:
    """(JSON path, OTIO_SCHEMA value) of every object in a parsed .otio document."""
    if isinstance(node, dict):
        if "OTIO_SCHEMA" in node:
            yield where, node["OTIO_SCHEMA"]
        for key, value in node.items():
            yield from _schemas(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schemas(value, f"{where}[{i}]")


def _check_frames_exist(result: ShotResult, where: str) -> None:
    if not result.target_url_base.startswith("file://"):
        return  # remote media: the server owns it
    missing = [p for p in result.frame_paths() if not os.path.isfile(p)]
    if missing:
        raise FillError(
            f"{where}: result {result.job_id!r} is missing {len(missing)} of {result.frame_count} frames, "
            f"first {missing[0]}"
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
    return f"{name}.{getattr(obj, 'original_schema_version', '?')}" if name else obj.schema_name()
