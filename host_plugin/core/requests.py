"""Find shot requests in an OTIO timeline.

Only what is marked is a request, so edits written by other tools (titles, generators, stills held on
the timeline, speed changes) are left alone:
  gap    a Gap whose metadata["ttt_studio"] is a dict (with a storyboard or a prompt; without one the
         prompt comes from the caller, e.g. `ttt-studio fill --prompt`);
  marker a Marker whose metadata["ttt_studio"] holds a storyboard or a prompt; its marked_range (in its
         owner's time: the timeline stack, a track, a nested stack or an item) is the shot;
  clip   a Clip whose metadata["ttt_studio"] is a dict: the clip's record range is the shot.
A ttt_studio dict that describes a result (it has a "job_id": a clip this project placed) is never a
request. The caller may add unmarked items explicitly (`sources`): SOURCE_GAPS takes every plain gap,
SOURCE_LONG_CLIPS every clip whose source_range reaches outside its media's available_range (OTIO's own
way to ask for new media), except titles and generators (GeneratorReference), stills (media of one
frame or a still-image file) and clips with a time effect (freeze frame, speed change: their source
range does not say which media frames they show). `select` names items (by name or request id) that
are requests whatever their metadata.

Every composition is walked: tracks, nested stacks and tracks at any depth, items directly inside a
stack, markers on any of them. A request is either returned or refused with a message (`Refusal`),
never dropped: one on an audio track, one half hidden by a nested composition's trim, one whose
metadata is malformed; one that a nest's trim hides entirely is listed as hidden. `scan_shot_requests` returns both lists; `find_shot_requests` raises
RequestError on the first refusal.

Record frames are absolute integers on the timeline (global_start_time included: 01:00:00:00 is 86400 at
24 fps) at one exact rate. Frame positions are summed per item from rounded integer durations, never from
OTIO's float time sums, so a Resolve export (gaps whose source ranges do not start at 0, media-rate
source ranges that were not rescaled) lands on the frames the editor sees.
"""

from __future__ import annotations

import collections.abc
import functools
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import opentimelineio as otio

from host_plugin.core.errors import FrameMathError, RequestError
from host_plugin.core.frame_math import RateLike, format_timecode, snap_rate, to_frames

log = logging.getLogger(__name__)

METADATA_KEY = "ttt_studio"
GENERATED_TRACK_ROLE = "generated"  # metadata["ttt_studio"]["role"] of tracks we add

KIND_GAP = "gap"
KIND_MARKER = "marker"
KIND_CLIP = "clip"
KINDS = (KIND_GAP, KIND_MARKER, KIND_CLIP)

SOURCE_GAPS = "gaps"  # every plain gap is a request
SOURCE_LONG_CLIPS = "long-clips"  # every clip past its media (not a still, title, generator or retime)
REQUEST_SOURCES = (SOURCE_GAPS, SOURCE_LONG_CLIPS)
STILL_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".psd",
    ".bmp",
    ".gif",
    ".tga",
    ".webp",
    ".heic",
)
"""File types that are still images when a clip's media is one file (an image sequence is never one)."""

_SEGMENT_KEYS = {"text", "neg_text", "requires_scene_transition"}


@dataclass
class ShotRequest:
    """One shot to generate, in absolute integer frames of the timeline at an exact rate.

    id is stable across reads of the same edit: it is built from the video track index, the item index
    in its track and the kind (e.g. "v0.i3.gap", "v1.i0.m0" for the first marker on that item,
    "stack.m2" for a timeline marker, "v0.i2.t0.i1.gap" inside a nested stack).
    track_index counts video tracks only (0 = V1); -1 for markers on the timeline itself.
    """

    id: str
    kind: str
    track_name: str
    track_index: int
    record_start: int
    duration: int
    rate: Fraction
    storyboard: List[Dict[str, Any]] = field(default_factory=list)
    prompt: Optional[str] = None
    name: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rate = _safe_rate(self.rate)

    @property
    def record_end(self) -> int:
        """First frame after the shot (exclusive end)."""
        return self.record_start + self.duration

    @property
    def record_timecode(self) -> str:
        return format_timecode(self.record_start, self.rate)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "track_name": self.track_name,
            "track_index": self.track_index,
            "record_start": self.record_start,
            "duration": self.duration,
            "rate": str(self.rate),
            "storyboard": [dict(s) for s in self.storyboard],
            "prompt": self.prompt,
            "name": self.name,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> ShotRequest:
        missing = {"id", "kind", "track_name", "track_index", "record_start", "duration", "rate"} - set(data)
        if missing:
            raise RequestError(f"ShotRequest dict lacks keys {sorted(missing)}; got keys {sorted(data)}")
        if data["kind"] not in KINDS:
            raise RequestError(f"ShotRequest kind must be one of {KINDS}, got {data['kind']!r}")
        return cls(
            id=str(data["id"]),
            kind=data["kind"],
            track_name=str(data["track_name"]),
            track_index=int(data["track_index"]),
            record_start=int(data["record_start"]),
            duration=int(data["duration"]),
            rate=_safe_rate(data["rate"]),
            storyboard=normalise_storyboard(data.get("storyboard") or [], f"request {data['id']}"),
            prompt=data.get("prompt"),
            name=str(data.get("name", "")),
            metadata=dict(data.get("metadata") or {}),
        )


