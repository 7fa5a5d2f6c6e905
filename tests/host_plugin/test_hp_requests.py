"""Finding shot requests in OTIO edits built with the real opentimelineio API, written and read back."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_plugin.core.errors import FillError, RequestError
from host_plugin.core.requests import (
    SOURCE_LONG_CLIPS,
    ShotRequest,
    find_shot_requests,
    scan_shot_requests,
    timeline_rate,
)
from host_plugin.fill import read_timeline

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
HOUR = 86400  # 01:00:00:00 at 24 and at 24000/1001 (non-drop)

# exact rate, and the rate as tools write it into the file (Resolve writes 23.976)
RATES = {"24": (Fraction(24), 24.0), "23.976": (Fraction(24000, 1001), 23.976)}

STORYBOARD = [
    {"text": "a fox runs through snow", "neg_text": "blurry", "requires_scene_transition": False},
    {"text": "the fox jumps into a river", "neg_text": "", "requires_scene_transition": True},
]


def _range(start: float, duration: float, rate: float) -> otio.opentime.TimeRange:
    return TR(RT(start, rate), RT(duration, rate))


def build_edit(written: float) -> otio.schema.Timeline:
    """V1: [ttt gap 48 @0 | clip 100 | plain gap 24 | clip asking 150 of 100 media frames | clip 60 w/ marker]
    V2: [Resolve-style gap 200 (source starts at 3000) w/ marker | clip 50], a ttt marker on V2, one on the
    stack."""
    r = written
    tl = otio.schema.Timeline("edit", global_start_time=RT(HOUR, r))
    v1 = otio.schema.Track("V1", kind=otio.schema.TrackKind.Video)
    gap = otio.schema.Gap(name="opening", source_range=_range(0, 48, r))
    gap.metadata["ttt_studio"] = {"prompt": "an empty street at dawn"}
    v1.append(gap)
    v1.append(
        otio.schema.Clip(
            "A", otio.schema.ExternalReference("file:///m/a.mov", _range(0, 500, r)), _range(10, 100, r)
        )
    )
    v1.append(otio.schema.Gap(source_range=_range(0, 24, r)))
    v1.append(
        otio.schema.Clip(
            "B", otio.schema.ExternalReference("file:///m/b.mov", _range(1000, 100, r)), _range(1000, 150, r)
        )
    )
    clip_c = otio.schema.Clip(
        "C", otio.schema.ExternalReference("file:///m/c.mov", _range(0, 500, r)), _range(200, 60, r)
    )
    # marker in the clip's own (source) time: 210..230 is 10 frames into the clip
    clip_c.markers.append(
        otio.schema.Marker(
            "fox", _range(210, 20, r), metadata={"ttt_studio": {"storyboard": STORYBOARD, "seed": 7}}
        )
    )
    clip_c.markers.append(otio.schema.Marker("note without ttt metadata", _range(200, 1, r)))
    v1.append(clip_c)
    v2 = otio.schema.Track("V2", kind=otio.schema.TrackKind.Video)
    resolve_gap = otio.schema.Gap(source_range=_range(3000, 200, r))  # Resolve: gap ranges don't start at 0
    # a marker in the gap's own time: 3020 is 20 frames into the gap
    resolve_gap.markers.append(
        otio.schema.Marker("in gap", _range(3020, 12, r), metadata={"ttt_studio": {"prompt": "fog"}})
    )
    v2.append(resolve_gap)
    v2.append(
        otio.schema.Clip(
            "D", otio.schema.ExternalReference("file:///m/d.mov", _range(0, 50, r)), _range(0, 50, r)
        )
    )
    v2.markers.append(
        otio.schema.Marker(
            "track shot", _range(300, 36, r), metadata={"ttt_studio": {"prompt": "rain on glass"}}
        )
    )
    audio = otio.schema.Track("A1", kind=otio.schema.TrackKind.Audio)
    audio.append(
        otio.schema.Gap(source_range=_range(0, 40, r), metadata={"ttt_studio": {"prompt": "ignored"}})
    )
    tl.tracks.extend([v1, v2, audio])
    tl.tracks.markers.append(
        otio.schema.Marker(
            "timeline shot", _range(500, 24, r), metadata={"ttt_studio": {"storyboard": STORYBOARD[:1]}}
        )
    )
    return tl


def round_trip(tl: otio.schema.Timeline, tmp_path: Path) -> otio.schema.Timeline:
    path = tmp_path / "edit.otio"
    otio.adapters.write_to_file(tl, str(path))
    return otio.adapters.read_from_file(str(path))


@pytest.mark.parametrize("rate_name", RATES)
def test_requests_of_every_kind_at_absolute_frames(rate_name: str, tmp_path: Path) -> None:
    exact, written = RATES[rate_name]
    tl = round_trip(build_edit(written), tmp_path)
    assert timeline_rate(tl) == exact
    scan = scan_shot_requests(tl, sources=[SOURCE_LONG_CLIPS])
    got = {r.id: r for r in scan.requests}
    # the prompt on the audio track is refused with a reason, not dropped
    assert [(r.id, "audio track 'A1'" in r.message) for r in scan.refused] == [("a0.i0.gap", True)]
    # (kind, track, absolute start, duration): positions summed by hand from build_edit
    expected = {
        "stack.m0": ("marker", -1, HOUR + 500, 24),
        "v0.i0.gap": ("gap", 0, HOUR + 0, 48),
        "v0.i3.clip": ("clip", 0, HOUR + 48 + 100 + 24, 150),
        "v0.i4.m0": ("marker", 0, HOUR + 48 + 100 + 24 + 150 + 10, 20),
        "v1.m0": ("marker", 1, HOUR + 300, 36),
        "v1.i0.m0": ("marker", 1, HOUR + 20, 12),
    }
    assert {k: (r.kind, r.track_index, r.record_start, r.duration) for k, r in got.items()} == expected
    assert all(r.rate == exact for r in got.values())
    assert got["v0.i0.gap"].prompt == "an empty street at dawn"
    assert got["v0.i0.gap"].record_timecode == "01:00:00:00"
    assert got["v0.i4.m0"].storyboard == STORYBOARD
    assert got["v0.i4.m0"].metadata["seed"] == 7
    assert got["v0.i3.clip"].metadata["missing_after"] == 50
    assert got["v1.m0"].track_name == "V2"


@pytest.mark.parametrize("rate_name", RATES)
def test_plain_gaps_only_on_request(rate_name: str, tmp_path: Path) -> None:
    _, written = RATES[rate_name]
    tl = round_trip(build_edit(written), tmp_path)
    plain_ids = {r.id for r in scan_shot_requests(tl, sources=["gaps"]).requests} - {
        r.id for r in scan_shot_requests(tl).requests
    }
    assert plain_ids == {"v0.i2.gap", "v1.i0.gap"}
    by_id = {r.id: r for r in scan_shot_requests(tl, sources=["gaps"]).requests}
    assert (by_id["v0.i2.gap"].record_start, by_id["v0.i2.gap"].duration) == (HOUR + 148, 24)
    # the Resolve-style gap (source range from 3000) still sits at the track start
    assert (by_id["v1.i0.gap"].record_start, by_id["v1.i0.gap"].duration) == (HOUR, 200)


def test_ids_are_stable_across_reads(tmp_path: Path) -> None:
    tl = build_edit(23.976)
    first = [r.to_dict() for r in scan_shot_requests(tl).requests]
    again = [r.to_dict() for r in scan_shot_requests(round_trip(tl, tmp_path)).requests]
    assert first == again


def test_shot_request_dict_round_trip() -> None:
    for request in scan_shot_requests(build_edit(23.976), sources=["gaps", SOURCE_LONG_CLIPS]).requests:
        data = json.loads(json.dumps(request.to_dict()))
        assert ShotRequest.from_dict(data) == request


def test_clip_from_resolve_with_unrescaled_media_rate_is_rounded() -> None:
    """Resolve keeps a 24 fps clip's source range at 24 inside a 23.976 timeline: 100 frames stay 100."""
    tl = otio.schema.Timeline("resolve", global_start_time=RT(HOUR, 23.976))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Clip(
            "24p", otio.schema.ExternalReference("file:///m/x.mov", _range(0, 100, 24)), _range(0, 100, 24)
        )
    )
    track.append(otio.schema.Gap(source_range=_range(0, 12, 23.976), metadata={"ttt_studio": {}}))
    tl.tracks.append(track)
    (request,) = find_shot_requests(tl)
    assert request.record_start == HOUR + 100
    assert (request.prompt, request.storyboard) == (None, [])  # ttt gap without text: the UI adds it later


