"""Find shot requests in an OTIO timeline.

A shot to generate is asked for in the edit in one of three ways:
  gap    a Gap on a video track; it is a request when it carries metadata["ttt_studio"] (with an optional
         storyboard or prompt), or for every plain gap when include_plain_gaps is set;
  marker a Marker whose metadata["ttt_studio"] holds a storyboard or a prompt; its marked_range (in its
         owner's time: the timeline stack, a track or an item) is the shot;
  clip   a Clip whose source_range reaches outside its media's available_range: OTIO's own way to ask
         for new media to fill it.

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
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

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
        self.rate = snap_rate(self.rate)

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
            rate=snap_rate(data["rate"]),
            storyboard=normalise_storyboard(data.get("storyboard") or [], f"request {data['id']}"),
            prompt=data.get("prompt"),
            name=str(data.get("name", "")),
            metadata=dict(data.get("metadata") or {}),
        )


def plain(value: Any) -> Any:
    """OTIO metadata (AnyDictionary / AnyVector) as plain dicts and lists, recursively."""
    if isinstance(value, str):
        return value
    if isinstance(value, collections.abc.Mapping):
        return {str(k): plain(v) for k, v in value.items()}
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
    meta = track.metadata.get(METADATA_KEY)
    return meta is not None and plain(meta).get("role") == GENERATED_TRACK_ROLE


def timeline_rate(timeline: otio.schema.Timeline) -> Fraction:
    """Exact rate of a timeline: from global_start_time, else from the first item with a duration."""
    gst = timeline.global_start_time
    if gst is not None and not (gst.rate == 1 and gst.value == 0):
        return snap_rate(gst.rate)
    for item in timeline.find_children():
        if isinstance(item, (otio.schema.Clip, otio.schema.Gap)):
            try:
                rate = item.trimmed_range().duration.rate
            except Exception:  # noqa: BLE001 - a clip without ranges says nothing about the rate
                continue
            if rate > 1:
                return snap_rate(rate)
    raise RequestError(
        f"timeline {timeline.name!r} has no global_start_time and no item with a duration: cannot tell its "
        "frame rate; pass rate= explicitly"
    )


def timeline_start_frame(timeline: otio.schema.Timeline, rate: RateLike) -> int:
    """Absolute frame of the timeline's first frame (global_start_time; 0 when unset)."""
    gst = timeline.global_start_time
    return 0 if gst is None else to_frames(gst, rate)


def find_shot_requests(
    timeline: otio.schema.Timeline,
    include_plain_gaps: bool = False,
    include_fulfilled: bool = False,
    rate: Optional[RateLike] = None,
) -> List[ShotRequest]:
    """All shot requests in `timeline`, ordered by track then position (markers of an owner first).

    include_plain_gaps: also treat gaps without ttt_studio metadata as requests (off: plain gaps are
    common in edits). include_fulfilled: also return requests that already have a generated clip on a
    "TTT generated" track (matched by request id); off so that a second fill only does what is left.
    rate: the timeline's rate when it cannot be read from the file.
    """
    if not isinstance(timeline, otio.schema.Timeline):
        raise RequestError(f"expected an opentimelineio Timeline, got {type(timeline).__name__}")
    finder = _Finder(
        rate=snap_rate(rate) if rate is not None else timeline_rate(timeline),
        include_plain_gaps=include_plain_gaps,
    )
    stack = timeline.tracks
    origin = timeline_start_frame(timeline, finder.rate) - _trim_start(stack, finder.rate)
    finder.markers(stack, origin, "stack", -1, "")
    video_index = 0
    for track in stack:
        if not isinstance(track, otio.schema.Track):
            raise RequestError(f"timeline stack child {_describe(track)} is not a Track; unsupported")
        if track.kind != otio.schema.TrackKind.Video:
            continue
        if not is_generated_track(track):
            finder.track(
                track, origin - _trim_start(track, finder.rate), f"v{video_index}", video_index, track.name
            )
        video_index += 1
    requests = finder.found
    if not include_fulfilled:
        done = fulfilled_requests(timeline, finder.rate)
        requests = [r for r in requests if (r.id, r.record_start, r.duration) not in done]
    return requests