def _safe_rate(rate: RateLike) -> Fraction:
    """frame_math.snap_rate, with arithmetic failures (an infinite or vanishing rate) as FrameMathError."""
    try:
        return snap_rate(rate)
    except (ArithmeticError, TypeError) as exc:
        raise FrameMathError(f"frame rate {rate!r} is not usable: {type(exc).__name__}: {exc}") from exc


def _safe_frames(time: Any, rate: RateLike) -> int:
    """frame_math.to_frames, with arithmetic failures (a rate of 1e-9 fps, an infinite rate) as FrameMathError."""
    try:
        return to_frames(time, rate)
    except (ArithmeticError, TypeError) as exc:
        raise FrameMathError(
            f"time {time!r} at {rate} fps is not usable: {type(exc).__name__}: {exc}"
        ) from exc


def plain(value: Any) -> Any:
    """OTIO metadata (AnyDictionary / AnyVector) as plain dicts and lists, recursively."""
    if isinstance(value, str):
        return value
    if isinstance(value, collections.abc.Mapping):
        out = {}
        for key in value.keys():
            try:
                out[str(key)] = plain(value[key])
            except KeyError as exc:  # OTIO 0.18 cuts a key at a NUL character and cannot find it again
                raise RequestError(
                    f"metadata key {key!r} cannot be read back (its name held a NUL character); rename it"
                ) from exc
        return out
    if isinstance(value, collections.abc.Sequence):
        return [plain(v) for v in value]
    return value


def normalise_storyboard(value: Any, where: str) -> List[Dict[str, Any]]:
    """Check a storyboard (list of {text, neg_text, requires_scene_transition}) and fill defaults."""
    if not isinstance(value, list):
        raise RequestError(f"{where}: storyboard must be a list of segments, got {type(value).__name__}")
    segments = []
    for i, seg in enumerate(value):
        if not isinstance(seg, dict):
            raise RequestError(f"{where}: storyboard[{i}] must be a dict, got {type(seg).__name__}: {seg!r}")
        unknown = set(seg) - _SEGMENT_KEYS
        if unknown:
            raise RequestError(
                f"{where}: storyboard[{i}] has unknown keys {sorted(unknown)}; expected {sorted(_SEGMENT_KEYS)}"
            )
        text = seg.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RequestError(f"{where}: storyboard[{i}]['text'] must be a non-empty string, got {text!r}")
        neg = seg.get("neg_text", "")
        if not isinstance(neg, str):
            raise RequestError(f"{where}: storyboard[{i}]['neg_text'] must be a string, got {neg!r}")
        transition = seg.get("requires_scene_transition", False)
        if not isinstance(transition, bool):
            raise RequestError(
                f"{where}: storyboard[{i}]['requires_scene_transition'] must be true/false, got {transition!r}"
            )
        segments.append({"text": text, "neg_text": neg, "requires_scene_transition": transition})
    return segments


def ttt_metadata(obj: Any) -> Optional[Dict[str, Any]]:
    """metadata["ttt_studio"] of an OTIO object as a plain dict, None when absent."""
    raw = obj.metadata.get(METADATA_KEY)
    if raw is None:
        return None
    value = plain(raw)
    if not isinstance(value, dict):
        raise RequestError(
            f"{_describe(obj)}: metadata[{METADATA_KEY!r}] must be a dict, got {type(value).__name__}: {value!r}"
        )
    return value


