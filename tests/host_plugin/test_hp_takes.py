"""Takes in the plugin's core: a folder per take, the approved take (else the first) as the OTIO clip with
every take in its metadata, approval applied to a host, and takes refused before anything is queued when
the server or the placement cannot make them. A 3-take job end to end on the real server runs through
the Nuke host, the Blender add-on and the Resolve window (test_hp_{nuke,blender,resolve}_takes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import opentimelineio as otio
import pytest
from hp_helpers import FAST_DEFAULT, TOKEN, delivered_takes

from host_plugin.core.client import TTTClient
from host_plugin.core.errors import PlacementError, RequestError
from host_plugin.core.placement import DeliveredMedia, ShotResult, place_generated_shot
from host_plugin.core.requests import ShotRequest, plain
from host_plugin.core.shot_job import (
    GenerationSettings,
    PlacedShot,
    Plates,
    apply_approval,
    approved_result,
    generate_shot,
)
from host_plugin.core.takes import TakeInfo, chosen_take, take_folder, with_approval

MEDIA = DeliveredMedia(rate=24, width=8, height=8, colorspace="lin_ap1_scene")


def _request(start: int = 86400, duration: int = 4) -> ShotRequest:
    return ShotRequest("v0.i1.gap", "gap", "V1", 0, start, duration, 24, prompt="A cat yawns.", name="sh010")


def _result(folder: Path, approved: Any = None) -> ShotResult:
    delivered_takes(folder)
    takes = with_approval(
        [TakeInfo(i, 40 + i, take_folder(str(folder), i)) for i in range(3)], approved, "director"
    )
    chosen = chosen_take(takes)
    return ShotResult(
        request_id="v0.i1.gap",
        job_id="job-abc",
        directory=takes[chosen].directory,
        name_prefix="sh010.",
        frame_count=4,
        rate=24,
        media=MEDIA,
        seed=40 + chosen,
        takes=takes,
        take=chosen,
    )


def _edit() -> otio.schema.Timeline:
    timeline = otio.schema.Timeline("edit", global_start_time=otio.opentime.RationalTime(86400, 24))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(8, 24)))
    )
    timeline.tracks.append(track)
    return timeline


def test_take_folders_count_from_one_and_indices_are_checked(tmp_path: Path) -> None:
    assert take_folder("shot", 0).endswith("take_01") and take_folder("shot", 11).endswith("take_12")
    with pytest.raises(PlacementError, match="a take index is an int >= 0, got -1"):
        take_folder("shot", -1)
    result = _result(tmp_path / "shot")
    with pytest.raises(PlacementError, match=r"take indices must be 0..1 once each, got \[0, 2\]"):
        ShotResult(**{**result.__dict__, "takes": [result.takes[0], result.takes[2]]})
    two = [TakeInfo(0, 1, "a", approved=True), TakeInfo(1, 2, "b", approved=True)]
    with pytest.raises(PlacementError, match=r"at most one take can be approved, got takes \[0, 1\]"):
        ShotResult(**{**result.__dict__, "takes": two})
    with pytest.raises(PlacementError, match="is take 1 but its frames are in"):
        ShotResult(**{**result.__dict__, "take": 1})
    with pytest.raises(PlacementError, match="take 3 cannot be approved"):
        with_approval(result.takes, 3)
    assert ShotResult.from_dict(result.to_dict()) == result


def test_the_clip_is_the_chosen_take_and_lists_every_take(tmp_path: Path) -> None:
    timeline = _edit()
    result = _result(tmp_path / "shot", approved=1)
    clip = place_generated_shot(timeline, _request(86402), result)
    otio.adapters.write_to_file(timeline, str(tmp_path / "out.otio"))
    (back,) = otio.adapters.read_from_file(str(tmp_path / "out.otio")).tracks[-1].find_clips()
    assert back.media_reference.target_url_base.endswith("/shot/take_02/")  # the approved take
    meta = back.metadata["ttt_studio"]
    assert (meta["take"], meta["seed"]) == (1, 41)
    assert [dict(t) for t in meta["takes"]] == [
        {"index": i, "seed": 40 + i, "path": take_folder(str(tmp_path / "shot"), i), "approved": i == 1,
         "approved_by": "director" if i == 1 else ""}
        for i in range(3)
    ]  # fmt: skip
    assert clip.name == back.name


def test_fill_keeps_the_takes_of_a_carried_shot(tmp_path: Path) -> None:
    from host_plugin.fill import fill_timeline

    edit = _edit()
    edit.tracks[0][0].metadata["ttt_studio"] = {"prompt": "A cat yawns."}
    otio.adapters.write_to_file(edit, str(tmp_path / "in.otio"))
    made = []

    def generate(request: ShotRequest) -> ShotResult:
        result = _result(tmp_path / "shot")
        result.request_id = request.id
        result.frame_count = request.duration
        delivered_takes(tmp_path / "shot", frames=request.duration)
        made.append(request.id)
        return result

    def out_clip() -> tuple:
        """(the clip's frames folder URL, its ttt_studio metadata as plain values)."""
        (clip,) = otio.adapters.read_from_file(str(tmp_path / "out.otio")).tracks[-1].find_clips()
        return clip.media_reference.target_url_base, plain(clip.metadata["ttt_studio"])

    first = fill_timeline(str(tmp_path / "in.otio"), str(tmp_path / "out.otio"), generate)
    again = fill_timeline(str(tmp_path / "in.otio"), str(tmp_path / "out.otio"), generate)
    assert first.ok and again.ok and len(made) == 1 and again.carried == [made[0]]
    assert [t["index"] for t in out_clip()[1]["takes"]] == [0, 1, 2]

    def offline(result: ShotResult) -> ShotResult:
        raise ConnectionError("server unreachable")

    kept = fill_timeline(str(tmp_path / "in.otio"), str(tmp_path / "out.otio"), generate, refresh=offline)
    assert kept.carried == [made[0]] and "takes not refreshed: server unreachable" in kept.failures[0].message
    assert out_clip()[0].endswith("/take_01/")
    # a later run after the director approved take 3: that take becomes the clip
    approve = lambda result: approved_result(result, 2, "director")  # noqa: E731
    later = fill_timeline(str(tmp_path / "in.otio"), str(tmp_path / "out.otio"), generate, refresh=approve)
    assert later.ok and later.carried == [made[0]] and len(made) == 1
    url, meta = out_clip()
    assert url.endswith("/shot/take_03/")
    assert (meta["take"], meta["seed"]) == (2, 42)
    assert [(t["approved"], t["approved_by"]) for t in meta["takes"]] == [
        (False, ""),
        (False, ""),
        (True, "director"),
    ]


class _Recorder:
    """The Host calls apply_approval makes (switch_take only)."""

    def __init__(self) -> None:
        self.switches: list = []

    def switch_take(self, handle: Any, index: int) -> None:
        self.switches.append((handle, index))


def test_apply_approval_switches_only_when_the_shown_take_changes(tmp_path: Path) -> None:
    result = _result(tmp_path / "shot")
    placed = PlacedShot(_request(), result, result.frame_paths(), handle="Switch1")
    host = _Recorder()
    assert apply_approval(host, placed, None) is False and host.switches == []  # take 0 shown already
    assert apply_approval(host, placed, 2, "director") is True
    shown = placed.result
    assert (
        host.switches == [("Switch1", 2)] and (shown.take, shown.seed) == (2, 42) and shown.takes[2].approved
    )
    assert placed.paths[0].endswith("take_03/sh010.1001.exr") and shown.takes[2].approved_by == "director"
    assert result.take == 0  # the result first placed is left as it was
    assert apply_approval(host, placed, 2) is False  # already shown
    single = PlacedShot(_request(), ShotResult("r", "j", str(tmp_path), "sh010.", 4, 24))
    with pytest.raises(PlacementError, match="was placed with one take"):
        apply_approval(host, single, 0)


def test_takes_are_refused_before_anything_is_sent_when_they_cannot_be_placed(
    hp_default_server: Any, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="GenerationSettings.takes must be an int >= 1, got 0"):
        GenerationSettings(str(tmp_path), takes=0)
    with TTTClient(hp_default_server.address, token=TOKEN) as client:
        client.connect()
        before = [j.job_id for j in client.list_jobs()]  # the session's server ran other tests' jobs
        limit = client.info.limits["max_takes"]
        too_many = GenerationSettings(str(tmp_path), takes=limit + 1, **FAST_DEFAULT)
        with pytest.raises(RequestError, match=f"this server makes at most max_takes={limit}"):
            generate_shot(client, _request(), too_many)
        assert [j.job_id for j in client.list_jobs()] == before  # nothing was queued


def test_element_plates_and_mattes_are_checked_before_anything_is_sent(
    hp_default_server: Any, tmp_path: Path
) -> None:
    from hp_helpers import delivered_element

    from host_plugin.core.errors import PlateError

    plate, mattes, element = delivered_element(tmp_path)
    with pytest.raises(ValueError, match="an element in a plate needs a strength"):
        Plates(tuple(plate), "element")
    with pytest.raises(ValueError, match="mattes belong to plate mode 'element', not 'restyle'"):
        Plates(tuple(plate), "restyle", 0.5, mattes=tuple(mattes))
    with pytest.raises(ValueError, match="one matte per plate frame; got 3 mattes for 4 plate frames"):
        Plates(tuple(plate), "element", 0.5, mattes=tuple(mattes[:3]))
    with pytest.raises(ValueError, match="matte_feather must be >= 0 output pixels, got -1.0"):
        Plates(tuple(plate), "element", 0.5, matte_feather=-1.0)
    settings = GenerationSettings(str(tmp_path / "out"), **FAST_DEFAULT)
    rgba_matte = Plates(tuple(plate), "element", 0.5, mattes=tuple(element))  # RGBA files as mattes
    missing = Plates(
        tuple(plate), "element", 0.5, mattes=tuple(str(tmp_path / f"no.{i}.exr") for i in range(4))
    )
    with TTTClient(hp_default_server.address, token=TOKEN) as client:
        client.connect()
        before = [j.job_id for j in client.list_jobs()]
        with pytest.raises(
            RequestError, match=r"has channels \['A', 'B', 'G', 'R'\]; a matte is one channel"
        ):
            generate_shot(client, _request(), settings, plates=rgba_matte)
        with pytest.raises(PlateError, match="does not exist"):
            generate_shot(client, _request(), settings, plates=missing)
        assert [j.job_id for j in client.list_jobs()] == before
        with pytest.raises(ValueError, match="takes must be an int >= 0"):
            client.submit([{"text": "a"}], takes=-1)
        with pytest.raises(ValueError, match="mattes belong to plate_mode 'element', not 'restyle'"):
            client.submit([{"text": "a"}], plate_mode="restyle", strength=0.5, matte_upload_ids=["u1"])
        with pytest.raises(ValueError, match="take must be an int >= 0"):
            client.approve_take("job", -1)
        with pytest.raises(ValueError, match="take must be an int >= 0"):
            client.fetch_frames("job", tmp_path / "f", take=-2)