def test_nested_stack_requests_inside_the_visible_window() -> None:
    inner = otio.schema.Track("inner")
    for name in ("a", "b", "c"):
        inner.append(
            otio.schema.Gap(
                name=name, source_range=_range(0, 20, 24), metadata={"ttt_studio": {"prompt": f"shot {name}"}}
            )
        )
    nest = otio.schema.Stack("nest", source_range=_range(20, 20, 24))  # shows only inner frames 20..40
    nest.append(inner)
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Clip(
            "lead", otio.schema.ExternalReference("file:///m/l.mov", _range(0, 10, 24)), _range(0, 10, 24)
        )
    )
    track.append(nest)
    tl = otio.schema.Timeline("nested", global_start_time=RT(HOUR, 24))
    tl.tracks.append(track)
    (request,) = find_shot_requests(tl)
    assert (request.id, request.prompt, request.record_start, request.duration) == (
        "v0.i1.t0.i1.gap",
        "shot b",
        HOUR + 10,
        20,
    )

    nest.source_range = _range(10, 20, 24)  # now gap a and b are each half visible
    with pytest.raises(RequestError, match="only partly visible through nested Stack 'nest'"):
        find_shot_requests(tl)


def test_timeline_without_start_time_uses_item_rate() -> None:
    tl = otio.schema.Timeline("no start")
    track = otio.schema.Track("V1")
    track.append(otio.schema.Gap(source_range=_range(0, 5, 25)))
    track.append(otio.schema.Gap(source_range=_range(0, 5, 25), metadata={"ttt_studio": {"prompt": "x"}}))
    tl.tracks.append(track)
    (request,) = find_shot_requests(tl)
    assert (request.rate, request.record_start) == (25, 5)


