"""Elements from Resolve's window, against the fake Resolve (tests/fakes/resolve.py, Blackmagic's README
API call for call): "element" mode over the plate clip under the playhead, its matte the plate's alpha or
a folder of single-channel EXRs, and, with the real tiny-model server on loopback, the element placed
above the plate (its draft first, replaced in place).

Resolve calls added for elements from the window: Timeline.GetCurrentVideoItem(), TimelineItem.
GetLeftOffset(); the plate clip's MediaPoolItem.GetClipProperty("File Path" | "Start").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hp_helpers import delivered_element, use_fakes

use_fakes()
import DaVinciResolveScript  # noqa: E402 - the fake, from tests/fakes
import resolve as fake  # noqa: E402 - the fake, from tests/fakes

from host_plugin.core.errors import RequestError  # noqa: E402
from host_plugin.core.exr_io import read_exr  # noqa: E402
from host_plugin.hosts.resolve import ResolveHost, script  # noqa: E402

START = 86400
FRAMES = 12  # the plate clip shows source frames 1003..1014 of a 16-frame sequence
LEFT_OFFSET = 2


def _edit(tmp_path: Path) -> tuple[Any, list[str], list[str]]:
    """A 16 x 16, 24 fps timeline whose V1 holds the plate clip at START + 6 (frames 1003..1014 of its
    EXR sequence); the playhead on it. Returns (app, the plate files shown, the mattes of those frames)."""
    plate, mattes, _ = delivered_element(tmp_path / "src", frames=FRAMES + 4, size=(16, 16))
    app = fake.make_resolve(fps="24", start_frame=START)
    app.manager.project.settings.update({"timelineResolutionWidth": "16", "timelineResolutionHeight": "16"})
    pool = app.manager.project.media_pool
    (item,) = pool.ImportMedia(
        [{"FilePath": plate[0].replace("1001", "%04d"), "StartIndex": 1001, "EndIndex": 1001 + FRAMES + 3}]
    )
    clip = {"mediaPoolItem": item, "startFrame": LEFT_OFFSET, "endFrame": LEFT_OFFSET + FRAMES - 1}
    (placed,) = pool.AppendToTimeline([{**clip, "mediaType": 1, "trackIndex": 1, "recordFrame": START + 6}])
    assert placed.GetLeftOffset() == LEFT_OFFSET
    app.manager.project.timeline.playhead = START + 10
    pool.appended.clear()
    shown = slice(LEFT_OFFSET, LEFT_OFFSET + FRAMES)
    return app, plate[shown], mattes[shown]


def test_the_element_request_is_the_plate_clip_under_the_playhead(tmp_path: Path) -> None:
    app, plate, mattes = _edit(tmp_path)
    host = ResolveHost(app)
    request, paths, none = host.element_request("A red ball.")
    assert (request.record_start, request.duration, request.track_index) == (START + 6, FRAMES, 0)
    assert paths == plate and none == [] and request.prompt == "A red ball."
    matte_dir = Path(mattes[0]).parent
    for extra in sorted(matte_dir.iterdir())[:LEFT_OFFSET]:  # the folder must hold the shown frames only
        extra.unlink()
    for extra in sorted(matte_dir.iterdir())[FRAMES:]:
        extra.unlink()
    assert host.element_request("A red ball.", str(matte_dir))[2] == mattes
    with pytest.raises(RequestError, match="needs a prompt"):
        host.element_request("  ")
    with pytest.raises(RequestError, match=r"holds 11 EXR frames; clip .* shows 12"):
        Path(mattes[-1]).unlink()
        host.element_request("A red ball.", str(matte_dir))
    app.manager.project.timeline.playhead = START
    with pytest.raises(RequestError, match="no clip under the playhead"):
        host.element_request("A red ball.")
    app.manager.project.timeline.add_clip(1, "title", START, 4)
    with pytest.raises(RequestError, match="has no media to use as the plate"):
        host.element_request("A red ball.")


def test_the_window_offers_element_mode_and_says_what_is_wrong(tmp_path: Path) -> None:
    app, _, _ = _edit(tmp_path)
    args = script.parse_args(["--server", "127.0.0.1:1", "--output", str(tmp_path / "out")])
    window = script.GenerateWindow(app, app.Fusion(), DaVinciResolveScript, args)
    items = window.items
    assert items["Mode"].choices == ["shots", "element"] and items["Mode"].CurrentText == "shots"
    assert items["MatteSource"].choices == ["plate alpha", "matte folder"]
    assert items["Strength"].Text == str(script.DEFAULT_STRENGTH) and items["DraftFirst"].Checked is False
    seen = []

    def user(disp: Any) -> None:
        items["Mode"].CurrentText = "element"
        items["Prompt"].Text = "A red ball."
        items["MatteSource"].CurrentText = "matte folder"
        window.win.click("Generate")
        seen.append(items["Status"].Text)
        items["MatteDir"].Text = str(tmp_path / "nowhere")
        window.win.click("Generate")
        seen.append(items["Status"].Text)
        items["MatteSource"].CurrentText = "plate alpha"
        items["Strength"].Text = "1.5"
        window.win.click("Generate")
        seen.append(items["Status"].Text)
        items["Strength"].Text = "much"
        window.win.click("Generate")
        seen.append(items["Status"].Text)
        window.win.click("Close")

    fake.UIDispatcher.script = user
    window.run()
    assert seen[0] == "Error: the matte source is a matte folder: type the folder of matte EXRs"
    assert "matte folder" in seen[1] and "nowhere" in seen[1] and "does not exist" in seen[1]
    assert "an element in a plate needs a strength in (0, 1]" in seen[2] and "1.5" in seen[2]
    assert seen[3].startswith("Error: strength 'much'")
    assert window.job is None  # nothing was submitted


@pytest.mark.slow
def test_an_element_from_the_window_lands_above_its_plate_draft_first(hp_server: Any, tmp_path: Path) -> None:
    """Element mode with a matte folder and Draft first (the real server): the plate clip's frames and
    the mattes go up; the element lands on "TTT element" above V1 at the clip's frames, its alpha the
    matte's left half; the draft it showed first is replaced in place."""
    from hp_helpers import FAST, TOKEN

    app, plate, mattes = _edit(tmp_path)
    matte_dir = tmp_path / "mattes"
    matte_dir.mkdir()
    for path in mattes:
        Path(path).rename(matte_dir / Path(path).name)
    args = script.parse_args(
        ["--server", hp_server.address, "--token", TOKEN, "--output", str(tmp_path / "out"), "--steps", "3"]
        + ["--height", str(FAST["height"]), "--width", str(FAST["width"]), "--guidance-scale", "1.0"]
        + ["--seed", "4", "--draft-steps", "1"]
    )
    window = script.GenerateWindow(app, app.Fusion(), DaVinciResolveScript, args)
    state = {"step": "generate"}

    def user(disp: Any) -> None:
        if state["step"] == "generate":
            window.items["Mode"].CurrentText = "element"
            window.items["Prompt"].Text = "A red ball."
            window.items["Strength"].Text = "1.0"
            window.items["MatteSource"].CurrentText = "matte folder"
            window.items["MatteDir"].Text = str(matte_dir)
            window.items["DraftFirst"].Checked = True
            window.win.click("Generate")
            state["step"] = "wait"
        elif window.job is not None and window.job.finished:
            window.win.click("Close")

    fake.UIDispatcher.script = user
    window.run()
    assert window.job.state == "done", window.job.message
    (placed,) = window.job.placed
    assert not placed.draft and placed.result.metadata["plate_mode"] == "element"
    assert placed.result.metadata["plate_frames"] == FRAMES
    tl = app.manager.project.timeline
    assert tl.GetTrackName("video", 2) == "TTT element" and tl.GetItemListInTrack("video", 2) == [
        placed.handle
    ]
    item = placed.handle
    assert (item.GetStart(), item.GetDuration(), item.GetClipColor()) == (START + 6, FRAMES, "")
    media = item.GetMediaPoolItem()
    assert media.GetClipProperty("Alpha mode") == "Premultiplied"
    assert "/draft/" not in media.GetClipProperty("File Path")
    final = Path(media.GetClipProperty("File Path"))
    appended = [c["mediaPoolItem"] for c in app.manager.project.media_pool.appended]
    assert appended == [media]  # one append, the draft's; its media item now holds the final's frames
    (marker,) = item.GetMarkers().values()
    assert json.loads(marker["customData"])["ttt_studio"]["draft"] is False  # it was a draft, replaced
    drafts = sorted((final.parent / "draft").glob("*.exr"))  # the draft it showed first, kept on disk
    assert len(drafts) == FRAMES and int(read_exr(str(drafts[0]))[1]["ttt_studio/draft"]) == 1
    rgba, _ = read_exr(placed.paths[5])
    alpha = rgba[..., 3]
    assert alpha[:, 0].min() > 0.99 and alpha[:, -1].max() < 0.01  # the matte's left half
    assert np.abs(rgba[alpha < 1e-3, :3]).max() < 1e-2  # premultiplied: nothing outside
    assert all(on_main for _, _, on_main in fake.CALLS)
