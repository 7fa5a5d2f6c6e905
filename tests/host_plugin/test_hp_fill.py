"""fill_timeline end to end: a real OTIO file in, real EXR sequences generated, the filled OTIO out."""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_plugin.core.errors import FillError
from host_plugin.core.exr_io import read_exr, write_sequence
from host_plugin.core.placement import DEFAULT_MEDIA_KEY, ShotResult, file_url_to_path
from host_plugin.core.requests import ShotRequest, find_shot_requests, is_generated_track
from host_plugin.fill import OtioLimits, fill_timeline, prescan_otio_json, read_timeline

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


def test_a_failed_request_is_reported_and_the_others_are_placed(tmp_path: Path) -> None:
    """Before: one failure raised and wrote nothing, leaving the frames of the shots made before it."""
    src = write_edit(tmp_path / "in.otio")
    out = tmp_path / "out.otio"
    report = fill_timeline(src, out, Generator(tmp_path / "gen", fail_on="v0.i0.gap"))
    assert not report.ok
    assert [(f.request_id, f.message) for f in report.failures] == [
        ("v0.i0.gap", "request v0.i0.gap (gap '' at 01:00:00:00): RuntimeError: GPU out of memory")
    ]
    assert [r.request_id for r in report.results] == ["v0.m0"]
    filled = otio.adapters.read_from_file(str(out))
    assert [r.id for r in find_shot_requests(filled)] == ["v0.i0.gap"]  # only the failed one is left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ttt_fill_")]  # no temp files left


def test_a_rerun_keeps_what_was_placed_and_does_the_rest(tmp_path: Path) -> None:
    src = write_edit(tmp_path / "in.otio")
    out = tmp_path / "out.otio"
    fill_timeline(src, out, Generator(tmp_path / "gen", fail_on="v0.i0.gap"))
    again = Generator(tmp_path / "gen2")
    report = fill_timeline(src, out, again)
    assert report.ok and again.calls == ["v0.i0.gap"]  # the marker's shot is not generated again
    assert report.carried == ["v0.m0"]
    filled = otio.adapters.read_from_file(str(out))
    jobs = {
        c.metadata["ttt_studio"]["request_id"]: c.metadata["ttt_studio"]["job_id"]
        for t in filled.video_tracks()
        if is_generated_track(t)
        for c in t.find_clips()
    }
    assert jobs == {"v0.m0": "job1", "v0.i0.gap": "job1"}  # first run's job1 kept, second run's job1 added
    assert find_shot_requests(filled) == []
    # frames of a kept shot that were deleted since are generated again
    for frame in (tmp_path / "gen2" / "job1").iterdir():
        frame.unlink()
    third = Generator(tmp_path / "gen3")
    assert fill_timeline(src, out, third).ok and third.calls == ["v0.i0.gap"]
    # --no-resume starts over
    fourth = Generator(tmp_path / "gen4")
    fill_timeline(src, out, fourth, resume=False)
    assert fourth.calls == ["v0.m0", "v0.i0.gap"]


def test_no_keep_going_stops_at_the_first_failure(tmp_path: Path) -> None:
    src = write_edit(tmp_path / "in.otio")
    gen = Generator(tmp_path / "gen", fail_on="v0.m0")
    report = fill_timeline(src, tmp_path / "out.otio", gen, keep_going=False)
    assert gen.calls == ["v0.m0"]
    assert [f.request_id for f in report.failures] == ["v0.m0", "v0.i0.gap"]
    assert report.failures[1].message.endswith("not tried (stopped at v0.m0)")


def test_an_unreadable_output_is_not_overwritten_while_resuming(tmp_path: Path) -> None:
    src = write_edit(tmp_path / "in.otio")
    out = tmp_path / "out.otio"
    out.write_text("previous output")
    with pytest.raises(FillError, match="it is the output of this fill: remove it, or pass --no-resume"):
        fill_timeline(src, out, Generator(tmp_path / "gen"))
    assert out.read_text() == "previous output"
    assert fill_timeline(src, out, Generator(tmp_path / "gen"), resume=False).ok


def test_missing_result_frames_are_a_failure(tmp_path: Path) -> None:
    src = write_edit(tmp_path / "in.otio")

    def lazy(request: ShotRequest) -> ShotResult:
        return ShotResult(
            request.id, "ghost", str(tmp_path / "nowhere"), "gen.", request.duration, request.rate
        )

    report = fill_timeline(src, tmp_path / "out.otio", lazy)
    assert [f.request_id for f in report.failures] == ["v0.m0", "v0.i0.gap"]
    assert re.search(
        r"result 'ghost' is missing 5 of 5 frames, first .*nowhere/gen.1001.exr", report.failures[0].message
    )
    assert find_shot_requests(otio.adapters.read_from_file(str(tmp_path / "out.otio")))  # nothing placed


def _timeline_json(tracks: dict) -> str:
    return json.dumps({"OTIO_SCHEMA": "Timeline.1", "name": "t", "tracks": tracks})


