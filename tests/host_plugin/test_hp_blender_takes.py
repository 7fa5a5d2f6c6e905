"""Takes and elements in Blender's Sequencer with the REAL bpy and real EXR files.

bpy calls added for takes and elements: strip.mute, strip.channel, strip.blend_type ("ALPHA_OVER"),
strip.alpha_mode ("PREMUL"), strip["ttt_studio_take"] (an ID property), sequence_editor.strips_all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hp_helpers import delivered_element, delivered_takes

bpy = pytest.importorskip("bpy", reason="the real-Blender test needs the bpy module (pip install bpy==5.0.1)")

from host_plugin.core.errors import HostError  # noqa: E402
from host_plugin.core.placement import DeliveredMedia  # noqa: E402

MEDIA = DeliveredMedia(rate=24, width=8, height=8, colorspace="lin_ap1_scene")


def _scene() -> Any:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 8, 8, 100
    return scene


def _strips(scene: Any) -> dict:
    return {s.name: s for s in scene.sequence_editor.strips_all}


def test_three_takes_the_chosen_one_plays_the_others_wait_muted_above(tmp_path: Path) -> None:
    from host_plugin.hosts.blender import vse

    scene = _scene()
    editor = scene.sequence_editor_create()
    editor.strips.new_effect("under", "COLOR", 1, 1001, length=10)  # channel 1 is taken over the shot
    host = vse.BlenderHost(scene)
    takes = delivered_takes(tmp_path / "shot")
    names = host.place_takes(takes, 0, 1001, "TTT generated", MEDIA)
    strips = _strips(scene)
    placed = [strips[n] for n in names]
    assert [s.channel for s in placed] == [2, 3, 4]  # the chosen one lowest, the others above it
    assert [s.mute for s in placed] == [False, True, True]
    assert [s["ttt_studio_take"] for s in placed] == [0, 1, 2]
    for strip, paths in zip(placed, takes):
        assert (strip.frame_final_start, strip.frame_final_duration) == (1001, 4)
        assert Path(bpy.path.abspath(strip.directory)).resolve() == Path(paths[0]).parent.resolve()
        assert strip.colorspace_settings.name == "ACEScg"

    host.switch_take(names, 1)  # the director approved take 2
    assert [s.mute for s in (_strips(scene)[n] for n in names)] == [True, False, True]
    with pytest.raises(HostError, match=r"takes 0..2; cannot show take 5"):
        host.switch_take(names, 5)
    editor.strips.remove(_strips(scene)[names[2]])
    with pytest.raises(HostError, match="are gone from scene"):
        host.switch_take(names, 0)


def test_the_approved_take_is_the_unmuted_lowest_one(tmp_path: Path) -> None:
    from host_plugin.hosts.blender import vse

    scene = _scene()
    host = vse.BlenderHost(scene)
    names = host.place_takes(delivered_takes(tmp_path / "shot"), 2, 1001, "TTT generated", MEDIA)
    placed = [_strips(scene)[n] for n in names]
    assert [(s.channel, s.mute) for s in placed] == [(2, True), (3, True), (1, False)]


def test_an_element_goes_above_its_plate_over_it_by_its_alpha(tmp_path: Path) -> None:
    from host_plugin.hosts.blender import vse

    scene = _scene()
    editor = scene.sequence_editor_create()
    plate, mattes, element = delivered_element(tmp_path / "src")
    plate_strip = editor.strips.new_image("plate", plate[0], 2, 1001)
    for path in plate[1:]:
        plate_strip.elements.append(Path(path).name)
    editor.strips.new_effect("busy", "COLOR", 3, 1003, length=2)  # channel 3 is taken in the middle
    host = vse.BlenderHost(scene)
    (name,) = host.place_element([element], 0, 1001, 1, MEDIA, mattes)  # the plate's track 1 is channel 2
    strip = _strips(scene)[name]
    assert strip.channel == 4 and strip.channel > plate_strip.channel
    assert (strip.blend_type, strip.alpha_mode) == ("ALPHA_OVER", "PREMUL")
    assert (strip.frame_final_start, strip.frame_final_duration) == (1001, 4)


@pytest.mark.slow
def test_the_add_on_asks_for_three_takes_and_shows_the_approved_one(
    hp_default_server: Any, tmp_path: Path
) -> None:
    """Generate with Takes = 3 in the gap between two strips (the real server), then Check Approved Takes
    after a second client approved take 2: its strip plays, the others are muted."""
    import time

    from hp_helpers import FAST_DEFAULT, TOKEN

    from host_plugin.core.client import TTTClient
    from host_plugin.hosts import blender

    scene = _scene()
    scene.render.resolution_x = scene.render.resolution_y = 16
    bpy.context.preferences.system.use_online_access = True
    blender.register()
    try:
        strips = scene.sequence_editor_create().strips
        a = strips.new_effect(name="A", type="COLOR", channel=1, frame_start=1, length=24)
        b = strips.new_effect(name="B", type="COLOR", channel=1, frame_start=37, length=24)
        a.select = b.select = True
        props = scene.ttt_studio
        props.server, props.token, props.output_dir = (
            hp_default_server.address,
            TOKEN,
            str(tmp_path / "frames"),
        )
        props.steps, props.guidance_scale, props.seed = (
            FAST_DEFAULT["steps"],
            FAST_DEFAULT["guidance_scale"],
            3,
        )
        props.takes = 3
        props.segments.add().text = "A red ball rolls across a wooden floor."
        assert bpy.ops.ttt_studio.generate() == {"FINISHED"}

        def pump() -> None:
            deadline = time.monotonic() + 180
            while blender.ui.pump_jobs() is not None:
                assert time.monotonic() < deadline, "the job did not finish"
                time.sleep(0.02)

        pump()
        (job,) = blender.ui.TAKE_JOBS
        (placed,) = job.placed
        names = placed.handle
        shown = [_strips(scene)[n] for n in names]
        assert [(s.channel, s.mute, s.frame_final_start, s.frame_final_duration) for s in shown] == [
            (1, False, 25, 12),
            (2, True, 25, 12),
            (3, True, 25, 12),
        ]
        assert [Path(bpy.path.abspath(s.directory)).name for s in shown] == ["take_01", "take_02", "take_03"]
        assert [t.seed for t in placed.result.takes] == [3, 4, 5]

        with TTTClient(hp_default_server.address, token=TOKEN) as director:
            director.approve_take(placed.result.job_id, 1)
        assert bpy.ops.ttt_studio.check_takes() == {"FINISHED"}
        pump()
        assert [_strips(scene)[n].mute for n in names] == [True, False, True]
        assert placed.result.take == 1 and "approved takes shown" in job.host.status
    finally:
        blender.unregister()


def _plate_strip(scene: Any, plate: list, channel: int = 2) -> Any:
    strip = scene.sequence_editor_create().strips.new_image("plate", plate[0], channel, 1001)
    for path in plate[1:]:
        strip.elements.append(Path(path).name)
    return strip


def test_the_element_request_is_the_selected_plate_strip_and_its_mattes(tmp_path: Path) -> None:
    from host_plugin.core.errors import RequestError
    from host_plugin.hosts.blender import vse

    scene = _scene()
    plate, mattes, _ = delivered_element(tmp_path / "src")
    segments = [{"text": "A bird lands."}]
    with pytest.raises(RequestError, match="select exactly one image strip of EXR frames"):
        vse.plate_request(scene, segments)
    strip = _plate_strip(scene, plate)
    strip.select = True
    request, paths, found = vse.plate_request(scene, segments, str(tmp_path / "src" / "matte"))
    assert (request.record_start, request.duration, request.track_index, request.prompt) == (
        1001,
        4,
        1,
        "A bird lands.",
    )
    assert paths == plate and found == mattes
    assert vse.plate_request(scene, segments)[2] == []  # no matte folder: the plate's alpha
    strip.frame_offset_start = 1  # trimmed: the frames it shows
    assert vse.plate_request(scene, segments)[1] == plate[1:]
    with pytest.raises(RequestError, match="holds 4 EXR frames; the plate strip 'plate' shows 3"):
        vse.plate_request(scene, segments, str(tmp_path / "src" / "matte"))
    with pytest.raises(RequestError, match="matte folder .* does not exist"):
        vse.plate_request(scene, segments, str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_the_add_on_generates_an_element_over_the_selected_plate(
    hp_default_server: Any, tmp_path: Path
) -> None:
    """Element over plate on the real server: the plate strip and its matte folder are sent; the RGBA
    result lands Alpha Over on the channel above, its alpha the matte's region."""
    import time

    from hp_helpers import FAST_DEFAULT, TOKEN

    from host_plugin.core.exr_io import read_exr
    from host_plugin.hosts import blender

    scene = _scene()
    scene.render.resolution_x = scene.render.resolution_y = 16
    plate, _, _ = delivered_element(tmp_path / "src", frames=12, size=(16, 16))
    bpy.context.preferences.system.use_online_access = True
    blender.register()
    try:
        _plate_strip(scene, plate).select = True
        props = scene.ttt_studio
        props.server, props.token, props.output_dir = (
            hp_default_server.address,
            TOKEN,
            str(tmp_path / "frames"),
        )
        props.steps, props.guidance_scale = FAST_DEFAULT["steps"], FAST_DEFAULT["guidance_scale"]
        props.duration_source, props.strength = "PLATE", 1.0
        props.matte_dir = str(tmp_path / "src" / "matte")
        props.segments.add().text = "A red ball rolls across a wooden floor."
        assert bpy.ops.ttt_studio.generate() == {"FINISHED"}
        deadline = time.monotonic() + 180
        while blender.ui.pump_jobs() is not None:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.02)
        assert "error" not in props.status.lower(), props.status
        (element,) = [s for s in scene.sequence_editor.strips_all if s.name != "plate"]
        assert (element.channel, element.blend_type, element.alpha_mode) == (3, "ALPHA_OVER", "PREMUL")
        assert (element.frame_final_start, element.frame_final_duration) == (1001, 12)
        pixels, header = read_exr(Path(bpy.path.abspath(element.directory)) / element.elements[5].filename)
        alpha = pixels[..., 3]
        assert "A" in header["channel_names"] and alpha[:, 0].min() > 0.99 and alpha[:, -1].max() < 0.01
    finally:
        blender.unregister()