def item_record_ranges(track: otio.schema.Track, rate: RateLike, origin: int) -> List[Tuple[int, int, Any]]:
    """(absolute start frame, duration frames, item) of every non-transition item of `track`, whose
    first item starts at absolute frame `origin`; durations are rounded per item, then summed."""
    ranges = []
    position = origin
    for item in track:
        if isinstance(item, otio.schema.Transition):
            continue
        duration = to_frames(item.trimmed_range().duration, rate)
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
    """Walks compositions summing integer frames; collects ShotRequests in `found`."""

    def __init__(self, rate: Fraction, include_plain_gaps: bool) -> None:
        self.rate = rate
        self.include_plain_gaps = include_plain_gaps
        self.found: List[ShotRequest] = []

    def frames(self, time: otio.opentime.RationalTime, obj: Any) -> int:
        try:
            return to_frames(time, self.rate)
        except FrameMathError as exc:
            raise RequestError(f"{_describe(obj)}: {exc}") from exc

    def track(self, track: otio.schema.Track, origin: int, tid: str, tindex: int, tname: str) -> None:
        """`origin`: absolute frame of the track's own time 0 (children start there, one after another)."""
        self.markers(track, origin, tid, tindex, tname)
        position = 0
        for index, child in enumerate(track):
            if isinstance(child, otio.schema.Transition):
                continue  # transitions overlap their neighbours and take no time of their own
            try:
                trimmed = child.trimmed_range()
            except Exception as exc:  # noqa: BLE001 - OTIO raises plain errors for rangeless items
                raise RequestError(
                    f"{_describe(child)} in track {track.name!r} has no usable range: {exc}"
                ) from exc
            duration = self.frames(trimmed.duration, child)
            record = origin + position
            iid = f"{tid}.i{index}"
            item_origin = record - self.frames(trimmed.start_time, child)  # absolute frame of its time 0
            self.markers(child, item_origin, iid, tindex, tname)
            if isinstance(child, otio.schema.Gap):
                self.gap(child, record, duration, iid, tindex, tname)
            elif isinstance(child, otio.schema.Clip):
                self.clip(child, record, duration, iid, tindex, tname)
            elif isinstance(child, otio.schema.Stack):
                walk = functools.partial(self.stack, child, item_origin, iid, tindex, tname)
                self.nested(child, record, duration, walk)
            elif isinstance(child, otio.schema.Track):
                walk = functools.partial(self.track, child, item_origin, iid, tindex, tname)
                self.nested(child, record, duration, walk)
            else:
                raise RequestError(f"{_describe(child)} in track {track.name!r}: unsupported item type")
            position += duration

    def stack(self, stack: otio.schema.Stack, origin: int, sid: str, tindex: int, tname: str) -> None:
        """Video tracks of a nested stack; `origin`: absolute frame of the stack's time 0."""
        for ti, sub in enumerate(stack):
            if isinstance(sub, otio.schema.Track) and sub.kind == otio.schema.TrackKind.Video:
                self.track(sub, origin - _trim_start(sub, self.rate), f"{sid}.t{ti}", tindex, tname)

    def nested(self, comp: Any, record: int, duration: int, walk: Callable[[], None]) -> None:
        """Walk a nested composition, keeping the requests inside its visible window [record, +duration)."""
        before = len(self.found)
        walk()
        kept = self.found[:before]
        for request in self.found[before:]:
            if request.record_end <= record or request.record_start >= record + duration:
                log.debug("request %s is trimmed out of nested %s; skipped", request.id, _describe(comp))
                continue
            if request.record_start < record or request.record_end > record + duration:
                raise RequestError(
                    f"request {request.id} ({request.kind}, frames {request.record_start}-{request.record_end}) is "
                    f"only partly visible through nested {_describe(comp)} (frames {record}-{record + duration}); "
                    "partly trimmed requests in nested compositions are unsupported: move it or untrim the nest"
                )
            kept.append(request)
        self.found = kept

    def markers(self, owner: Any, origin: int, oid: str, tindex: int, tname: str) -> None:
        """Marker requests of `owner`; `origin` is the absolute frame of the owner's time 0."""
        for mi, marker in enumerate(owner.markers):
            meta = ttt_metadata(marker)
            if meta is None:
                continue
            where = f"marker {marker.name!r} on {_describe(owner)}"
            storyboard, prompt, rest = _shot_text(meta, where)
            if not storyboard and prompt is None:
                raise RequestError(
                    f"{where}: metadata['ttt_studio'] needs a 'storyboard' list or a 'prompt' string, "
                    f"got keys {sorted(meta)}"
                )
            mr = marker.marked_range
            duration = self.frames(mr.duration, marker)
            if duration <= 0:
                raise RequestError(
                    f"{where}: marked_range has {duration} frames; a shot marker needs a duration of at least 1 "
                    "frame (in Resolve give the marker a duration)"
                )
            rest.update(
                {"marker_name": marker.name, "marker_color": str(marker.color), "owner": _describe(owner)}
            )
            self.add(
                ShotRequest(
                    id=f"{oid}.m{mi}",
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
        meta = ttt_metadata(gap)
        if meta is None and not self.include_plain_gaps:
            return
        storyboard, prompt, rest = _shot_text(meta or {}, f"{_describe(gap)} in track {tname!r}")
        self.add(
            ShotRequest(
                id=f"{iid}.gap",
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

    def clip(
        self, clip: otio.schema.Clip, record: int, duration: int, iid: str, tindex: int, tname: str
    ) -> None:
        source = clip.source_range
        media = clip.media_reference
        available = media.available_range if media is not None else None
        if source is None or available is None:
            return
        # compare in the source range's own (snapped) rate: both ranges of one clip share the media's rate
        own = source.start_time.rate
        start, avail_start = to_frames(source.start_time, own), to_frames(available.start_time, own)
        end = start + to_frames(source.duration, own)
        avail_end = avail_start + to_frames(available.duration, own)
        if start >= avail_start and end <= avail_end:
            return
        meta = ttt_metadata(clip) or {}
        storyboard, prompt, rest = _shot_text(meta, f"{_describe(clip)} in track {tname!r}")
        rest.update(
            {
                "missing_before": max(0, avail_start - start),
                "missing_after": max(0, end - avail_end),
                "available_frames": avail_end - avail_start,
                "media_url": getattr(media, "target_url", None) or getattr(media, "target_url_base", None),
            }
        )
        self.add(
            ShotRequest(
                id=f"{iid}.clip",
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

    def add(self, request: ShotRequest) -> None:
        if request.duration <= 0:
            raise RequestError(
                f"request {request.id} ({request.name!r}) has {request.duration} frames; need >= 1"
            )
        self.found.append(request)


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
    return 0 if comp.source_range is None else to_frames(comp.source_range.start_time, rate)


def _describe(obj: Any) -> str:
    return f"{obj.schema_name()} {obj.name!r}"
