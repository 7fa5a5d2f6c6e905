"""TTT Studio for DaVinci Resolve: the current timeline's gaps and markers become generated shots.

Reading: tl.Export(path, resolve.EXPORT_OTIO, resolve.EXPORT_NONE) (Resolve 18.5+) gives the edit as OTIO;
timeline markers come from tl.GetMarkers() (frame ids RELATIVE to the timeline start) and are added to
that OTIO as request markers, so the shared request finder (host_plugin.core.requests) turns everything
into absolute record frames (the timeline start, often 86400 = 01:00:00:00, included).

A marker asks for a shot when its note starts with "TTT:" (the rest is the prompt) or its customData
is JSON {"ttt_studio": {"prompt": ...} | {"storyboard": [...]}}; its duration is the shot's length.
Markers this plugin adds to generated clips carry {"ttt_studio": {"generated": true, ...}} and are skipped.

Delivery: the target format is the timeline's (GetSetting "timelineResolutionWidth" / "Height" /
"timelinePixelAspectRatio"), the working colour space the project's (GetSetting "colorScienceMode",
"colorSpaceTimeline", "colorSpaceTimelineGamma": ACES projects deliver ACEScg). The imported clip's
frame rate is set to the delivered rate when Resolve gave it another (SetClipProperty "FPS"), and its
colour space where the API allows: "Input Color Space" in colour-managed projects, "IDT" (ACEScg /
ACES2065-1) in ACES projects. DaVinci YRGB without colour management has no per-clip colour space,
and Resolve refuses the property when its Clip Attributes cannot take it (e.g. a custom colour space
in an ACES workflow): the status line then says the clip's colour space must be set by hand.

Placing: mp.ImportMedia([{"FilePath": "dir/shot.%04d.exr", "StartIndex", "EndIndex"}]), a video track
named "TTT generated" (tl.AddTrack("video") once), mp.AppendToTimeline([{"mediaPoolItem", "startFrame",
"endFrame", "mediaType": 1, "trackIndex", "recordFrame"}]) at the ABSOLUTE record frame, then a marker
with customData on the new clip.

Takes: every take is imported into a bin of its own (mp.AddSubFolder(mp.GetCurrentFolder(), "TTT
takes <shot>"), SetCurrentFolder, ImportMedia, then the previous folder again); take 0 is appended to
the timeline and the other takes added to that item's take selector (TimelineItem.AddTake), and the
shown take selected (SelectTakeByIndex, 1-based: take i is index i + 1); switching after approval
selects another take of the same item. Elements: the RGBA element goes on a track above the plate's,
its clip's "Alpha mode" set to "Premultiplied" (the EXR convention; the key and its values follow
community usage, the README does not list them) so Resolve composites it over the plate.

Drafts: a preview job's draft is placed as above, its timeline item coloured (SetClipColor) and its
generated marker's customData saying "draft": true (UpdateMarkerCustomData); the final then replaces
each placed MediaPoolItem's media (ReplaceClip with the final's first frame: the README's "absolute clip
path"; the final has the draft's frame names and count), so the timeline item, its take selector and its
place stay; the colour goes and the marker says "draft": false.

Resolve's API is not thread-safe: every call here runs on the script's
main thread; network work happens in a ShotJob thread.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Tuple

import opentimelineio as otio

from host_plugin.core.delivery import Format
from host_plugin.core.errors import FrameMathError, HostError, RequestError
from host_plugin.core.frame_math import snap_rate, time_range
from host_plugin.core.placement import DeliveredMedia
from host_plugin.core.requests import KIND_CLIP, METADATA_KEY, ShotRequest, find_shot_requests
from host_plugin.hosts import colour
from host_plugin.hosts.base import Host, check_chosen_take

log = logging.getLogger(__name__)

PROMPT_PREFIX = "TTT:"
GENERATED_MARKER = "TTT generated"
TAKES_BIN = "TTT takes"
ELEMENT_TRACK = "TTT element"
ALPHA_MODE = ("Alpha mode", "Premultiplied")
DRAFT_CLIP_COLOR = "Orange"  # a timeline item showing a preview job's draft
COLOUR_SETTINGS = ("colorScienceMode", "colorSpaceTimeline", "colorSpaceTimelineGamma")
# timelinePixelAspectRatio values: a fixed pixel aspect, or the display aspect the frame fills
FIXED_PIXEL_ASPECT = {"square": 1.0, "cinemascope": 2.0}
DISPLAY_ASPECT = {"16_9": Fraction(16, 9), "4_3": Fraction(4, 3)}


def pixel_aspect_of(setting: Any, width: int, height: int) -> float:
    """Pixel aspect of Resolve's timelinePixelAspectRatio ("square", "cinemascope", "16_9", "4_3")."""
    key = str(setting or "square").strip().lower().replace(":", "_").replace(" ", "")
    if key in FIXED_PIXEL_ASPECT:
        return FIXED_PIXEL_ASPECT[key]
    if key in DISPLAY_ASPECT:
        return float(DISPLAY_ASPECT[key] * height / width)
    raise HostError(
        f"timeline pixel aspect {setting!r} is not one Resolve documents (square, cinemascope, 16_9, 4_3)"
    )


