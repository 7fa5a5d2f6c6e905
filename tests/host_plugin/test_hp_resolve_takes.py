"""Takes and elements in Resolve, against the fake Resolve (tests/fakes/resolve.py, Blackmagic's README
API call for call) and real EXR files.

Resolve calls added for takes and elements: MediaPool.GetCurrentFolder() / SetCurrentFolder(folder) /
AddSubFolder(folder, name), Folder.GetName() / GetClipList() / GetSubFolderList(), TimelineItem.AddTake(
mediaPoolItem, startFrame, endFrame) / GetTakesCount() / GetSelectedTakeIndex() / GetTakeByIndex(idx) /
SelectTakeByIndex(idx) (1-based), MediaPoolItem.SetClipProperty("Alpha mode", "Premultiplied").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hp_helpers import delivered_element, delivered_takes, use_fakes

use_fakes()
import resolve as fake  # noqa: E402 - the fake, from tests/fakes

from host_plugin.core.errors import HostError  # noqa: E402
from host_plugin.core.placement import DeliveredMedia  # noqa: E402
from host_plugin.hosts.resolve import ResolveHost  # noqa: E402

START = 86400
MEDIA = DeliveredMedia(rate=24, width=8, height=8, colorspace="lin_ap1_scene")


def _host() -> Any:
    app = fake.make_resolve(fps="24", start_frame=START)
    app.manager.project.timeline.add_clip(1, "plate", START, 48)
    return ResolveHost(app)


def _pattern(paths: list) -> str:
    return paths[0].replace("1001", "%04d")


def test_three_takes_in_a_bin_and_a_take_selector_showing_the_chosen_one(tmp_path: Path) -> None:
    host = _host()
    pool = host.media_pool
    root = pool.GetCurrentFolder()
    takes = delivered_takes(tmp_path / "shot")
    item = host.place_takes(takes, 0, START + 10, "TTT generated", MEDIA)

    assert pool.GetCurrentFolder() is root  # the user's folder is current again
    (bin_,) = root.GetSubFolderList()
    assert bin_.GetName() == "TTT takes sh010"
    assert [c.GetClipProperty("File Path") for c in bin_.GetClipList()] == [_pattern(t) for t in takes]
    assert not root.GetClipList()  # nothing landed beside the bin

    track = host.timeline.GetItemListInTrack("video", 2)  # "TTT generated", above the plate
    assert track == [item] and host.timeline.GetTrackName("video", 2) == "TTT generated"
    assert (item.GetStart(), item.GetDuration()) == (START + 10, 4)
    assert item.GetTakesCount() == 3 and item.GetSelectedTakeIndex() == 1
    for index in range(3):  # take selector index i + 1 is take i, over the shot's 4 frames
        take = item.GetTakeByIndex(index + 1)
        assert take["mediaPoolItem"].GetClipProperty("File Path") == _pattern(takes[index])
        assert (take["startFrame"], take["endFrame"]) == (0, 3)
    assert item.GetMediaPoolItem().GetClipProperty("File Path") == _pattern(takes[0])

    host.switch_take(item, 1)  # the director approved take 2
    assert item.GetSelectedTakeIndex() == 2
    assert item.GetMediaPoolItem().GetClipProperty("File Path") == _pattern(takes[1])
    with pytest.raises(HostError, match=r"takes 0..2; cannot show take 3"):
        host.switch_take(item, 3)


def test_the_approved_take_is_selected_when_placed(tmp_path: Path) -> None:
    host = _host()
    takes = delivered_takes(tmp_path / "shot")
    item = host.place_takes(takes, 2, START, "TTT generated", MEDIA)
    assert item.GetSelectedTakeIndex() == 3
    assert item.GetMediaPoolItem().GetClipProperty("File Path") == _pattern(takes[2])


def test_an_element_goes_on_a_track_above_its_plate_with_its_alpha(tmp_path: Path) -> None:
    host = _host()
    tl = host.timeline
    tl.AddTrack("video")
    tl.add_clip(2, "busy", START + 2, 2)  # V2 is taken in the middle of the shot
    _, mattes, element = delivered_element(tmp_path / "src")
    item = host.place_element([element], 0, START, 0, MEDIA, mattes)  # plate on V1
    assert tl.GetTrackCount("video") == 3 and tl.GetItemListInTrack("video", 3) == [item]
    assert tl.GetTrackName("video", 3) == "TTT element"
    assert (item.GetStart(), item.GetDuration()) == (START, 4)
    media = item.GetMediaPoolItem()
    assert media.GetClipProperty("Alpha mode") == "Premultiplied"
    assert media.GetClipProperty("File Path") == _pattern(element)


@pytest.mark.slow
def test_the_window_asks_for_three_takes_and_selects_the_approved_one(
    hp_default_server: Any, tmp_path: Path
) -> None:
    """--takes 3 on a 'TTT:' marker (the real server): the takes land in a bin and the clip's take
    selector; after a second client approves take 2, "Check approved takes" selects it."""
    import DaVinciResolveScript
    from hp_helpers import FAST_DEFAULT, TOKEN

    from host_plugin.core.client import TTTClient
    from host_plugin.hosts.resolve import script

    app = fake.make_resolve(fps="24", start_frame=START)
    app.manager.project.settings.update({"timelineResolutionWidth": "16", "timelineResolutionHeight": "16"})
    tl = app.manager.project.timeline
    tl.add_clip(1, "A", START, 48)
    tl.markers[20] = {
        "color": "Blue",
        "duration": 12,
        "note": "TTT: A cat yawns.",
        "name": "cat",
        "customData": "",
    }
    args = script.parse_args(
        ["--server", hp_default_server.address, "--token", TOKEN, "--output", str(tmp_path / "out")]
        + ["--steps", str(FAST_DEFAULT["steps"]), "--guidance-scale", str(FAST_DEFAULT["guidance_scale"])]
        + ["--takes", "3", "--seed", "11"]
    )
    window = script.GenerateWindow(app, app.Fusion(), DaVinciResolveScript, args)
    state = {"step": "generate"}

    def user(disp: Any) -> None:
        if state["step"] == "generate":
            window.win.click("Generate")
            state["step"] = "wait"
        elif state["step"] == "wait" and window.job.finished:
            assert window.job.state == "done", window.job.message
            with TTTClient(hp_default_server.address, token=TOKEN) as director:
                director.approve_take(window.job.placed[0].result.job_id, 1)
            window.win.click("CheckTakes")
            state["step"] = "check"
        elif state["step"] == "check" and window.check is None:
            window.win.click("Close")

    fake.UIDispatcher.script = user
    window.run()
    (placed,) = window.job.placed
    item = placed.handle
    assert [t.seed for t in placed.result.takes] == [11, 12, 13]
    assert (item.GetStart(), item.GetDuration(), item.GetTakesCount()) == (START + 20, 12, 3)
    assert item.GetSelectedTakeIndex() == 2  # take 2, approved by the director
    assert item.GetMediaPoolItem().GetClipProperty("File Path").endswith("/take_02/cat.%04d.exr")
    (bin_,) = app.manager.project.media_pool.GetRootFolder().GetSubFolderList()
    assert len(bin_.GetClipList()) == 3
    assert window.items["Status"].Text == f"approved takes shown: [({placed.request.id!r}, 1)]"
    assert all(on_main for _, _, on_main in fake.CALLS)


def test_an_elements_takes_share_its_item_above_the_plate(tmp_path: Path) -> None:
    host = _host()
    takes = delivered_takes(tmp_path / "shot", takes=3)
    item = host.place_element(takes, 2, START, 0, MEDIA, [])
    tl = host.timeline
    assert tl.GetTrackName("video", 2) == "TTT element" and tl.GetItemListInTrack("video", 2) == [item]
    assert item.GetTakesCount() == 3 and item.GetSelectedTakeIndex() == 3
    for index in range(3):
        media = item.GetTakeByIndex(index + 1)["mediaPoolItem"]
        assert media.GetClipProperty("Alpha mode") == "Premultiplied"
        assert media.GetClipProperty("File Path") == _pattern(takes[index])
    host.switch_take(item, 0)
    assert item.GetMediaPoolItem().GetClipProperty("File Path") == _pattern(takes[0])
