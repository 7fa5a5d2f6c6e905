"""The Blender extension with the REAL bpy (Blender as a Python module, headless) against a real server
(the shipped default model).

bpy calls used: bpy.ops.wm.read_factory_settings(use_empty=True), preferences.system.use_online_access,
bpy.app.online_access, scene.sequence_editor_create(), sequence_editor.strips.new_effect(name, type,
channel, frame_start, length) (4.4+; `sequences` before), strips.new_image(name, path, channel,
frame_start, fit_method='ORIGINAL'), strip.elements.append(filename), strip.frame_final_start /
frame_final_end / frame_final_duration / channel / directory / elements, scene.timeline_markers.new(name,
frame=...), scene.frame_current, bpy.ops.ttt_studio.generate(), bpy.app.timers.is_registered,
bpy.data.images.load(path), scene.render.resolution_x / _y / resolution_percentage / pixel_aspect_x / _y,
bpy.ops.wm.set_working_color_space(working_space=...) and
bpy.data.colorspace.working_space_interop_id (5.0), strip.transform.scale_x / scale_y /
offset_x / offset_y, strip.elements[i].orig_width / orig_height, strip.colorspace_settings.name.
Timers do not run under --background, so the test calls the timer function
(ui.pump_jobs) itself, as Blender's event loop would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hp_helpers import FAST_DEFAULT, TOKEN, job_states

bpy = pytest.importorskip("bpy", reason="the real-Blender test needs the bpy module (pip install bpy==5.0.1)")

from host_plugin.core.exr_io import read_exr, write_rgba_exr  # noqa: E402
from host_plugin.core.placement import DeliveredMedia  # noqa: E402


@pytest.fixture()
def addon(hp_default_server: Any, tmp_path: Path) -> Iterator[Any]:
    from host_plugin.hosts import blender

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.system.use_online_access = True
    blender.register()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    # a 1920x1080 scene rendered at 10%: shots are delivered at 192x108 (the 16x16 generation scaled)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 1920, 1080, 10
    props = scene.ttt_studio
    props.server, props.token = hp_default_server.address, TOKEN
    props.output_dir = str(tmp_path / "frames")
    props.steps, props.guidance_scale = FAST_DEFAULT["steps"], FAST_DEFAULT["guidance_scale"]
    props.segments.add().text = "A red ball rolls across a wooden floor."
    try:
        yield blender
    finally:
        blender.unregister()


def _edit() -> Any:
    """Channel 1: a long colour strip under everything; channel 2: A [1, 25) and B [37, 61), gap 25..36."""
    scene = bpy.context.scene
    strips = scene.sequence_editor_create().strips
    strips.new_effect(name="bg", type="COLOR", channel=1, frame_start=1, length=100)
    a = strips.new_effect(name="A", type="COLOR", channel=2, frame_start=1, length=24)
    b = strips.new_effect(name="B", type="COLOR", channel=2, frame_start=37, length=24)
    for strip in strips:
        strip.select = False
    return scene, a, b


def _pump(ui: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while ui.pump_jobs() is not None:
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.02)


def _image_strips(scene: Any) -> list:
    return [s for s in scene.sequence_editor.strips if s.type == "IMAGE"]


def _check_frames(strip: Any, count: int) -> None:
    """The strip's frames are delivered in the scene's time, format (192x108: 1920x1080 at 10%) and colour,
    and Blender shows each exactly as delivered: the picture (the EXR's dataWindow, which Blender reads)
    where the delivered frame (its displayWindow) puts it, scaled to the scene's frame."""
    scene = bpy.context.scene
    folder = bpy.path.abspath(strip.directory)
    files = [os.path.join(folder, e.filename) for e in strip.elements]
    assert len(files) == count
    assert [os.path.basename(f) for f in files] == [
        f"{os.path.basename(files[0])[:-9]}.{1001 + i}.exr" for i in range(count)
    ]
    for path in files:
        pixels, header = read_exr(path, check_finite=True)
        assert header["displayWindow"] == ((0, 0), (191, 107)) and np.isfinite(pixels).all()
        assert header["compression"] == "ZIP_COMPRESSION"
        assert header["framesPerSecond"] == 24 and header["colorInteropID"] == "lin_rec709_scene"
    (x0, y0), (x1, y1) = header["dataWindow"]
    image = bpy.data.images.load(files[0])  # Blender's own reader opens them too
    assert tuple(image.size) == (x1 - x0 + 1, y1 - y0 + 1)
    element, scale = strip.elements[0], scene.render.resolution_x / 192
    shown = (element.orig_width * strip.transform.scale_x, element.orig_height * strip.transform.scale_y)
    assert shown == ((x1 - x0 + 1) * scale, (y1 - y0 + 1) * scale)
    centre = ((x0 + x1 + 1) / 2 - 96, (y0 + y1 + 1) / 2 - 54)  # Blender centres a strip's picture
    assert centre == (0, 0) and (strip.transform.offset_x, strip.transform.offset_y) == (0, 0)
    assert strip.colorspace_settings.name == "Linear Rec.709"


def test_gap_between_selected_strips_gets_an_exr_strip(addon: Any, hp_default_server: Any) -> None:
    scene, a, b = _edit()
    a.select = b.select = True
    scene.ttt_studio.fit = "fill"  # the 64x64 generation fills the 16:9 frame: the strip covers it
    assert bpy.ops.ttt_studio.generate() == {"FINISHED"}
    assert bpy.app.timers.is_registered(addon.ui.pump_jobs)  # the timer that drains the job's queue
    assert not _image_strips(scene), "nothing may be placed before the main thread pumps"
    _pump(addon.ui)
    (strip,) = _image_strips(scene)
    assert strip.channel == 2  # the gap's own channel is free there
    assert (strip.frame_final_start, strip.frame_final_end, strip.frame_final_duration) == (25, 37, 12)
    _check_frames(strip, 12)
    assert _covers_the_frame(scene, strip)
    assert "error" not in scene.ttt_studio.status.lower()
    jobs = job_states(hp_default_server.address)
    assert any(j.record_start == 25 and j.state == "completed" for j in jobs)


def test_marker_range_lands_on_the_lowest_free_channel(addon: Any) -> None:
    scene, _, _ = _edit()
    scene.timeline_markers.new("shot", frame=50)
    scene.timeline_markers.new("end", frame=60)
    scene.frame_current = 55
    scene.ttt_studio.duration_source = "MARKERS"
    assert bpy.ops.ttt_studio.generate() == {"FINISHED"}
    _pump(addon.ui)
    (strip,) = _image_strips(scene)
    assert strip.channel == 3  # 1 (bg) and 2 (B, frames 37-60) are busy over 50..59
    assert (strip.frame_final_start, strip.frame_final_duration) == (50, 10)
    _check_frames(strip, 10)


def test_refuses_without_online_access_and_names_the_gap_problem(addon: Any) -> None:
    scene, a, b = _edit()
    bpy.context.preferences.system.use_online_access = False
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.ttt_studio.generate()
    bpy.context.preferences.system.use_online_access = True
    a.select = True  # only one strip selected
    with pytest.raises(RuntimeError, match="select exactly the two strips"):
        bpy.ops.ttt_studio.generate()
    assert not addon.ui.JOBS


def _delivered(folder: Path, width: int, height: int, rate: object, colorspace: str, count: int = 2) -> list:
    """Frames as the server delivers them: the target size, framesPerSecond and colorInteropID set."""
    from fractions import Fraction

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.full((height, width, 4), 0.18, np.float32)
    return [
        write_rgba_exr(folder / f"sh010.{1001 + i}.exr", pixels, colorspace, frames_per_second=Fraction(rate))
        for i in range(count)
    ]


def _covers_the_frame(scene: Any, strip: Any) -> bool:
    """The strip's picture, as Blender transforms it, is exactly the scene's frame."""
    element = strip.elements[0]
    shown = (element.orig_width * strip.transform.scale_x, element.orig_height * strip.transform.scale_y)
    offsets = (strip.transform.offset_x, strip.transform.offset_y)
    return shown == (scene.render.resolution_x, scene.render.resolution_y) and offsets == (0, 0)


@pytest.mark.parametrize(("percentage", "working"), [(100, "ACEScg"), (25, "Linear Rec.709")])
def test_the_strip_fills_a_1080p_scene_in_the_delivered_colour_space(
    tmp_path: Path, percentage: int, working: str
) -> None:
    from host_plugin.hosts.blender import vse

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if bpy.data.colorspace.working_space != working:  # the operator cancels when nothing changes
        assert bpy.ops.wm.set_working_color_space(working_space=working) == {"FINISHED"}
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.001
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.render.resolution_percentage = percentage
    host = vse.BlenderHost(scene)
    target = host.target_format()
    assert (target.width, target.height, target.pixel_aspect) == (
        1920 * percentage // 100,
        1080 * percentage // 100,
        1.0,
    )
    interop = host.working_colorspace()
    assert interop == {"ACEScg": "lin_ap1_scene", "Linear Rec.709": "lin_rec709_scene"}[working]

    paths = _delivered(tmp_path / "gen", target.width, target.height, "24000/1001", interop)
    _, header = read_exr(paths[0])
    media = DeliveredMedia.from_exr_header(header)
    host.place_sequence(paths, 86400, "TTT generated", media)
    (strip,) = _image_strips(scene)
    assert (strip.frame_final_start, strip.frame_final_duration) == (86400, 2)
    assert _covers_the_frame(scene, strip), (strip.transform.scale_x, strip.elements[0].orig_width)
    assert strip.colorspace_settings.name == working


def test_a_strip_at_another_rate_or_untagged_is_refused(tmp_path: Path) -> None:
    from host_plugin.core.errors import HostError
    from host_plugin.hosts.blender import vse

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    host = vse.BlenderHost(scene)
    paths = _delivered(tmp_path / "gen", 8, 8, 24, "lin_ap1_scene")
    with pytest.raises(HostError, match="delivered at 24 fps but scene 'Scene' runs at 25 fps"):
        host.place_sequence(paths, 1, "TTT generated", DeliveredMedia(24, 8, 8, 1.0, "lin_ap1_scene"))
    with pytest.raises(HostError, match="carries no colorInteropID"):
        host.place_sequence(paths, 1, "TTT generated", DeliveredMedia(25, 8, 8, 1.0, ""))
    assert not _image_strips(scene)


def test_the_panel_offers_delivery_defaults_and_names_the_colour_space() -> None:
    from host_plugin.hosts import blender
    from host_plugin.hosts.blender import ui

    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender.register()
    try:
        props = bpy.context.scene.ttt_studio
        assert (props.retime, props.fit, props.colorspace) == (
            "flow",
            "fit",
            "WORKING",
        )  # Delivery's defaults
        assert ui.delivery_settings(props) == ui.DeliverySettings()  # the working space comes from the host
        assert ui.colour_label(props) == "Arrives in Linear Rec.709 (lin_rec709_scene)"
        props.retime, props.fit, props.colorspace = "blend", "distort", "lin_ap1_scene"
        settings = ui.delivery_settings(props)
        assert (settings.retime, settings.fit, settings.colorspace) == ("blend", "distort", "lin_ap1_scene")
        assert ui.colour_label(props) == "Arrives in ACEScg (lin_ap1_scene)"
    finally:
        blender.unregister()


def test_the_panel_lists_the_servers_adapters_and_generates_with_one(
    addon: Any, hp_default_server: Any, hp_adapter: str
) -> None:
    scene, a, b = _edit()
    props = scene.ttt_studio
    assert bpy.ops.ttt_studio.list_adapters() == {"FINISHED"}
    assert [item.name for item in props.adapters] == [hp_adapter]
    props.adapter, props.adapter_strength = hp_adapter, 0.25
    a.select = b.select = True
    before = {j.job_id for j in job_states(hp_default_server.address)}
    assert bpy.ops.ttt_studio.generate() == {"FINISHED"}
    _pump(addon.ui)
    assert len(_image_strips(scene)) == 1 and "error" not in props.status.lower(), props.status
    (job,) = [j for j in job_states(hp_default_server.address) if j.job_id not in before]
    assert job.state == "completed" and [(n, s) for n, s, _ in job.adapters] == [(hp_adapter, 0.25)]
    props.token = "ttt.nosuch.secret-0123456789abcdef"
    with pytest.raises(RuntimeError, match="cannot list the server's adapters"):
        bpy.ops.ttt_studio.list_adapters()
    assert [item.name for item in props.adapters] == [hp_adapter], "a failed listing must keep the list"