def is_generated_track(track: Any) -> bool:
    """True for the tracks placement adds ("TTT generated"); they never hold requests."""
    meta = plain(track.metadata.get(METADATA_KEY))
    return isinstance(meta, dict) and meta.get("role") == GENERATED_TRACK_ROLE


def timeline_rate(timeline: otio.schema.Timeline) -> Fraction:
    """Exact rate of a timeline: from global_start_time, else from the first item with a duration."""
    gst = timeline.global_start_time
    if gst is not None and not (gst.rate == 1 and gst.value == 0):
        return _safe_rate(gst.rate)
    for item in timeline.find_children():
        if isinstance(item, (otio.schema.Clip, otio.schema.Gap)):
            try:
                rate = item.trimmed_range().duration.rate
            except Exception:  # noqa: BLE001 - a clip without ranges says nothing about the rate
                continue
            if rate > 1:
                return _safe_rate(rate)
    raise RequestError(
        f"timeline {timeline.name!r} has no global_start_time and no item with a duration: cannot tell its "
        "frame rate; pass rate= explicitly"
    )


def timeline_start_frame(timeline: otio.schema.Timeline, rate: RateLike) -> int:
    """Absolute frame of the timeline's first frame (global_start_time; 0 when unset)."""
    gst = timeline.global_start_time
    return 0 if gst is None else _safe_frames(gst, rate)


@dataclass(frozen=True)
class Refusal:
    """A request that cannot be generated as written, and why (what to change)."""

    id: str
    name: str
    message: str

    def to_dict(self) -> Dict[str, str]:
        return {"id": self.id, "name": self.name, "message": self.message}


@dataclass
class RequestScan:
    """What scan_shot_requests found, in edit order: the requests to generate, the refused ones (the
    reason says what to change) and the hidden ones (marked inside a nested composition but trimmed out
    of the edit: not generated, named so that nothing disappears silently)."""

    requests: List[ShotRequest] = field(default_factory=list)
    refused: List[Refusal] = field(default_factory=list)
    hidden: List[Refusal] = field(default_factory=list)


def scan_shot_requests(
    timeline: otio.schema.Timeline,
    sources: Sequence[str] = (),
    select: Sequence[str] = (),
    include_fulfilled: bool = False,
    rate: Optional[RateLike] = None,
) -> RequestScan:
    """Requests and refusals of `timeline`, ordered by track then position (markers of an owner first).

    sources: unmarked items to take as well (SOURCE_GAPS, SOURCE_LONG_CLIPS); marked items are always
    requests. select: item or marker names, or request ids, that are requests whatever their metadata
    (a name that matches nothing is refused). include_fulfilled: also return requests that already have a
    generated clip on a "TTT generated" track (matched by request id and frames); off so that a second
    fill only does what is left. rate: the timeline's rate when it cannot be read from the file.
    Raises RequestError only for what makes the whole timeline unreadable (not a Timeline, no rate).
    """
    if not isinstance(timeline, otio.schema.Timeline):
        raise RequestError(f"expected an opentimelineio Timeline, got {type(timeline).__name__}")
    unknown = sorted(set(sources) - set(REQUEST_SOURCES))
    if unknown:
        raise RequestError(f"unknown request sources {unknown}; expected some of {list(REQUEST_SOURCES)}")
    try:
        exact = _safe_rate(rate) if rate is not None else timeline_rate(timeline)
        stack = timeline.tracks
        origin = timeline_start_frame(timeline, exact) - _trim_start(stack, exact)
    except FrameMathError as exc:
        raise RequestError(f"timeline {timeline.name!r}: {exc}") from exc
    finder = _Finder(rate=exact, sources=frozenset(sources), select=frozenset(select))
    finder.markers(stack, origin, "stack", -1, "")
    counters = {"v": 0, "a": 0}
    for index, child in enumerate(stack):
        if isinstance(child, otio.schema.Track):
            prefix = "v" if child.kind == otio.schema.TrackKind.Video else "a"
            tid, tindex = f"{prefix}{counters[prefix]}", counters[prefix]
            counters[prefix] += 1
            if prefix == "v" and is_generated_track(child):
                continue
            finder.guarded_track(child, origin, tid, tindex if prefix == "v" else -1, child.name)
        else:  # OTIO lets a Timeline's stack hold items directly; they start at its time 0
            try:
                finder.item(child, origin, f"stack.c{index}", -1, "", "the timeline's stack")
            except (RequestError, FrameMathError) as exc:
                finder.refuse(f"stack.c{index}", child.name, f"{exc}; its requests cannot be placed")
    result = RequestScan(requests=finder.found, refused=finder.refused, hidden=finder.hidden)
    for name in sorted(finder.select - finder.selected):
        result.refused.append(
            Refusal(
                f"select:{name}",
                name,
                f"selected name {name!r} matches no gap, clip or marker name and no request id in "
                f"timeline {timeline.name!r}",
            )
        )
    if not include_fulfilled:
        try:
            done = fulfilled_requests(timeline, exact)
        except Exception as exc:  # noqa: BLE001 - OTIO raises plain errors for rangeless items
            raise RequestError(f"timeline {timeline.name!r}: a generated track: {exc}") from exc
        result.requests = [r for r in result.requests if (r.id, r.record_start, r.duration) not in done]
    return result