def _marker_edit(meta: object, duration: int = 10) -> otio.schema.Timeline:
    tl = otio.schema.Timeline("m", global_start_time=RT(HOUR, 24))
    track = otio.schema.Track("V1")
    track.append(otio.schema.Gap(source_range=_range(0, 100, 24)))
    track.markers.append(
        otio.schema.Marker("bad shot", _range(0, duration, 24), metadata={"ttt_studio": meta})
    )
    tl.tracks.append(track)
    return tl


@pytest.mark.parametrize(
    "meta, duration, match",
    [
        ({"seed": 1}, 10, "needs a 'storyboard' list or a 'prompt' string"),
        ({"prompt": "x"}, 0, "needs a duration of at least 1 frame"),
        ({"prompt": "x", "storyboard": STORYBOARD}, 10, "both 'storyboard' and 'prompt'"),
        ({"storyboard": "not a list"}, 10, "storyboard must be a list"),
        ({"storyboard": [{"txt": "typo"}]}, 10, r"unknown keys \['txt'\]"),
        ({"storyboard": [{"text": ""}]}, 10, r"\['text'\] must be a non-empty string"),
        ({"storyboard": [{"text": "a", "requires_scene_transition": "yes"}]}, 10, "must be true/false"),
        ({"storyboard": []}, 10, "storyboard'] is empty"),
        ("just a string", 10, r"metadata\['ttt_studio'\] must be a dict"),
    ],
)
def test_malformed_marker_requests_are_named(meta, duration, match) -> None:
    with pytest.raises(RequestError, match=match) as info:
        find_shot_requests(_marker_edit(meta, duration))
    assert "bad shot" in str(info.value)


def test_not_a_timeline_is_refused() -> None:
    with pytest.raises(RequestError, match="expected an opentimelineio Timeline, got Clip"):
        find_shot_requests(otio.schema.Clip("x"))


def _media_clip(
    name: str, media: otio.core.MediaReference, source: otio.opentime.TimeRange
) -> otio.schema.Clip:
    return otio.schema.Clip(name, media, source)


def _held_items_edit() -> otio.schema.Timeline:
    """V1: a title (generator, 1 frame of media held 72) | a still png held 48 | a freeze frame 24 past its
    media | a clip 30 past its media | the same with a prompt."""
    tl = otio.schema.Timeline("held", global_start_time=RT(HOUR, 24))
    track = otio.schema.Track("V1")
    title = otio.schema.GeneratorReference(
        "Title 01", "Text", available_range=_range(0, 1, 24), parameters={"text": "THE END"}
    )
    track.append(_media_clip("Title 01", title, _range(0, 72, 24)))
    still = otio.schema.ExternalReference("file:///art/logo.png", _range(0, 1, 24))
    track.append(_media_clip("logo.png", still, _range(0, 48, 24)))
    frozen = _media_clip(
        "freeze", otio.schema.ExternalReference("file:///m/f.mov", _range(0, 100, 24)), _range(90, 24, 24)
    )
    frozen.effects.append(otio.schema.FreezeFrame())
    track.append(frozen)
    track.append(
        _media_clip(
            "long", otio.schema.ExternalReference("file:///m/l.mov", _range(0, 10, 24)), _range(0, 40, 24)
        )
    )
    marked = _media_clip(
        "asked", otio.schema.ExternalReference("file:///m/a.mov", _range(0, 10, 24)), _range(0, 40, 24)
    )
    marked.metadata["ttt_studio"] = {"prompt": "a lighthouse at night"}
    track.append(marked)
    tl.tracks.append(track)
    return tl


