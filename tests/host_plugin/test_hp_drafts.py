"""Drafts in the plugins: a preview job's draft placed (marked as a draft) as soon as it exists, then its
media swapped to the final in place; OTIO, the Nuke and Resolve fakes (their vendors' API call for call)
and, end to end, a real tiny-model server on loopback through the Resolve host. Blender's strips:
test_hp_blender_takes.py.

Resolve calls added for drafts: MediaPoolItem.ReplaceClip(filePath), TimelineItem.SetClipColor(color) /
ClearClipColor() / GetClipColor(), TimelineItem.UpdateMarkerCustomData(frameId, customData).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import opentimelineio as otio
import pytest
from hp_helpers import delivered_element, delivered_takes, use_fakes

use_fakes()
import nuke  # noqa: E402 - the fake, from tests/fakes
import resolve as fake  # noqa: E402 - the fake, from tests/fakes

from host_plugin.core.client import TakeState  # noqa: E402
from host_plugin.core.errors import HostError, PlacementError  # noqa: E402
from host_plugin.core.exr_io import read_exr  # noqa: E402
from host_plugin.core.placement import (  # noqa: E402
    DeliveredMedia,
    ShotResult,
    place_generated_shot,
    swap_in_final,
)
from host_plugin.core.requests import METADATA_KEY, ShotRequest  # noqa: E402
from host_plugin.hosts import nuke as ttt_nuke  # noqa: E402
from host_plugin.hosts.resolve import GENERATED_MARKER, ResolveHost  # noqa: E402

MEDIA = DeliveredMedia(rate=24, width=8, height=8, colorspace="lin_ap1_scene")
START = 86400


def _draft_and_final(folder: Path, takes: int = 1) -> tuple[list[list[str]], list[list[str]]]:
    """Draft frames under <folder>/draft/ and final frames under <folder>/ (the plugin's layout); a
    one-take shot's frames are the take_01 folders' (delivered_takes writes take folders)."""
    return delivered_takes(folder / "draft", takes=takes), delivered_takes(folder, takes=takes)


def _marker_data(item: Any) -> dict:
    (marker,) = [m for m in item.GetMarkers().values() if m["name"] == GENERATED_MARKER]
    return json.loads(marker["customData"])[METADATA_KEY]


# ------------------------------------------------------------------------------------------- OTIO


def _result(folder: Path, draft: bool) -> ShotResult:
    return ShotResult(
        request_id="v0.i1.gap",
        job_id="job-abc",
        directory=str(folder),
        name_prefix="sh010.",
        frame_count=4,
        rate=24,
        media=MEDIA,
        draft=draft,
    )


def test_the_otio_draft_clip_gets_the_final_in_place(tmp_path: Path) -> None:
    timeline = otio.schema.Timeline("edit", global_start_time=otio.opentime.RationalTime(START, 24))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(8, 24)))
    )
    timeline.tracks.append(track)
    request = ShotRequest("v0.i1.gap", "gap", "V1", 0, START + 2, 4, 24, prompt="A cat yawns.", name="sh010")
    with pytest.raises(PlacementError, match="no draft clip of job job-abc to replace"):
        swap_in_final(timeline, request, _result(tmp_path / "final", draft=False))

    draft = place_generated_shot(timeline, request, _result(tmp_path / "draft", draft=True))
    assert draft.metadata[METADATA_KEY]["draft"] is True and "[TTT draft job-abc]" in draft.name
    with pytest.raises(PlacementError, match="is a draft; swap in a final"):
        swap_in_final(timeline, request, _result(tmp_path / "other", draft=True))

    clip = swap_in_final(timeline, request, _result(tmp_path / "final", draft=False))
    assert clip is draft  # the same clip object, where the draft was
    path = tmp_path / "out.otio"
    otio.adapters.write_to_file(timeline, str(path))
    generated = otio.adapters.read_from_file(str(path)).tracks[-1]
    (back,) = generated.find_clips()
    assert generated.range_of_child(back).start_time.to_frames() == 2  # record START + 2
    assert back.media_reference.target_url_base.endswith("/final/")
    assert "draft" not in back.metadata[METADATA_KEY] and "[TTT job-abc]" in back.name
    with pytest.raises(PlacementError, match="no draft clip of job job-abc"):
        swap_in_final(timeline, request, _result(tmp_path / "final", draft=False))  # done once


# ------------------------------------------------------------------------------------------- Nuke


@pytest.fixture()
def _fresh_nuke() -> None:
    nuke.reset()
    ttt_nuke.JOBS.clear()


def _nuke_host(tmp_path: Path) -> Any:
    plate, _, _ = delivered_element(tmp_path / "plate_src")
    read = nuke.nodes.Read(file=plate[0].replace("1001", "####"), first=1001, last=1004)
    return ttt_nuke.NukeHost(read)


@pytest.mark.usefixtures("_fresh_nuke")
def test_nuke_swaps_the_draft_reads_file_and_label(tmp_path: Path) -> None:
    (draft,), (final,) = _draft_and_final(tmp_path / "shot")
    host = _nuke_host(tmp_path)
    name = host.place_sequence(draft, 1001, "TTT generated", MEDIA)
    host.mark_draft(name)
    read = nuke.toNode(name)
    assert read["label"].value().startswith("DRAFT\\n") and "/draft/" in read["file"].value()
    host.replace_media(name, [final], MEDIA)
    assert nuke.toNode(name) is read and read["file"].value() == final[0].replace("1001", "####")
    assert not read["label"].value().startswith("DRAFT") and (
        read["first"].value(),
        read["last"].value(),
    ) == (
        1001,
        1004,
    )
    assert [n.Class() for n in nuke.allNodes()].count("Read") == 2  # the plate's and this one
    with pytest.raises(HostError, match="placed 1 Read"):
        host.replace_media(name, [final, final], MEDIA)


@pytest.mark.usefixtures("_fresh_nuke")
def test_nuke_swaps_every_take_under_the_switch_and_the_element_in_its_node(tmp_path: Path) -> None:
    drafts, finals = _draft_and_final(tmp_path / "shot", takes=2)
    host = _nuke_host(tmp_path)
    switch = host.place_takes(drafts, 0, 1001, "TTT generated", MEDIA)
    host.mark_draft(switch)
    reads = [nuke.toNode(switch).input(i) for i in range(2)]
    assert all(r["label"].value().startswith("DRAFT") for r in reads)
    host.replace_media(switch, finals, MEDIA)
    assert [r["file"].value() for r in reads] == [f[0].replace("1001", "####") for f in finals]
    assert [nuke.toNode(switch).input(i) for i in range(2)] == reads

    plate, mattes, element = delivered_element(tmp_path / "el")
    merge = host.place_element([element], 0, 1001, 0, MEDIA, mattes)
    host.mark_draft(merge)
    host.replace_media(merge, [finals[0]], MEDIA)
    inside = [n for n in nuke.toNode(merge).input(1).nodes() if n.Class() == "Read"]
    assert [r["file"].value() for r in inside] == [finals[0][0].replace("1001", "####")]


# ------------------------------------------------------------------------------------------- Resolve


def _resolve_host() -> tuple[Any, ResolveHost]:
    app = fake.make_resolve(fps="24", start_frame=START)
    app.manager.project.timeline.add_clip(1, "plate", START, 48)
    return app, ResolveHost(app)


def test_resolve_replaces_the_draft_media_under_the_same_timeline_item(tmp_path: Path) -> None:
    (draft,), (final,) = _draft_and_final(tmp_path / "shot")
    app, host = _resolve_host()
    item = host.place_sequence(draft, START + 8, "TTT generated", MEDIA)
    host.mark_draft(item)
    assert item.GetClipColor() == "Orange" and _marker_data(item)["draft"] is True
    host.replace_media(item, [final], MEDIA)
    assert app.manager.project.timeline.GetItemListInTrack("video", 2) == [item]
    assert (item.GetStart(), item.GetDuration(), item.GetClipColor()) == (START + 8, 4, "")
    assert item.GetMediaPoolItem().GetClipProperty("File Path") == final[0].replace("1001", "%04d")
    assert _marker_data(item)["draft"] is False and _marker_data(item)["frames"].endswith(
        "/take_01/sh010.%04d.exr"
    )
    with pytest.raises(HostError, match="could not replace"):
        host.replace_media(item, [[str(tmp_path / "none" / "sh010.1001.exr")] * 4], MEDIA)


def test_resolve_replaces_every_take_in_the_take_selector(tmp_path: Path) -> None:
    drafts, finals = _draft_and_final(tmp_path / "shot", takes=3)
    _, host = _resolve_host()
    item = host.place_takes(drafts, 1, START, "TTT generated", MEDIA)
    host.mark_draft(item)
    host.replace_media(item, finals, MEDIA)
    paths = [item.GetTakeByIndex(i)["mediaPoolItem"].GetClipProperty("File Path") for i in (1, 2, 3)]
    assert paths == [f[0].replace("1001", "%04d") for f in finals]
    assert item.GetSelectedTakeIndex() == 2 and item.GetClipColor() == ""
    assert all(on_main for _, _, on_main in fake.CALLS)


# ------------------------------------------------------------------------------------------- end to end


class _Recording(ResolveHost):
    """The Resolve host, noting what the generated track held when the draft was marked and replaced."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.seen: list[tuple[str, list[tuple[int, int, str, str]]]] = []

    def _snapshot(self, what: str) -> None:
        track = self.timeline.GetTrackCount("video")
        items = self.timeline.GetItemListInTrack("video", track)
        self.seen.append(
            (
                what,
                [
                    (
                        i.GetStart(),
                        i.GetDuration(),
                        i.GetClipColor(),
                        i.GetMediaPoolItem().GetClipProperty("File Path"),
                    )
                    for i in items
                ],
            )
        )

    def mark_draft(self, handle: Any) -> None:
        super().mark_draft(handle)
        self._snapshot("draft")

    def replace_media(self, handle: Any, takes: list[list[str]], media: DeliveredMedia) -> None:
        super().replace_media(handle, takes, media)
        self._snapshot("final")


def _preview_job(server: Any, tmp_path: Path, steps: int) -> tuple[Any, _Recording, Any]:
    from hp_helpers import FAST, TOKEN

    from host_plugin.core.client import TTTClient
    from host_plugin.core.shot_job import GenerationSettings, ShotJob

    app = fake.make_resolve(fps="24", start_frame=START)
    app.manager.project.settings.update({"timelineResolutionWidth": "16", "timelineResolutionHeight": "16"})
    app.manager.project.timeline.add_clip(1, "plate", START, 48)
    host = _Recording(app)
    request = ShotRequest("stack.m0", "marker", "", -1, START + 12, 12, 24, prompt="A cat yawns.", name="cat")
    settings = GenerationSettings(
        str(tmp_path / "out"), **{**FAST, "steps": steps}, priority="preview", draft_steps=1, seed=3
    )
    job = ShotJob(host, [request], settings, lambda: TTTClient(server.address, token=TOKEN, retries=2))
    return app, host, job.start()


@pytest.mark.slow
def test_a_preview_job_places_its_draft_then_swaps_in_the_final(hp_server: Any, tmp_path: Path) -> None:
    _, host, job = _preview_job(hp_server, tmp_path, steps=4)
    assert job.wait(timeout=120) and job.state == "done", job.message
    (placed,) = job.placed
    assert not placed.draft and placed.result.seed == 3
    (when_draft, draft_items), (when_final, final_items) = host.seen  # marked once, replaced once
    assert (when_draft, when_final) == ("draft", "final")
    ((start, duration, colour, path),) = draft_items  # nothing else on the track, then or after
    assert (start, duration, colour) == (START + 12, 12, "Orange") and "/draft/" in path
    assert final_items == [(START + 12, 12, "", placed.paths[0].replace("1001", "%04d"))]
    assert "/draft/" not in placed.paths[0]
    draft_pixels, draft_header = read_exr(path % 1001)
    final_pixels, final_header = read_exr(placed.paths[0])
    assert int(draft_header["ttt_studio/draft"]) == 1 and int(final_header["ttt_studio/draft"]) == 0
    assert draft_pixels.shape == final_pixels.shape == (16, 16, 4)
    assert _marker_data(placed.handle)["draft"] is False


@pytest.mark.slow
def test_a_job_cancelled_after_its_draft_leaves_the_draft_placed_and_marked(
    hp_server: Any, tmp_path: Path
) -> None:
    from hp_helpers import TOKEN

    from host_plugin.core.client import TTTClient

    _, host, job = _preview_job(hp_server, tmp_path, steps=200)  # a final of 10 s on the slowed server
    while job.pump() and not job.placed:
        time.sleep(0.02)
    job.cancel()
    assert job.wait(timeout=60) and job.state == "cancelled", job.message
    (placed,) = job.placed
    assert placed.draft and "/draft/" in placed.paths[0]
    assert [what for what, _ in host.seen] == ["draft"]
    item = placed.handle
    assert item.GetClipColor() == "Orange" and _marker_data(item)["draft"] is True
    with TTTClient(hp_server.address, token=TOKEN) as client:
        state = client.get_job(placed.result.job_id)
    assert state.state == "cancelled" and state.takes[0].draft_complete


@pytest.mark.slow
def test_an_element_of_two_takes_lands_as_a_draft_then_its_finals(hp_server: Any, tmp_path: Path) -> None:
    """A preview element job of two takes over a plate with a matte (the real server): the draft of both
    takes lands on the element track in one take selector, marked; the finals replace both in place; each
    take carries the matte as alpha and the two differ inside it."""
    import numpy as np
    from hp_helpers import FAST, TOKEN

    from host_plugin.core.client import TTTClient
    from host_plugin.core.shot_job import GenerationSettings, Plates, ShotJob

    plate, mattes, _ = delivered_element(tmp_path / "src", frames=12, size=(16, 16))
    app = fake.make_resolve(fps="24", start_frame=START)
    app.manager.project.settings.update({"timelineResolutionWidth": "16", "timelineResolutionHeight": "16"})
    app.manager.project.timeline.add_clip(1, "plate", START, 48)
    host = _Recording(app)
    request = ShotRequest("v0.i0", "clip", "V1", 0, START + 4, 12, 24, prompt="A red ball.", name="ball")
    settings = GenerationSettings(
        str(tmp_path / "out"), **{**FAST, "steps": 3}, priority="preview", draft_steps=1, seed=3, takes=2
    )
    plates = {request.id: Plates(tuple(plate), "element", 1.0, mattes=tuple(mattes))}
    job = ShotJob(host, [request], settings, lambda: TTTClient(hp_server.address, token=TOKEN), plates=plates)
    assert job.start().wait(timeout=180) and job.state == "done", job.message
    (placed,) = job.placed
    item = placed.handle
    assert [what for what, _ in host.seen] == ["draft", "final"]
    assert host.timeline.GetTrackName("video", host.timeline.GetTrackCount("video")) == "TTT element"
    ((_, _, colour, draft_path),) = host.seen[0][1]
    assert colour == "Orange" and "/draft/take_01/" in draft_path
    assert [i.GetUniqueId() for i in host.timeline.GetItemListInTrack("video", 2)] == [item.GetUniqueId()]
    assert item.GetTakesCount() == 2 and item.GetClipColor() == ""
    finals = [item.GetTakeByIndex(i)["mediaPoolItem"] for i in (1, 2)]
    assert [m.GetClipProperty("Alpha mode") for m in finals] == ["Premultiplied"] * 2
    pictures = [read_exr(m.GetClipProperty("File Path") % 1006)[0] for m in finals]
    assert [p.shape for p in pictures] == [(16, 16, 4)] * 2
    alpha = pictures[0][..., 3]
    np.testing.assert_array_equal(alpha, pictures[1][..., 3])  # the same matte for every take
    assert alpha[:, 0].min() > 0.99 and alpha[:, -1].max() < 0.01  # the matte's left half
    inside = alpha > 0.99
    assert float(np.abs(pictures[0][inside, :3] - pictures[1][inside, :3]).mean()) > 1e-3


@pytest.mark.usefixtures("_fresh_nuke")
def test_the_nuke_panel_asks_for_a_draft_first_through_its_priority(tmp_path: Path) -> None:
    from host_plugin.hosts.nuke.panel import GeneratePanel

    plate, _, _ = delivered_element(tmp_path / "plate_src")
    panel = GeneratePanel(nuke.nodes.Read(file=plate[0].replace("1001", "####"), first=1001, last=1004))
    knobs = panel.knobs()
    assert knobs["priority"].values() == ["final", "preview"]
    knobs["segment0"].setValue("A red ball rolls.")
    assert panel.options().generation.priority == "final"
    knobs["priority"].setValue("preview")
    assert panel.options().generation.priority == "preview"


def test_a_draft_is_fetchable_once_its_frames_are_stored_before_the_server_marks_it_complete() -> None:
    """The draft's last FramesReady event comes a moment before the take reads draft_complete: a client
    acting on the event must find the draft fetchable (every frame stored), and not before."""
    take = TakeState(index=1, seed=8, state="decoding", total_frames=12)
    assert not take.draft_stored
    assert not TakeState(
        index=1, seed=8, state="decoding", total_frames=12, draft_frames_ready=11
    ).draft_stored
    assert TakeState(index=1, seed=8, state="decoding", total_frames=12, draft_frames_ready=12).draft_stored
    assert TakeState(index=1, seed=8, state="queued", total_frames=12, draft_complete=True).draft_stored
    assert not TakeState(index=1, seed=8, state="queued", total_frames=0, draft_frames_ready=0).draft_stored