_BOGUS_CHILD = {"OTIO_SCHEMA": "Track.1", "kind": "Video", "children": [{"OTIO_SCHEMA": "Bogus.1"}]}
MALFORMED = {  # what OTIO itself says, with the file named
    "bad-json": ("{not json", r"not a readable OTIO file: .*Missing a name for object member"),
    "empty": ("", r"not a readable OTIO file: .*The document is empty"),
    "json-list": ("[1, 2]", r"holds a JSON list without OTIO_SCHEMA, expected a Timeline"),
    "no-schema": ('{"name": "t"}', r"holds a JSON object without OTIO_SCHEMA, expected a Timeline"),
    "clip": (otio.schema.Clip(name="x").to_json_string(), r"holds a Clip.2, expected a Timeline"),
    "unknown-top": (
        '{"OTIO_SCHEMA": "Mystery.1", "name": "t"}',
        r"holds a Mystery.1 \(a schema this OTIO does not",
    ),
    "unknown-child": (
        _timeline_json({"OTIO_SCHEMA": "Stack.1", "children": [_BOGUS_CHILD]}),
        r"not a readable OTIO file: ValueError: type mismatch .*UnknownSchema",
    ),
    "newer-schema": (
        _timeline_json({"OTIO_SCHEMA": "Stack.1", "markers": [{"OTIO_SCHEMA": "Marker.3", "name": "m"}]}),
        r"not a readable OTIO file: UnsupportedSchemaError: unsupported schema version",
    ),
    "track-as-stack": (
        _timeline_json({"OTIO_SCHEMA": "Track.1", "name": "V1", "kind": "Video", "children": []}),
        r"not a readable OTIO file: ValueError: type mismatch .*Expected object of type .*Stack",
    ),
    "deep-lists": ("[" * 100_000, r"JSON nested deeper than 512 levels \(at byte 512\)"),
    "deep-objects": ('{"a":' * 600, r"JSON nested deeper than 512 levels \(at byte 2560\)"),
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
    track.append(otio.schema.Gap(source_range=_range(0, 10, 24), metadata={"ttt_studio": {"prompt": "ok"}}))
    track.markers.append(otio.schema.Marker("empty", _range(0, 5, 24), metadata={"ttt_studio": {"seed": 1}}))
    tl.tracks.append(track)
    src = tmp_path / "bad_marker.otio"
    otio.adapters.write_to_file(tl, str(src))
    gen = Generator(tmp_path / "gen")
    report = fill_timeline(src, tmp_path / "out.otio", gen)
    (failure,) = report.failures  # refused with the reason; the good request is still made
    assert failure.request_id == "v0.m0"
    assert re.search(r"marker 'empty' .* needs a 'storyboard' list or a 'prompt'", failure.message)
    assert gen.calls == ["v0.i0.gap"]
    # without keep-going a refusal stops the fill before anything is generated
    stopped = Generator(tmp_path / "gen2")
    report = fill_timeline(src, tmp_path / "out2.otio", stopped, keep_going=False)
    assert stopped.calls == [] and not report.written and not (tmp_path / "out2.otio").exists()


def _gap_edit_text() -> str:
    tl = otio.schema.Timeline("t", global_start_time=RT(0, 24))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(source_range=_range(0, 4, 24), metadata={"ttt_studio": {"prompt": 'a [b] {c} \\" ['}})
    )
    tl.tracks.append(track)
    return otio.adapters.write_to_string(tl)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda t: t.replace('"Track.1"', '"Sequence.1"'), id="Sequence.1"),
        pytest.param(
            lambda t: t.replace('"metadata": {}', '"metadata": {"peak": Inf, "floor": -Inf}', 1), id="Inf"
        ),
        pytest.param(lambda t: t.replace('"metadata": {}', '"metadata": {"nan": NaN}', 1), id="NaN"),
    ],
)
def test_what_otio_reads_is_accepted(tmp_path: Path, edit) -> None:
    """Before: a JSON pre-check refused files that OTIO itself reads (Inf, NaN, the Sequence.1 alias)."""
    text = edit(_gap_edit_text())
    assert text != _gap_edit_text()
    otio.adapters.read_from_string(text)  # OTIO reads it
    src = tmp_path / "edit.otio"
    src.write_text(text)
    gen = Generator(tmp_path / "gen")
    assert fill_timeline(src, tmp_path / "out.otio", gen).ok and gen.calls == ["v0.i0.gap"]


def test_prescan_counts_brackets_outside_strings_across_chunks(tmp_path: Path) -> None:
    """Brackets inside strings (escaped quotes included) do not count, whatever the chunk boundaries."""
    src = tmp_path / "edit.otio"
    src.write_text(_gap_edit_text())
    depth = _json_depth(json.loads(src.read_text()))
    for chunk in (1, 2, 3, 7, 64):
        prescan_otio_json(str(src), OtioLimits(max_depth=depth, chunk_bytes=chunk))
        with pytest.raises(FillError, match=f"nested deeper than {depth - 1} levels"):
            prescan_otio_json(str(src), OtioLimits(max_depth=depth - 1, chunk_bytes=chunk))
    with pytest.raises(FillError, match=r"\d+ bytes; an OTIO edit read by ttt-studio may have at most 100"):
        read_timeline(str(src), OtioLimits(max_bytes=100))


def _json_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_json_depth(v) for v in value), default=0)
    return 0


_JSON_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.text(alphabet='ab[]{}"\\\\ \u00e9\u4e2d', max_size=6)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(alphabet='k[]{}"\\\\', max_size=3), inner, max_size=3),
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=timedelta(seconds=5), database=None)
@given(_JSON_VALUES, st.integers(1, 17), st.booleans())
def test_prescan_depth_matches_the_json_depth(value: object, chunk: int, ascii_only: bool) -> None:
    """Any JSON text (strings full of brackets, quotes, backslashes and multi-byte characters), read in
    chunks of any size: the pre-scan measures exactly its nesting depth. 100 examples, about a second."""
    depth = _json_depth(value)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "doc.otio")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(value, ensure_ascii=ascii_only))
        prescan_otio_json(path, OtioLimits(max_depth=depth, chunk_bytes=chunk))
        if depth:
            with pytest.raises(FillError, match=f"nested deeper than {depth - 1} levels"):
                prescan_otio_json(path, OtioLimits(max_depth=depth - 1, chunk_bytes=chunk))