def test_titles_stills_and_long_clips_are_requests_only_when_marked() -> None:
    """Before: every clip past its media was a request, so a Premiere title or a held still became one."""
    tl = _held_items_edit()
    assert [(r.id, r.record_start) for r in find_shot_requests(tl)] == [("v0.i4.clip", HOUR + 184)]
    long_clips = find_shot_requests(tl, sources=[SOURCE_LONG_CLIPS])
    # asked for explicitly, a clip past its media counts; a title, a still or a freeze frame never does
    assert [r.id for r in long_clips] == ["v0.i3.clip", "v0.i4.clip"]
    assert long_clips[0].metadata["missing_after"] == 30 and long_clips[0].prompt is None
    # a user may still name one explicitly
    assert [r.id for r in find_shot_requests(tl, select=["Title 01"])] == ["v0.i0.clip", "v0.i4.clip"]
    scan = scan_shot_requests(tl, select=["nothing by that name"])
    assert [r.id for r in scan.refused] == ["select:nothing by that name"]
    with pytest.raises(RequestError, match="unknown request sources"):
        scan_shot_requests(tl, sources=["everything"])


def test_result_clips_are_never_requests() -> None:
    """A generated clip moved off its track onto V1 carries ttt_studio metadata with a job id: not a request."""
    tl = otio.schema.Timeline("moved", global_start_time=RT(0, 24))
    track = otio.schema.Track("V1")
    moved = _media_clip(
        "gen", otio.schema.ExternalReference("file:///g/x.exr", _range(1001, 10, 24)), _range(1001, 10, 24)
    )
    moved.metadata["ttt_studio"] = {"job_id": "abc", "request_id": "v0.i0.gap", "prompt": "x"}
    track.append(moved)
    tl.tracks.append(track)
    assert find_shot_requests(tl) == []


def test_marker_on_a_clip_directly_in_a_nested_stack() -> None:
    """Before: the walk of a nested stack only looked at its tracks; this marker was silently dropped."""
    inner_clip = _media_clip(
        "plate", otio.schema.ExternalReference("file:///m/p.mov", _range(0, 100, 24)), _range(20, 30, 24)
    )
    inner_clip.markers.append(
        otio.schema.Marker("sky", _range(25, 10, 24), metadata={"ttt_studio": {"prompt": "storm clouds"}})
    )
    nest = otio.schema.Stack("compound")
    nest.append(inner_clip)
    overlay = otio.schema.Track("overlay")
    overlay.append(
        otio.schema.Gap(source_range=_range(0, 6, 24), metadata={"ttt_studio": {"prompt": "rain"}})
    )
    nest.append(overlay)
    nest.markers.append(
        otio.schema.Marker("whole", _range(0, 4, 24), metadata={"ttt_studio": {"prompt": "fade"}})
    )
    track = otio.schema.Track("V1")
    track.append(otio.schema.Gap(source_range=_range(0, 12, 24)))
    track.append(nest)
    inner_track = otio.schema.Track("nested track")
    inner_track.markers.append(
        otio.schema.Marker("once", _range(0, 2, 24), metadata={"ttt_studio": {"prompt": "x"}})
    )
    inner_track.append(otio.schema.Gap(source_range=_range(0, 8, 24)))
    track.append(inner_track)
    tl = otio.schema.Timeline("nested", global_start_time=RT(HOUR, 24))
    tl.tracks.append(track)
    got = [(r.id, r.record_start, r.duration, r.prompt) for r in find_shot_requests(tl)]
    assert got == [
        ("v0.i1.m0", HOUR + 12, 4, "fade"),  # the nest's own marker
        ("v0.i1.c0.m0", HOUR + 12 + 5, 10, "storm clouds"),  # 25 in the clip's source time = 5 in
        ("v0.i1.t1.i0.gap", HOUR + 12, 6, "rain"),
        ("v0.i2.m0", HOUR + 12 + 30, 2, "x"),  # a nested track's marker, once
    ]


