"""The Resolve script against a fake Resolve (tests/fakes/resolve.py, Blackmagic's README API call for
call) and DaVinciResolveScript, with a real server.

Resolve calls used by the plugin: DaVinciResolveScript.scriptapp("Resolve"), resolve.GetProjectManager()
.GetCurrentProject(), resolve.Fusion(), resolve.EXPORT_OTIO / EXPORT_NONE, project.GetName() /
GetCurrentTimeline() / GetMediaPool(), tl.Export(path, EXPORT_OTIO, EXPORT_NONE), tl.GetStartFrame(),
tl.GetSetting("timelineFrameRate"), tl.GetMarkers(), tl.GetTrackCount("video"), tl.GetTrackName /
SetTrackName("video", i, name), tl.AddTrack("video"), tl.GetItemListInTrack("video", i),
mp.ImportMedia([{"FilePath": "x.%04d.exr", "StartIndex", "EndIndex"}]), mp.AppendToTimeline([{
"mediaPoolItem", "startFrame", "endFrame", "mediaType": 1, "trackIndex", "recordFrame"}]),
item.GetStart() / GetDuration() / GetEnd() / AddMarker(frameId, color, name, note, duration, customData);
project.GetSetting(colorScienceMode / colorSpaceTimeline / colorSpaceTimelineGamma), tl.GetSetting(
"timelineResolutionWidth" / "timelineResolutionHeight" / "timelinePixelAspectRatio"),
MediaPoolItem.GetClipProperty("FPS") / SetClipProperty("FPS" | "Input Color Space" | "IDT", value);
fu.UIManager.VGroup / HGroup / Label / LineEdit / CheckBox / Button / Timer({"ID", "Interval"}),
bmd.UIDispatcher(ui).AddWindow(props, layout) / On.Timeout / RunLoop() / ExitLoop(), window.GetItems() /
On.<ID>.Clicked / Show() / Hide().
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hp_helpers import FAST_DEFAULT, TOKEN, ThreadRecorder, job_states, use_fakes

use_fakes()
import DaVinciResolveScript  # noqa: E402 - the fakes, from tests/fakes
import resolve as fake  # noqa: E402

from host_plugin.core.errors import RequestError  # noqa: E402
from host_plugin.core.exr_io import read_exr, write_rgba_exr  # noqa: E402
from host_plugin.core.placement import DeliveredMedia  # noqa: E402
from host_plugin.hosts.resolve import ResolveHost, marker_request, script  # noqa: E402

START = 86400  # 01:00:00:00 at 24 (and at 23.976, non-drop)


def _edit(fps: str) -> Any:
    """V1: A [86400, 86448), gap of 12 frames, B [86460, 86508); a 'TTT:' marker at +130 for 2 s (48
    frames), a plain marker at +5 (no request). A 64x36 timeline (16:9 and quick to deliver)."""
    app = fake.make_resolve(fps=fps, start_frame=START)
    app.manager.project.settings.update({"timelineResolutionWidth": "64", "timelineResolutionHeight": "36"})
    tl = app.manager.project.timeline
    tl.add_clip(1, "A", START, 48)
    tl.add_clip(1, "B", START + 60, 48)
    tl.markers[130] = {
        "color": "Blue",
        "duration": 48,
        "note": "TTT: A cat yawns on a chair.",
        "name": "cat",
        "customData": "",
    }
    tl.markers[5] = {
        "color": "Red",
        "duration": 1,
        "note": "fix colour here",
        "name": "note",
        "customData": "",
    }
    return app


def _args(address: str, tmp_path: Path, *extra: str) -> list:
    fast = ["--steps", str(FAST_DEFAULT["steps"]), "--guidance-scale", str(FAST_DEFAULT["guidance_scale"])]
    return ["--server", address, "--token", TOKEN, "--output", str(tmp_path / "out"), *fast, *extra]


@pytest.mark.parametrize("fps", ["24", "23.976"])
def test_headless_fills_gap_and_marker_at_absolute_record_frames(
    hp_default_server: Any, tmp_path: Path, fps: str
) -> None:
    app = _edit(fps)
    tl, pool = app.manager.project.timeline, app.manager.project.media_pool
    args = _args(
        hp_default_server.address, tmp_path, "--no-ui", "--fill-gaps", "--prompt", "A red ball rolls."
    )
    assert script.main(args) == 0  # resolve from DaVinciResolveScript.scriptapp("Resolve")
    assert DaVinciResolveScript.scriptapp("Resolve") is app

    appended = sorted(pool.appended, key=lambda c: c["recordFrame"])
    assert [
        (c["recordFrame"], c["startFrame"], c["endFrame"], c["mediaType"], c["trackIndex"]) for c in appended
    ] == [
        (START + 48, 0, 11, 1, 2),  # the gap: absolute frame, not 48
        (START + 130, 0, 47, 1, 2),  # the 2-s marker at +130 lands at 86530, not 130, for 48 frames
    ]
    assert tl.GetTrackCount("video") == 2 and tl.GetTrackName("video", 2) == "TTT generated"
    placed = sorted(tl.GetItemListInTrack("video", 2), key=lambda i: i.start)
    assert [(i.GetStart(), i.GetDuration()) for i in placed] == [(START + 48, 12), (START + 130, 48)]
    for item in placed:
        media = item.GetMediaPoolItem()
        assert media.path.endswith(".%04d.exr") and media.first == 1001 and media.last == 1000 + item.duration
        assert media.GetClipProperty("FPS") == pytest.approx(float(fake._FPS.get(fps, fps)))
        for frame in (media.first, media.last):  # the timeline's format, the edit's rate, tagged
            pixels, header = read_exr(media.path % frame, check_finite=True)
            assert header["displayWindow"] == ((0, 0), (63, 35))  # the timeline's format
            assert pixels.shape == (36, 36, 4)  # fit: the 64x64 generation is 36x36 in it, centred
            assert header["dataWindow"] == ((14, 0), (49, 35))
            assert header["framesPerSecond"] == (Fraction(24000, 1001) if fps == "23.976" else Fraction(24))
            assert header["colorInteropID"] == "srgb_rec709_scene"  # DaVinci YRGB: Rec.709 code values
        (marker,) = item.GetMarkers().values()
        assert json.loads(marker["customData"])["ttt_studio"]["generated"] is True
    # every Resolve call was made on the main thread (the fake raises otherwise)
    assert fake.CALLS and all(on_main for _, _, on_main in fake.CALLS)

    # a second run finds nothing new to do from the generated markers: they are not requests
    host = ResolveHost(app)
    assert {r.record_start for r in host.find_requests(include_plain_gaps=False)} == {START + 130}


def test_window_pumps_on_the_ui_thread_and_cancel_reaches_the_server(
    hp_default_server: Any, tmp_path: Path
) -> None:
    app = _edit("24")
    recorder = ThreadRecorder()
    args = script.parse_args(
        _args(hp_default_server.address, tmp_path, "--steps", "200")
    )  # >= 10 s unless cancelled
    window = script.GenerateWindow(app, app.Fusion(), DaVinciResolveScript, args, interceptors=[recorder])
    state = {"clicked": False, "cancelled": False}

    def user(disp: Any) -> None:
        if not state["clicked"]:
            window.items["Prompt"].Text = "A red ball rolls."
            window.win.click("Generate")
            state["clicked"] = True
        elif not state["cancelled"] and "step" in (window.host.status if window.host else ""):
            window.win.click("Cancel")
            state["cancelled"] = True
        elif window.job is not None and window.job.finished:
            window.win.click("Close")

    fake.UIDispatcher.script = user
    assert (window.items["Retime"].CurrentText, window.items["Fit"].CurrentText) == ("flow", "fit")
    assert window.items["Retime"].choices == ["flow", "blend", "hold"]
    assert window.items["Colour"].Text == "Colour space: srgb_rec709_scene (the project's working space)"
    window.run()
    assert window.job.state == "cancelled", window.job.message
    assert window.disp.longest_gap < 0.25, f"the UI loop was blocked for {window.disp.longest_gap:.3f} s"
    assert window.disp.ticks > 10
    servers_view = {j.job_id: j.state for j in job_states(hp_default_server.address)}
    assert [servers_view[j] for j in window.job.job_ids] == ["cancelled"]
    assert {"GetServerInfo", "SubmitShot", "WatchJob", "CancelJob"} <= set(recorder.methods())
    assert not [c for c in recorder.calls if c[2]], "no RPC may start on the UI thread"
    assert all(on_main for _, _, on_main in fake.CALLS)
    assert app.manager.project.media_pool.appended == []  # nothing placed
    assert window.items["Status"].Text.startswith("cancelled")


def test_marker_requests_and_errors(capsys: pytest.CaptureFixture) -> None:
    assert marker_request(3, {"note": "TTT: a dog", "customData": ""}) == {"prompt": "a dog"}
    custom = json.dumps({"ttt_studio": {"storyboard": [{"text": "a"}]}})
    assert marker_request(3, {"note": "", "customData": custom}) == {"storyboard": [{"text": "a"}]}
    assert marker_request(3, {"customData": json.dumps({"ttt_studio": {"generated": True}})}) is None
    assert marker_request(3, {"note": "just a note"}) is None
    with pytest.raises(RequestError, match="no prompt"):
        marker_request(3, {"note": "TTT:   ", "name": "m"})
    app = _edit("24")
    host = ResolveHost(app)
    with pytest.raises(RequestError, match="has no prompt"):
        host.find_requests(include_plain_gaps=True)  # the plain gap has no prompt and none was given
    requests = host.find_requests(include_plain_gaps=True, prompt="fill")
    assert [(r.kind, r.record_start, r.duration) for r in requests] == [
        ("marker", START + 130, 48),
        ("gap", START + 48, 12),
    ]
    fake.CURRENT = None  # Resolve is not running
    assert script.main(["--no-ui"]) == 2
    assert "found no running Resolve" in capsys.readouterr().err


def _delivered(folder: Path, rate: str, colorspace: str, count: int, size: tuple = (8, 8)) -> list:
    """Frames as the server delivers them: framesPerSecond and colorInteropID set."""
    from fractions import Fraction

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 4), 0.18, np.float32)
    exact = Fraction(24000, 1001) if rate == "23.976" else Fraction(rate)
    return [
        str(write_rgba_exr(folder / f"sh.{1001 + i:04d}.exr", pixels, colorspace, frames_per_second=exact))
        for i in range(count)
    ]


@pytest.mark.parametrize("fps", ["24", "23.976"])
@pytest.mark.parametrize(
    ("science", "interop", "property_set"),
    [
        ("acescct", "lin_ap1_scene", ("IDT", "ACEScg")),
        ("davinciYRGBColorManagedv2", "lin_rec709_scene", ("Input Color Space", "Rec.709 Linear")),
        ("davinciYRGB", "srgb_rec709_scene", None),
    ],
)
def test_a_two_second_marker_gets_a_clip_of_its_duration_in_its_colour(
    tmp_path: Path, fps: str, science: str, interop: str, property_set: Any
) -> None:
    app = fake.make_resolve(fps=fps, start_frame=START)
    project = app.manager.project
    project.settings.update({"colorScienceMode": science, "colorSpaceTimelineGamma": "Linear"})
    project.settings.update({"timelineResolutionWidth": "720", "timelineResolutionHeight": "480"})
    project.settings["timelinePixelAspectRatio"] = "16_9"
    host = ResolveHost(app)
    target = host.target_format()
    assert (target.width, target.height) == (720, 480) and target.pixel_aspect == pytest.approx(32 / 27)
    assert host.working_colorspace() == interop
    paths = _delivered(tmp_path / "gen", fps, interop, 48)  # a 2-s marker: 48 frames at 24 and at 23.976
    media = DeliveredMedia.from_exr_header(read_exr(paths[0])[1])
    host.place_sequence(paths, START + 24, "TTT generated", media)
    (item,) = project.timeline.GetItemListInTrack("video", 2)
    assert (item.GetStart(), item.GetDuration(), item.GetEnd()) == (START + 24, 48, START + 72)
    clip = item.GetMediaPoolItem()
    assert clip.GetClipProperty("FPS") == pytest.approx(
        float(media.rate)
    )  # the clip plays at the delivered rate
    (marker,) = item.GetMarkers().values()
    record = json.loads(marker["customData"])["ttt_studio"]
    assert record["delivered"]["colorspace"] == interop and record["colorspace_set"] is (
        property_set is not None
    )
    if property_set is None:  # DaVinci YRGB has no per-clip colour space: the user is told
        assert host.warnings and "set it in Clip Attributes" in host.warnings[0]
    else:
        assert clip.GetClipProperty(property_set[0]) == property_set[1] and not host.warnings


def test_a_clip_delivered_for_another_rate_is_set_to_its_own(tmp_path: Path) -> None:
    app = fake.make_resolve(fps="25", start_frame=START)
    host = ResolveHost(app)
    paths = _delivered(tmp_path / "gen", "24", "srgb_rec709_scene", 3)
    host.place_sequence(paths, START, "TTT generated", DeliveredMedia.from_exr_header(read_exr(paths[0])[1]))
    (item,) = app.manager.project.timeline.GetItemListInTrack("video", 2)
    assert item.GetMediaPoolItem().GetClipProperty("FPS") == 24.0  # SetClipProperty("FPS", "24")
