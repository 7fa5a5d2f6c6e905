"""Sequencer sidebar panel "TTT", its settings and operators; jobs pumped by a bpy.app.timers function.

The Generate operator reads the shot range on the main thread (selected gap or scene markers) and the
delivery (the scene's format and working colour space, the panel's retime and fit), then a ShotJob
thread does every network call; `pump_jobs` (a timer; called directly where timers do not run,
e.g. --background) drains the job's events and places the EXR strip on the main thread.

Takes: "Takes" > 1 asks for that many; the shown take's strip plays, the others wait muted above it.
"Check Approved Takes" asks the server (in a thread) which take the director approved and un-mutes it.
Elements: "Element over plate" sends the selected EXR image strip with its mattes (a folder of
single-channel EXRs; none: the plate's alpha) and places the RGBA result Alpha Over on a channel above.
"""

from __future__ import annotations

import logging
import os
from typing import Any, List, Optional

import bpy

from host_plugin.core.adapters import NONE_CHOICE, choice_from_panel, server_adapter_names
from host_plugin.core.delivery import FIT_METHODS, RETIME_METHODS
from host_plugin.core.errors import HostPluginError
from host_plugin.core.shot_job import (
    DELIVERY_DEFAULTS,
    ApprovalCheck,
    DeliverySettings,
    GenerationSettings,
    Plates,
    ServerSettings,
    ShotJob,
)
from host_plugin.hosts import colour

from . import vse

log = logging.getLogger(__name__)

PUMP_INTERVAL_S = 0.1
JOBS: List[ShotJob] = []
TAKE_JOBS: List[ShotJob] = []  # finished jobs that placed takes: what Check Approved Takes looks at
CHECKS: List[ApprovalCheck] = []


def pump_jobs() -> Optional[float]:
    """Timer function: pump every running job on the main thread; None (timer ends) when none is left."""
    for job in list(JOBS):
        try:
            running = job.pump()
        except Exception:  # noqa: BLE001 - a failing placement must not kill the timer for other jobs
            log.exception("pumping a ttt-studio job failed")
            running = False
        try:
            job.host.scene.ttt_studio.status = job.host.status
        except (AttributeError, HostPluginError):
            pass  # the scene was deleted or the add-on unregistered meanwhile
        if not running:
            JOBS.remove(job)
            if any(placed.result.takes for placed in job.placed):
                TAKE_JOBS.append(job)
        _redraw()
    for check in list(CHECKS):
        try:
            running = check.pump()
        except Exception:  # noqa: BLE001 - as above: a failed switch must not stop the timer
            log.exception("checking approved takes failed")
            running = False
        if not running:
            CHECKS.remove(check)
            check.host.status = (
                f"approved takes shown: {check.switched}" if check.switched else "no take switched"
            )
        _redraw()
    return PUMP_INTERVAL_S if JOBS or CHECKS else None


