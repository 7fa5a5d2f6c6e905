"""A stand-in for DaVinci Resolve's scripting API (Blackmagic's README.txt), for tests outside Resolve.

Calls it answers, as documented:
  resolve.GetProjectManager().GetCurrentProject(); resolve.Fusion(); resolve.EXPORT_OTIO / EXPORT_NONE
  Project: GetName(), GetCurrentTimeline(), GetMediaPool(), GetSetting(key) (README "Project and Clip
    Properties": colorScienceMode "davinciYRGB" | "davinciYRGBColorManagedv2" | "acescc" | "acescct",
    colorSpaceTimeline, colorSpaceTimelineGamma, timelineResolutionWidth / Height, timelinePixelAspectRatio
    "square" | "cinemascope" | "16_9" | "4_3"; an unknown key gives "")
  Timeline: GetName(), GetStartFrame(), GetEndFrame(), GetSetting("timelineFrameRate" and the format keys
    above: the project's, the timeline has no custom settings), GetTrackCount("video"),
    GetTrackName("video", i), SetTrackName("video", i, name), AddTrack("video"), GetItemListInTrack("video", i),
    GetMarkers() -> {frameId: {color, duration, note, name, customData}} (frameId relative to the start),
    AddMarker(frameId, color, name, note, duration, customData) (False when a marker is already there),
    Export(path, resolve.EXPORT_OTIO, resolve.EXPORT_NONE) -> writes the timeline as real OTIO
  TimelineItem: GetName(), GetStart(), GetEnd(), GetDuration(), GetMediaPoolItem(), GetUniqueId(),
    AddMarker(...), GetMarkers()
  MediaPool: ImportMedia([{"FilePath": "x.%04d.exr", "StartIndex", "EndIndex"}]) (the files must exist),
    AppendToTimeline([{"mediaPoolItem", "startFrame", "endFrame", "mediaType", "trackIndex", "recordFrame"}])
    (recordFrame is absolute; endFrame inclusive)
  MediaPoolItem: GetName(), GetClipProperty("File Path" | "Frames" | "Start" | "End" | "FPS"),
    SetClipProperty(key, value) -> bool: "FPS" (an image sequence comes in at the project's rate),
    "Input Color Space" (colour-managed projects only), "IDT" (ACES projects only), as the Clip
    Attributes dialog allows them; False otherwise
  MediaPool (bins): GetRootFolder(), GetCurrentFolder(), SetCurrentFolder(folder) -> bool,
    AddSubFolder(folder, name) -> Folder (ImportMedia puts its items into the current folder);
    Folder: GetName(), GetClipList(), GetSubFolderList()
  TimelineItem takes (the README's take selector): AddTake(mediaPoolItem, startFrame, endFrame) -> bool
    ("Initializes a take selector for the timeline item if needed": the item's own clip becomes take 1,
    as the Edit page's Take Selector makes it; the README does not say), GetTakesCount() (0 when not a
    take selector), GetSelectedTakeIndex() (0 when not), GetTakeByIndex(idx) -> {"startFrame",
    "endFrame", "mediaPoolItem"}, SelectTakeByIndex(idx) -> bool (1 <= idx <= count); GetMediaPoolItem()
    gives the selected take's item
  Elements from the window: Timeline.GetCurrentVideoItem() (the topmost video item under the playhead;
    tests move the fake's `playhead`, a frame), TimelineItem.GetLeftOffset() (the frames of its media
    before its first shown frame)
  Drafts: MediaPoolItem.ReplaceClip(filePath) -> bool ("Replaces the underlying asset and metadata of
    MediaPoolItem with the specified absolute clip path"; a numbered frame of an image sequence stands for
    its sequence, as in the media pool, and the sequence must have the item's frame count; the clip
    attributes set before are gone), TimelineItem.SetClipColor(colorName) / ClearClipColor() /
    GetClipColor(), TimelineItem.UpdateMarkerCustomData(frameId, customData) -> bool
  MediaPoolItem.SetClipProperty("Alpha mode", "None" | "Straight" | "Premultiplied") (Clip Attributes'
    alpha mode; key and values from community usage, the README does not list them)
  fu.UIManager: VGroup / HGroup / Label / LineEdit / CheckBox / Button / ComboBox (AddItem(text), Clear(),
    CurrentText, CurrentIndex) / Timer({"ID", "Interval"});
  bmd.UIDispatcher(ui): AddWindow(props, layout) -> window (GetItems(), On.<ID>.Clicked, Show(), Hide()),
    On.Timeout, RunLoop(), ExitLoop()
Resolve's API is not thread-safe, so this fake raises when called off the main thread and records every
call with its thread. Like Resolve's own export, gaps come out with source ranges that do not start at 0.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import opentimelineio as otio

MAIN_THREAD = threading.main_thread()
_FPS = {"23.976": 24000 / 1001, "29.97": 30000 / 1001, "59.94": 60000 / 1001}
CALLS: list[tuple[str, str, bool]] = []
_IDS = itertools.count(1)


def _record(api: str) -> None:
    here = threading.current_thread()
    CALLS.append((api, here.name, here is MAIN_THREAD))
    if here is not MAIN_THREAD:
        raise RuntimeError(
            f"Resolve API {api} called from thread {here.name!r}; the scripting API is not thread-safe"
        )


class MediaPoolItem:
    def __init__(self, path: str, first: int, last: int, project: Project | None = None) -> None:
        self.path, self.first, self.last = path, first, last
        self.markers: dict[int, dict[str, Any]] = {}
        self.project = project
        # Resolve gives an image sequence the project's frame rate
        self.properties: dict[str, Any] = (
            {"FPS": float(_FPS.get(project.timeline.fps, project.timeline.fps))} if project else {}
        )

    def GetName(self) -> str:
        _record("MediaPoolItem.GetName")
        return os.path.basename(self.path)

    def GetClipProperty(self, key: str) -> Any:
        _record("MediaPoolItem.GetClipProperty")
        return {
            "File Path": self.path,
            "Frames": str(self.last - self.first + 1),
            "Start": str(self.first),
            "End": str(self.last),
            **self.properties,
        }.get(key, "")

    def ReplaceClip(self, path: str) -> bool:
        _record("MediaPoolItem.ReplaceClip")
        import re

        match = re.match(r"^(.*?)(\d+)(\.exr)$", path)
        if not os.path.isabs(path) or not os.path.isfile(path) or match is None:
            return False
        head, digits, tail = match.groups()
        pattern = f"{head}%0{len(digits)}d{tail}"
        first = int(digits)
        last = first + self.last - self.first
        if not all(os.path.isfile(pattern % f) for f in range(first, last + 1)):
            return False
        self.path, self.first, self.last = pattern, first, last
        project = self.project
        self.properties = (
            {"FPS": float(_FPS.get(project.timeline.fps, project.timeline.fps))} if project else {}
        )
        return True

    def SetClipProperty(self, key: str, value: Any) -> bool:
        _record("MediaPoolItem.SetClipProperty")
        mode = self.project.settings["colorScienceMode"] if self.project else "davinciYRGB"
        allowed = {
            "FPS": True,
            "Input Color Space": mode.startswith("davinciYRGBColorManaged"),
            "IDT": mode.startswith("aces"),
            "Alpha mode": value in ALPHA_MODES,
        }
        if not allowed.get(key, False) or value in ("", None):
            return False
        self.properties[key] = float(value) if key == "FPS" else value
        return True


ALPHA_MODES = ("None", "Straight", "Premultiplied")
CLIP_COLORS = (
    "Orange", "Apricot", "Yellow", "Lime", "Olive", "Green", "Teal", "Navy", "Blue", "Purple", "Violet",
    "Pink", "Tan", "Beige", "Brown", "Chocolate",
)  # fmt: skip


class TimelineItem:
    def __init__(
        self,
        name: str,
        start: int,
        duration: int,
        media: MediaPoolItem | None = None,
        source_start: int = 0,
    ) -> None:
        self.name, self.start, self.duration, self.media, self.source_start = (
            name,
            start,
            duration,
            media,
            source_start,
        )
        self.uid = f"item-{next(_IDS)}"
        self.markers: dict[int, dict[str, Any]] = {}
        self.takes: list[dict[str, Any]] = []  # the take selector; empty: not one
        self.selected_take = 0
        self.clip_color = ""

    def GetName(self) -> str:
        _record("TimelineItem.GetName")
        return self.name

    def GetStart(self) -> int:
        _record("TimelineItem.GetStart")
        return self.start

    def GetEnd(self) -> int:
        _record("TimelineItem.GetEnd")
        return self.start + self.duration

    def GetDuration(self) -> int:
        _record("TimelineItem.GetDuration")
        return self.duration

    def GetLeftOffset(self) -> int:
        _record("TimelineItem.GetLeftOffset")
        return self.source_start

    def GetMediaPoolItem(self) -> MediaPoolItem | None:
        _record("TimelineItem.GetMediaPoolItem")
        return self.takes[self.selected_take - 1]["mediaPoolItem"] if self.takes else self.media

    def AddTake(
        self, media: MediaPoolItem, start_frame: int | None = None, end_frame: int | None = None
    ) -> bool:
        _record("TimelineItem.AddTake")
        if not isinstance(media, MediaPoolItem):
            return False
        start = 0 if start_frame is None else int(start_frame)
        end = media.last - media.first if end_frame is None else int(end_frame)
        if end < start or end > media.last - media.first:
            return False
        if not self.takes:  # a new take selector: the item's own clip is take 1, selected
            own_end = self.source_start + self.duration - 1
            self.takes.append(
                {"startFrame": self.source_start, "endFrame": own_end, "mediaPoolItem": self.media}
            )
            self.selected_take = 1
        self.takes.append({"startFrame": start, "endFrame": end, "mediaPoolItem": media})
        return True

    def GetTakesCount(self) -> int:
        _record("TimelineItem.GetTakesCount")
        return len(self.takes)

    def GetSelectedTakeIndex(self) -> int:
        _record("TimelineItem.GetSelectedTakeIndex")
        return self.selected_take

    def GetTakeByIndex(self, idx: int) -> dict[str, Any] | None:
        _record("TimelineItem.GetTakeByIndex")
        return dict(self.takes[idx - 1]) if 1 <= idx <= len(self.takes) else None

    def SelectTakeByIndex(self, idx: int) -> bool:
        _record("TimelineItem.SelectTakeByIndex")
        if not 1 <= idx <= len(self.takes):
            return False
        self.selected_take = idx
        return True

    def GetUniqueId(self) -> str:
        _record("TimelineItem.GetUniqueId")
        return self.uid

    def AddMarker(
        self, frame_id: int, color: str, name: str, note: str, duration: int, custom_data: str = ""
    ) -> bool:
        _record("TimelineItem.AddMarker")
        if frame_id in self.markers or not 0 <= frame_id < self.duration:
            return False
        self.markers[frame_id] = {
            "color": color,
            "duration": duration,
            "note": note,
            "name": name,
            "customData": custom_data,
        }
        return True

    def GetMarkers(self) -> dict[int, dict[str, Any]]:
        _record("TimelineItem.GetMarkers")
        return {f: dict(m) for f, m in self.markers.items()}

    def UpdateMarkerCustomData(self, frame_id: int, custom_data: str) -> bool:
        _record("TimelineItem.UpdateMarkerCustomData")
        if frame_id not in self.markers:
            return False
        self.markers[frame_id]["customData"] = custom_data
        return True

    def SetClipColor(self, color: str) -> bool:
        _record("TimelineItem.SetClipColor")
        if color not in CLIP_COLORS:
            return False
        self.clip_color = color
        return True

    def ClearClipColor(self) -> bool:
        _record("TimelineItem.ClearClipColor")
        self.clip_color = ""
        return True

    def GetClipColor(self) -> str:
        _record("TimelineItem.GetClipColor")
        return self.clip_color


class Timeline:
    def __init__(self, name: str, fps: str = "24", start_frame: int = 86400) -> None:
        self.name, self.fps, self.start_frame = name, fps, start_frame
        self.project: Project | None = None
        self.tracks: list[dict[str, Any]] = [{"name": "Video 1", "items": []}]
        self.markers: dict[int, dict[str, Any]] = {}
        self.playhead = start_frame  # where the user left the playhead (absolute frame)

    def GetCurrentVideoItem(self) -> TimelineItem | None:
        _record("Timeline.GetCurrentVideoItem")
        for track in reversed(self.tracks):
            for item in track["items"]:
                if item.start <= self.playhead < item.start + item.duration:
                    return item
        return None

    def GetName(self) -> str:
        _record("Timeline.GetName")
        return self.name

    def GetStartFrame(self) -> int:
        _record("Timeline.GetStartFrame")
        return self.start_frame

    def GetEndFrame(self) -> int:
        _record("Timeline.GetEndFrame")
        ends = [i.start + i.duration for t in self.tracks for i in t["items"]]
        return max(ends, default=self.start_frame)

    def GetSetting(self, key: str = "") -> Any:
        _record("Timeline.GetSetting")
        project = self.project.settings if self.project else {}
        return {"timelineFrameRate": self.fps, **project}.get(key, "")

    def GetTrackCount(self, kind: str) -> int:
        _record("Timeline.GetTrackCount")
        return len(self.tracks) if kind == "video" else 0

    def GetTrackName(self, kind: str, index: int) -> str:
        _record("Timeline.GetTrackName")
        return self.tracks[index - 1]["name"] if kind == "video" and 1 <= index <= len(self.tracks) else ""

    def SetTrackName(self, kind: str, index: int, name: str) -> bool:
        _record("Timeline.SetTrackName")
        if kind != "video" or not 1 <= index <= len(self.tracks):
            return False
        self.tracks[index - 1]["name"] = name
        return True

    def AddTrack(self, kind: str, sub_type: str = "") -> bool:
        _record("Timeline.AddTrack")
        if kind != "video":
            return False
        self.tracks.append({"name": f"Video {len(self.tracks) + 1}", "items": []})
        return True

    def GetItemListInTrack(self, kind: str, index: int) -> list[TimelineItem]:
        _record("Timeline.GetItemListInTrack")
        return (
            list(self.tracks[index - 1]["items"])
            if kind == "video" and 1 <= index <= len(self.tracks)
            else []
        )

    def GetMarkers(self) -> dict[int, dict[str, Any]]:
        _record("Timeline.GetMarkers")
        return {k: dict(v) for k, v in self.markers.items()}

    def AddMarker(
        self, frame_id: int, color: str, name: str, note: str, duration: int, custom_data: str = ""
    ) -> bool:
        _record("Timeline.AddMarker")
        if frame_id in self.markers:
            return False
        self.markers[frame_id] = {
            "color": color,
            "duration": duration,
            "note": note,
            "name": name,
            "customData": custom_data,
        }
        return True

    def Export(self, path: str, export_type: int, export_subtype: int = 0) -> bool:
        _record("Timeline.Export")
        if export_type != Resolve.EXPORT_OTIO:
            return False
        otio.adapters.write_to_file(self.to_otio(), path)
        return True

    def to_otio(self) -> otio.schema.Timeline:
        """What Resolve writes: global_start_time = the start frame; gaps whose source ranges start at an
        arbitrary frame; clips with their source ranges and media references."""
        rate = {"23.976": 24000 / 1001, "29.97": 30000 / 1001}.get(self.fps, float(self.fps))

        def rt(frames: int) -> otio.opentime.RationalTime:
            return otio.opentime.RationalTime(frames, rate)

        timeline = otio.schema.Timeline(self.name, global_start_time=rt(self.start_frame))
        for track in self.tracks:
            out = otio.schema.Track(track["name"], metadata={"Resolve_OTIO": {"Locked": False}})
            position = self.start_frame
            for item in sorted(track["items"], key=lambda i: i.start):
                if item.start > position:
                    out.append(
                        otio.schema.Gap(
                            source_range=otio.opentime.TimeRange(rt(position), rt(item.start - position))
                        )
                    )
                ref = otio.schema.ExternalReference(
                    target_url=item.media.path if item.media else f"/media/{item.name}.mov",
                    available_range=otio.opentime.TimeRange(rt(0), rt(100000)),
                )
                out.append(
                    otio.schema.Clip(
                        item.name,
                        media_reference=ref,
                        source_range=otio.opentime.TimeRange(rt(item.source_start), rt(item.duration)),
                    )
                )
                position = item.start + item.duration
            timeline.tracks.append(out)
        for frame, marker in sorted(
            self.markers.items()
        ):  # Resolve writes its own marker metadata, not customData
            timeline.tracks.markers.append(
                otio.schema.Marker(
                    marker["name"],
                    marked_range=otio.opentime.TimeRange(rt(frame), rt(marker["duration"])),
                    metadata={"Resolve_OTIO": {"Note": marker["note"], "Keywords": []}},
                )
            )
        return timeline

    # test helper: build the edit
    def add_clip(self, track: int, name: str, start: int, duration: int) -> TimelineItem:
        item = TimelineItem(name, start, duration)
        self.tracks[track - 1]["items"].append(item)
        return item


class Folder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.clips: list[MediaPoolItem] = []
        self.subfolders: list[Folder] = []

    def GetName(self) -> str:
        _record("Folder.GetName")
        return self.name

    def GetClipList(self) -> list[MediaPoolItem]:
        _record("Folder.GetClipList")
        return list(self.clips)

    def GetSubFolderList(self) -> list[Folder]:
        _record("Folder.GetSubFolderList")
        return list(self.subfolders)


class MediaPool:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = Folder("Master")
        self.current = self.root
        self.items: list[MediaPoolItem] = []
        self.appended: list[dict[str, Any]] = []  # every clipInfo given to AppendToTimeline

    def GetRootFolder(self) -> Folder:
        _record("MediaPool.GetRootFolder")
        return self.root

    def GetCurrentFolder(self) -> Folder:
        _record("MediaPool.GetCurrentFolder")
        return self.current

    def SetCurrentFolder(self, folder: Folder) -> bool:
        _record("MediaPool.SetCurrentFolder")
        if not isinstance(folder, Folder):
            return False
        self.current = folder
        return True

    def AddSubFolder(self, folder: Folder, name: str) -> Folder | None:
        _record("MediaPool.AddSubFolder")
        if not isinstance(folder, Folder) or not name:
            return None
        sub = Folder(name)
        folder.subfolders.append(sub)
        return sub

    def ImportMedia(self, items: list[Any]) -> list[MediaPoolItem]:
        _record("MediaPool.ImportMedia")
        imported = []
        for entry in items:
            if isinstance(entry, str):
                entry = {"FilePath": entry}
            pattern = entry["FilePath"]
            first, last = int(entry.get("StartIndex", 0)), int(entry.get("EndIndex", 0))
            if "%" in pattern:
                missing = [pattern % f for f in range(first, last + 1) if not os.path.isfile(pattern % f)]
                if missing or last < first:
                    return []
            elif not os.path.isfile(pattern):
                return []
            item = MediaPoolItem(pattern, first, last, self.project)
            self.items.append(item)
            self.current.clips.append(item)
            imported.append(item)
        return imported

    def AppendToTimeline(self, clips: list[Any]) -> list[TimelineItem]:
        _record("MediaPool.AppendToTimeline")
        timeline = self.project.timeline
        made = []
        for info in clips:
            self.appended.append(dict(info))
            media = info["mediaPoolItem"]
            start, end = int(info.get("startFrame", 0)), int(info.get("endFrame", media.last - media.first))
            track = int(info.get("trackIndex", 1))
            if not 1 <= track <= len(timeline.tracks) or end < start or end > media.last - media.first:
                return []
            record = int(info.get("recordFrame", timeline.GetEndFrame()))
            item = TimelineItem(os.path.basename(media.path), record, end - start + 1, media, start)
            timeline.tracks[track - 1]["items"].append(item)
            made.append(item)
        return made


class Project:
    def __init__(self, name: str, timeline: Timeline) -> None:
        self.name, self.timeline = name, timeline
        timeline.project = self
        self.media_pool = MediaPool(self)
        self.settings: dict[str, str] = {
            "timelineResolutionWidth": "1920",
            "timelineResolutionHeight": "1080",
            "timelinePixelAspectRatio": "square",
            "colorScienceMode": "davinciYRGB",
            "colorSpaceTimeline": "Rec.709",
            "colorSpaceTimelineGamma": "Gamma 2.4",
        }

    def GetSetting(self, key: str = "") -> Any:
        _record("Project.GetSetting")
        return self.settings.get(key, "") if key else dict(self.settings)

    def GetName(self) -> str:
        _record("Project.GetName")
        return self.name

    def GetCurrentTimeline(self) -> Timeline:
        _record("Project.GetCurrentTimeline")
        return self.timeline

    def GetMediaPool(self) -> MediaPool:
        _record("Project.GetMediaPool")
        return self.media_pool


class ProjectManager:
    def __init__(self, project: Project | None) -> None:
        self.project = project

    def GetCurrentProject(self) -> Project | None:
        _record("ProjectManager.GetCurrentProject")
        return self.project


class Resolve:
    EXPORT_OTIO = 12  # values differ per Resolve release; scripts must use the attributes
    EXPORT_NONE = 0

    def __init__(self, project: Project | None) -> None:
        self.manager = ProjectManager(project)
        self.fusion = Fusion()

    def GetProjectManager(self) -> ProjectManager:
        _record("Resolve.GetProjectManager")
        return self.manager

    def Fusion(self) -> Fusion:
        _record("Resolve.Fusion")
        return self.fusion


# ---------------------------------------------------------------------------------------- UIManager


class _Handlers:
    """window.On / dispatcher.On: On.<ID>.<Event> = fn (and On.Timeout = fn on the dispatcher)."""

    def __init__(self) -> None:
        object.__setattr__(self, "_by_id", {})

    def __getattr__(self, name: str) -> Any:
        return self._by_id.setdefault(name, _Events())

    def __setattr__(self, name: str, value: Any) -> None:
        self._by_id[name] = value


class _Events:
    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Any], None]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "handlers":
            object.__setattr__(self, name, value)
        else:
            self.handlers[name] = value


class Widget:
    def __init__(self, kind: str, props: dict[str, Any], children: list[Any] | None = None) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "props", dict(props))
        object.__setattr__(self, "children", list(children or []))

    def __getattr__(self, name: str) -> Any:
        _record(f"{self.kind}.get:{name}")
        return self.props.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        _record(f"{self.kind}.set:{name}")
        self.props[name] = value

    def walk(self) -> list[Widget]:
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        return found


class ComboBox(Widget):
    """ui.ComboBox: AddItem(text) appends a choice; CurrentText / CurrentIndex say (and set) the chosen one."""

    def __init__(self, props: dict[str, Any]) -> None:
        super().__init__("ComboBox", props)
        object.__setattr__(self, "choices", [])

    def AddItem(self, text: str) -> None:
        _record("ComboBox.AddItem")
        self.choices.append(text)
        if len(self.choices) == 1:
            self.props["CurrentIndex"] = 0

    def Clear(self) -> None:
        _record("ComboBox.Clear")
        self.choices.clear()
        self.props["CurrentIndex"] = -1

    def __getattr__(self, name: str) -> Any:
        if name == "CurrentText":
            _record("ComboBox.get:CurrentText")
            index = self.props.get("CurrentIndex", -1)
            return self.choices[index] if 0 <= index < len(self.choices) else ""
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "CurrentText":
            value, name = self.choices.index(value), "CurrentIndex"
        super().__setattr__(name, value)


class Timer:
    def __init__(self, props: dict[str, Any]) -> None:
        self.id, self.interval_ms = props["ID"], int(props.get("Interval", 1000))
        self.running = False

    def Start(self) -> None:
        _record("Timer.Start")
        self.running = True

    def Stop(self) -> None:
        _record("Timer.Stop")
        self.running = False


class UIManager:
    def __init__(self) -> None:
        self.timers: list[Timer] = []

    def VGroup(self, children: list[Any]) -> Widget:
        return Widget("VGroup", {}, children)

    def HGroup(self, children: list[Any]) -> Widget:
        return Widget("HGroup", {}, children)

    def Label(self, props: dict[str, Any]) -> Widget:
        return Widget("Label", props)

    def LineEdit(self, props: dict[str, Any]) -> Widget:
        return Widget("LineEdit", props)

    def CheckBox(self, props: dict[str, Any]) -> Widget:
        return Widget("CheckBox", props)

    def Button(self, props: dict[str, Any]) -> Widget:
        return Widget("Button", props)

    def ComboBox(self, props: dict[str, Any]) -> Widget:
        return ComboBox(props)

    def Timer(self, props: dict[str, Any]) -> Timer:
        timer = Timer(props)
        self.timers.append(timer)
        return timer


class Window:
    def __init__(self, props: dict[str, Any], layout: Widget) -> None:
        self.props, self.layout = dict(props), layout
        self.On = _Handlers()
        self.visible = False

    def GetItems(self) -> dict[str, Widget]:
        _record("Window.GetItems")
        return {w.props["ID"]: w for w in self.layout.walk() if "ID" in w.props}

    def Show(self) -> None:
        _record("Window.Show")
        self.visible = True

    def Hide(self) -> None:
        _record("Window.Hide")
        self.visible = False

    def click(self, widget_id: str) -> None:
        """Test helper: the user clicks a button (its Clicked handler runs on the loop's thread)."""
        handler = self.On._by_id.get(widget_id)
        if handler is not None and "Clicked" in handler.handlers:
            handler.handlers["Clicked"]({"who": widget_id, "what": "Clicked"})


class UIDispatcher:
    """bmd.UIDispatcher(ui). RunLoop() fires due timers into On.Timeout and runs `script(dispatcher)` (a
    test's user) each iteration, on the calling thread, until ExitLoop(); `longest_gap` is the longest time
    between two iterations, i.e. how long the UI was blocked."""

    script: Callable[[Any], None] | None = None

    def __init__(self, ui: UIManager) -> None:
        self.ui = ui
        self.On = _Handlers()
        self.windows: list[Window] = []
        self._exit = False
        self.longest_gap = 0.0
        self.ticks = 0

    def AddWindow(self, props: dict[str, Any], layout: Widget) -> Window:
        _record("UIDispatcher.AddWindow")
        window = Window(props, layout)
        self.windows.append(window)
        return window

    def ExitLoop(self) -> None:
        _record("UIDispatcher.ExitLoop")
        self._exit = True

    def RunLoop(self, timeout: float = 120.0) -> None:
        _record("UIDispatcher.RunLoop")
        deadline = time.monotonic() + timeout
        due: dict[int, float] = {}
        last = time.monotonic()
        while not self._exit:
            now = time.monotonic()
            for timer in self.ui.timers:
                if not timer.running:
                    due.pop(id(timer), None)
                    continue
                if now >= due.setdefault(id(timer), now + timer.interval_ms / 1000.0):
                    due[id(timer)] = now + timer.interval_ms / 1000.0
                    handler = self.On._by_id.get("Timeout")
                    if callable(handler):
                        handler({"who": timer.id, "what": "Timeout"})
            if UIDispatcher.script is not None:
                UIDispatcher.script(self)
            self.ticks += 1
            now = time.monotonic()
            self.longest_gap, last = max(self.longest_gap, now - last), now
            if now > deadline:
                raise TimeoutError("fake UIDispatcher loop ran past its timeout")
            time.sleep(0.005)


class Fusion:
    def __init__(self) -> None:
        self.UIManager = UIManager()


# ---------------------------------------------------------------------------------------- test setup

CURRENT: Resolve | None = None


def make_resolve(fps: str = "24", start_frame: int = 86400, name: str = "edit") -> Resolve:
    """A Resolve with one project whose current timeline starts at start_frame; becomes CURRENT."""
    global CURRENT
    CALLS.clear()
    UIDispatcher.script = None
    CURRENT = Resolve(Project("ttt test", Timeline(name, fps, start_frame)))
    return CURRENT
