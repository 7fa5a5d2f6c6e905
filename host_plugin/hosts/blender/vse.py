"""The Blender Sequencer as a ttt-studio Host: shot ranges from a gap or scene markers, EXR strips placed.

Works on Blender 4.2-4.3 (`sequence_editor.sequences`) and 4.4+/5.x (`strips`; `sequences` is gone in
5.0). A shot is delivered in the scene's format (render resolution x percentage, pixel aspect) and its
working colour space (5.0+: `bpy.data.colorspace.working_space_interop_id`; before, Linear Rec.709);
the strip covers the scene's frame (fit_method of the delivery's fit: the frames already are the
scene's format) and its `colorspace_settings.name` names the delivered space. Everything here runs on
Blender's main thread except report_progress / is_cancelled, which only touch plain Python attributes.

Takes: a strip per take, the shown one (approved, else take 0) unmuted on the lowest free channel, the
others muted on the channels above it; switching a take un-mutes it and mutes the rest. Elements: the
RGBA strip goes on a free channel above the plate's, blend type Alpha Over, alpha premultiplied (the
EXR convention), so the Sequencer composites it over the plate. Drafts: a preview job's draft strips
carry ttt_studio_draft = True and a colour tag until the final moves their directory to its folder.
"""

from __future__ import annotations

import json
import logging
import os
from fractions import Fraction
from typing import Any, Callable, List, Optional, Tuple

import bpy
import opentimelineio as otio

from host_plugin.core.delivery import Format
from host_plugin.core.errors import HostError, RequestError
from host_plugin.core.frame_math import rational_time, snap_rate, time_range
from host_plugin.core.placement import DeliveredMedia
from host_plugin.core.requests import KIND_CLIP, KIND_GAP, KIND_MARKER, ShotRequest, normalise_storyboard
from host_plugin.hosts import colour
from host_plugin.hosts.base import Host, check_chosen_take

log = logging.getLogger(__name__)

MAX_CHANNEL = 128
DRAFT_PROPERTY = "ttt_studio_draft"  # True on a strip showing a preview job's draft
DRAFT_COLOUR_TAG = "COLOR_02"  # the draft strips' colour tag (orange in the default theme)
STRIP_FIT = {"fit": "FIT", "fill": "FILL", "distort": "STRETCH"}
"""Delivery fit -> image strip fit_method (the same three ways to meet a frame)."""
BLENDER_4_WORKING = "lin_rec709_scene"
"""Blender before 5.0 has no working-space choice: its scene linear is Linear Rec.709."""


def scene_format(scene: Any) -> Format:
    """The frame the scene renders: resolution x percentage / 100, pixel aspect x / y."""
    render = scene.render
    scale = render.resolution_percentage / 100.0
    return Format(
        max(1, int(round(render.resolution_x * scale))),
        max(1, int(round(render.resolution_y * scale))),
        float(render.pixel_aspect_x) / float(render.pixel_aspect_y),
    )


def working_colorspace() -> str:
    """The blend file's working colour space as a colorInteropID."""
    settings = getattr(bpy.data, "colorspace", None)  # BlendFileColorspace, 5.0+
    interop = getattr(settings, "working_space_interop_id", "") if settings is not None else ""
    return interop or BLENDER_4_WORKING


def strips_of(scene: Any) -> Any:
    """The editable strip collection: `strips` (4.4+) or `sequences` (4.2-4.3)."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(scene: Any) -> List[Any]:
    """Every strip, meta strip contents included (`strips_all` 4.4+, `sequences_all` before)."""
    editor = scene.sequence_editor
    if editor is None:
        return []
    return list(editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all)


def scene_rate(scene: Any) -> Fraction:
    """The scene's exact frame rate (fps / fps_base, snapped: 24 / 1.001 -> 24000/1001)."""
    return snap_rate(Fraction(scene.render.fps) / Fraction(scene.render.fps_base).limit_denominator(1001))