def find_shot_requests(
    timeline: otio.schema.Timeline,
    include_plain_gaps: bool = False,
    include_fulfilled: bool = False,
    rate: Optional[RateLike] = None,
    sources: Sequence[str] = (),
    select: Sequence[str] = (),
) -> List[ShotRequest]:
    """All shot requests in `timeline` (see scan_shot_requests); RequestError on the first refusal.

    include_plain_gaps: the same as SOURCE_GAPS in `sources` (plain gaps are common in edits).
    """
    wanted = tuple(sources) + ((SOURCE_GAPS,) if include_plain_gaps else ())
    scan = scan_shot_requests(
        timeline, sources=wanted, select=select, include_fulfilled=include_fulfilled, rate=rate
    )
    if scan.refused:
        more = f" (and {len(scan.refused) - 1} more refused)" if len(scan.refused) > 1 else ""
        raise RequestError(f"{scan.refused[0].message}{more}")
    return scan.requests


def item_record_ranges(track: otio.schema.Track, rate: RateLike, origin: int) -> List[Tuple[int, int, Any]]:
    """(absolute start frame, duration frames, item) of every non-transition item of `track`, whose
    first item starts at absolute frame `origin`; durations are rounded per item, then summed."""
    ranges = []
    position = origin
    for item in track:
        if isinstance(item, otio.schema.Transition):
            continue
        duration = _safe_frames(item.trimmed_range().duration, rate)
        ranges.append((position, duration, item))
        position += duration
    return ranges


def fulfilled_requests(timeline: otio.schema.Timeline, rate: RateLike) -> Set[Tuple[str, int, int]]:
    """(request id, record start, duration) of every generated clip already on a generated track.

    A request counts as fulfilled only when id and frames both match, so an edit changed since the
    last fill (items inserted, a gap lengthened) is generated again rather than skipped.
    """
    origin = timeline_start_frame(timeline, rate)
    done = set()
    for track in timeline.video_tracks():
        if not is_generated_track(track):
            continue
        for start, duration, item in item_record_ranges(track, rate, origin):
            meta = ttt_metadata(item) if isinstance(item, otio.schema.Clip) else None
            if meta and meta.get("request_id"):
                done.add((meta["request_id"], start, duration))
    return done


