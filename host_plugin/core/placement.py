"""Place generated EXR sequences on an OTIO timeline, frame-accurately.

A generated shot becomes a Clip on a video track we add on top of the edit ("TTT generated", created
once and reused; a second one only when two results overlap in time). The clip sits at exactly the
request's absolute record frame: the track is rebuilt from integer frame positions with Gaps of whole
frames between clips, so no float time sum can move a clip by a frame.

Media: an ImageSequenceReference (DEFAULT_MEDIA) plus an ExternalReference to the first frame
("first_frame"), because Resolve and Nuke Studio ignore ImageSequenceReference on OTIO import
(OTIO 0.18 multi-reference clips; see use_first_frame_references for hosts that need it active).

One truth: a result's frames were conformed by the server to the edit (its rate, format and colour
space). `DeliveredMedia` is what the frames' EXR headers say; the clip's rate is the delivered rate
(framesPerSecond) and its `ttt_studio` metadata records the conform ("conform": native fps, retime
method, generation size, scale, colour spaces, as the server reported them).
"""

from __future__ import annotations

import logging
import os
import pathlib
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple

import opentimelineio as otio

from host_plugin.core.errors import PlacementError
from host_plugin.core.frame_math import RateLike, rational_time, snap_rate, time_range
from host_plugin.core.requests import (
    GENERATED_TRACK_ROLE,
    METADATA_KEY,
    ShotRequest,
    is_generated_track,
    item_record_ranges,
    normalise_storyboard,
    timeline_rate,
    timeline_start_frame,
    ttt_metadata,
)
from host_plugin.core.takes import TakeInfo, check_takes

log = logging.getLogger(__name__)

GENERATED_TRACK_NAME = "TTT generated"
DEFAULT_MEDIA_KEY = "DEFAULT_MEDIA"
FIRST_FRAME_KEY = "first_frame"


