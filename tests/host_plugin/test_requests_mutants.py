"""Request-scanning behaviour the mutation run of host_plugin/core/requests.py found untested (issue #31).

Clips that reach past their media (before their media starts, image sequences, two-frame media, stills
behind a query string) and what a request records about them; marked clips' text; what a refused clip
says; requests inside a nested stack's tracks; a generated track with a dissolve; the defaults of a
request saved as a dict; storyboard segments' defaults and errors.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import opentimelineio as otio
import pytest

from host_plugin.core.errors import RequestError
from host_plugin.core.requests import (
    GENERATED_TRACK_ROLE,
    METADATA_KEY,
    SOURCE_LONG_CLIPS,
    ShotRequest,
    find_shot_requests,
    normalise_storyboard,
    scan_shot_requests,
    timeline_rate,
)

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
HOUR = 86400  # 01:00:00:00 at 24 fps
STORYBOARD = [{"text": "a fox runs through snow", "neg_text": "blurry", "requires_scene_transition": False}]


def _range(start: float, duration: float, rate: float = 24) -> otio.opentime.TimeRange:
    return TR(RT(start, rate), RT(duration, rate))


def _timeline(*tracks: otio.schema.Track) -> otio.schema.Timeline:
    timeline = otio.schema.Timeline("edit", global_start_time=RT(HOUR, 24))
    timeline.tracks.extend(tracks)
    return timeline


def _clip(name: str, url: str, available: otio.opentime.TimeRange, source: otio.opentime.TimeRange) -> Any:
    return otio.schema.Clip(name, otio.schema.ExternalReference(url, available), source)


def _long_clips_edit() -> otio.schema.Timeline:
    """V1: a clip within its media | one starting 10 frames before its media (which starts at 10) | an
    image sequence 10 frames too short | two-frame media held 10 frames | a PNG (behind a query string
    holding a second '?') held past its media."""
    track = otio.schema.Track("V1")
    track.append(_clip("inside", "file:///m/in.mov", _range(0, 100), _range(0, 50)))
    track.append(_clip("before", "file:///m/b.mov", _range(10, 100), _range(0, 50)))
    sequence = otio.schema.ImageSequenceReference(
        "file:///m/seq/", "f.", ".exr", start_frame=1, rate=24, available_range=_range(0, 20)
    )
    track.append(otio.schema.Clip("seq", sequence, _range(0, 30)))
    track.append(_clip("two frames", "file:///m/two.mov", _range(0, 2), _range(0, 10)))
    track.append(_clip("logo", "file:///art/logo.png?v=2?cache=0", _range(0, 24), _range(0, 48)))
    return _timeline(track)


def test_long_clips_record_what_they_miss_and_where_their_media_is() -> None:
    requests = find_shot_requests(_long_clips_edit(), sources=[SOURCE_LONG_CLIPS])
    got = {r.name: (r.id, r.record_start, r.duration, r.metadata) for r in requests}
    # a clip short of media at its start is asking for new media as much as one short at its end; two
    # frames of media are no still; a PNG is a still whatever follows its name in the URL
    assert got == {
        "before": (
            "v0.i1.clip",
            HOUR + 50,
            50,
            {
                "missing_before": 10,
                "missing_after": 0,
                "available_frames": 100,
                "media_url": "file:///m/b.mov",
            },
        ),
        "seq": (
            "v0.i2.clip",
            HOUR + 100,
            30,
            {"missing_before": 0, "missing_after": 10, "available_frames": 20, "media_url": "file:///m/seq/"},
        ),
        "two frames": (
            "v0.i3.clip",
            HOUR + 130,
            10,
            {
                "missing_before": 0,
                "missing_after": 8,
                "available_frames": 2,
                "media_url": "file:///m/two.mov",
            },
        ),
    }


def test_unmarked_clips_past_their_media_are_logged_as_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="host_plugin.core.requests"):
        assert find_shot_requests(_long_clips_edit()) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"Clip {name!r} in track 'V1' reaches past its media but is not marked; left alone"
        for name in ("before", "seq", "two frames", "logo")
    ]


def test_a_marked_clip_keeps_its_name_and_text_and_a_result_clip_is_no_request() -> None:
    track = otio.schema.Track("V1")
    for name, meta in (
        ("told", {"storyboard": STORYBOARD, "seed": 3}),
        ("prompted", {"prompt": "a lighthouse at night"}),
        ("placed", {"generated": True, "prompt": "a lighthouse at night"}),
    ):
        clip = _clip(name, f"file:///m/{name}.mov", _range(0, 100), _range(0, 20))
        clip.metadata["ttt_studio"] = meta
        track.append(clip)
    told, prompted = find_shot_requests(_timeline(track))
    # a marked clip within its media still says so: nothing missing, all 100 frames at hand
    within = {"missing_before": 0, "missing_after": 0, "available_frames": 100}
    assert (told.id, told.name, told.storyboard, told.prompt, told.metadata) == (
        "v0.i0.clip",
        "told",
        STORYBOARD,
        None,
        {"seed": 3, **within, "media_url": "file:///m/told.mov"},
    )
    assert (prompted.id, prompted.name, prompted.storyboard, prompted.prompt) == (
        "v0.i1.clip",
        "prompted",
        [],
        "a lighthouse at night",
    )


def test_a_clip_selected_by_its_request_id_is_a_request() -> None:
    track = otio.schema.Track("V1")
    track.append(_clip("plate", "file:///m/p.mov", _range(0, 100), _range(0, 20)))
    scan = scan_shot_requests(_timeline(track), select=["v0.i0.clip"])
    assert [(r.id, r.name, r.duration) for r in scan.requests] == [("v0.i0.clip", "plate", 20)]
    assert scan.refused == []


def test_a_malformed_marked_clip_is_refused_naming_the_clip_and_its_track() -> None:
    track = otio.schema.Track("V1")
    bad = _clip("bad", "file:///m/b.mov", _range(0, 100), _range(0, 20))
    bad.metadata["ttt_studio"] = {"prompt": ""}
    track.append(bad)
    scan = scan_shot_requests(_timeline(track))
    assert scan.requests == []
    assert [r.to_dict() for r in scan.refused] == [
        {
            "id": "v0.i0.clip",
            "name": "bad",
            "message": "Clip 'bad' in track 'V1': metadata['ttt_studio']['prompt'] must be a non-empty "
            "string, got ''",
        }
    ]


def test_requests_in_a_nested_stacks_track_name_the_outer_track() -> None:
    inner = otio.schema.Track("inner")
    inner.append(otio.schema.Gap(source_range=_range(0, 12), metadata={"ttt_studio": {"prompt": "rain"}}))
    nest = otio.schema.Stack("compound")
    nest.append(inner)
    v1, v2 = otio.schema.Track("V1"), otio.schema.Track("V2")
    v1.append(otio.schema.Gap(source_range=_range(0, 30)))
    v2.append(nest)
    (request,) = find_shot_requests(_timeline(v1, v2))
    assert (request.id, request.track_index, request.track_name, request.record_start) == (
        "v1.i0.t0.i0.gap",
        1,
        "V2",
        HOUR,
    )


def test_items_directly_in_a_nest_name_the_outer_track_and_their_errors_the_nest() -> None:
    nest = otio.schema.Stack("compound", source_range=_range(0, 12))
    nest.append(otio.schema.Gap(source_range=_range(0, 12), metadata={"ttt_studio": {"prompt": "fog"}}))
    v1, v2 = otio.schema.Track("V1"), otio.schema.Track("V2")
    v1.append(otio.schema.Gap(source_range=_range(0, 30)))
    v2.append(nest)
    (request,) = find_shot_requests(_timeline(v1, v2))
    assert (request.id, request.track_index, request.track_name) == ("v1.i0.c0.gap", 1, "V2")
    nest.append(otio.schema.Clip("rangeless"))  # no range of its own or of its media
    (refusal,) = scan_shot_requests(_timeline(v1.clone(), v2.clone())).refused
    assert (
        refusal.id == "v1" and "Clip 'rangeless' in stack 'compound' has no usable range" in refusal.message
    )


def test_what_a_nests_trim_hides_or_cuts_is_named_with_its_frames() -> None:
    inner = otio.schema.Track("inner")
    for name, length in (("a", 10), ("b", 15)):
        inner.append(
            otio.schema.Gap(
                name=name, source_range=_range(0, length), metadata={"ttt_studio": {"prompt": name}}
            )
        )
    nest = otio.schema.Stack("nest", source_range=_range(10, 10))  # a is trimmed out, b cut at its end
    nest.append(inner)
    track = otio.schema.Track("V1")
    track.append(nest)
    scan = scan_shot_requests(_timeline(track))
    assert scan.requests == []
    shown = f"nested Stack 'nest' (frames {HOUR}-{HOUR + 10})"
    assert [h.to_dict() for h in scan.hidden] == [
        {
            "id": "v0.i0.t0.i0.gap",
            "name": "a",
            "message": f"request v0.i0.t0.i0.gap (gap 'a', frames {HOUR - 10}-{HOUR}) is trimmed out of {shown}; "
            "not generated",
        }
    ]
    assert [r.to_dict() for r in scan.refused] == [
        {
            "id": "v0.i0.t0.i1.gap",
            "name": "b",
            "message": f"request v0.i0.t0.i1.gap (gap 'b', frames {HOUR}-{HOUR + 15}) is only partly visible "
            f"through {shown}; move it inside the visible part or untrim the nest",
        }
    ]


def test_a_dissolve_between_generated_clips_keeps_both_fulfilled() -> None:
    v1 = otio.schema.Track("V1")
    for prompt in ("dawn", "dusk"):
        v1.append(otio.schema.Gap(source_range=_range(0, 24), metadata={"ttt_studio": {"prompt": prompt}}))
    generated = otio.schema.Track("TTT generated", metadata={"ttt_studio": {"role": "generated"}})
    for request_id in ("v0.i0.gap", "v0.i1.gap"):
        clip = _clip(request_id, f"file:///g/{request_id}.exr", _range(0, 24), _range(0, 24))
        clip.metadata["ttt_studio"] = {"job_id": "job-1", "request_id": request_id}
        generated.append(clip)
    # an editor's dissolve takes no time of its own: the clip after it still starts on frame 24
    generated.insert(1, otio.schema.Transition(in_offset=RT(6, 24), out_offset=RT(6, 24)))
    timeline = _timeline(v1, generated)
    assert scan_shot_requests(timeline).requests == []
    everything = scan_shot_requests(timeline, include_fulfilled=True).requests
    assert [(r.id, r.record_start) for r in everything] == [("v0.i0.gap", HOUR), ("v0.i1.gap", HOUR + 24)]
    assert find_shot_requests(timeline) == []
    assert find_shot_requests(timeline, include_fulfilled=True) == everything


REQUIRED: dict[str, Any] = {
    "id": "v0.i0.gap",
    "kind": "gap",
    "track_name": "V1",
    "track_index": 0,
    "record_start": HOUR,
    "duration": 48,
    "rate": "24000/1001",
}


def test_a_request_dict_with_only_its_required_keys_takes_the_defaults() -> None:
    request = ShotRequest.from_dict(dict(REQUIRED))
    assert (request.rate, request.name, request.prompt, request.storyboard, request.metadata) == (
        Fraction(24000, 1001),
        "",
        None,
        [],
        {},
    )


def test_a_bad_request_dict_is_named() -> None:
    lacking = {k: v for k, v in REQUIRED.items() if k not in ("duration", "rate")}
    with pytest.raises(RequestError) as info:
        ShotRequest.from_dict(lacking)
    assert str(info.value) == (
        "ShotRequest dict lacks keys ['duration', 'rate']; "
        "got keys ['id', 'kind', 'record_start', 'track_index', 'track_name']"
    )
    with pytest.raises(RequestError) as info:
        ShotRequest.from_dict({**REQUIRED, "kind": "title"})
    assert str(info.value) == "ShotRequest kind must be one of ('gap', 'marker', 'clip'), got 'title'"
    with pytest.raises(RequestError, match=r"^request v0\.i0\.gap: storyboard\[0\] has unknown keys"):
        ShotRequest.from_dict({**REQUIRED, "storyboard": [{"txt": "a typo"}]})


def test_a_segment_takes_the_default_negative_text_and_transition() -> None:
    assert normalise_storyboard([{"text": "a fox"}], "shot") == [
        {"text": "a fox", "neg_text": "", "requires_scene_transition": False}
    ]


@pytest.mark.parametrize(
    "storyboard, message",
    [
        pytest.param("a fox", "shot: storyboard must be a list of segments, got str", id="not-a-list"),
        pytest.param(["a fox"], "shot: storyboard[0] must be a dict, got str: 'a fox'", id="not-a-dict"),
        pytest.param(
            [{"text": "a fox", "neg_text": 3}],
            "shot: storyboard[0]['neg_text'] must be a string, got 3",
            id="neg",
        ),
    ],
)
def test_a_bad_segment_is_named_with_what_was_given(storyboard: Any, message: str) -> None:
    with pytest.raises(RequestError) as info:
        normalise_storyboard(storyboard, "shot")
    assert str(info.value) == message


def _v1(*items: Any, markers: tuple = ()) -> otio.schema.Track:
    track = otio.schema.Track("V1")
    track.extend(items)
    track.markers.extend(markers)
    return track


def _gap(frames: int, meta: Any = None, name: str = "") -> otio.schema.Gap:
    gap = otio.schema.Gap(name=name, source_range=_range(0, frames))
    if meta is not None:
        gap.metadata["ttt_studio"] = meta
    return gap


def _marker(name: str, marked: otio.opentime.TimeRange, meta: Any = None) -> otio.schema.Marker:
    marker = otio.schema.Marker(name, marked)
    if meta is not None:
        marker.metadata["ttt_studio"] = meta
    return marker


def test_a_marked_gap_keeps_its_name_text_and_metadata_and_one_frame_is_enough() -> None:
    told = _gap(1, {"storyboard": [{"text": "a fox"}], "seed": 7}, name="told")
    (request,) = find_shot_requests(_timeline(_v1(_gap(10), told)))
    assert (request.id, request.name, request.record_start, request.duration) == (
        "v0.i1.gap",
        "told",
        HOUR + 10,
        1,
    )
    assert (request.storyboard, request.prompt, request.metadata) == (
        [{"text": "a fox", "neg_text": "", "requires_scene_transition": False}],
        None,
        {"seed": 7},
    )


def test_a_marker_request_records_its_marker_and_one_frame_is_enough() -> None:
    fox = _marker("fox", _range(30, 1), {"prompt": "a fox", "seed": 7})
    (request,) = find_shot_requests(_timeline(_v1(_gap(100), markers=(fox,))))
    assert (request.id, request.name, request.record_start, request.duration) == (
        "v0.m0",
        "fox",
        HOUR + 30,
        1,
    )
    assert request.metadata == {"seed": 7, "marker_name": "fox", "marker_color": "RED", "owner": "Track 'V1'"}


def test_unmarked_gaps_and_markers_selected_by_name_or_id_are_requests() -> None:
    markers = (_marker("note", _range(0, 5)), _marker("other note", _range(10, 5)))
    timeline = _timeline(_v1(_gap(10, name="hole"), _gap(20, name="slot"), markers=markers))
    scan = scan_shot_requests(timeline, select=["hole", "v0.i1.gap", "note", "v0.m1"])
    assert [(r.id, r.name) for r in scan.requests] == [
        ("v0.m0", "note"),
        ("v0.m1", "other note"),
        ("v0.i0.gap", "hole"),
        ("v0.i1.gap", "slot"),
    ]
    assert scan.refused == []
    plain = find_shot_requests(timeline, include_plain_gaps=True)
    assert [r.id for r in plain] == ["v0.i0.gap", "v0.i1.gap"]


def test_refusals_of_gaps_and_markers_say_what_to_change() -> None:
    markers = (
        _marker("untold", _range(0, 5), {"seed": 1}),
        _marker("instant", _range(0, 0), {"prompt": "x"}),
        _marker("typo", _range(0, 5), {"storyboard": [{"txt": "a fox"}]}),
    )
    edit = _v1(
        _gap(0, {"prompt": "x"}, "empty"),
        _gap(5, ["a", "list"], "listed"),
        _gap(5, {"storyboard": []}, "bare"),
    )
    edit.markers.extend(markers)
    audio = otio.schema.Track("A1", kind=otio.schema.TrackKind.Audio)
    audio.append(_gap(5, {"prompt": "x"}, "sound"))
    scan = scan_shot_requests(_timeline(edit, audio))
    assert scan.requests == []
    on_v1 = "marker {!r} on Track 'V1': "
    assert [r.to_dict() for r in scan.refused] == [
        {
            "id": "v0.m0",
            "name": "untold",
            "message": on_v1.format("untold")
            + "metadata['ttt_studio'] needs a 'storyboard' list or a 'prompt' "
            "string, got keys ['seed']",
        },
        {
            "id": "v0.m1",
            "name": "instant",
            "message": on_v1.format("instant")
            + "marked_range has 0 frames; a shot marker needs a duration of at "
            "least 1 frame (in Resolve give the marker a duration)",
        },
        {
            "id": "v0.m2",
            "name": "typo",
            "message": on_v1.format("typo") + "storyboard[0] has unknown keys ['txt']; expected ['neg_text', "
            "'requires_scene_transition', 'text']",
        },
        {
            "id": "v0.i0.gap",
            "name": "empty",
            "message": "Gap 'empty' in track 'V1': request v0.i0.gap ('empty') has 0 frames; need >= 1",
        },
        {
            "id": "v0.i1.gap",
            "name": "listed",
            "message": "Gap 'listed' in track 'V1': Gap 'listed': metadata['ttt_studio'] must be a dict, got list: "
            "['a', 'list']",
        },
        {
            "id": "v0.i2.gap",
            "name": "bare",
            "message": "Gap 'bare' in track 'V1': metadata['ttt_studio']['storyboard'] is empty; give at least one "
            "segment",
        },
        {
            "id": "a0.i0.gap",
            "name": "sound",
            "message": "Gap 'sound' in track 'A1': request a0.i0.gap (gap 'sound') is on audio track 'A1': "
            "ttt-studio generates picture; put the request on a video track",
        },
    ]


def test_the_first_refusal_is_raised_with_how_many_more_there_are() -> None:
    one = _timeline(_v1(_gap(0, {"prompt": "x"}, "empty")))
    with pytest.raises(RequestError) as info:
        find_shot_requests(one)
    assert str(info.value) == "Gap 'empty' in track 'V1': request v0.i0.gap ('empty') has 0 frames; need >= 1"
    two = _timeline(_v1(_gap(0, {"prompt": "x"}, "empty"), _gap(0, {"prompt": "y"}, "void")))
    with pytest.raises(RequestError, match=r"need >= 1 \(and 1 more refused\)$"):
        find_shot_requests(two)


def test_times_and_rates_that_cannot_become_frames_are_named() -> None:
    markers = (
        _marker("endless", TR(RT(float("inf"), 24), RT(5, 24)), {"prompt": "x"}),
        _marker("tiny rate", TR(RT(0, 24), RT(10, 1e-300)), {"prompt": "x"}),
    )
    scan = scan_shot_requests(_timeline(_v1(_gap(100), markers=markers)))
    endless, tiny = (r.message for r in scan.refused)
    assert endless == (
        "marker 'endless' on Track 'V1': Marker 'endless': time value must be finite, got "
        "otio.opentime.RationalTime(value=inf, rate=24)"
    )
    assert tiny.startswith(
        "marker 'tiny rate' on Track 'V1': Marker 'tiny rate': time otio.opentime.RationalTime(value=10, "
        "rate=1e-300) at 24 fps is not usable: ZeroDivisionError: "
    )
    with pytest.raises(RequestError) as info:
        scan_shot_requests(_timeline(_v1(_gap(10))), rate=float("inf"))
    assert str(info.value) == (
        "timeline 'edit': frame rate inf is not usable: OverflowError: cannot convert Infinity to integer ratio"
    )


def test_find_passes_an_explicit_rate_and_fulfilled_requests_on() -> None:
    timeline = otio.schema.Timeline("no start")  # no global start time: the rate comes from the items
    timeline.tracks.append(_v1(_gap(10, {"prompt": "x"})))
    assert [r.rate for r in find_shot_requests(timeline)] == [24]
    assert [r.rate for r in find_shot_requests(timeline, rate=25)] == [25]


def test_the_rate_comes_from_a_real_start_time_else_from_the_first_item_with_one() -> None:
    def edit(start: Any) -> otio.schema.Timeline:
        timeline = otio.schema.Timeline("rates", global_start_time=start)
        rangeless = otio.schema.Clip("rangeless")  # says nothing about the rate
        in_seconds = otio.schema.Gap(source_range=TR(RT(0, 1), RT(2, 1)))  # rate 1: not a frame rate
        timeline.tracks.append(_v1(rangeless, in_seconds, _gap(10, {"prompt": "x"})))
        return timeline

    # OTIO's default start time (0 at rate 1) is no start time
    assert timeline_rate(edit(RT(0, 1))) == 24
    # a start at 0 at 25 fps is the timeline's rate, whatever rate its items' ranges were written in
    assert timeline_rate(edit(RT(0, 25))) == 25
    with pytest.raises(RequestError) as info:
        timeline_rate(otio.schema.Timeline("empty"))
    assert str(info.value) == (
        "timeline 'empty' has no global_start_time and no item with a duration: cannot tell its frame rate; "
        "pass rate= explicitly"
    )


def test_a_track_whose_items_cannot_be_read_is_refused_naming_the_item() -> None:
    tiny = otio.schema.Gap(name="tiny", source_range=TR(RT(0, 24), RT(10, 1e-300)))
    refused = scan_shot_requests(_timeline(_v1(tiny), _v1(otio.schema.Clip("rangeless")))).refused
    assert [(r.id, r.name) for r in refused] == [("v0", "V1"), ("v1", "V1")]
    assert refused[0].message.startswith(
        "track 'V1': Gap 'tiny': time otio.opentime.RationalTime(value=10, rate=1e-300) at 24 fps is not usable: "
    )
    assert refused[1].message.startswith("track 'V1': Clip 'rangeless' in track 'V1' has no usable range: ")
    assert refused[1].message.endswith("; its requests cannot be placed")


def test_a_trimmed_track_places_its_requests_from_its_trim() -> None:
    track = _v1(_gap(20), _gap(20, {"prompt": "x"}))
    track.source_range = _range(10, 30)  # the track shows its own frames 10..40
    (request,) = find_shot_requests(_timeline(track))
    assert (request.record_start, request.duration) == (HOUR + 10, 20)


def test_an_audio_track_stays_audio_after_a_nested_video_track() -> None:
    nest = otio.schema.Stack("compound")
    nest.append(_v1(_gap(5)))
    audio = otio.schema.Track("A1", kind=otio.schema.TrackKind.Audio)
    audio.extend([nest, _gap(5, {"prompt": "x"}, "after the nest")])
    scan = scan_shot_requests(_timeline(_v1(_gap(10)), audio))
    assert scan.requests == []
    assert [(r.name, "is on audio track 'A1'" in r.message) for r in scan.refused] == [
        ("after the nest", True)
    ]


def test_only_clips_on_a_generated_track_fulfil_requests() -> None:
    generated = otio.schema.Track("TTT generated", metadata={"ttt_studio": {"role": "generated"}})
    generated.append(_gap(10, {"request_id": "v0.i0.gap"}))  # a lifted clip leaves a gap, not a result
    timeline = _timeline(_v1(_gap(10, {"prompt": "x"})), generated)
    assert [r.id for r in find_shot_requests(timeline)] == ["v0.i0.gap"]


def test_an_empty_item_takes_no_frames_and_a_negative_one_is_named() -> None:
    (request,) = find_shot_requests(_timeline(_v1(_gap(0), _gap(10, {"prompt": "x"}))))
    assert (request.id, request.record_start) == ("v0.i1.gap", HOUR)
    backwards = otio.schema.Gap(name="backwards", source_range=_range(0, -5))
    (refusal,) = scan_shot_requests(_timeline(_v1(backwards))).refused
    assert refusal.message == (
        "track 'V1': Gap 'backwards' in track 'V1' has a negative duration (-5 frames); its requests cannot be placed"
    )


def test_a_trimmed_track_nested_in_a_track_places_its_requests_on_the_outer_track() -> None:
    nested = _v1(_gap(20), _gap(20, {"prompt": "x"}))
    nested.name, nested.source_range = "nested", _range(10, 30)  # shows its own frames 10..40
    v2 = otio.schema.Track("V2")
    v2.append(nested)
    (request,) = find_shot_requests(_timeline(_v1(_gap(5)), v2))
    assert (request.id, request.track_index, request.track_name) == ("v1.i0.i1.gap", 1, "V2")
    assert (request.record_start, request.duration) == (HOUR + 10, 20)


# ---- the scan's entry: the timeline's top-level stack and its tracks (the second full run's survivors) ----

FOX = {"storyboard": [{"text": "a fox"}]}


def test_a_trimmed_top_level_stack_moves_its_requests_back_by_the_trim() -> None:
    timeline = _timeline(_v1(_gap(20), _gap(5, FOX, name="g")))
    timeline.tracks.source_range = _range(10, 100)  # the edit shows the stack from its frame 10
    (request,) = scan_shot_requests(timeline).requests
    assert (request.id, request.record_start) == ("v0.i1.gap", HOUR + 10)


def test_a_marker_on_the_top_level_stack_belongs_to_no_track() -> None:
    timeline = _timeline(_v1(_gap(50)))
    timeline.tracks.markers.append(_marker("m", _range(5, 3), FOX))
    (request,) = scan_shot_requests(timeline).requests
    assert (request.id, request.track_name, request.track_index, request.record_start) == (
        "stack.m0",
        "",
        -1,
        HOUR + 5,
    )


def test_video_tracks_are_counted_apart_from_audio_and_a_generated_track_ends_nothing() -> None:
    audio = otio.schema.Track("A1", kind=otio.schema.TrackKind.Audio)
    audio.append(_gap(10))
    generated = otio.schema.Track("TTT generated")
    generated.metadata[METADATA_KEY] = {"role": GENERATED_TRACK_ROLE}
    generated.append(_gap(4, FOX, name="in generated"))
    tracks = [otio.schema.Track(f"V{n}") for n in (2, 3)]
    for n, track in enumerate(tracks):
        track.append(_gap(4, FOX, name=f"g{n}"))
    timeline = _timeline(_v1(_gap(4, FOX, name="w")), audio, generated, *tracks)
    found = [(r.id, r.track_name, r.track_index) for r in scan_shot_requests(timeline).requests]
    assert found == [("v0.i0.gap", "V1", 0), ("v2.i0.gap", "V2", 2), ("v3.i0.gap", "V3", 3)]


def test_an_item_directly_in_the_top_level_stack_is_a_request_on_no_track() -> None:
    timeline = _timeline(_v1(_gap(4)))
    timeline.tracks.append(_gap(3, FOX, name="loose"))
    scan = scan_shot_requests(timeline)
    assert scan.refused == []
    assert [(r.id, r.name, r.track_name, r.track_index, r.record_start) for r in scan.requests] == [
        ("stack.c1.gap", "loose", "", -1, HOUR)
    ]


def test_an_unreadable_item_in_the_top_level_stack_is_refused_by_its_place_and_name() -> None:
    odd = otio.schema.Gap(name="odd", source_range=_range(0, -3))
    odd.metadata["ttt_studio"] = FOX
    timeline = _timeline(_v1(_gap(4)))
    timeline.tracks.append(odd)
    scan = scan_shot_requests(timeline)
    assert scan.requests == []
    assert [(r.id, r.name, r.message) for r in scan.refused] == [
        (
            "stack.c1",
            "odd",
            "Gap 'odd' in the timeline's stack has a negative duration (-3 frames); its requests cannot be "
            "placed",
        )
    ]


def test_a_selected_name_that_matches_nothing_is_refused_under_that_name() -> None:
    scan = scan_shot_requests(_timeline(_v1(_gap(4))), select=["nope"])
    assert [(r.id, r.name) for r in scan.refused] == [("select:nope", "nope")]


def test_a_request_cut_by_a_track_nested_in_a_track_names_that_track() -> None:
    inner = otio.schema.Track("inner")
    inner.append(_gap(20, FOX, name="long"))
    inner.source_range = _range(0, 10)  # the nest shows 10 of the request's 20 frames
    scan = scan_shot_requests(_timeline(_v1(inner)))
    assert scan.requests == []
    assert [(r.id, r.name, r.message) for r in scan.refused] == [
        (
            "v0.i0.i0.gap",
            "long",
            f"request v0.i0.i0.gap (gap 'long', frames {HOUR}-{HOUR + 20}) is only partly visible through "
            f"nested Track 'inner' (frames {HOUR}-{HOUR + 10}); move it inside the visible part or untrim "
            "the nest",
        )
    ]


def test_an_unreadable_generated_track_fails_the_scan_saying_where() -> None:
    generated = otio.schema.Track("TTT generated")
    generated.metadata[METADATA_KEY] = {"role": GENERATED_TRACK_ROLE}
    generated.append(otio.schema.Clip("rangeless", otio.schema.MissingReference()))
    with pytest.raises(
        RequestError, match=r"^timeline 'edit': a generated track: Cannot compute available range"
    ):
        scan_shot_requests(_timeline(_v1(_gap(4, FOX, name="w")), generated))