def _redraw() -> None:
    window_manager = bpy.context.window_manager
    for window in getattr(window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()


RETIME_ITEMS = [
    (
        "flow",
        "Optical flow",
        "Motion-compensated frames between the model's (Nuke Kronos, Resolve Optical Flow)",
    ),
    ("blend", "Frame blend", "Cross-fade neighbouring frames (ghosts on motion)"),
    ("hold", "Frame hold", "Repeat the nearest frame (stutters)"),
]
FIT_ITEMS = [
    ("fit", "Fit", "The whole generated picture inside the frame (bars where aspects differ)"),
    ("fill", "Fill", "The frame covered, the generated picture cropped where aspects differ"),
    ("distort", "Distort", "Stretched to the frame exactly"),
]
assert [i[0] for i in RETIME_ITEMS] == list(RETIME_METHODS) and [i[0] for i in FIT_ITEMS] == list(FIT_METHODS)
COLOUR_ITEMS = [("WORKING", "Working space", "The blend file's working colour space")] + [
    (interop, colour.BLENDER_NAMES[interop], interop) for interop in colour.INTEROP_IDS
]


class TTT_PG_segment(bpy.types.PropertyGroup):
    text: bpy.props.StringProperty(name="Prompt", description="What happens in this 3-second segment")


class TTT_PG_adapter(bpy.types.PropertyGroup):
    """One of the server's adapters (its `name`), as listed by the List Adapters operator."""


class TTT_PG_settings(bpy.types.PropertyGroup):
    server: bpy.props.StringProperty(name="Server", default="127.0.0.1:50051", description="host:port")
    token: bpy.props.StringProperty(name="Token", subtype="PASSWORD", description="Bearer token of your user")
    root_cert: bpy.props.StringProperty(
        name="TLS CA", subtype="FILE_PATH", description="PEM of the server's CA (TLS)"
    )
    storyboard_file: bpy.props.StringProperty(
        name="Storyboard",
        subtype="FILE_PATH",
        description="JSON list of segments, or text with one segment per line",
    )
    segments: bpy.props.CollectionProperty(type=TTT_PG_segment)
    duration_source: bpy.props.EnumProperty(
        name="Duration",
        items=[
            ("GAP", "Selected gap", "The gap between the two selected strips"),
            ("MARKERS", "Scene markers", "From the marker at the current frame to the next marker"),
            ("PLATE", "Element over plate", "An element inside a matte of the selected EXR image strip"),
        ],
        default="GAP",
    )
    strength: bpy.props.FloatProperty(
        name="Strength", default=0.6, min=0.01, max=1.0, description="Element: share of the denoising redone"
    )
    matte_dir: bpy.props.StringProperty(
        name="Matte",
        subtype="DIR_PATH",
        default="",
        description="Element: a folder of single-channel EXR mattes, one per plate frame (empty: the plate's alpha)",
    )
    output_dir: bpy.props.StringProperty(name="Output", subtype="DIR_PATH", default="//ttt_frames/")
    steps: bpy.props.IntProperty(name="Steps", default=0, min=0, description="0: the server's default")
    height: bpy.props.IntProperty(name="Height", default=0, min=0)
    width: bpy.props.IntProperty(name="Width", default=0, min=0)
    guidance_scale: bpy.props.FloatProperty(
        name="Guidance", default=0.0, min=0.0, description="0: server default"
    )
    seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1, description="-1: the server picks one")
    takes: bpy.props.IntProperty(
        name="Takes",
        default=1,
        min=1,
        description="Takes of the shot (seed, seed + 1, ...); others muted above",
    )
    draft_first: bpy.props.BoolProperty(
        name="Draft first",
        default=False,
        description="A preview job: its draft is placed at once (tagged), then replaced by the final",
    )
    retime: bpy.props.EnumProperty(
        name="Retime",
        items=RETIME_ITEMS,
        default=DELIVERY_DEFAULTS["retime"],
        description="How the model's frames become the scene's frame rate",
    )
    fit: bpy.props.EnumProperty(
        name="Fit",
        items=FIT_ITEMS,
        default=DELIVERY_DEFAULTS["fit"],
        description="How the generated picture meets the scene's format",
    )
    colorspace: bpy.props.EnumProperty(
        name="Colour space", items=COLOUR_ITEMS, default="WORKING", description="What the frames arrive in"
    )
    adapters: bpy.props.CollectionProperty(type=TTT_PG_adapter)
    adapter: bpy.props.StringProperty(
        name="Adapter", default="", description="A LoRA adapter of the server (empty: the base model)"
    )
    adapter_strength: bpy.props.FloatProperty(
        name="Strength",
        default=1.0,
        soft_min=-2.0,
        soft_max=2.0,
        description="0: the base model; 1: as trained",
    )
    status: bpy.props.StringProperty(name="Status", default="")


def _segments(props: Any) -> List[dict]:
    if props.storyboard_file:
        return vse.read_storyboard_file(bpy.path.abspath(props.storyboard_file))
    return [{"text": s.text} for s in props.segments if s.text.strip()]


def delivery_settings(props: Any) -> DeliverySettings:
    """The panel's retime, fit and colour space (WORKING: the blend file's, filled in by the ShotJob)."""
    space = "" if props.colorspace == "WORKING" else props.colorspace
    return DeliverySettings(fit=props.fit, retime=props.retime, colorspace=space)


def colour_label(props: Any) -> str:
    """The colour space shots arrive in, as Blender names it."""
    interop = vse.working_colorspace() if props.colorspace == "WORKING" else props.colorspace
    return f"Arrives in {colour.BLENDER_NAMES.get(interop, interop)} ({interop})"


