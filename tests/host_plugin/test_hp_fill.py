"""fill_timeline end to end: a real OTIO file in, real EXR sequences generated, the filled OTIO out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest

from host_plugin.core.errors import FillError
from host_plugin.core.exr_io import read_exr, write_sequence
from host_plugin.core.placement import DEFAULT_MEDIA_KEY, ShotResult, file_url_to_path
from host_plugin.core.requests import ShotRequest, find_shot_requests, is_generated_track
from host_plugin.fill import fill_timeline, read_timeline

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
HOUR = 86400


def _range(start: float, duration: float, rate: float) -> otio.opentime.TimeRange:
    return TR(RT(start, rate), RT(duration, rate))


def write_edit(path: Path, rate: float = 23.976) -> Path:
    tl = otio.schema.Timeline("edit", global_start_time=RT(HOUR, rate))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(source_range=_range(0, 6, rate), metadata={"ttt_studio": {"prompt": "sunrise"}})
    )
    track.append(
        otio.schema.Clip(
            "A", otio.schema.ExternalReference("file:///m/a.mov", _range(0, 30, rate)), _range(0, 30, rate)
        )
    )
    track.append(otio.schema.Gap(source_range=_range(0, 4, rate)))  # plain gap
    track.markers.append(
        otio.schema.Marker(
            "shot", _range(40, 5, rate), metadata={"ttt_studio": {"storyboard": [{"text": "a boat"}]}}
        )
    )
    tl.tracks.append(track)
    otio.adapters.write_to_file(tl, str(path))
    return path


class Generator:
    """Writes a tiny real EXR sequence per request, as the server's result would arrive."""

    def __init__(self, root: Path, fail_on: str = "") -> None:
        self.root = root
        self.fail_on = fail_on
        self.calls: list[str] = []

    def __call__(self, request: ShotRequest) -> ShotResult:
        self.calls.append(request.id)
        if request.id == self.fail_on:
            raise RuntimeError("GPU out of memory")
        job = f"job{len(self.calls)}"
        frames = (np.full((4, 6, 4), i / 10.0, np.float32) for i in range(request.duration))
        directory = self.root / job
        write_sequence(directory, "gen.", frames, start=1001, attributes={"ttt_studio/job_id": job})
        return ShotResult(
            request.id, job, str(directory), "gen.", request.duration, request.rate, model="tiny"
        )


def test_fill_places_every_request_and_writes_out(tmp_path: Path) -> None:
    src = write_edit(tmp_path / "in.otio")
    out = tmp_path / "out.otio"
    gen = Generator(tmp_path / "gen")
    report = fill_timeline(src, out, gen)

    assert gen.calls == ["v0.m0", "v0.i0.gap"]
    assert [r.request_id for r in report.results] == gen.calls
    filled = otio.adapters.read_from_file(str(out))
    track = [t for t in filled.video_tracks() if is_generated_track(t)][0]
    clips = {c.metadata["ttt_studio"]["request_id"]: c for c in track.find_clips()}
    for request in report.requests:
        clip = clips[request.id]
        start = filled.global_start_time.value + clip.range_in_parent().start_time.value_rescaled_to(
            24000 / 1001
        )
        assert (round(start), clip.source_range.duration.value) == (request.record_start, request.duration)
        seq = clip.media_references()[DEFAULT_MEDIA_KEY]
        last = file_url_to_path(seq.target_url_for_image_number(request.duration - 1))
        pixels, header = read_exr(last)  # the URL leads to the real last frame
        assert header["ttt_studio/job_id"] == clip.metadata["ttt_studio"]["job_id"]
        assert np.allclose(pixels[..., 0], (request.duration - 1) / 10.0, atol=1e-3)
    assert json.loads(json.dumps(report.to_dict()))["requests"][0]["id"] == "v0.m0"
    # filling the output again finds nothing left to do
    assert find_shot_requests(filled) == []


def test_include_plain_gaps(tmp_path: Path) -> None:
    gen = Generator(tmp_path / "gen")
    fill_timeline(write_edit(tmp_path / "in.otio"), tmp_path / "out.otio", gen, include_plain_gaps=True)
    assert gen.calls == ["v0.m0", "v0.i0.gap", "v0.i2.gap"]