class _Finder:
    """Walks compositions summing integer frames; collects ShotRequests in `found`, Refusals in `refused`.

    Every walk method takes `origin`: the absolute frame of its composition's own time 0.
    """

    def __init__(self, rate: Fraction, sources: FrozenSet[str], select: FrozenSet[str]) -> None:
        self.rate = rate
        self.sources = sources
        self.select = select
        self.selected: Set[str] = set()
        self.found: List[ShotRequest] = []
        self.refused: List[Refusal] = []
        self.hidden: List[Refusal] = []
        self.audio: Optional[str] = None  # the audio (or other non-video) track being walked

    def frames(self, time: Any, obj: Any) -> int:
        try:
            return _safe_frames(time, self.rate)
        except FrameMathError as exc:
            raise RequestError(f"{_describe(obj)}: {exc}") from exc

    def refuse(self, rid: str, name: str, message: str) -> None:
        self.refused.append(Refusal(rid, name, message))

    def refuse_error(self, rid: str, name: str, where: str, exc: Exception) -> None:
        """Refuse with the error's message, said where it is unless the message already does."""
        message = str(exc)
        self.refuse(rid, name, message if message.startswith(where) else f"{where}: {message}")

    def picked(self, name: str, rid: str) -> bool:
        """True when the user selected this item by name or by request id."""
        hits = {n for n in (name, rid) if n and n in self.select}
        self.selected |= hits
        return bool(hits)

    def guarded_track(self, track: otio.schema.Track, origin: int, tid: str, tindex: int, tname: str) -> None:
        """A track whose own trim or positions cannot be read is refused as a whole, with the reason."""
        outer = self.audio
        if track.kind != otio.schema.TrackKind.Video and outer is None:
            self.audio = f"{track.kind.lower()} track {track.name!r}"
        try:
            self.track(track, origin - _trim_start(track, self.rate), tid, tindex, tname)
        except (RequestError, FrameMathError) as exc:
            self.refuse(tid, track.name, f"track {track.name!r}: {exc}; its requests cannot be placed")
        finally:
            self.audio = outer

    def track(self, track: otio.schema.Track, origin: int, tid: str, tindex: int, tname: str) -> None:
        """Children of a track start one after another from its time 0."""
        self.markers(track, origin, tid, tindex, tname)
        position = 0
        for index, child in enumerate(track):
            if isinstance(child, otio.schema.Transition):
                continue  # transitions overlap their neighbours and take no time of their own
            position += self.item(
                child, origin + position, f"{tid}.i{index}", tindex, tname, f"track {track.name!r}"
            )

    def stack(self, stack: otio.schema.Stack, origin: int, sid: str, tindex: int, tname: str) -> None:
        """Children of a nested stack all start at its time 0: tracks of any kind, and items."""
        for index, child in enumerate(stack):
            if isinstance(child, otio.schema.Track):
                self.guarded_track(child, origin, f"{sid}.t{index}", tindex, tname)
            else:
                self.item(child, origin, f"{sid}.c{index}", tindex, tname, f"stack {stack.name!r}")

    def item(self, child: Any, record: int, iid: str, tindex: int, tname: str, where: str) -> int:
        """Requests of one item starting at absolute frame `record`; returns its duration in frames."""
        try:
            trimmed = child.trimmed_range()
        except Exception as exc:  # noqa: BLE001 - OTIO raises plain errors for rangeless items
            raise RequestError(f"{_describe(child)} in {where} has no usable range: {exc}") from exc
        duration = self.frames(trimmed.duration, child)
        if duration < 0:
            raise RequestError(f"{_describe(child)} in {where} has a negative duration ({duration} frames)")
        item_origin = record - self.frames(trimmed.start_time, child)  # absolute frame of its time 0
        if not isinstance(child, otio.schema.Track):  # a track reads its own markers
            self.markers(child, item_origin, iid, tindex, tname)
        if isinstance(child, otio.schema.Gap):
            self.gap(child, record, duration, iid, tindex, tname)
        elif isinstance(child, otio.schema.Clip):
            self.clip(child, record, duration, iid, tindex, tname)
        elif isinstance(child, otio.schema.Stack):
            walk = functools.partial(self.stack, child, item_origin, iid, tindex, tname)
            self.nested(child, record, duration, walk)
        elif isinstance(child, otio.schema.Track):
            walk = functools.partial(
                self.guarded_track, child, item_origin + _trim_start(child, self.rate), iid, tindex, tname
            )
            self.nested(child, record, duration, walk)
        return duration  # other items (an unknown Composable) only take time; their markers were read

    def nested(self, comp: Any, record: int, duration: int, walk: Callable[[], None]) -> None:
        """Walk a nested composition; requests outside its visible window [record, +duration) are refused."""
        before = len(self.found)
        walk()
        kept = self.found[:before]
        for request in self.found[before:]:
            if request.record_start >= record and request.record_end <= record + duration:
                kept.append(request)
                continue
            hidden = request.record_end <= record or request.record_start >= record + duration
            how = "is trimmed out of" if hidden else "is only partly visible through"
            message = (
                f"request {request.id} ({request.kind} {request.name!r}, frames {request.record_start}-"
                f"{request.record_end}) {how} nested {_describe(comp)} (frames {record}-{record + duration})"
            )
            if hidden:  # not in the edit (e.g. one use of a nest shown twice): named, not generated
                self.hidden.append(Refusal(request.id, request.name, f"{message}; not generated"))
            else:
                self.refuse(
                    request.id, request.name, f"{message}; move it inside the visible part or untrim the nest"
                )
        self.found = kept

    def markers(self, owner: Any, origin: int, oid: str, tindex: int, tname: str) -> None:
        """Marker requests of `owner`; `origin` is the absolute frame of the owner's time 0."""
        for mi, marker in enumerate(owner.markers):
            rid = f"{oid}.m{mi}"
            where = f"marker {marker.name!r} on {_describe(owner)}"
            try:
                self.marker(marker, origin, rid, where, _describe(owner), tindex, tname)
            except (RequestError, FrameMathError) as exc:
                self.refuse_error(rid, marker.name, where, exc)

    def marker(
        self, marker: Any, origin: int, rid: str, where: str, owner: str, tindex: int, tname: str
    ) -> None:
        meta = ttt_metadata(marker)
        picked = self.picked(marker.name, rid)
        if not picked and (meta is None or is_result_metadata(meta)):
            return
        storyboard, prompt, rest = _shot_text(meta or {}, where)
        if not storyboard and prompt is None and not picked:
            raise RequestError(
                f"{where}: metadata['ttt_studio'] needs a 'storyboard' list or a 'prompt' string, "
                f"got keys {sorted(meta or {})}"
            )
        mr = marker.marked_range
        duration = self.frames(mr.duration, marker)
        if duration <= 0:
            raise RequestError(
                f"{where}: marked_range has {duration} frames; a shot marker needs a duration of at least 1 "
                "frame (in Resolve give the marker a duration)"
            )
        rest.update(
            {
                "marker_name": marker.name,
                "marker_color": str(marker.color),
                "owner": owner,
            }
        )
        self.add(
            ShotRequest(
                id=rid,
                kind=KIND_MARKER,
                track_name=tname,
                track_index=tindex,
                record_start=origin + self.frames(mr.start_time, marker),
                duration=duration,
                rate=self.rate,
                storyboard=storyboard,
                prompt=prompt,
                name=marker.name,
                metadata=rest,
            )
        )

    def gap(
        self, gap: otio.schema.Gap, record: int, duration: int, iid: str, tindex: int, tname: str
    ) -> None:
        rid = f"{iid}.gap"
        where = f"{_describe(gap)} in track {tname!r}"
        try:
            meta = ttt_metadata(gap)
            picked = self.picked(gap.name, rid)
            marked = meta is not None and not is_result_metadata(meta)
            if not (marked or picked or (SOURCE_GAPS in self.sources and self.audio is None)):
                return
            storyboard, prompt, rest = _shot_text(meta if marked else {}, where)
            self.add(
                ShotRequest(
                    id=rid,
                    kind=KIND_GAP,
                    track_name=tname,
                    track_index=tindex,
                    record_start=record,
                    duration=duration,
                    rate=self.rate,
                    storyboard=storyboard,
                    prompt=prompt,
                    name=gap.name,
                    metadata=rest,
                )
            )
        except (RequestError, FrameMathError) as exc:
            self.refuse_error(rid, gap.name, where, exc)

    def clip(
        self, clip: otio.schema.Clip, record: int, duration: int, iid: str, tindex: int, tname: str
    ) -> None:
        rid = f"{iid}.clip"
        where = f"{_describe(clip)} in track {tname!r}"
        try:
            meta = ttt_metadata(clip)
            picked = self.picked(clip.name, rid)
            marked = meta is not None and not is_result_metadata(meta)
            missing = _missing_media(clip)
            long_clip = (
                SOURCE_LONG_CLIPS in self.sources
                and self.audio is None
                and missing is not None
                and (missing[0] or missing[1])
                and _held_media(clip) is None
            )
            if not (marked or picked or long_clip):
                if missing is not None and (missing[0] or missing[1]):
                    log.debug("%s reaches past its media but is not marked; left alone", where)
                return
            storyboard, prompt, rest = _shot_text(meta if marked else {}, where)
            if missing is not None:
                media = clip.media_reference
                rest.update(
                    {
                        "missing_before": missing[0],
                        "missing_after": missing[1],
                        "available_frames": missing[2],
                        "media_url": getattr(media, "target_url", None)
                        or getattr(media, "target_url_base", None),
                    }
                )
            self.add(
                ShotRequest(
                    id=rid,
                    kind=KIND_CLIP,
                    track_name=tname,
                    track_index=tindex,
                    record_start=record,
                    duration=duration,
                    rate=self.rate,
                    storyboard=storyboard,
                    prompt=prompt,
                    name=clip.name,
                    metadata=rest,
                )
            )
        except (RequestError, FrameMathError) as exc:
            self.refuse_error(rid, clip.name, where, exc)

    def add(self, request: ShotRequest) -> None:
        if request.duration <= 0:
            raise RequestError(
                f"request {request.id} ({request.name!r}) has {request.duration} frames; need >= 1"
            )
        if self.audio is not None:
            raise RequestError(
                f"request {request.id} ({request.kind} {request.name!r}) is on {self.audio}: ttt-studio "
                "generates picture; put the request on a video track"
            )
        self.found.append(request)