def test_requests_a_nest_hides_are_named_not_dropped() -> None:
    inner = otio.schema.Track("inner")
    for name in ("a", "b"):
        inner.append(
            otio.schema.Gap(
                name=name, source_range=_range(0, 10, 24), metadata={"ttt_studio": {"prompt": name}}
            )
        )
    nest = otio.schema.Stack("nest", source_range=_range(10, 10, 24))  # shows b only
    nest.append(inner)
    track = otio.schema.Track("V1")
    track.append(nest)
    tl = otio.schema.Timeline("hidden", global_start_time=RT(0, 24))
    tl.tracks.append(track)
    scan = scan_shot_requests(tl)
    assert [(r.id, r.record_start) for r in scan.requests] == [("v0.i0.t0.i1.gap", 0)]
    assert [h.id for h in scan.hidden] == [
        "v0.i0.t0.i0.gap"
    ] and "trimmed out of nested Stack 'nest'" in scan.hidden[0].message
    assert scan.refused == []


def test_metadata_keys_otio_cannot_read_back_are_refused() -> None:
    """Found by the property test below: OTIO cuts a key at a NUL character, then raises KeyError."""
    tl = otio.schema.Timeline("nul", global_start_time=RT(0, 24))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(source_range=_range(0, 5, 24), metadata={"ttt_studio": {"prompt": "x", "a\x00b": 1}})
    )
    track.append(otio.schema.Gap(source_range=_range(0, 5, 24), metadata={"ttt_studio": {"prompt": "y"}}))
    tl.tracks.append(track)
    scan = scan_shot_requests(tl)
    assert [r.id for r in scan.requests] == ["v0.i1.gap"]
    assert [r.id for r in scan.refused] == ["v0.i0.gap"] and "NUL character" in scan.refused[0].message


# ------------------------------------------------------------------ property: arbitrary OTIO documents

_RATES = st.sampled_from(
    [24.0, 23.976, 24000 / 1001, 25.0, 30.0, 1.0, 0.0, -24.0, 1e-9, 1e9, math.nan, math.inf]
)
_VALUES = st.one_of(
    st.integers(-10, 500).map(float),
    st.sampled_from([0.5, -0.0, 1e15, -1e15, math.nan, math.inf, -math.inf, 86400.0]),
)
_TIMES = st.builds(lambda value, rate: ("time", value, rate), _VALUES, _RATES)
_RANGES = st.one_of(st.none(), st.tuples(st.just("range"), _TIMES, _TIMES))
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_SEGMENT = st.one_of(
    st.fixed_dictionaries(
        {"text": st.text(max_size=8)}, optional={"neg_text": _JSON, "requires_scene_transition": _JSON}
    ),
    _JSON,
)
_TTT = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.one_of(st.text(max_size=8), _JSON),
            "storyboard": st.one_of(st.lists(_SEGMENT, max_size=3), _JSON),
            "job_id": st.one_of(st.just(""), st.just("job"), _JSON),
            "role": st.sampled_from(["generated", "other"]),
            "request_id": st.text(max_size=4),
        },
    ),
)
_METADATA = st.one_of(
    st.just({}), st.dictionaries(st.sampled_from(["ttt_studio", "fcp_xml", "x"]), _TTT, max_size=2)
)
_MARKERS = st.lists(st.tuples(st.text(max_size=4), _RANGES, _METADATA), max_size=2)
_MEDIA = st.one_of(
    st.none(),
    st.tuples(st.just("external"), st.sampled_from(["file:///a.mov", "file:///s.png", ""]), _RANGES),
    st.tuples(st.just("generator"), st.just("Text"), _RANGES),
    st.tuples(st.just("sequence"), st.just("file:///seq/"), _RANGES),
    st.tuples(st.just("missing"), st.just(""), _RANGES),
)
_EFFECTS = st.lists(st.sampled_from(["freeze", "warp2", "warp0", "plain"]), max_size=2)
_LEAVES = st.one_of(
    st.tuples(st.just("gap"), st.text(max_size=4), _RANGES, _METADATA, _MARKERS),
    st.tuples(st.just("clip"), st.text(max_size=4), _RANGES, _METADATA, _MARKERS, _MEDIA, _EFFECTS),
    st.tuples(st.just("transition"), _TIMES, _TIMES),
)
_ITEMS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.tuples(
            st.just("track"),
            st.sampled_from(["Video", "Audio", "Other"]),
            _RANGES,
            _METADATA,
            _MARKERS,
            st.lists(inner, max_size=4),
        ),
        st.tuples(
            st.just("stack"), st.text(max_size=4), _RANGES, _METADATA, _MARKERS, st.lists(inner, max_size=3)
        ),
    ),
    max_leaves=12,
)
_DOCUMENTS = st.tuples(st.one_of(st.none(), _TIMES), _MARKERS, st.lists(_ITEMS, max_size=4))