def test_failed_request_writes_nothing(tmp_path: Path) -> None:
    src = write_edit(tmp_path / "in.otio")
    out = tmp_path / "out.otio"
    out.write_text("previous output")
    with pytest.raises(
        FillError,
        match=r"request v0.i0.gap \(gap '' at 01:00:00:00\): generate failed: "
        r"RuntimeError: GPU out of memory",
    ):
        fill_timeline(src, out, Generator(tmp_path / "gen", fail_on="v0.i0.gap"))
    assert out.read_text() == "previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen", "in.otio", "out.otio"]  # no temp files left


def test_missing_result_frames_are_an_error(tmp_path: Path) -> None:
    src = write_edit(tmp_path / "in.otio")

    def lazy(request: ShotRequest) -> ShotResult:
        return ShotResult(
            request.id, "ghost", str(tmp_path / "nowhere"), "gen.", request.duration, request.rate
        )

    with pytest.raises(
        FillError, match=r"result 'ghost' is missing 5 of 5 frames, first .*nowhere/gen.1001.exr"
    ):
        fill_timeline(src, tmp_path / "out.otio", lazy)
    assert not (tmp_path / "out.otio").exists()


def _timeline_json(tracks: dict) -> str:
    return json.dumps({"OTIO_SCHEMA": "Timeline.1", "name": "t", "tracks": tracks})


_BOGUS_CHILD = {"OTIO_SCHEMA": "Track.1", "kind": "Video", "children": [{"OTIO_SCHEMA": "Bogus.1"}]}
MALFORMED = {
    "bad-json": ("{not json", r"bad JSON at line 1 column 2"),
    "empty": ("", r"bad JSON at line 1 column 1: Expecting value"),
    "json-list": ("[1, 2]", r"top-level JSON list has no OTIO_SCHEMA key"),
    "no-schema": ('{"name": "t"}', r"top-level JSON dict has no OTIO_SCHEMA key"),
    "clip": (
        otio.schema.Clip(name="x").to_json_string(),
        r"top-level OTIO_SCHEMA is 'Clip.2', expected 'Timeline.1'",
    ),
    "unknown-top": ('{"OTIO_SCHEMA": "Mystery.1", "name": "t"}', r"top-level OTIO_SCHEMA is 'Mystery.1'"),
    "unknown-child": (
        _timeline_json({"OTIO_SCHEMA": "Stack.1", "children": [_BOGUS_CHILD]}),
        r"unknown OTIO schema 'Bogus.1' at timeline.tracks.children\[0\].children\[0\]",
    ),
    "newer-schema": (
        _timeline_json({"OTIO_SCHEMA": "Stack.1", "markers": [{"OTIO_SCHEMA": "Marker.3", "name": "m"}]}),
        r"schema 'Marker.3' at timeline.tracks.markers\[0\] is newer than opentimelineio",
    ),
    "track-as-stack": (
        _timeline_json({"OTIO_SCHEMA": "Track.1", "name": "V1", "kind": "Video", "children": []}),
        r"not a readable OTIO file: ValueError: type mismatch .*Expected object of type .*Stack",
    ),
}


@pytest.mark.parametrize("content, match", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_otio_files_are_named(tmp_path: Path, content: str, match: str) -> None:
    src = tmp_path / "broken.otio"
    src.write_text(content)
    with pytest.raises(FillError, match=match) as info:
        fill_timeline(src, tmp_path / "out.otio", Generator(tmp_path / "gen"))
    assert str(src) in str(info.value)
    assert not (tmp_path / "out.otio").exists()


def test_missing_input_and_bad_requests_are_named(tmp_path: Path) -> None:
    with pytest.raises(FillError, match="no such OTIO file"):
        read_timeline(str(tmp_path / "absent.otio"))
    tl = otio.schema.Timeline("t", global_start_time=RT(0, 24))
    track = otio.schema.Track("V1")
    track.append(otio.schema.Gap(source_range=_range(0, 10, 24)))
    track.markers.append(otio.schema.Marker("empty", _range(0, 5, 24), metadata={"ttt_studio": {"seed": 1}}))
    tl.tracks.append(track)
    src = tmp_path / "bad_marker.otio"
    otio.adapters.write_to_file(tl, str(src))
    with pytest.raises(
        FillError, match=r"bad_marker.otio: marker 'empty' .* needs a 'storyboard' list or a 'prompt'"
    ):
        fill_timeline(src, tmp_path / "out.otio", Generator(tmp_path / "gen"))