def test_draft_strips_are_marked_then_read_the_final_from_its_folder(tmp_path: Path) -> None:
    """A preview job's draft (frames in <job>/draft/take_NN/) placed and marked; the final moves every
    take strip's directory to its own folder: the same strips, channels and frames, unmarked."""
    from host_plugin.hosts.blender import vse

    scene = _scene()
    host = vse.BlenderHost(scene)
    drafts, finals = (
        delivered_takes(tmp_path / "shot" / "draft", takes=2),
        delivered_takes(tmp_path / "shot", takes=2),
    )
    names = host.place_takes(drafts, 0, 1001, "TTT generated", MEDIA)
    host.mark_draft(names)
    before = [
        (s.name, s.channel, s.frame_final_start, s.frame_final_duration)
        for s in map(_strips(scene).get, names)
    ]
    assert all(
        s[vse.DRAFT_PROPERTY] and s.color_tag == vse.DRAFT_COLOUR_TAG for s in map(_strips(scene).get, names)
    )
    host.replace_media(names, finals, MEDIA)
    strips = [_strips(scene)[n] for n in names]
    assert [(s.name, s.channel, s.frame_final_start, s.frame_final_duration) for s in strips] == before
    assert len(_strips(scene)) == 2  # nothing added
    for strip, paths in zip(strips, finals):
        assert Path(bpy.path.abspath(strip.directory)).resolve() == Path(paths[0]).parent.resolve()
        assert not strip[vse.DRAFT_PROPERTY] and strip.color_tag == "NONE"
    (one,) = delivered_takes(tmp_path / "other", takes=1, frames=3)
    with pytest.raises(HostError, match="a final replaces its draft frame for frame"):
        host.replace_media(names[0], [one], MEDIA)


def test_an_elements_takes_wait_muted_above_the_shown_one_each_over_the_plate(tmp_path: Path) -> None:
    from host_plugin.hosts.blender import vse

    scene = _scene()
    editor = scene.sequence_editor_create()
    plate, _, _ = delivered_element(tmp_path / "src")
    editor.strips.new_image("plate", plate[0], 1, 1001)
    host = vse.BlenderHost(scene)
    takes = delivered_takes(tmp_path / "shot", takes=3)
    names = host.place_element(takes, 1, 1001, 0, MEDIA, [])
    strips = [_strips(scene)[n] for n in names]
    assert [(s.channel, s.mute) for s in strips] == [(3, True), (2, False), (4, True)]
    assert all((s.blend_type, s.alpha_mode) == ("ALPHA_OVER", "PREMUL") for s in strips)
    host.switch_take(names, 0)
    assert [s.mute for s in (_strips(scene)[n] for n in names)] == [False, True, True]