@dataclass(frozen=True)
class DeliveredMedia:
    """What delivered EXR frames are, as their headers say (the truth a host places by).

    rate: framesPerSecond; width, height: the displayWindow; pixel_aspect: pixelAspectRatio;
    colorspace: colorInteropID ("" when untagged); fit: how the generation met the format
    (Delivery.fit), which a host's own scaling must repeat (Blender's strip fit_method).
    """

    rate: Fraction
    width: int
    height: int
    pixel_aspect: float = 1.0
    colorspace: str = ""
    fit: str = "fit"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", snap_rate(self.rate))
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlacementError(f"delivered {name} must be a whole number >= 1, got {value!r}")
        if not float(self.pixel_aspect) > 0:
            raise PlacementError(f"delivered pixel_aspect must be > 0, got {self.pixel_aspect!r}")

    @classmethod
    def from_exr_header(
        cls, header: Dict[str, Any], fit: str = "fit", where: str = "frame"
    ) -> DeliveredMedia:
        """From a header as host_plugin.core.exr_io.read_exr returns it; PlacementError when the frame has
        no framesPerSecond (a frame the server did not conform)."""
        fps = header.get("framesPerSecond")
        if fps in (None, "", 0):
            raise PlacementError(
                f"{where} has no framesPerSecond attribute; a conformed frame records the rate it was delivered at"
            )
        (x0, y0), (x1, y1) = header["displayWindow"]
        return cls(
            rate=snap_rate(Fraction(fps) if not isinstance(fps, tuple) else Fraction(*fps)),
            width=int(x1 - x0 + 1),
            height=int(y1 - y0 + 1),
            pixel_aspect=float(header.get("pixelAspectRatio") or 1.0),
            colorspace=str(header.get("colorInteropID") or ""),
            fit=fit,
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "rate": str(self.rate),
            "width": self.width,
            "height": self.height,
            "pixel_aspect": float(self.pixel_aspect),
            "colorspace": self.colorspace,
            "fit": self.fit,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> DeliveredMedia:
        return cls(
            rate=snap_rate(data["rate"]),
            width=int(data["width"]),
            height=int(data["height"]),
            pixel_aspect=float(data.get("pixel_aspect", 1.0)),
            colorspace=str(data.get("colorspace", "")),
            fit=str(data.get("fit", "fit")),
        )


@dataclass
class ShotResult:
    """A generated EXR sequence for one request: <directory>/<name_prefix><frame:0{padding}d><name_suffix>.

    directory is a local folder or a file:// URL. record_start is only used by build_result_timeline
    (where the shot sits on a result timeline); place_generated_shot takes the position from the request.
    media: what the delivered frames are (their EXR headers); its rate must be `rate`. conform: the
    server's conform report (native fps, retime method, generation size, scale, colour spaces).
    takes: every take of the shot (host_plugin.core.takes) when the job made several; `take` is the one
    this result is (its directory is that take's folder); the others have the same frame names in theirs.
    draft: the frames are a preview job's draft (fewer steps, fetched into a folder of their own); the
    final replaces them in place (`swap_in_final`).
    """

    request_id: str
    job_id: str
    directory: str
    name_prefix: str
    frame_count: int
    rate: Fraction
    start_frame: int = 1001
    padding: int = 4
    name_suffix: str = ".exr"
    seed: Optional[int] = None
    model: str = ""
    storyboard: List[Dict[str, Any]] = field(default_factory=list)
    prompt: Optional[str] = None
    record_start: Optional[int] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    media: Optional[DeliveredMedia] = None
    conform: Dict[str, Any] = field(default_factory=dict)
    takes: List[TakeInfo] = field(default_factory=list)
    take: int = 0
    draft: bool = False

    def __post_init__(self) -> None:
        self.rate = snap_rate(self.rate)
        if self.takes:
            self.takes = check_takes(self.takes, f"result {self.request_id!r}")
            if not 0 <= self.take < len(self.takes):
                raise PlacementError(
                    f"result {self.request_id!r} is take {self.take}; its takes are 0..{len(self.takes) - 1}"
                )
            if directory_url(self.takes[self.take].directory) != directory_url(self.directory):
                raise PlacementError(
                    f"result {self.request_id!r} is take {self.take} but its frames are in {self.directory}, "
                    f"not the take's folder {self.takes[self.take].directory}"
                )
        elif self.take != 0:
            raise PlacementError(f"result {self.request_id!r} is take {self.take} but lists no takes")
        if self.media is not None and self.media.rate != self.rate:
            raise PlacementError(
                f"result {self.request_id!r}: its frames say {self.media.rate} fps (framesPerSecond) but the "
                f"result is placed at {self.rate}; the delivered rate must be the clip's rate"
            )

    @property
    def target_url_base(self) -> str:
        """file:///dir/ (with the trailing slash OTIO's ImageSequenceReference concatenates onto)."""
        return directory_url(self.directory)

    def frame_numbers(self) -> range:
        return range(self.start_frame, self.start_frame + self.frame_count)

    def frame_url(self, frame: int) -> str:
        return f"{self.target_url_base}{self.name_prefix}{frame:0{self.padding}d}{self.name_suffix}"

    def frame_paths(self) -> List[str]:
        """Local file paths of every frame (file:// URLs and plain directories only)."""
        return [file_url_to_path(self.frame_url(f)) for f in self.frame_numbers()]

    def take_frame_paths(self, index: int) -> List[str]:
        """Local paths of take `index`'s frames (the same names in the take's own folder)."""
        if not self.takes:
            if index != 0:
                raise PlacementError(f"result {self.request_id!r} has one take; asked for take {index}")
            return self.frame_paths()
        if not 0 <= index < len(self.takes):
            raise PlacementError(
                f"result {self.request_id!r} has takes 0..{len(self.takes) - 1}; asked for {index}"
            )
        base = directory_url(self.takes[index].directory)
        return [
            file_url_to_path(f"{base}{self.name_prefix}{f:0{self.padding}d}{self.name_suffix}")
            for f in self.frame_numbers()
        ]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "request_id": self.request_id,
            "job_id": self.job_id,
            "directory": self.directory,
            "name_prefix": self.name_prefix,
            "frame_count": self.frame_count,
            "rate": str(self.rate),
            "start_frame": self.start_frame,
            "padding": self.padding,
            "name_suffix": self.name_suffix,
            "seed": self.seed,
            "model": self.model,
            "storyboard": [dict(s) for s in self.storyboard],
            "prompt": self.prompt,
            "record_start": self.record_start,
            "metadata": dict(self.metadata),
            "media": None if self.media is None else self.media.to_dict(),
            "conform": dict(self.conform),
            "takes": [t.to_dict() for t in self.takes],
            "take": self.take,
            "draft": self.draft,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> ShotResult:
        required = {"request_id", "job_id", "directory", "name_prefix", "frame_count", "rate"}
        missing = required - set(data)
        if missing:
            raise PlacementError(f"ShotResult dict lacks keys {sorted(missing)}; got keys {sorted(data)}")
        return cls(
            request_id=str(data["request_id"]),
            job_id=str(data["job_id"]),
            directory=str(data["directory"]),
            name_prefix=str(data["name_prefix"]),
            frame_count=int(data["frame_count"]),
            rate=snap_rate(data["rate"]),
            start_frame=int(data.get("start_frame", 1001)),
            padding=int(data.get("padding", 4)),
            name_suffix=str(data.get("name_suffix", ".exr")),
            seed=None if data.get("seed") is None else int(data["seed"]),
            model=str(data.get("model", "")),
            storyboard=normalise_storyboard(data.get("storyboard") or [], f"result {data['request_id']}"),
            prompt=data.get("prompt"),
            record_start=None if data.get("record_start") is None else int(data["record_start"]),
            metadata=dict(data.get("metadata") or {}),
            media=None if not data.get("media") else DeliveredMedia.from_dict(data["media"]),
            conform=dict(data.get("conform") or {}),
            takes=[TakeInfo.from_dict(t) for t in data.get("takes") or []],
            take=int(data.get("take") or 0),
            draft=bool(data.get("draft", False)),
        )


def directory_url(directory: str) -> str:
    """A folder as a URL ending in "/": local paths become file:///abs/path/, URLs are kept."""
    if not isinstance(directory, str) or not directory:
        raise PlacementError(f"result directory must be a non-empty path or URL, got {directory!r}")
    if "://" in directory:
        url = directory
    else:
        url = pathlib.Path(os.path.abspath(os.path.expanduser(directory))).as_uri()
    return url if url.endswith("/") else url + "/"


def file_url_to_path(url: str) -> str:
    """Local path of a file:// URL (percent-decoding included); a plain path is returned as is."""
    if "://" not in url:
        return url
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        raise PlacementError(f"{url!r} is not a file:// URL; cannot turn it into a local path")
    return urllib.request.url2pathname(parsed.path)


def make_generated_clip(
    result: ShotResult, duration: int, request: Optional[ShotRequest] = None
) -> otio.schema.Clip:
    """Clip showing the first `duration` frames of `result`, with sequence and first-frame references."""
    _check_result(result)
    if duration < 1 or duration > result.frame_count:
        raise PlacementError(
            f"result {result.request_id!r} has {result.frame_count} frames; cannot show {duration} of them"
        )
    rate = float(snap_rate(result.rate))
    available = time_range(result.start_frame, result.frame_count, rate)
    sequence = otio.schema.ImageSequenceReference(
        target_url_base=result.target_url_base,
        name_prefix=result.name_prefix,
        name_suffix=result.name_suffix,
        start_frame=result.start_frame,
        frame_step=1,
        rate=rate,
        frame_zero_padding=result.padding,
        missing_frame_policy=otio.schema.ImageSequenceReference.MissingFramePolicy.error,
        available_range=available,
    )
    first = otio.schema.ExternalReference(
        target_url=result.frame_url(result.start_frame),
        available_range=time_range(result.start_frame, result.frame_count, rate),
    )
    name = request.name if request is not None and request.name else result.request_id
    mark = "TTT draft" if result.draft else "TTT"
    clip = otio.schema.Clip(
        name=f"{name} [{mark} {result.job_id}]", source_range=time_range(result.start_frame, duration, rate)
    )
    clip.set_media_references({DEFAULT_MEDIA_KEY: sequence, FIRST_FRAME_KEY: first}, DEFAULT_MEDIA_KEY)
    storyboard = result.storyboard or (request.storyboard if request is not None else [])
    prompt = result.prompt if result.prompt is not None else (request.prompt if request is not None else None)
    clip.metadata[METADATA_KEY] = {
        **result.metadata,  # extras first: the keys below always win
        "job_id": result.job_id,
        "request_id": result.request_id,
        "request_kind": request.kind if request is not None else None,
        "storyboard": [dict(s) for s in storyboard],
        "prompt": prompt,
        "seed": result.seed,
        "model": result.model,
        "conform": conform_metadata(result),
    }
    if result.draft:  # a preview job's draft until swap_in_final points the clip at the final
        clip.metadata[METADATA_KEY]["draft"] = True
    if result.takes:  # the clip is the chosen take; every take is listed to switch to
        clip.metadata[METADATA_KEY]["take"] = result.take
        clip.metadata[METADATA_KEY]["takes"] = [t.to_dict() for t in result.takes]
    return clip


def conform_metadata(result: ShotResult) -> Dict[str, Any]:
    """The clip's record of how its frames were made to fit the edit: the server's conform report (native
    fps, retime method, generation size, scale, colour spaces) plus what the delivered frames say."""
    record: Dict[str, Any] = dict(result.conform)
    if result.media is not None:
        record["delivered"] = result.media.to_dict()
    record["rate"] = str(result.rate)
    return record


def place_generated_shot(
    timeline: otio.schema.Timeline,
    request: ShotRequest,
    result: ShotResult,
    track_name: str = GENERATED_TRACK_NAME,
) -> otio.schema.Clip:
    """Put `result` on a generated track at exactly `request.record_start`; returns the new clip.

    A clip already placed for the same request id is replaced (regenerating a shot). Raises
    PlacementError when ids or rates disagree, the result is shorter than the request, or the request
    starts before the timeline.
    """
    if result.request_id != request.id:
        raise PlacementError(f"result is for request {result.request_id!r}, not {request.id!r}")
    rate = timeline_rate(timeline)
    if snap_rate(request.rate) != rate or snap_rate(result.rate) != rate:
        raise PlacementError(
            f"request {request.id!r}: rates differ (timeline {rate}, request {request.rate}, result "
            f"{result.rate}); the server delivers a shot at its request's rate: regenerate it for this {rate} fps edit"
        )
    if result.frame_count < request.duration:
        raise PlacementError(
            f"request {request.id!r} needs {request.duration} frames, result {result.job_id!r} has only "
            f"{result.frame_count}"
        )
    clip = make_generated_clip(result, request.duration, request)
    _place(timeline, clip, request.record_start, request.duration, request.id, track_name)
    return clip


def swap_in_final(
    timeline: otio.schema.Timeline, request: ShotRequest, result: ShotResult
) -> otio.schema.Clip:
    """Point the draft clip placed for `request` at the final frames of `result`, in place: the same clip
    object on the same track at the same frames gets the final's media references, name and metadata
    (without `ttt_studio.draft`). PlacementError when no draft of that job is placed, or when
    `result` is itself a draft or of another job."""
    if result.draft:
        raise PlacementError(f"result {result.job_id} of request {request.id!r} is a draft; swap in a final")
    drafts = [
        clip
        for track in timeline.video_tracks()
        if is_generated_track(track)
        for clip in track.find_clips(shallow_search=True)
        if (ttt_metadata(clip) or {}).get("request_id") == request.id
    ]
    meta = ttt_metadata(drafts[0]) if len(drafts) == 1 else None
    if meta is None or not meta.get("draft") or meta.get("job_id") != result.job_id:
        found = [(ttt_metadata(c) or {}).get("job_id") for c in drafts]
        raise PlacementError(
            f"request {request.id!r}: no draft clip of job {result.job_id} to replace (generated clips of jobs "
            f"{found}); place the final with place_generated_shot"
        )
    clip = drafts[0]
    if clip.source_range.duration.to_frames() != request.duration:
        raise PlacementError(
            f"request {request.id!r}: the draft clip shows {clip.source_range.duration.to_frames()} frames, "
            f"the request {request.duration}"
        )
    final = make_generated_clip(result, request.duration, request)
    clip.name = final.name
    clip.set_media_references(final.media_references(), final.active_media_reference_key)
    clip.metadata[METADATA_KEY] = final.metadata[METADATA_KEY]
    return clip


def build_result_timeline(
    shots: Sequence[ShotResult],
    rate: RateLike,
    start_frame: int = 0,
    name: str = "TTT result",
) -> otio.schema.Timeline:
    """A timeline with one clip per shot: at shot.record_start when given, else one after another.

    start_frame is the timeline's first absolute frame (global_start_time), e.g. 86400 for 01:00:00:00.
    """
    exact = snap_rate(rate)
    timeline = otio.schema.Timeline(name=name, global_start_time=rational_time(start_frame, exact))
    cursor = start_frame
    for shot in shots:
        if snap_rate(shot.rate) != exact:
            raise PlacementError(
                f"shot {shot.request_id!r} is at {shot.rate} fps; the result timeline is {exact}"
            )
        record = cursor if shot.record_start is None else shot.record_start
        clip = make_generated_clip(shot, shot.frame_count)
        _place(timeline, clip, record, shot.frame_count, shot.request_id, GENERATED_TRACK_NAME)
        cursor = record + shot.frame_count
    return timeline


def use_first_frame_references(timeline: otio.schema.Timeline) -> int:
    """Make the first-frame ExternalReference active on every generated clip (for Resolve / Nuke Studio
    import, which ignore ImageSequenceReference); returns how many clips were switched."""
    switched = 0
    for track in timeline.video_tracks():
        if not is_generated_track(track):
            continue
        for clip in track.find_clips(shallow_search=True):
            if FIRST_FRAME_KEY in clip.media_references():
                clip.active_media_reference_key = FIRST_FRAME_KEY
                switched += 1
    return switched


def _place(
    timeline: otio.schema.Timeline,
    clip: otio.schema.Clip,
    record: int,
    duration: int,
    request_id: str,
    track_name: str,
) -> None:
    rate = timeline_rate(timeline)
    stack = timeline.tracks
    if stack.source_range is not None:
        raise PlacementError(
            f"timeline {timeline.name!r}: its stack is trimmed (source_range set); unsupported"
        )
    origin = timeline_start_frame(timeline, rate)
    if record < origin:
        raise PlacementError(
            f"request {request_id!r} starts at frame {record}, before the timeline start {origin}; record frames "
            "are absolute (they include global_start_time)"
        )
    tracks = [t for t in timeline.video_tracks() if is_generated_track(t)]
    layouts = [_generated_layout(t, rate, origin) for t in tracks]
    for layout in layouts:  # regenerating: the old clip of this request goes
        layout[:] = [e for e in layout if (ttt_metadata(e[2]) or {}).get("request_id") != request_id]
    target = None
    for track, layout in zip(tracks, layouts):
        if all(start + length <= record or start >= record + duration for start, length, _ in layout):
            target = (track, layout)
            break
    if target is None:
        track = otio.schema.Track(
            name=track_name if not tracks else f"{track_name} {len(tracks) + 1}",
            kind=otio.schema.TrackKind.Video,
        )
        track.metadata[METADATA_KEY] = {"role": GENERATED_TRACK_ROLE}
        stack.append(track)
        tracks.append(track)
        layouts.append([])
        target = (track, layouts[-1])
        log.info("added track %r for request %s", track.name, request_id)
    target[1].append((record, duration, clip))
    for track, layout in zip(tracks, layouts):
        _rebuild(track, layout, rate, origin)


def _generated_layout(track: otio.schema.Track, rate: Fraction, origin: int) -> List[Tuple[int, int, Any]]:
    if track.source_range is not None:
        raise PlacementError(f"generated track {track.name!r} is trimmed (source_range set); remove the trim")
    layout = []
    for start, length, item in item_record_ranges(track, rate, origin):
        if isinstance(item, otio.schema.Clip):
            layout.append((start, length, item))
        elif not isinstance(item, otio.schema.Gap):
            raise PlacementError(
                f"generated track {track.name!r} holds a {item.schema_name()} ({item.name!r}); only clips and gaps "
                "are expected there"
            )
    return layout


def _rebuild(
    track: otio.schema.Track, layout: List[Tuple[int, int, Any]], rate: Fraction, origin: int
) -> None:
    """Refill `track` with the layout's clips at their frames and whole-frame gaps between them."""
    layout.sort(key=lambda e: e[0])
    track.clear()
    position = origin
    for start, length, clip in layout:
        if start < position:
            raise PlacementError(
                f"clip {clip.name!r} at frame {start} overlaps the previous clip (ends {position})"
            )
        if start > position:
            track.append(otio.schema.Gap(source_range=time_range(0, start - position, rate)))
        track.append(clip)
        position = start + length


def _check_result(result: ShotResult) -> None:
    if result.frame_count < 1:
        raise PlacementError(f"result {result.request_id!r} has {result.frame_count} frames; need >= 1")
    if result.start_frame < 0 or result.padding < 0:
        raise PlacementError(
            f"result {result.request_id!r}: start_frame {result.start_frame} and padding {result.padding} must be >= 0"
        )
    if not result.name_suffix:
        raise PlacementError(f"result {result.request_id!r}: name_suffix is empty; expected e.g. '.exr'")
