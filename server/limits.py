"""Untrusted input, bounded before it is parsed: the input limits and the checks that apply them.

One rule: nothing a caller sends is parsed, stored or compared in SQLite until its size, depth, count
and numeric range have been checked against `InputLimits` (a field of `server.config.Limits`, so every
limit lives in one typed config and is reported in `ServerInfo.limits`). A bad value is answered with
INVALID_ARGUMENT naming the field, the value and the limit; never INTERNAL.

- `check_request(message, limits)`: every numeric field of a request message (walked from its proto
  descriptor, nested messages and repeated fields included) is inside its bound (`numeric_bounds`);
  every enum holds a declared value; every float is finite.
- `check_storyboard_text(segments, limits)`: UTF-8 bytes per segment text and over the whole storyboard.
- `scan_json(text, ...)` / `check_otio_context(text, limits)`: the OTIO context is pre-scanned for
  bytes, nesting depth, element count and token length before json or OTIO parse it, and must then be
  one OTIO object (a dict with OTIO_SCHEMA).
- `parse_page_token(token, limits)`: a ListJobs page token as an int SQLite can hold.

Why a streaming pre-scan and not a parse in a separate, limited process: OTIO's and CPython's JSON
parsers recurse once per nesting level, so depth is what crashes them (100,000 nested `[` overflowed the
C stack of the server process) or makes them slow (10,000 levels took ~10 s under the GIL, holding every
caller). A regular-expression tokenizer that only counts brackets is linear in the input, needs no
recursion, and bounds depth, bytes and element count before any recursive parser sees the text; what
passes it (<= 64 levels, <= 4 MiB) parses in well under a second. A subprocess would also contain a crash,
but costs a process start per submit (hundreds of ms with OTIO imported), and gRPC Python does not
support fork() in a process that runs a server, so it would have to spawn.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from google.protobuf.descriptor import FieldDescriptor as FD

from host_plugin.core.delivery import MAX_DIMENSION, MAX_PIXEL_ASPECT
from server.errors import InvalidArgumentError

MiB = 1 << 20
INT64_MAX = (1 << 63) - 1  # SQLite stores signed 64-bit integers: ids, seqs and seeds must fit
UINT32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what one request may contain, checked before anything is parsed or stored.

    max_otio_*: context.otio_json (UTF-8 bytes, nesting depth of [ and {, elements = containers and
    scalars, characters of one bare number or literal). max_segment_text_bytes: one segment's text or
    neg_text in UTF-8 bytes; max_storyboard_text_bytes: all of them together. max_id_chars:
    idempotency_key and request_id. max_start_frame / max_record_start: context.start_frame and
    |context.record_start|. max_guidance_scale: parameters.guidance_scale. max_list_page: ListJobs limit.
    max_plate_*: an uploaded EXR's channels, header bytes, and the bytes its pixels take once decoded
    (width x height x bytes per sample, summed over channels), all checked from the header first.
    """

    max_otio_bytes: int = 4 * MiB
    max_otio_depth: int = 64
    max_otio_elements: int = 250_000
    max_otio_token_bytes: int = 256
    max_segment_text_bytes: int = 4096
    max_storyboard_text_bytes: int = 65_536
    max_id_chars: int = 200
    max_start_frame: int = 9_999_000
    max_record_start: int = 1_000_000_000
    max_guidance_scale: int = 50
    max_list_page: int = 1000
    max_plate_channels: int = 16
    max_plate_header_bytes: int = 1 * MiB
    max_plate_decode_bytes: int = 256 * MiB

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"InputLimits.{item.name}: expected a positive int, got {value!r}")


def parse_input_limits(settings: Iterable[str]) -> InputLimits:
    """InputLimits from `NAME=VALUE` settings over the defaults (`ttt-studio serve --input-limit`).
    Raises ValueError naming a setting that is not NAME=INT or names no InputLimits field."""
    names = [f.name for f in fields(InputLimits)]
    values: dict[str, int] = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        if not sep or name.strip() not in names:
            raise ValueError(f"--input-limit {setting!r}: expected NAME=VALUE with NAME one of {names}")
        try:
            values[name.strip()] = int(text)
        except ValueError:
            raise ValueError(f"--input-limit {setting!r}: {text!r} is not an integer") from None
    return InputLimits(**values)