def selected_gap(scene: Any) -> Tuple[int, int, int]:
    """(start, end exclusive, channel) of the gap between the two selected strips, first in time first."""
    chosen = sorted((s for s in all_strips(scene) if s.select), key=lambda s: s.frame_final_start)
    if len(chosen) != 2:
        raise RequestError(
            f"select exactly the two strips around the gap (selected: {len(chosen)}: "
            f"{[s.name for s in chosen]})"
        )
    first, second = chosen
    start, end = int(first.frame_final_end), int(second.frame_final_start)
    if end <= start:
        raise RequestError(
            f"strips {first.name!r} (ends {start}) and {second.name!r} (starts {end}) overlap or touch: "
            "there is no gap between them"
        )
    return start, end, int(min(first.channel, second.channel))


def marker_range(scene: Any) -> Tuple[int, int, str]:
    """(start, end exclusive, name) from the scene marker at or before the current frame to the next one."""
    markers = sorted(scene.timeline_markers, key=lambda m: m.frame)
    current = scene.frame_current
    before = [m for m in markers if m.frame <= current]
    if not before:
        raise RequestError(
            f"no scene marker at or before frame {current}: put one where the shot starts and one where it ends"
        )
    start_marker = before[-1]
    after = [m for m in markers if m.frame > start_marker.frame]
    if not after:
        raise RequestError(
            f"marker {start_marker.name!r} at frame {start_marker.frame} has no next marker to end the shot"
        )
    return int(start_marker.frame), int(after[0].frame), start_marker.name


def read_storyboard_file(path: str) -> List[dict]:
    """A storyboard file: JSON (a list of segments or {"segments": [...]}) or text, one segment per line."""
    if not os.path.isfile(path):
        raise RequestError(f"storyboard file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"storyboard file {path!r}: bad JSON at line {exc.lineno}: {exc.msg}") from exc
        segments = data.get("segments") if isinstance(data, dict) else data
        return normalise_storyboard(segments, f"storyboard file {path!r}")
    segments = [{"text": line.strip()} for line in text.splitlines() if line.strip()]
    if not segments:
        raise RequestError(f"storyboard file {path!r} is empty; write one segment per line")
    return normalise_storyboard(segments, f"storyboard file {path!r}")


def make_request(scene: Any, source: str, segments: List[dict], name: str = "") -> Tuple[ShotRequest, int]:
    """The ShotRequest for the selected gap (source "GAP") or the markers around the current frame
    ("MARKERS"), and the channel to prefer for the result."""
    if source == "GAP":
        start, end, channel = selected_gap(scene)
        kind, label = KIND_GAP, name or f"gap_{start}"
    elif source == "MARKERS":
        start, end, marker = marker_range(scene)
        channel, kind, label = 1, KIND_MARKER, name or marker or f"markers_{start}"
    else:
        raise RequestError(f"duration source must be 'GAP' or 'MARKERS', got {source!r}")
    if not segments:
        raise RequestError("give a prompt for at least one segment, or a storyboard file")
    segments = normalise_storyboard(segments, "the panel's storyboard")
    request = ShotRequest(
        id=f"blender.{kind}.{start}",
        kind=kind,
        track_name=f"Channel {channel}",
        track_index=channel - 1,
        record_start=start,
        duration=end - start,
        rate=scene_rate(scene),
        storyboard=segments if len(segments) > 1 else [],
        prompt=segments[0]["text"] if len(segments) == 1 else None,
        name=label,
    )
    return request, channel


def plate_request(
    scene: Any, segments: List[dict], matte_dir: str = "", name: str = ""
) -> Tuple[ShotRequest, List[str], List[str]]:
    """An element over the selected image strip of EXR frames: (the request for its frame range on its
    channel, its frame paths, the matte paths: the EXRs of `matte_dir` in name order, one per plate frame;
    none: the plate's alpha)."""
    chosen = [s for s in all_strips(scene) if s.select]
    if len(chosen) != 1 or chosen[0].type != "IMAGE":
        raise RequestError(
            "select exactly one image strip of EXR frames as the plate "
            f"(selected: {[(s.name, s.type) for s in chosen]})"
        )
    strip = chosen[0]
    folder = bpy.path.abspath(strip.directory)
    start, duration = int(strip.frame_offset_start), int(strip.frame_final_duration)
    paths = [os.path.join(folder, e.filename) for e in list(strip.elements)[start : start + duration]]
    if len(paths) != duration or not all(p.lower().endswith(".exr") for p in paths):
        raise RequestError(
            f"plate strip {strip.name!r} must show {duration} EXR frames, one per scene frame; got "
            f"{[os.path.basename(p) for p in paths[:2]]}... ({len(paths)})"
        )
    mattes: List[str] = []
    if matte_dir:
        folder = bpy.path.abspath(matte_dir)
        if not os.path.isdir(folder):
            raise RequestError(f"matte folder {folder!r} does not exist")
        mattes = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(".exr"))
        if len(mattes) != duration:
            raise RequestError(
                f"matte folder {folder!r} holds {len(mattes)} EXR frames; the plate strip {strip.name!r} shows "
                f"{duration}: one matte per plate frame"
            )
    if not segments:
        raise RequestError("give a prompt for at least one segment, or a storyboard file")
    segments = normalise_storyboard(segments, "the panel's storyboard")
    record = int(strip.frame_final_start)
    request = ShotRequest(
        id=f"blender.element.{strip.channel}.{record}",
        kind=KIND_CLIP,
        track_name=f"Channel {strip.channel}",
        track_index=int(strip.channel) - 1,
        record_start=record,
        duration=duration,
        rate=scene_rate(scene),
        storyboard=segments if len(segments) > 1 else [],
        prompt=segments[0]["text"] if len(segments) == 1 else None,
        name=name or f"element_{strip.name}",
    )
    return request, paths, mattes


