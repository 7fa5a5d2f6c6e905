"""Placing generated EXR sequences on OTIO timelines, checked through OTIO's own time math after a
write / read round trip."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from host_plugin.core.errors import PlacementError
from host_plugin.core.placement import (
    DEFAULT_MEDIA_KEY,
    FIRST_FRAME_KEY,
    GENERATED_TRACK_NAME,
    DeliveredMedia,
    ShotResult,
    build_result_timeline,
    file_url_to_path,
    place_generated_shot,
    use_first_frame_references,
)
from host_plugin.core.requests import ShotRequest, find_shot_requests, is_generated_track, plain

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
HOUR = 86400
RATES = {"24": (Fraction(24), 24.0), "23.976": (Fraction(24000, 1001), 23.976)}


def _range(start: float, duration: float, rate: float) -> otio.opentime.TimeRange:
    return TR(RT(start, rate), RT(duration, rate))


def _clip(name: str, frames: int, rate: float) -> otio.schema.Clip:
    media = otio.schema.ExternalReference(f"file:///m/{name}.mov", _range(0, frames, rate))
    return otio.schema.Clip(name, media, _range(0, frames, rate))


def _ttt_gap(frames: int, rate: float, prompt: str) -> otio.schema.Gap:
    return otio.schema.Gap(source_range=_range(0, frames, rate), metadata={"ttt_studio": {"prompt": prompt}})


CONFORM = {  # a conform report as the server gives it: the shipped model's 8 fps, 64x64 frames to 1080p
    "native_fps": "8",
    "rate": "24",
    "retime": "flow",
    "frames": 48,
    "flow_fallbacks": 0,
    "generation_size": [64, 64],
    "target": {"width": 1920, "height": 1080, "pixel_aspect": 1.0},
    "fit": "fit",
    "filter": "lanczos",
    "scale": [16.875, 16.875],
    "source_colourspace": "srgb_rec709_scene",
    "colourspace": "lin_ap1_scene",
}


def result_for(request: ShotRequest, tmp_path: Path, extra: int = 0) -> ShotResult:
    return ShotResult(
        request_id=request.id,
        job_id=f"job-{request.id}",
        directory=str(tmp_path / "gen" / request.id),
        name_prefix="shot.",
        frame_count=request.duration + extra,
        rate=request.rate,
        seed=3,
        model="ttt-5b",
        media=DeliveredMedia(request.rate, 1920, 1080, 1.0, "lin_ap1_scene"),
        conform=dict(CONFORM),
    )


def round_trip(tl: otio.schema.Timeline, path: Path) -> otio.schema.Timeline:
    otio.adapters.write_to_file(tl, str(path))
    return otio.adapters.read_from_file(str(path))


def placed_frames(tl: otio.schema.Timeline) -> dict[str, tuple]:
    """request id -> (absolute start, duration) of generated clips, measured with OTIO's own time math:
    the clip's range in the stack, at the timeline's SMPTE rate, plus the frames of global_start_time."""
    rate = RT.nearest_smpte_timecode_rate(tl.global_start_time.rate)
    start_frames = tl.global_start_time.value  # written as a whole number of frames
    out = {}
    for track in tl.video_tracks():
        if not is_generated_track(track):
            continue
        for clip in track.find_clips(shallow_search=True):
            rng = clip.transformed_time_range(clip.trimmed_range(), tl.tracks)
            offset = rng.start_time.value_rescaled_to(rate)
            assert abs(offset - round(offset)) < 1e-6, f"{clip.name} is not on a whole frame: {offset}"
            duration = rng.duration.value_rescaled_to(rate)
            out[clip.metadata["ttt_studio"]["request_id"]] = (round(start_frames + offset), round(duration))
    return out


@pytest.mark.parametrize("rate_name", RATES)
def test_generated_clips_land_on_the_request_frames(rate_name: str, tmp_path: Path) -> None:
    exact, written = RATES[rate_name]
    tl = otio.schema.Timeline("edit", global_start_time=RT(HOUR, written))
    v1 = otio.schema.Track("V1")
    v1.append(_ttt_gap(48, written, "opening at frame 0"))  # a request at the very first frame
    v1.append(_clip("A", 101, written))
    v1.append(_ttt_gap(37, written, "middle"))
    v1.append(_clip("B", 240, written))
    v1.append(_ttt_gap(1, written, "one frame"))
    v2 = otio.schema.Track("V2")
    v2.append(otio.schema.Gap(source_range=_range(500, 1000, written)))  # Resolve-style gap start
    v2.append(_ttt_gap(72, written, "upper track, overlaps nothing below"))
    tl.tracks.extend([v1, v2])
    tl = round_trip(tl, tmp_path / "in.otio")

    requests = find_shot_requests(tl)
    starts = {r.id: r.record_start for r in requests}
    assert starts == {
        "v0.i0.gap": HOUR,
        "v0.i2.gap": HOUR + 149,
        "v0.i4.gap": HOUR + 426,
        "v1.i1.gap": HOUR + 1000,
    }
    for request in requests:
        clip = place_generated_shot(tl, request, result_for(request, tmp_path, extra=8))
        assert clip.source_range.duration.value == request.duration

    back = round_trip(tl, tmp_path / "out.otio")
    assert placed_frames(back) == {r.id: (r.record_start, r.duration) for r in requests}
    generated = [t for t in back.video_tracks() if is_generated_track(t)]
    assert [t.name for t in generated] == [GENERATED_TRACK_NAME]  # one track, created once, reused
    assert back.video_tracks()[-1] is generated[0]  # on top: existing track indices do not move
    assert find_shot_requests(back) == []  # a second fill has nothing left to do
    assert len(find_shot_requests(back, include_fulfilled=True)) == 4
    assert all(r.rate == exact for r in requests)


def test_one_hour_at_23976_is_not_off_by_one(tmp_path: Path) -> None:
    """Resolve writes the timeline at 23.976, another tool wrote the clips at 24000/1001: truncating
    frame math lands the request one frame early after an hour of material."""
    tl = otio.schema.Timeline("long", global_start_time=RT(HOUR, 23.976))
    track = otio.schema.Track("V1")
    for i in range(90):  # 90 x 960 = 86400 frames (one hour at 24 nominal)
        track.append(_clip(f"c{i:02d}", 960, 24000 / 1001))
    gap = _ttt_gap(48, 24000 / 1001, "after an hour")
    track.append(gap)
    tl.tracks.append(track)
    truncated = (tl.global_start_time + gap.range_in_parent().start_time).rescaled_to(23.976).to_frames()
    assert truncated == 2 * HOUR - 1  # the trap

    tl = round_trip(tl, tmp_path / "in.otio")
    (request,) = find_shot_requests(tl)
    assert request.record_start == 2 * HOUR
    place_generated_shot(tl, request, result_for(request, tmp_path))
    back = round_trip(tl, tmp_path / "out.otio")
    assert placed_frames(back) == {request.id: (2 * HOUR, 48)}


def test_changed_edit_is_generated_again(tmp_path: Path) -> None:
    tl = otio.schema.Timeline("edit", global_start_time=RT(HOUR, 24))
    track = otio.schema.Track("V1")
    clip = _clip("A", 100, 24)
    clip.source_range = _range(0, 10, 24)
    track.append(clip)
    track.append(_ttt_gap(20, 24, "x"))
    tl.tracks.append(track)
    (request,) = find_shot_requests(tl)
    place_generated_shot(tl, request, result_for(request, tmp_path))
    assert find_shot_requests(tl) == []
    track[0].source_range = _range(0, 12, 24)  # the editor lengthened the clip before the shot
    (moved,) = find_shot_requests(tl)
    assert (moved.id, moved.record_start) == (request.id, HOUR + 12)
    place_generated_shot(tl, moved, result_for(moved, tmp_path))  # replaces the old take
    assert placed_frames(tl) == {request.id: (HOUR + 12, 20)}


def test_media_references_and_metadata(tmp_path: Path) -> None:
    tl = otio.schema.Timeline("edit", global_start_time=RT(HOUR, 24))
    track = otio.schema.Track("V1")
    track.append(_ttt_gap(48, 24, "a fox"))
    tl.tracks.append(track)
    (request,) = find_shot_requests(tl)
    result = result_for(request, tmp_path)
    place_generated_shot(tl, request, result)
    back = round_trip(tl, tmp_path / "out.otio")
    (clip,) = [c for t in back.video_tracks() if is_generated_track(t) for c in t.find_clips()]

    refs = clip.media_references()
    assert set(refs) == {DEFAULT_MEDIA_KEY, FIRST_FRAME_KEY}
    assert clip.active_media_reference_key == DEFAULT_MEDIA_KEY
    seq = refs[DEFAULT_MEDIA_KEY]
    assert isinstance(seq, otio.schema.ImageSequenceReference)
    assert (seq.name_prefix, seq.name_suffix, seq.start_frame, seq.frame_zero_padding) == (
        "shot.",
        ".exr",
        1001,
        4,
    )
    assert seq.target_url_base.startswith("file:///") and seq.target_url_base.endswith("/")
    assert seq.number_of_images_in_sequence() == 48
    assert seq.target_url_for_image_number(47).endswith("/shot.1048.exr")
    assert file_url_to_path(seq.target_url_for_image_number(0)) == str(
        tmp_path / "gen" / request.id / "shot.1001.exr"
    )
    first = refs[FIRST_FRAME_KEY]
    assert first.target_url == seq.target_url_for_image_number(0)
    assert plain(clip.metadata["ttt_studio"]) == {
        "job_id": result.job_id,
        "request_id": request.id,
        "request_kind": "gap",
        "storyboard": [],
        "prompt": "a fox",
        "seed": 3,
        "model": "ttt-5b",
        "conform": {  # how the frames were made to fit the edit, and what they are
            **CONFORM,
            "delivered": {
                "rate": "24",
                "width": 1920,
                "height": 1080,
                "pixel_aspect": 1.0,
                "colorspace": "lin_ap1_scene",
                "fit": "fit",
            },
            "rate": "24",
        },
    }
    assert (
        seq.rate == 24.0 and clip.source_range.duration.rate == 24.0
    )  # the clip plays at the delivered rate
    assert use_first_frame_references(back) == 1
    assert clip.active_media_reference_key == FIRST_FRAME_KEY


def test_regenerating_replaces_and_overlaps_get_a_second_track(tmp_path: Path) -> None:
    tl = otio.schema.Timeline("edit", global_start_time=RT(0, 25))
    track = otio.schema.Track("V1")
    track.append(_ttt_gap(50, 25, "gap shot"))
    track.markers.append(
        otio.schema.Marker(
            "overlapping marker", _range(25, 50, 25), metadata={"ttt_studio": {"prompt": "marker shot"}}
        )
    )
    tl.tracks.append(track)
    marker_req, gap_req = find_shot_requests(tl)
    place_generated_shot(tl, gap_req, result_for(gap_req, tmp_path))
    place_generated_shot(tl, marker_req, result_for(marker_req, tmp_path))
    names = [t.name for t in tl.video_tracks() if is_generated_track(t)]
    assert names == [GENERATED_TRACK_NAME, f"{GENERATED_TRACK_NAME} 2"]

    again = result_for(gap_req, tmp_path)
    again.job_id = "job-second-take"
    place_generated_shot(tl, gap_req, again)
    clips = [c for t in tl.video_tracks() if is_generated_track(t) for c in t.find_clips()]
    assert sorted(c.metadata["ttt_studio"]["job_id"] for c in clips) == [
        "job-second-take",
        f"job-{marker_req.id}",
    ]
    assert placed_frames(tl) == {gap_req.id: (0, 50), marker_req.id: (25, 50)}


def _one_request(tmp_path: Path):
    tl = otio.schema.Timeline("edit", global_start_time=RT(HOUR, 24))
    track = otio.schema.Track("V1")
    track.append(_ttt_gap(20, 24, "x"))
    tl.tracks.append(track)
    (request,) = find_shot_requests(tl)
    return tl, request, result_for(request, tmp_path)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"frame_count": 19}, "needs 20 frames, result 'job-v0.i0.gap' has only 19"),
        ({"rate": Fraction(25)}, "rates differ"),
        ({"request_id": "other"}, "result is for request 'other', not 'v0.i0.gap'"),
        ({"name_suffix": ""}, "name_suffix is empty"),
    ],
)
def test_placement_errors(tmp_path: Path, change, match) -> None:
    tl, request, result = _one_request(tmp_path)
    for key, value in change.items():
        setattr(result, key, value)
    with pytest.raises(PlacementError, match=match):
        place_generated_shot(tl, request, result)


@pytest.mark.parametrize("rate_name", RATES)
def test_back_to_back_requests_share_the_generated_track(rate_name: str, tmp_path: Path) -> None:
    """A shot starting on the frame the previous one ends on does not overlap it: one generated track."""
    exact, rate = RATES[rate_name]
    tl = otio.schema.Timeline("edit", global_start_time=RT(HOUR, rate))
    track = otio.schema.Track("V1")
    track.append(_ttt_gap(48, rate, "first"))
    track.append(_ttt_gap(48, rate, "second"))
    tl.tracks.append(track)
    first, second = find_shot_requests(tl)
    assert (first.record_start, first.record_end, second.record_start) == (HOUR, HOUR + 48, HOUR + 48)
    for request in (first, second):
        place_generated_shot(tl, request, result_for(request, tmp_path))
    back = round_trip(tl, tmp_path / "out.otio")
    generated = [t for t in back.video_tracks() if is_generated_track(t)]
    assert [t.name for t in generated] == [GENERATED_TRACK_NAME]
    assert [c.metadata["ttt_studio"]["request_id"] for c in generated[0].find_clips()] == [
        first.id,
        second.id,
    ]
    assert placed_frames(back) == {first.id: (HOUR, 48), second.id: (HOUR + 48, 48)}
    assert exact == first.rate


def test_the_clip_rate_is_the_delivered_rate(tmp_path: Path) -> None:
    _, request, result = _one_request(tmp_path)
    with pytest.raises(
        PlacementError, match="its frames say 8 fps .* placed at 24; the delivered rate must be"
    ):
        ShotResult(**{**result.__dict__, "media": DeliveredMedia(8, 64, 64, 1.0, "srgb_rec709_scene")})


def test_request_before_the_timeline_start_is_refused(tmp_path: Path) -> None:
    tl, request, result = _one_request(tmp_path)
    request.record_start = HOUR - 1
    with pytest.raises(PlacementError, match="before the timeline start 86400"):
        place_generated_shot(tl, request, result)


def test_shot_result_dict_round_trip(tmp_path: Path) -> None:
    _, _, result = _one_request(tmp_path)
    result.storyboard = [{"text": "a", "neg_text": "", "requires_scene_transition": True}]
    assert ShotResult.from_dict(result.to_dict()) == result


@pytest.mark.parametrize("rate", [24, Fraction(24000, 1001)], ids=str)
def test_build_result_timeline(tmp_path: Path, rate) -> None:
    shots = [
        ShotResult("r1", "j", str(tmp_path / "a"), "a.", 48, Fraction(rate)),
        ShotResult("r2", "j", str(tmp_path / "b"), "b.", 30, Fraction(rate)),  # follows r1
        ShotResult("r3", "j", str(tmp_path / "c"), "c.", 10, Fraction(rate), record_start=HOUR + 500),
    ]
    tl = round_trip(build_result_timeline(shots, rate, start_frame=HOUR), tmp_path / "result.otio")
    assert placed_frames(tl) == {"r1": (HOUR, 48), "r2": (HOUR + 48, 30), "r3": (HOUR + 500, 10)}
    with pytest.raises(PlacementError, match="is at 25 fps"):
        build_result_timeline([ShotResult("r", "j", "/tmp", "a.", 5, Fraction(25))], rate)