@dataclass(frozen=True)
class Bound:
    """Inclusive range of one numeric field and the limit that sets it (named in the error)."""

    low: float
    high: float
    limit: str


def numeric_bounds(limits: Any) -> dict[tuple[str, str], Bound]:
    """(message full name, field name) -> Bound, for every numeric field of every request message.

    `limits` is a server.config.Limits (its `input` is an InputLimits). A test checks that every numeric
    field the request messages reach has an entry here, so a new field cannot arrive unbounded.
    """
    lim, inp = limits, limits.input
    v1 = "ttt_studio.v1."
    storage = "the server's 64-bit signed integer range"
    return {
        (v1 + "GenerationParameters", "height"): Bound(0, lim.max_height, f"max_height={lim.max_height}"),
        (v1 + "GenerationParameters", "width"): Bound(0, lim.max_width, f"max_width={lim.max_width}"),
        (v1 + "GenerationParameters", "steps"): Bound(0, lim.max_steps, f"max_steps={lim.max_steps}"),
        (v1 + "GenerationParameters", "guidance_scale"): Bound(
            0, inp.max_guidance_scale, f"max_guidance_scale={inp.max_guidance_scale}"
        ),
        (v1 + "GenerationParameters", "seed"): Bound(0, INT64_MAX, storage),
        (v1 + "GenerationParameters", "preview_every"): Bound(0, lim.max_steps, f"max_steps={lim.max_steps}"),
        (v1 + "GenerationParameters", "strength"): Bound(0, 1, "strength is a share of the steps, (0, 1]"),
        (v1 + "GenerationParameters", "takes"): Bound(0, lim.max_takes, f"max_takes={lim.max_takes}"),
        (v1 + "GenerationParameters", "matte_feather"): Bound(
            0, MAX_DIMENSION, f"a matte's feather is at most {MAX_DIMENSION} pixels"
        ),
        (v1 + "GenerationParameters", "draft_steps"): Bound(0, lim.max_steps, f"max_steps={lim.max_steps}"),
        (v1 + "AdapterRef", "scale"): Bound(
            -lim.max_adapter_scale, lim.max_adapter_scale, f"max_adapter_scale={lim.max_adapter_scale}"
        ),
        (v1 + "ShotContext", "start_frame"): Bound(
            0, inp.max_start_frame, f"max_start_frame={inp.max_start_frame}"
        ),
        (v1 + "ShotContext", "record_start"): Bound(
            -inp.max_record_start, inp.max_record_start, f"max_record_start={inp.max_record_start}"
        ),
        # the delivery's rate is checked against the edit rates it may name (ServerInfo.delivery_rates)
        (v1 + "Delivery", "rate_num"): Bound(
            0, UINT32_MAX, "uint32; ServerInfo.delivery_rates names the rates"
        ),
        (v1 + "Delivery", "rate_den"): Bound(
            0, UINT32_MAX, "uint32; ServerInfo.delivery_rates names the rates"
        ),
        # duration and format meet max_frames / max_width / max_height in the delivery's own checks
        (v1 + "Delivery", "duration"): Bound(0, UINT32_MAX, "uint32"),
        (v1 + "Delivery", "width"): Bound(
            0, MAX_DIMENSION, f"a delivery's sides are at most {MAX_DIMENSION}"
        ),
        (v1 + "Delivery", "height"): Bound(
            0, MAX_DIMENSION, f"a delivery's sides are at most {MAX_DIMENSION}"
        ),
        (v1 + "Delivery", "pixel_aspect"): Bound(
            0, MAX_PIXEL_ASPECT, f"pixel aspect at most {MAX_PIXEL_ASPECT}"
        ),
        (v1 + "UploadPlateChunk", "sequence"): Bound(0, INT64_MAX, storage),
        (v1 + "PlateHeader", "total_bytes"): Bound(0, INT64_MAX, storage),
        (v1 + "UploadAdapterChunk", "sequence"): Bound(0, INT64_MAX, storage),
        (v1 + "AdapterHeader", "total_bytes"): Bound(0, INT64_MAX, storage),
        (v1 + "ApproveTakeRequest", "take"): Bound(0, lim.max_takes - 1, f"max_takes={lim.max_takes}"),
        (v1 + "GetJobResultRequest", "take"): Bound(0, lim.max_takes - 1, f"max_takes={lim.max_takes}"),
        (v1 + "WatchJobRequest", "after_seq"): Bound(0, INT64_MAX, storage),
        (v1 + "ListJobsRequest", "limit"): Bound(0, inp.max_list_page, f"max_list_page={inp.max_list_page}"),
        (v1 + "FetchFramesRequest", "start_frame"): Bound(0, lim.max_frames, f"max_frames={lim.max_frames}"),
        # documented as clamped under the message limit: any uint32 is a valid request
        (v1 + "FetchFramesRequest", "chunk_bytes"): Bound(0, UINT32_MAX, "uint32"),
        (v1 + "FetchFramesRequest", "take"): Bound(0, lim.max_takes - 1, f"max_takes={lim.max_takes}"),
    }