def is_result_metadata(meta: Dict[str, Any]) -> bool:
    """True for ttt_studio metadata this project writes on what it placed (never a request)."""
    return bool(meta.get("job_id")) or meta.get("generated") is True


def _missing_media(clip: otio.schema.Clip) -> Optional[Tuple[int, int, int]]:
    """(frames missing before, frames missing after, available frames) of a clip's source range against
    its media's available range, in the source range's own rate; None when either range is unknown."""
    source = clip.source_range
    media = clip.media_reference
    available = media.available_range if media is not None else None
    if source is None or available is None:
        return None
    own = source.start_time.rate  # both ranges of one clip share the media's rate
    start, avail_start = _safe_frames(source.start_time, own), _safe_frames(available.start_time, own)
    end = start + _safe_frames(source.duration, own)
    avail_end = avail_start + _safe_frames(available.duration, own)
    return max(0, avail_start - start), max(0, end - avail_end), avail_end - avail_start


def _held_media(clip: otio.schema.Clip) -> Optional[str]:
    """Why a clip past its media is not asking for new media (a title, a generator, a still, a time
    effect), or None when it is."""
    media = clip.media_reference
    if isinstance(media, otio.schema.GeneratorReference):
        return f"a generator ({media.generator_kind!r})"
    for effect in clip.effects:
        if isinstance(effect, otio.schema.TimeEffect):
            return f"a time effect ({effect.effect_name or effect.schema_name()})"
    available = media.available_range if media is not None else None
    if available is not None and _safe_frames(available.duration, available.duration.rate) <= 1:
        return "a still (media of one frame)"
    url = getattr(media, "target_url", "") or ""
    if url.split("?", 1)[0].lower().endswith(STILL_EXTENSIONS):
        return f"a still image ({url.rsplit('/', 1)[-1]})"
    return None


def _shot_text(meta: Dict[str, Any], where: str):
    """(storyboard, prompt, other metadata) from a ttt_studio metadata dict."""
    rest = dict(meta)
    storyboard = rest.pop("storyboard", None)
    prompt = rest.pop("prompt", None)
    if storyboard is not None and prompt is not None:
        raise RequestError(f"{where}: metadata['ttt_studio'] has both 'storyboard' and 'prompt'; give one")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise RequestError(
            f"{where}: metadata['ttt_studio']['prompt'] must be a non-empty string, got {prompt!r}"
        )
    segments = normalise_storyboard(storyboard, where) if storyboard is not None else []
    if storyboard is not None and not segments:
        raise RequestError(
            f"{where}: metadata['ttt_studio']['storyboard'] is empty; give at least one segment"
        )
    return segments, prompt, rest


def _trim_start(comp: Any, rate: Fraction) -> int:
    """Frames a composition's own source_range trims from its start (0 when untrimmed)."""
    return 0 if comp.source_range is None else _safe_frames(comp.source_range.start_time, rate)


def _describe(obj: Any) -> str:
    return f"{obj.schema_name()} {obj.name!r}"