def _time(spec: tuple) -> otio.opentime.RationalTime:
    return RT(spec[1], spec[2])


def _range_of(spec: object) -> otio.opentime.TimeRange | None:
    return None if spec is None else TR(_time(spec[1]), _time(spec[2]))


def _with_markers(obj: object, markers: list) -> object:
    for name, marked, meta in markers:
        marker = otio.schema.Marker(name, metadata=meta)
        if marked is not None:
            marker.marked_range = _range_of(marked)
        obj.markers.append(marker)
    return obj


def _media(spec: object) -> object:
    if spec is None:
        return None
    kind, url, available = spec
    available = _range_of(available)
    if kind == "external":
        return otio.schema.ExternalReference(url, available)
    if kind == "generator":
        return otio.schema.GeneratorReference("g", url, available)
    if kind == "sequence":
        return otio.schema.ImageSequenceReference(url, "f.", ".exr", available_range=available)
    return otio.schema.MissingReference(available_range=available)


def _build(spec: tuple) -> object:
    kind = spec[0]
    if kind == "transition":
        return otio.schema.Transition("t", in_offset=_time(spec[1]), out_offset=_time(spec[2]))
    if kind == "gap":
        gap = otio.schema.Gap(name=spec[1], metadata=spec[3])
        gap.source_range = _range_of(spec[2]) or TR(RT(0, 24), RT(1, 24))
        return _with_markers(gap, spec[4])
    if kind == "clip":
        clip = otio.schema.Clip(spec[1], _media(spec[5]), _range_of(spec[2]), spec[3])
        for effect in spec[6]:
            clip.effects.append(
                {
                    "freeze": otio.schema.FreezeFrame,
                    "warp2": lambda: otio.schema.LinearTimeWarp(time_scalar=2.0),
                    "warp0": lambda: otio.schema.LinearTimeWarp(time_scalar=0.0),
                    "plain": lambda: otio.schema.Effect("blur", "Blur"),
                }[effect]()
            )
        return _with_markers(clip, spec[4])
    if kind == "track":
        comp = otio.schema.Track("t", kind=spec[1], source_range=_range_of(spec[2]), metadata=spec[3])
    else:
        comp = otio.schema.Stack(spec[1], source_range=_range_of(spec[2]), metadata=spec[3])
    for child in spec[5]:
        try:
            comp.append(_build(child))
        except (ValueError, TypeError):  # OTIO's own structural rules (e.g. a transition in a stack)
            pass
    return _with_markers(comp, spec[4])


@settings(
    max_examples=100,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(_DOCUMENTS)
def test_scanning_any_document_returns_requests_or_a_request_error(document: tuple) -> None:
    """Arbitrary OTIO documents (tracks of any kind, nested stacks, gaps, clips with any media and time
    effects, transitions, markers, metadata of random shape, rates of zero, NaN or infinity): scanning
    returns requests and refusals, or raises RequestError, never anything else; written to a file, `fill`
    reads it back as a Timeline or refuses it with FillError. 100 examples (up to 12 items
    each), about 15 s on a 2-core CPU shared with other jobs; 2,000 more ran clean outside CI."""
    start, markers, children = document
    timeline = otio.schema.Timeline("fuzz", global_start_time=None if start is None else _time(start))
    _with_markers(timeline.tracks, markers)
    for child in children:
        try:
            timeline.tracks.append(_build(child))
        except (ValueError, TypeError):
            pass
    for sources in ((), ("gaps", "long-clips")):
        try:
            scan = scan_shot_requests(timeline, sources=sources, select=("a",))
        except RequestError:
            continue
        for request in scan.requests:
            assert request.duration >= 1 and isinstance(request.record_start, int)
        for refusal in scan.refused + scan.hidden:
            assert refusal.message
    try:
        find_shot_requests(timeline)
    except RequestError:
        pass
    # written to a file and read back as `fill` reads it: a Timeline or FillError, then the same contract
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fuzz.otio")
        otio.adapters.write_to_file(timeline, path)
        try:
            again = read_timeline(path)
        except FillError:
            return
        try:
            scan_shot_requests(again)
        except RequestError:
            pass