def check_request(message: Any, limits: Any) -> None:
    """Raise InvalidArgumentError for the first numeric field out of bounds, non-finite float or unknown
    enum value in `message` (a request message; nested and repeated fields are walked)."""
    _walk(message, "", numeric_bounds(limits))


_NUMERIC_TYPES = {
    FD.TYPE_DOUBLE,
    FD.TYPE_FLOAT,
    FD.TYPE_INT64,
    FD.TYPE_UINT64,
    FD.TYPE_INT32,
    FD.TYPE_FIXED64,
    FD.TYPE_FIXED32,
    FD.TYPE_UINT32,
    FD.TYPE_SFIXED32,
    FD.TYPE_SFIXED64,
    FD.TYPE_SINT32,
    FD.TYPE_SINT64,
}


def _walk(message: Any, prefix: str, bounds: Mapping[tuple[str, str], Bound]) -> None:
    full_name = message.DESCRIPTOR.full_name
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        values = list(value) if _is_repeated(field) else [value]
        for i, item in enumerate(values):
            where = f"{path}[{i}]" if _is_repeated(field) else path
            if field.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
                if field.message_type.GetOptions().map_entry:
                    continue  # no request carries a map; responses are not checked
                _walk(item, where + ".", bounds)
            elif field.type == FD.TYPE_ENUM:
                known = field.enum_type.values_by_number
                if item not in known:
                    names = ", ".join(f"{v.name}={n}" for n, v in sorted(known.items()))
                    raise InvalidArgumentError(
                        f"{where}={item} is not a {field.enum_type.name} value; expected one of {names}"
                    )
            elif field.type in _NUMERIC_TYPES:
                _check_number(where, item, bounds.get((full_name, field.name)))


def _is_repeated(field: Any) -> bool:
    # FieldDescriptor.label is deprecated in newer protobuf; is_repeated replaces it
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FD.LABEL_REPEATED


def _check_number(where: str, value: float, bound: Bound | None) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"{where}={value} is not a finite number")
    if bound is None:
        raise InvalidArgumentError(f"{where}: this server accepts no value for this field")
    if not bound.low <= value <= bound.high:
        raise InvalidArgumentError(
            f"{where}={value} is out of range: expected {_num(bound.low)}..{_num(bound.high)} ({bound.limit})"
        )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ---------------------------------------------------------------------- storyboards


def check_storyboard_text(segments: Iterable[Mapping[str, Any]], limits: InputLimits) -> None:
    """Each segment's text and neg_text within max_segment_text_bytes, all of them within
    max_storyboard_text_bytes (UTF-8 bytes: what the text encoder and the job store take)."""
    total = 0
    for i, segment in enumerate(segments):
        for name in ("text", "neg_text"):
            size = len(str(segment.get(name, "")).encode("utf-8", "surrogatepass"))
            if size > limits.max_segment_text_bytes:
                raise InvalidArgumentError(
                    f"storyboard.segments[{i}].{name} is {size} bytes; the server limit is "
                    f"max_segment_text_bytes={limits.max_segment_text_bytes} (a segment is 3-5 sentences)"
                )
            total += size
    if total > limits.max_storyboard_text_bytes:
        raise InvalidArgumentError(
            f"storyboard text is {total} bytes in all; the server limit is "
            f"max_storyboard_text_bytes={limits.max_storyboard_text_bytes}"
        )