def free_channel(scene: Any, start: int, end: int, preferred: int = 1) -> int:
    """Lowest channel >= preferred with no strip overlapping frames [start, end)."""
    busy = {}
    for strip in all_strips(scene):
        if strip.frame_final_start < end and strip.frame_final_end > start:
            busy[strip.channel] = strip.name
    for channel in range(max(1, preferred), MAX_CHANNEL + 1):
        if channel not in busy:
            return channel
    raise HostError(
        f"no free Sequencer channel for frames {start}-{end}: channels {preferred}..{MAX_CHANNEL} are used"
    )


class BlenderHost(Host):
    """One Sequencer scene. Progress and cancel are plain attributes the panel draws and sets."""

    name = "blender"

    def __init__(self, scene: Any, preferred_channel: int = 1) -> None:
        self.scene_name = scene.name
        self.preferred_channel = preferred_channel
        self.progress = 0.0
        self.status = ""
        self.cancel_requested = False
        self.placed: List[Any] = []

    @property
    def scene(self) -> Any:
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is None:
            raise HostError(f"scene {self.scene_name!r} no longer exists")
        return scene

    def target_format(self) -> Format:
        return scene_format(self.scene)

    def working_colorspace(self) -> str:
        return working_colorspace()

    def read_edit(self) -> otio.schema.Timeline:
        """The Sequencer as OTIO: a track per channel, clips for strips, gaps between them."""
        scene = self.scene
        rate = scene_rate(scene)
        timeline = otio.schema.Timeline(
            scene.name, global_start_time=rational_time(int(scene.frame_start), rate)
        )
        strips = all_strips(scene)
        for channel in sorted({s.channel for s in strips}):
            track = otio.schema.Track(f"Channel {channel}")
            position = int(scene.frame_start)
            for strip in sorted(
                (s for s in strips if s.channel == channel), key=lambda s: s.frame_final_start
            ):
                start, end = int(strip.frame_final_start), int(strip.frame_final_end)
                if start < position:
                    continue  # overlapping strips on one channel cannot be expressed in one OTIO track
                if start > position:
                    track.append(otio.schema.Gap(source_range=time_range(0, start - position, rate)))
                track.append(otio.schema.Clip(strip.name, source_range=time_range(0, end - start, rate)))
                position = end
            timeline.tracks.append(track)
        for marker in scene.timeline_markers:
            timeline.tracks.markers.append(
                otio.schema.Marker(
                    marker.name, marked_range=time_range(int(marker.frame) - int(scene.frame_start), 0, rate)
                )
            )
        return timeline

    def plate_frames(self, request: Any, first: int, last: int) -> List[str]:
        """Render the Sequencer's frames first..last to half-float ZIP EXRs in a temporary folder."""
        import tempfile

        scene = self.scene
        folder = tempfile.mkdtemp(prefix="ttt_plate_")
        settings = scene.render.image_settings
        old = (settings.file_format, scene.render.filepath, scene.frame_current)
        settings.file_format = "OPEN_EXR"
        settings.color_depth = "16"
        settings.exr_codec = "ZIP"
        paths = []
        try:
            for frame in range(first, last + 1):
                scene.frame_set(frame)
                path = os.path.join(folder, f"plate.{frame:04d}.exr")
                scene.render.filepath = path
                bpy.ops.render.render(write_still=True, scene=scene.name)
                paths.append(path)
        finally:
            settings.file_format, scene.render.filepath = old[0], old[1]
            scene.frame_set(old[2])
        return paths

    def place_sequence(
        self, paths: List[str], record_frame: int, track_hint: str, media: DeliveredMedia
    ) -> str:
        """An image strip of the delivered EXR sequence at record_frame, on the lowest free channel from the
        preferred one, covering the scene's frame, in the delivered colour space; returns its name."""
        channel = free_channel(self.scene, record_frame, record_frame + len(paths), self.preferred_channel)
        return self._new_strip(paths, record_frame, channel, track_hint, media).name

    def mark_draft(self, handle: Any) -> None:
        """Every strip `handle` names (a name, or take strips' names) gets ttt_studio_draft = True and the
        draft colour tag."""
        for strip in self._placed_strips(handle):
            strip[DRAFT_PROPERTY] = True
            strip.color_tag = DRAFT_COLOUR_TAG

    def replace_media(self, handle: Any, takes: List[List[str]], media: DeliveredMedia) -> None:
        """Each placed strip (take i's) reads takes[i]: its `directory` moves to the final's folder (the
        same frame names, so its elements stay), its draft mark and colour tag go."""
        strips = self._placed_strips(handle)
        if len(strips) != len(takes):
            raise HostError(f"{handle!r} placed {len(strips)} strip(s); got frames for {len(takes)} take(s)")
        for strip, paths in zip(strips, takes):
            names = [e.filename for e in strip.elements]
            if names != [os.path.basename(p) for p in paths]:
                raise HostError(
                    f"strip {strip.name!r} shows frames {names[:2]}...; the final's are "
                    f"{[os.path.basename(p) for p in paths[:2]]}... (a final replaces its draft frame for frame)"
                )
            strip.directory = os.path.dirname(paths[0]) + os.sep
            strip[DRAFT_PROPERTY] = False
            strip.color_tag = "NONE"
            strip["ttt_studio_delivered"] = json.dumps(media.to_dict())
            log.info("strip %s now reads %s", strip.name, strip.directory)

    def _placed_strips(self, handle: Any) -> List[Any]:
        names = [handle] if isinstance(handle, str) else list(handle)
        strips = {s.name: s for s in all_strips(self.scene)}
        missing = [n for n in names if n not in strips]
        if missing:
            raise HostError(
                f"strips {missing} are gone from scene {self.scene_name!r}; generate the shot again"
            )
        return [strips[n] for n in names]

    def place_takes(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        track_hint: str,
        media: DeliveredMedia,
    ) -> List[str]:
        """The chosen take's strip on the lowest free channel, the other takes muted on channels above it;
        returns the strip names by take index."""
        check_chosen_take(takes, chosen)
        end = record_frame + len(takes[chosen])
        channel = free_channel(self.scene, record_frame, end, self.preferred_channel)
        names: List[str] = [""] * len(takes)
        order = [chosen] + [i for i in range(len(takes)) if i != chosen]
        for index in order:
            strip = self._new_strip(
                takes[index], record_frame, channel, f"{track_hint} take {index + 1}", media
            )
            strip.mute = index != chosen
            strip["ttt_studio_take"] = index
            names[index] = strip.name
            channel = free_channel(self.scene, record_frame, end, channel + 1)
        return names

    def switch_take(self, handle: Any, index: int) -> None:
        """Un-mute take `index`'s strip and mute the other takes' (handle: strip names by take index)."""
        names = list(handle)
        if not 0 <= index < len(names):
            raise HostError(f"the shot has takes 0..{len(names) - 1}; cannot show take {index}")
        strips = {s.name: s for s in all_strips(self.scene)}
        missing = [n for n in names if n not in strips]
        if missing:
            raise HostError(
                f"take strips {missing} are gone from scene {self.scene_name!r}; generate the shot again"
            )
        for i, name in enumerate(names):
            strips[name].mute = i != index
        log.info("takes %s: showing take %d", names, index)

    def place_element(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        plate_track: int,
        media: DeliveredMedia,
        mattes: List[str],
    ) -> List[str]:
        """The RGBA element on a free channel above the plate's (plate_track 0 = channel 1), Alpha Over; its
        other takes muted on the channels above it (as place_takes); returns the strip names by take index.
        The matte is the element's alpha already: `mattes` are not placed."""
        check_chosen_take(takes, chosen)
        end = record_frame + len(takes[chosen])
        channel = free_channel(self.scene, record_frame, end, plate_track + 2)
        names: List[str] = [""] * len(takes)
        for index in [chosen] + [i for i in range(len(takes)) if i != chosen]:
            hint = "element" if len(takes) == 1 else f"element take {index + 1}"
            strip = self._new_strip(takes[index], record_frame, channel, hint, media)
            strip.blend_type = "ALPHA_OVER"
            strip.alpha_mode = "PREMUL"
            strip.mute = index != chosen
            strip["ttt_studio_take"] = index
            names[index] = strip.name
            channel = free_channel(self.scene, record_frame, end, channel + 1)
        return names

    def _new_strip(
        self, paths: List[str], record_frame: int, channel: int, track_hint: str, media: DeliveredMedia
    ) -> Any:
        """An image strip of delivered EXR frames at record_frame on `channel`, in their colour space."""
        if not paths:
            raise HostError("place_sequence got no frames")
        folder = os.path.dirname(paths[0])
        if any(os.path.dirname(p) != folder for p in paths):
            raise HostError(
                f"an image strip needs all frames in one folder; got {sorted({os.path.dirname(p) for p in paths})}"
            )
        scene = self.scene
        rate = scene_rate(scene)
        if media.rate != rate:
            raise HostError(
                f"the shot was delivered at {media.rate} fps but scene {scene.name!r} runs at {rate} fps; set the "
                "scene's frame rate to the edit's and generate again"
            )
        space = colour.blender_colorspace_name(media.colorspace) if media.colorspace else ""
        if not space:
            raise HostError(f"{paths[0]} carries no colorInteropID; cannot tell Blender its colour space")
        name = f"TTT {os.path.splitext(os.path.basename(paths[0]))[0]}"
        strip = strips_of(scene).new_image(
            name, paths[0], channel, record_frame, fit_method=STRIP_FIT[media.fit]
        )
        for path in paths[1:]:
            strip.elements.append(os.path.basename(path))
        strip.colorspace_settings.name = space
        strip["ttt_studio_track"] = track_hint
        strip["ttt_studio_delivered"] = json.dumps(media.to_dict())
        self.placed.append(strip.name)
        log.info(
            "placed %s: %d frames at %d on channel %d (%dx%d, %s)",
            name,
            len(paths),
            record_frame,
            channel,
            media.width,
            media.height,
            space,
        )
        return strip

    def report_progress(self, fraction: float, message: str) -> None:
        self.progress, self.status = float(fraction), message

    def report_error(self, message: str) -> None:
        self.status = f"Error: {message}"
        log.error("%s", message)

    def is_cancelled(self) -> bool:
        return self.cancel_requested

    def run_on_main_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        def once() -> Optional[float]:
            fn(*args)
            return None

        bpy.app.timers.register(once, first_interval=0.0)