def server_settings(props: Any) -> ServerSettings:
    return ServerSettings(
        props.server, token=props.token or None, root_cert=bpy.path.abspath(props.root_cert) or None
    )


def _output_dir(props: Any) -> str:
    path = props.output_dir
    if path.startswith("//") and not bpy.data.filepath:
        raise HostPluginError(
            f"output folder {path!r} is relative to the .blend file: save the file first or pick an absolute folder"
        )
    return os.path.abspath(bpy.path.abspath(path))


class TTT_OT_generate(bpy.types.Operator):
    """Generate a shot for the selected gap (or the marker range) on the ttt-studio server"""

    bl_idname = "ttt_studio.generate"
    bl_label = "Generate Shot"

    def execute(self, context: Any) -> set:
        if not bpy.app.online_access:
            self.report(
                {"ERROR"}, "Online access is off: enable Preferences > System > Network > Allow Online Access"
            )
            return {"CANCELLED"}
        scene = context.scene
        props = scene.ttt_studio
        plates = None
        try:
            if props.duration_source == "PLATE":
                request, paths, mattes = vse.plate_request(scene, _segments(props), props.matte_dir)
                channel = request.track_index + 2  # above the plate
                plates = {request.id: Plates(tuple(paths), "element", props.strength, mattes=tuple(mattes))}
            else:
                request, channel = vse.make_request(scene, props.duration_source, _segments(props))
            settings = GenerationSettings(
                output_dir=_output_dir(props),
                height=props.height,
                width=props.width,
                steps=props.steps,
                guidance_scale=props.guidance_scale or None,
                seed=None if props.seed < 0 else props.seed,
                delivery=delivery_settings(props),
                takes=props.takes,
                priority="preview" if props.draft_first else "final",
                adapters=choice_from_panel(props.adapter, props.adapter_strength),
            )
            server = server_settings(props)
        except (HostPluginError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        host = vse.BlenderHost(scene, preferred_channel=channel)
        job = ShotJob(host, [request], settings, client_factory=server.client, plates=plates).start()
        JOBS.append(job)
        if not bpy.app.timers.is_registered(pump_jobs):
            bpy.app.timers.register(pump_jobs, first_interval=PUMP_INTERVAL_S)
        props.status = f"generating {request.duration} frames at {request.record_start}"
        self.report({"INFO"}, props.status)
        return {"FINISHED"}


class TTT_OT_list_adapters(bpy.types.Operator):
    """Ask the ttt-studio server which LoRA adapters your token may use"""

    bl_idname = "ttt_studio.list_adapters"
    bl_label = "List Adapters"

    def execute(self, context: Any) -> set:
        if not bpy.app.online_access:
            self.report(
                {"ERROR"}, "Online access is off: enable Preferences > System > Network > Allow Online Access"
            )
            return {"CANCELLED"}
        props = context.scene.ttt_studio
        try:
            names = [n for n in server_adapter_names(server_settings(props)) if n != NONE_CHOICE]
        except (HostPluginError, ValueError) as exc:
            self.report({"ERROR"}, f"cannot list the server's adapters: {exc}")
            return {"CANCELLED"}
        props.adapters.clear()
        for name in names:
            props.adapters.add().name = name
        if props.adapter and props.adapter not in names:
            props.adapter = ""
        props.status = f"{len(names)} adapter(s) on the server"
        return {"FINISHED"}


class TTT_OT_cancel(bpy.types.Operator):
    """Cancel the running ttt-studio jobs (the server stops them too)"""

    bl_idname = "ttt_studio.cancel"
    bl_label = "Cancel"

    def execute(self, context: Any) -> set:
        for job in JOBS:
            job.host.cancel_requested = True
        return {"FINISHED"}


class TTT_OT_check_takes(bpy.types.Operator):
    """Ask the server which takes were approved and show them (un-mute the approved take's strip)"""

    bl_idname = "ttt_studio.check_takes"
    bl_label = "Check Approved Takes"

    def execute(self, context: Any) -> set:
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Online access is off: enable Preferences > System > Network")
            return {"CANCELLED"}
        if not TAKE_JOBS:
            self.report({"INFO"}, "no shot with takes was placed in this session")
            return {"CANCELLED"}
        props = context.scene.ttt_studio
        server = ServerSettings(
            props.server, token=props.token or None, root_cert=bpy.path.abspath(props.root_cert) or None
        )
        for job in TAKE_JOBS:
            CHECKS.append(ApprovalCheck(job.host, job.placed, server.client).start())
        if not bpy.app.timers.is_registered(pump_jobs):
            bpy.app.timers.register(pump_jobs, first_interval=PUMP_INTERVAL_S)
        return {"FINISHED"}


class TTT_OT_segment_add(bpy.types.Operator):
    """Add a storyboard segment"""

    bl_idname = "ttt_studio.segment_add"
    bl_label = "Add Segment"

    def execute(self, context: Any) -> set:
        context.scene.ttt_studio.segments.add()
        return {"FINISHED"}


class TTT_OT_segment_remove(bpy.types.Operator):
    """Remove the last storyboard segment"""

    bl_idname = "ttt_studio.segment_remove"
    bl_label = "Remove Segment"

    def execute(self, context: Any) -> set:
        segments = context.scene.ttt_studio.segments
        if len(segments):
            segments.remove(len(segments) - 1)
        return {"FINISHED"}


class TTT_PT_panel(bpy.types.Panel):
    bl_label = "TTT Studio"
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "TTT"

    def draw(self, context: Any) -> None:
        props = context.scene.ttt_studio
        layout = self.layout
        col = layout.column()
        col.prop(props, "server")
        col.prop(props, "token")
        col.prop(props, "root_cert")
        col.separator()
        col.prop(props, "duration_source")
        if props.duration_source == "PLATE":
            col.prop(props, "strength")
            col.prop(props, "matte_dir")
        col.prop(props, "storyboard_file")
        if not props.storyboard_file:
            for i, segment in enumerate(props.segments):
                col.prop(segment, "text", text=f"Segment {i + 1}")
            row = col.row(align=True)
            row.operator("ttt_studio.segment_add", icon="ADD", text="")
            row.operator("ttt_studio.segment_remove", icon="REMOVE", text="")
        col.separator()
        col.prop(props, "output_dir")
        row = col.row(align=True)
        row.prop(props, "steps")
        row.prop(props, "seed")
        row.prop(props, "takes")
        row.prop(props, "draft_first")
        row = col.row(align=True)
        row.prop(props, "width")
        row.prop(props, "height")
        col.prop(props, "retime")
        col.prop(props, "fit")
        col.prop(props, "colorspace")
        row = col.row(align=True)
        row.prop_search(props, "adapter", props, "adapters")
        row.operator("ttt_studio.list_adapters", icon="FILE_REFRESH", text="")
        col.prop(props, "adapter_strength")
        fmt = vse.scene_format(context.scene)
        col.label(text=f"{colour_label(props)}, {fmt.width}x{fmt.height}")
        col.separator()
        running = [job for job in JOBS if not job.finished]
        if running:
            host = running[0].host
            if hasattr(col, "progress"):  # UILayout.progress exists from Blender 4.0
                col.progress(factor=host.progress, text=host.status or "working")
            else:
                col.label(text=host.status)
            col.operator("ttt_studio.cancel", icon="CANCEL")
        else:
            col.operator("ttt_studio.generate", icon="SEQUENCE")
            if TAKE_JOBS:
                col.operator("ttt_studio.check_takes", icon="CHECKMARK")
            if props.status:
                col.label(text=props.status)


CLASSES = (
    TTT_PG_segment,
    TTT_PG_adapter,
    TTT_PG_settings,
    TTT_OT_generate,
    TTT_OT_list_adapters,
    TTT_OT_cancel,
    TTT_OT_check_takes,
    TTT_OT_segment_add,
    TTT_OT_segment_remove,
    TTT_PT_panel,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.ttt_studio = bpy.props.PointerProperty(type=TTT_PG_settings)


def unregister() -> None:
    if bpy.app.timers.is_registered(pump_jobs):
        bpy.app.timers.unregister(pump_jobs)
    for job in JOBS:
        job.cancel()
    JOBS.clear()
    TAKE_JOBS.clear()
    CHECKS.clear()
    del bpy.types.Scene.ttt_studio
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