# ---------------------------------------------------------------------- JSON / OTIO


class JsonScanError(ValueError):
    """The JSON text exceeds a limit or is malformed at the token level; the message says where."""


# a whole string (unrolled loop: linear, no backtracking) | a bracket | a separator | a bare token
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|[,:]|[^\s\[\]{},:"]+|"', re.DOTALL)


def scan_json(text: str, max_bytes: int, max_depth: int, max_elements: int, max_token_bytes: int) -> None:
    """Check JSON text against the limits without building anything: linear time, no recursion.

    Counts UTF-8 bytes, nesting depth of [ and {, elements (containers and scalars, keys included)
    and the length of bare tokens (numbers, true/false/null, NaN/Infinity, which OTIO reads). Raises
    JsonScanError naming the limit and the byte offset. Passing the scan does not make the text valid
    JSON; it makes it safe to hand to a parser.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise JsonScanError(f"is {size} bytes; the limit is {max_bytes}")
    depth = elements = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        first = token[0]
        if first in "[{":
            depth += 1
            elements += 1
            if depth > max_depth:
                raise JsonScanError(f"nests deeper than {max_depth} levels (at character {match.start()})")
        elif first in "]}":
            depth -= 1
            if depth < 0:
                raise JsonScanError(f"closes a bracket that was never opened (at character {match.start()})")
        elif first in ",:":
            continue
        elif token == '"':
            raise JsonScanError(f"has an unterminated string (at character {match.start()})")
        else:
            elements += 1
            if first != '"' and len(token) > max_token_bytes:
                raise JsonScanError(
                    f"has a {len(token)}-character number or literal (at character {match.start()}); "
                    f"the limit is {max_token_bytes}"
                )
        if elements > max_elements:
            raise JsonScanError(f"has more than {max_elements} elements")
    if depth:
        raise JsonScanError(f"ends with {depth} bracket(s) still open")


def check_otio_context(text: str, limits: InputLimits) -> None:
    """The optional OTIO context: bounded by the pre-scan, then one OTIO object (a JSON object with
    OTIO_SCHEMA) that OTIO reads. It is kept with the job; never opened as a path."""
    try:
        scan_json(
            text,
            limits.max_otio_bytes,
            limits.max_otio_depth,
            limits.max_otio_elements,
            limits.max_otio_token_bytes,
        )
    except JsonScanError as exc:
        raise InvalidArgumentError(
            f"context.otio_json {exc} (server limits max_otio_bytes={limits.max_otio_bytes}, "
            f"max_otio_depth={limits.max_otio_depth}, max_otio_elements={limits.max_otio_elements}, "
            f"max_otio_token_bytes={limits.max_otio_token_bytes})"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"context.otio_json is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("OTIO_SCHEMA"), str):
        got = "an object without OTIO_SCHEMA" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise InvalidArgumentError(
            f"context.otio_json must be one serialized OTIO object (a JSON object with an OTIO_SCHEMA "
            f'key, e.g. {{"OTIO_SCHEMA": "Timeline.1", ...}}); got {got}'
        )
    import opentimelineio as otio

    try:
        otio.adapters.read_from_string(text, "otio_json")
    except Exception as exc:  # noqa: BLE001 - OTIO raises several types for bad input
        raise InvalidArgumentError(f"context.otio_json is not valid OTIO JSON: {exc}") from None


# ---------------------------------------------------------------------- ListJobs


def parse_page_token(token: str) -> int | None:
    """A ListJobs page token ("" or the decimal job sequence number this server gave out) as an int."""
    if not token:
        return None
    if (
        len(token) > len(str(INT64_MAX))
        or not token.isascii()
        or not token.isdigit()
        or int(token) > INT64_MAX
    ):
        shown = token if len(token) <= 40 else token[:40] + "..."
        raise InvalidArgumentError(
            f"page_token {shown!r} is not one this server gave out (expected a decimal number up to "
            f"{INT64_MAX}: pass next_page_token from the previous ListJobs answer)"
        )
    return int(token)