def _printf_pattern(path: str) -> str:
    """A sequence's File Path as a %0Nd pattern: Resolve's name.[1001-1048].exr form becomes
    name.%04d.exr; a %0Nd pattern is kept; anything else is returned as it is."""
    match = re.search(r"\[(\d+)-\d+\]", path)
    if match is None:
        return path
    return path[: match.start()] + f"%0{len(match.group(1))}d" + path[match.end() :]


def rate_text(rate: Fraction) -> str:
    """A rate as Resolve writes frame rates: "24", "23.976", "29.97"."""
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")


def marker_request(frame: int, marker: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The ttt_studio metadata a Resolve marker asks for, or None when it asks for nothing."""
    custom = marker.get("customData") or ""
    if custom:
        try:
            data = json.loads(custom)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get(METADATA_KEY), dict):
            meta = dict(data[METADATA_KEY])
            return None if meta.get("generated") else meta
    note = (marker.get("note") or "").strip()
    if note.upper().startswith(PROMPT_PREFIX):
        prompt = note[len(PROMPT_PREFIX) :].strip()
        if not prompt:
            raise RequestError(
                f"marker {marker.get('name')!r} at timeline frame +{frame}: 'TTT:' note has no prompt after it"
            )
        return {"prompt": prompt}
    return None


class ResolveHost(Host):
    """The current timeline of the current project."""

    name = "resolve"

    def __init__(self, resolve: Any, work_dir: Optional[str] = None) -> None:
        self.resolve = resolve
        self.project = resolve.GetProjectManager().GetCurrentProject()
        if self.project is None:
            raise HostError("no project is open in Resolve")
        self.timeline = self.project.GetCurrentTimeline()
        if self.timeline is None:
            raise HostError(f"project {self.project.GetName()!r} has no current timeline; open one first")
        self.media_pool = self.project.GetMediaPool()
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="ttt_resolve_")
        self.progress = 0.0
        self.status = ""
        self.cancel_requested = False
        self.placed: List[Any] = []
        self.warnings: List[str] = []
        self.pending: List[Tuple[Callable[..., Any], tuple]] = []
        self.on_status: Optional[Callable[[str], None]] = None

    # ------------------------------------------------------------------ reading

    def start_frame(self) -> int:
        return int(self.timeline.GetStartFrame())

    def target_format(self) -> Format:
        """The timeline's resolution and pixel aspect (Timeline.GetSetting, the project's unless the timeline
        has custom settings)."""
        try:
            width = int(self.timeline.GetSetting("timelineResolutionWidth"))
            height = int(self.timeline.GetSetting("timelineResolutionHeight"))
        except (TypeError, ValueError) as exc:
            raise HostError(
                f"Resolve gave no timeline resolution for {self.timeline.GetName()!r}: {exc}"
            ) from exc
        aspect = pixel_aspect_of(self.timeline.GetSetting("timelinePixelAspectRatio"), width, height)
        return Format(width, height, aspect)

    def colour_settings(self) -> Dict[str, str]:
        return {key: str(self.project.GetSetting(key) or "") for key in COLOUR_SETTINGS}

    def working_colorspace(self) -> str:
        return colour.resolve_working_interop(self.colour_settings())

    def read_edit(self) -> otio.schema.Timeline:
        """The timeline as OTIO (Resolve's own export) plus request markers from GetMarkers()."""
        path = os.path.join(self.work_dir, "timeline.otio")
        if not self.timeline.Export(path, self.resolve.EXPORT_OTIO, self.resolve.EXPORT_NONE):
            raise HostError(
                f"Resolve could not export timeline {self.timeline.GetName()!r} as OTIO (needs Resolve 18.5 or newer)"
            )
        try:
            edit = otio.adapters.read_from_file(path)
        except Exception as exc:  # noqa: BLE001 - OTIO raises several types for a bad file
            raise HostError(f"Resolve's OTIO export {path} is not readable: {exc}") from exc
        if not isinstance(edit, otio.schema.Timeline):
            raise HostError(f"Resolve's OTIO export {path} holds a {type(edit).__name__}, not a Timeline")
        rate = snap_rate(self.timeline.GetSetting("timelineFrameRate"))
        start = self.start_frame()
        edit.global_start_time = otio.opentime.RationalTime(start, float(rate))
        for frame, marker in sorted((self.timeline.GetMarkers() or {}).items()):
            meta = marker_request(int(frame), marker)
            if meta is None:
                continue
            duration = int(marker.get("duration") or 0)
            entry = otio.schema.Marker(
                name=marker.get("name") or f"marker_{int(frame)}",
                marked_range=time_range(int(frame), duration, rate),  # stack time 0 = timeline start
                color=otio.schema.MarkerColor.RED,
            )
            entry.metadata[METADATA_KEY] = meta
            entry.metadata["resolve"] = {"frame_id": int(frame), "color": marker.get("color", "")}
            edit.tracks.markers.append(entry)
        return edit

    def find_requests(
        self, include_plain_gaps: bool = False, prompt: Optional[str] = None
    ) -> List[ShotRequest]:
        """Every shot the timeline asks for, in absolute record frames; `prompt` fills requests without one."""
        requests = find_shot_requests(self.read_edit(), include_plain_gaps=include_plain_gaps)
        for request in requests:
            if not request.prompt and not request.storyboard:
                if not prompt:
                    raise RequestError(
                        f"{request.kind} at {request.record_timecode} ({request.duration} frames) has no prompt: "
                        "type one in the window (or a 'TTT: ...' marker note)"
                    )
                request.prompt = prompt
        return requests

    def element_request(
        self, prompt: str, matte_dir: str = "", name: str = ""
    ) -> Tuple[ShotRequest, List[str], List[str]]:
        """An element over the clip under the playhead (tl.GetCurrentVideoItem()), whose media is an EXR
        sequence: (the request for the clip's record range on its track, the plate frames it shows, the
        mattes: the EXRs of `matte_dir` in name order, one per plate frame; none: the plate's alpha).

        The plate frames are the clip's own files: its media's File Path (a %0Nd pattern, or Resolve's
        name.[1001-1048].exr form) from its Start frame plus the item's GetLeftOffset()."""
        if not prompt.strip():
            raise RequestError("an element needs a prompt: type one in the window")
        item = self.timeline.GetCurrentVideoItem()
        if item is None:
            raise RequestError("no clip under the playhead: put the playhead on the plate's clip")
        media = item.GetMediaPoolItem()
        where = f"clip {item.GetName()!r} under the playhead"
        if media is None:
            raise RequestError(f"{where} has no media to use as the plate (a generator or title?)")
        pattern = _printf_pattern(str(media.GetClipProperty("File Path") or ""))
        if not pattern.lower().endswith(".exr") or "%" not in pattern:
            raise RequestError(
                f"{where} is {media.GetClipProperty('File Path')!r}; an element's plate is an EXR image sequence"
            )
        first = int(media.GetClipProperty("Start")) + int(item.GetLeftOffset())
        duration = int(item.GetDuration())
        paths = [pattern % (first + i) for i in range(duration)]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise RequestError(
                f"{where}: {len(missing)} of its {duration} plate frames are missing, e.g. {missing[0]}"
            )
        mattes: List[str] = []
        if matte_dir:
            if not os.path.isdir(matte_dir):
                raise RequestError(f"matte folder {matte_dir!r} does not exist")
            names = sorted(n for n in os.listdir(matte_dir) if n.lower().endswith(".exr"))
            mattes = [os.path.join(matte_dir, n) for n in names]
            if len(mattes) != duration:
                raise RequestError(
                    f"matte folder {matte_dir!r} holds {len(mattes)} EXR frames; {where} shows {duration}: one "
                    "matte per plate frame"
                )
        track = self._track_of(item)
        record = int(item.GetStart())
        request = ShotRequest(
            id=f"resolve.element.{track}.{record}",
            kind=KIND_CLIP,
            track_name=self.timeline.GetTrackName("video", track),
            track_index=track - 1,
            record_start=record,
            duration=duration,
            rate=snap_rate(self.timeline.GetSetting("timelineFrameRate")),
            prompt=prompt.strip(),
            name=name or f"element_{os.path.splitext(os.path.basename(paths[0]))[0].split('.')[0]}",
        )
        return request, paths, mattes

    def _track_of(self, item: Any) -> int:
        """The video track (1-based) that holds timeline item `item`."""
        uid = item.GetUniqueId()
        for index in range(1, int(self.timeline.GetTrackCount("video")) + 1):
            if any(i.GetUniqueId() == uid for i in self.timeline.GetItemListInTrack("video", index) or []):
                return index
        raise HostError(f"clip {item.GetName()!r} is on no video track of {self.timeline.GetName()!r}")

    def plate_frames(self, request: Any, first: int, last: int) -> List[str]:
        """Render record frames first..last to half-float ZIP EXRs through the render queue (blocks)."""
        folder = tempfile.mkdtemp(prefix="ttt_plate_", dir=self.work_dir)
        project = self.project
        if not project.SetCurrentRenderFormatAndCodec("exr", "RGBHalfZIP"):
            raise HostError("Resolve refused render format exr / RGBHalfZIP")
        project.SetRenderSettings(
            {
                "SelectAllFrames": False,
                "MarkIn": first,
                "MarkOut": last,
                "TargetDir": folder,
                "CustomName": "plate",
            }
        )
        job = project.AddRenderJob()
        if not job or not project.StartRendering([job]):
            raise HostError("Resolve could not start the plate render")
        while project.IsRenderingInProgress():
            time.sleep(0.2)
        status = project.GetRenderJobStatus(job) or {}
        if status.get("JobStatus") != "Complete":
            raise HostError(f"plate render ended {status.get('JobStatus')!r}: {status.get('Error', '')}")
        return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(".exr"))

    # ------------------------------------------------------------------ placing

    def _track_for(self, track_hint: str, record: int, end: int, above: int = 0) -> int:
        """Index (1-based) of a track above track `above` named track_hint that is empty over [record, end);
        added (on top) if none."""
        count = int(self.timeline.GetTrackCount("video"))
        for index in range(above + 1, count + 1):
            if self.timeline.GetTrackName("video", index) != track_hint:
                continue
            items = self.timeline.GetItemListInTrack("video", index) or []
            if all(item.GetEnd() <= record or item.GetStart() >= end for item in items):
                return index
        if not self.timeline.AddTrack("video"):
            raise HostError("Resolve refused to add a video track")
        index = int(self.timeline.GetTrackCount("video"))
        self.timeline.SetTrackName("video", index, track_hint)
        return index

    def place_sequence(
        self, paths: List[str], record_frame: int, track_hint: str, media: DeliveredMedia
    ) -> Any:
        """The sequence imported and appended on a "TTT generated" track; returns the timeline item."""
        media_item, pattern, colour_set = self._import(paths, media)
        track = self._track_for(track_hint, record_frame, record_frame + len(paths))
        return self._append(media_item, pattern, colour_set, len(paths), track, record_frame, media, paths)

    def mark_draft(self, handle: Any) -> None:
        """The timeline item's clip colour and its generated marker's customData say it is a draft."""
        if not handle.SetClipColor(DRAFT_CLIP_COLOR):
            raise HostError(f"Resolve refused clip colour {DRAFT_CLIP_COLOR!r} for {handle.GetName()!r}")
        self._update_marker(handle, draft=True)

    def replace_media(self, handle: Any, takes: List[List[str]], media: DeliveredMedia) -> None:
        """Each placed MediaPoolItem (take i's, in the item's take selector; else the item's own) gets the
        final frames takes[i] through ReplaceClip; the timeline item stays where it is."""
        count = int(handle.GetTakesCount())
        items = (
            [handle.GetTakeByIndex(i)["mediaPoolItem"] for i in range(1, count + 1)]
            if count
            else [handle.GetMediaPoolItem()]
        )
        if len(items) != len(takes):
            raise HostError(
                f"{handle.GetName()!r} holds {len(items)} take(s); got frames for {len(takes)} take(s)"
            )
        for media_item, paths in zip(items, takes):
            frames = int(media_item.GetClipProperty("Frames"))
            if frames != len(paths):
                raise HostError(f"{media_item.GetName()!r} has {frames} frames; the final has {len(paths)}")
            alpha = media_item.GetClipProperty(ALPHA_MODE[0])
            if not media_item.ReplaceClip(paths[0]):
                raise HostError(f"Resolve could not replace {media_item.GetName()!r} with {paths[0]}")
            # a replaced clip is a new asset: its rate, colour space and alpha mode are set again
            self._set_clip_rate(media_item, media.rate, paths[0])
            self._set_clip_colour(media_item, media, paths[0])
            if alpha and not media_item.SetClipProperty(ALPHA_MODE[0], alpha):
                raise HostError(f"Resolve refused {ALPHA_MODE[0]!r} = {alpha!r} for {paths[0]}")
        if not handle.ClearClipColor():
            raise HostError(f"Resolve could not clear the draft colour of {handle.GetName()!r}")
        pattern = re.sub(r"(\d+)(\.exr)$", lambda m: f"%0{len(m.group(1))}d{m.group(2)}", takes[0][0])
        self._update_marker(handle, draft=False, frames=pattern)

    def _update_marker(self, item: Any, **values: Any) -> None:
        """Set `values` in the ttt_studio customData of the item's generated marker."""
        markers = item.GetMarkers() or {}
        frame = next((f for f, m in sorted(markers.items()) if m.get("name") == GENERATED_MARKER), None)
        if frame is None:
            raise HostError(f"{item.GetName()!r} has no {GENERATED_MARKER!r} marker; generate the shot again")
        custom = json.loads(markers[frame].get("customData") or "{}")
        custom.setdefault(METADATA_KEY, {}).update(values)
        if not item.UpdateMarkerCustomData(frame, json.dumps(custom)):
            raise HostError(f"Resolve refused the marker customData of {item.GetName()!r}")

    def place_takes(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        track_hint: str,
        media: DeliveredMedia,
    ) -> Any:
        """Every take imported into a "TTT takes <shot>" bin; take 0 on the timeline with the others in its
        take selector, take `chosen` selected; returns the timeline item."""
        check_chosen_take(takes, chosen)
        imported = self._import_takes(takes, media)
        count = len(takes[0])
        track = self._track_for(track_hint, record_frame, record_frame + count)
        return self._append_takes(imported, takes, chosen, track, record_frame, media)

    def _import_takes(self, takes: List[List[str]], media: DeliveredMedia) -> List[Tuple[Any, str, bool]]:
        """Each take imported (_import); several into a bin of their own, "TTT takes <shot>"."""
        if len(takes) == 1:
            return [self._import(takes[0], media)]
        pool = self.media_pool
        parent = pool.GetCurrentFolder()
        shot = os.path.basename(takes[0][0]).split(".")[0] if takes and takes[0] else "shot"
        folder = pool.AddSubFolder(parent, f"{TAKES_BIN} {shot}")
        if not folder or not pool.SetCurrentFolder(folder):
            raise HostError(f"Resolve could not make the media pool bin {TAKES_BIN} {shot!r}")
        try:
            return [self._import(paths, media) for paths in takes]
        finally:
            pool.SetCurrentFolder(parent)

    def _append_takes(
        self,
        imported: List[Tuple[Any, str, bool]],
        takes: List[List[str]],
        chosen: int,
        track: int,
        record_frame: int,
        media: DeliveredMedia,
    ) -> Any:
        """Take 0 appended on `track`; with more takes, the others in its take selector, `chosen` selected."""
        count = len(takes[0])
        item_0, pattern, colour_set = imported[0]
        item = self._append(item_0, pattern, colour_set, count, track, record_frame, media, takes[0])
        for index, (media_item, other, _) in enumerate(imported[1:], start=1):
            if not item.AddTake(media_item, 0, count - 1):
                raise HostError(
                    f"Resolve refused {other} as take {index + 1} of the clip at frame {record_frame}"
                )
        if len(takes) > 1:
            self.switch_take(item, chosen)
        return item

    def switch_take(self, handle: Any, index: int) -> None:
        """Select take `index` (0-based) in the item's take selector (SelectTakeByIndex is 1-based)."""
        count = int(handle.GetTakesCount())
        if not 0 <= index < count:
            raise HostError(f"the clip's take selector has takes 0..{count - 1}; cannot show take {index}")
        if not handle.SelectTakeByIndex(index + 1):
            raise HostError(f"Resolve refused to select take {index + 1} of {handle.GetName()!r}")
        log.info("%s shows take %d", handle.GetName(), index)

    def place_element(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        plate_track: int,
        media: DeliveredMedia,
        mattes: List[str],
    ) -> Any:
        """The RGBA element on a track above the plate's (plate_track 0 = V1), its alpha premultiplied, with
        its other takes in the item's take selector (as place_takes); returns the timeline item. The matte
        is the element's alpha already: `mattes` are not placed."""
        check_chosen_take(takes, chosen)
        imported = self._import_takes(takes, media)
        for media_item, pattern, _ in imported:
            if not media_item.SetClipProperty(*ALPHA_MODE):
                raise HostError(
                    f"Resolve refused clip property {ALPHA_MODE[0]!r} = {ALPHA_MODE[1]!r} for {pattern}; without "
                    "it the element covers the plate"
                )
        count = len(takes[0])
        track = self._track_for(ELEMENT_TRACK, record_frame, record_frame + count, above=plate_track + 1)
        return self._append_takes(imported, takes, chosen, track, record_frame, media)

    def _import(self, paths: List[str], media: DeliveredMedia) -> Tuple[Any, str, bool]:
        """Import a delivered EXR sequence into the current media pool folder at its rate and colour space:
        (media pool item, its %04d pattern, whether its colour space could be set)."""
        if not paths:
            raise HostError("place_sequence got no frames")
        match = re.match(r"^(.*?)(\d+)(\.exr)$", paths[0])
        if match is None:
            raise HostError(f"{paths[0]!r} is not a numbered EXR frame")
        head, digits, tail = match.groups()
        first = int(digits)
        pattern = f"{head}%0{len(digits)}d{tail}"
        items = self.media_pool.ImportMedia(
            [{"FilePath": pattern, "StartIndex": first, "EndIndex": first + len(paths) - 1}]
        )
        if not items:
            raise HostError(f"Resolve could not import {pattern} frames {first}-{first + len(paths) - 1}")
        media_item = items[0]
        self._set_clip_rate(media_item, media.rate, pattern)
        colour_set = self._set_clip_colour(media_item, media, pattern)
        return media_item, pattern, colour_set

    def _append(
        self,
        media_item: Any,
        pattern: str,
        colour_set: bool,
        count: int,
        track: int,
        record_frame: int,
        media: DeliveredMedia,
        paths: List[str],
    ) -> Any:
        """Append `count` frames of media_item on video track `track` at absolute record_frame, checked,
        with a generated marker; returns the timeline item."""
        clip = {
            "mediaPoolItem": media_item,
            "startFrame": 0,
            "endFrame": count - 1,
            "mediaType": 1,  # video only
            "trackIndex": track,
            "recordFrame": record_frame,  # absolute: includes tl.GetStartFrame()
        }
        appended = self.media_pool.AppendToTimeline([clip])
        if not appended:
            raise HostError(f"Resolve could not put {pattern} on video track {track} at frame {record_frame}")
        item = appended[0]
        if int(item.GetStart()) != record_frame or int(item.GetDuration()) != count:
            raise HostError(
                f"Resolve placed {pattern} at {item.GetStart()} for {item.GetDuration()} frames; asked for "
                f"{record_frame} for {count}"
            )
        custom = json.dumps(
            {
                METADATA_KEY: {
                    "generated": True,
                    "frames": pattern,
                    "record_frame": record_frame,
                    "delivered": media.to_dict(),
                    "colorspace_set": colour_set,
                }
            }
        )
        item.AddMarker(0, "Green", GENERATED_MARKER, os.path.basename(os.path.dirname(paths[0])), 1, custom)
        self.placed.append(item)
        log.info(
            "placed %s on V%d at %d (%s fps, %s)", pattern, track, record_frame, media.rate, media.colorspace
        )
        return item

    def _set_clip_rate(self, item: Any, rate: Fraction, pattern: str) -> None:
        """The clip plays at the delivered rate: Resolve gives image sequences the project's rate, so set
        "FPS" only when it differs (a shot delivered for another edit)."""
        try:
            current = snap_rate(item.GetClipProperty("FPS"))
        except FrameMathError:
            current = None
        if current == rate:
            return
        if not item.SetClipProperty("FPS", rate_text(rate)):
            raise HostError(f"Resolve refused frame rate {rate_text(rate)} for {pattern} (clip property FPS)")

    def _set_clip_colour(self, item: Any, media: DeliveredMedia, pattern: str) -> bool:
        """Tell Resolve what colour space the frames are in, where its API can; False (and a status line
        saying so) where it cannot."""
        settings = self.colour_settings()
        target = colour.resolve_clip_colour(media.colorspace, settings) if media.colorspace else None
        if target is not None and item.SetClipProperty(*target):
            return True
        why = (
            f"Resolve refused clip property {target[0]!r} = {target[1]!r}"
            if target is not None
            else f"Resolve's API has no clip colour space in colorScienceMode {settings['colorScienceMode']!r}"
        )
        self.warnings.append(
            f"{os.path.basename(pattern)} is {media.colorspace or 'untagged'}: {why}; set it in Clip Attributes"
        )
        self.report_progress(self.progress, self.warnings[-1])
        return False

    # ------------------------------------------------------------------ progress and threads

    def report_progress(self, fraction: float, message: str) -> None:
        self.progress, self.status = float(fraction), message
        if self.on_status is not None:
            self.on_status(f"{100 * fraction:3.0f}%  {message}")

    def report_error(self, message: str) -> None:
        self.status = f"Error: {message}"
        if self.on_status is not None:
            self.on_status(self.status)
        log.error("%s", message)

    def is_cancelled(self) -> bool:
        return self.cancel_requested

    def run_on_main_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        self.pending.append((fn, args))  # the UIDispatcher timer (or the headless loop) runs these

    def run_pending(self) -> None:
        while self.pending:
            fn, args = self.pending.pop(0)
            fn(*args)
