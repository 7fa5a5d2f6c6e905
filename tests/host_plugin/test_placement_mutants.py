"""Placement behaviour the mutation run of host_plugin/core/placement.py found untested (issue #31).

What a host reads back from a delivered frame's real EXR header; the defaults of results saved by an
older or a hand-written fill state (`ShotResult.from_dict` of a dict with only the required keys); a
shot placed just before one already placed; what the errors name.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import opentimelineio as otio
import pytest

from host_plugin.core.errors import PlacementError, RequestError
from host_plugin.core.exr_io import read_exr, write_rgba_exr
from host_plugin.core.placement import (
    FIRST_FRAME_KEY,
    GENERATED_TRACK_NAME,
    DeliveredMedia,
    ShotResult,
    build_result_timeline,
    directory_url,
    file_url_to_path,
    make_generated_clip,
    place_generated_shot,
    use_first_frame_references,
)
from host_plugin.core.requests import ShotRequest, is_generated_track

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
HOUR = 86400  # 01:00:00:00 at 24 fps

REQUIRED = {
    "request_id": "v0.i1.gap",
    "job_id": "job-7",
    "directory": "/renders/v0.i1.gap",
    "name_prefix": "shot.",
    "frame_count": 12,
    "rate": "24000/1001",
}


def _header(tmp_path: Path, **kwargs: object) -> dict:
    path = tmp_path / "frame.1001.exr"
    write_rgba_exr(path, np.full((4, 6, 4), 0.5, np.float32), **kwargs)
    return read_exr(path)[1]


def test_delivered_media_reads_a_real_exr_header(tmp_path: Path) -> None:
    header = _header(
        tmp_path,
        frames_per_second=Fraction(24000, 1001),
        colour_interop_id="lin_ap1_scene",
        data_window=(1, 0, 6, 3),
        display_window=(0, 0, 9, 3),
        pixel_aspect_ratio=2.0,
    )
    media = DeliveredMedia.from_exr_header(header, fit="fill", where="frame 1001")
    assert media == DeliveredMedia(Fraction(24000, 1001), 10, 4, 2.0, "lin_ap1_scene", "fill")
    # a display window that does not start at the origin is still its own size
    header = _header(
        tmp_path, frames_per_second=24, data_window=(11, 20, 16, 23), display_window=(10, 20, 19, 23)
    )
    assert (DeliveredMedia.from_exr_header(header).width, DeliveredMedia.from_exr_header(header).height) == (
        10,
        4,
    )


def test_an_untagged_square_pixel_header_reads_as_defaults(tmp_path: Path) -> None:
    header = _header(tmp_path, frames_per_second=Fraction(25), colour_interop_id=None)
    header.pop("pixelAspectRatio", None)
    media = DeliveredMedia.from_exr_header(header)
    assert (media.rate, media.width, media.height) == (Fraction(25), 6, 4)
    assert (media.pixel_aspect, media.colorspace, media.fit) == (1.0, "", "fit")
    # the rate as a (numerator, denominator) pair, as some EXR readers give a rational attribute
    header["framesPerSecond"] = (30000, 1001)
    assert DeliveredMedia.from_exr_header(header).rate == Fraction(30000, 1001)


@pytest.mark.parametrize("fps", [None, "", 0])
def test_a_frame_without_a_rate_is_refused_by_name(tmp_path: Path, fps: object) -> None:
    header = _header(tmp_path)
    if fps is None:
        header.pop("framesPerSecond", None)
    else:
        header["framesPerSecond"] = fps
    with pytest.raises(
        PlacementError, match="^frame 1001 has no framesPerSecond attribute; a conformed frame"
    ):
        DeliveredMedia.from_exr_header(header, where="frame 1001")
    with pytest.raises(PlacementError, match="^frame has no framesPerSecond"):
        DeliveredMedia.from_exr_header(header)


def test_delivered_media_from_a_dict_with_only_rate_and_size() -> None:
    media = DeliveredMedia.from_dict({"rate": "24000/1001", "width": "1920", "height": 1080.0})
    assert media == DeliveredMedia(Fraction(24000, 1001), 1920, 1080)
    assert (media.pixel_aspect, media.colorspace, media.fit) == (1.0, "", "fit")
    assert isinstance(media.width, int) and isinstance(media.height, int)
    full = {"rate": "25", "width": 2048, "height": 858, "pixel_aspect": "2", "colorspace": 7, "fit": "fill"}
    media = DeliveredMedia.from_dict(full)
    assert (media.pixel_aspect, media.colorspace, media.fit) == (2.0, "7", "fill")


def test_a_result_from_only_its_required_keys_takes_the_documented_defaults() -> None:
    result = ShotResult.from_dict(dict(REQUIRED))
    assert result == ShotResult(
        "v0.i1.gap", "job-7", "/renders/v0.i1.gap", "shot.", 12, Fraction(24000, 1001)
    )
    assert (result.start_frame, result.padding, result.name_suffix) == (1001, 4, ".exr")
    assert (result.seed, result.model, result.prompt, result.record_start) == (None, "", None, None)
    assert (result.storyboard, result.metadata, result.media, result.conform) == ([], {}, None, {})
    assert result.frame_url(1001) == "file:///renders/v0.i1.gap/shot.1001.exr"


def test_a_result_dict_with_text_numbers_and_nulls() -> None:
    data = dict(
        REQUIRED,
        frame_count="12",
        start_frame="0",
        padding="6",
        name_suffix=".tif",
        seed="42",
        model="ttt-5b",
        record_start="86400",
        prompt=None,
        storyboard=None,
        metadata=None,
        media=None,
        conform=None,
    )
    result = ShotResult.from_dict(data)
    assert (result.frame_count, result.start_frame, result.padding) == (12, 0, 6)
    assert (result.seed, result.record_start, result.model, result.name_suffix) == (
        42,
        86400,
        "ttt-5b",
        ".tif",
    )
    assert (result.storyboard, result.metadata, result.media, result.conform) == ([], {}, None, {})
    assert result.frame_url(0) == "file:///renders/v0.i1.gap/shot.000000.tif"


def test_a_result_dict_lacking_keys_names_them() -> None:
    data = {k: v for k, v in REQUIRED.items() if k not in ("rate", "job_id")}
    with pytest.raises(PlacementError, match=r"lacks keys \['job_id', 'rate'\]; got keys \['directory', "):
        ShotResult.from_dict(data)


def test_delivered_media_snaps_its_rate_and_checks_its_size() -> None:
    assert DeliveredMedia(23.976, 1, 1).rate == Fraction(24000, 1001)  # one pixel is a size
    for bad in (0, True, 1920.0):
        with pytest.raises(
            PlacementError, match=rf"^delivered width must be a whole number >= 1, got {bad!r}$"
        ):
            DeliveredMedia(24, bad, 1080)  # type: ignore[arg-type]
    with pytest.raises(PlacementError, match=r"^delivered pixel_aspect must be > 0, got 0\.0$"):
        DeliveredMedia(24, 1920, 1080, 0.0)


def test_a_result_round_trips_with_every_field_set() -> None:
    result = ShotResult(
        **dict(REQUIRED, rate=Fraction(24000, 1001)),  # type: ignore[arg-type]
        start_frame=0,
        padding=6,
        name_suffix=".tif",
        seed=9,
        model="ttt-5b",
        prompt="Dusk.",
        record_start=HOUR + 10,
        metadata={"take": 2},
        media=DeliveredMedia(Fraction(24000, 1001), 1920, 1080),
        conform={"native_fps": "8"},
    )
    assert ShotResult.from_dict(result.to_dict()) == result


def test_file_url_to_path_names_a_url_that_is_not_a_file() -> None:
    with pytest.raises(PlacementError, match=r"^'https://host/a\.exr' is not a file:// URL; cannot turn it"):
        file_url_to_path("https://host/a.exr")


def _edit() -> otio.schema.Timeline:
    timeline = otio.schema.Timeline("edit", global_start_time=RT(HOUR, 24))
    track = otio.schema.Track("V1")
    media = otio.schema.ExternalReference("file:///m/plate.mov", TR(RT(0, 24), RT(200, 24)))
    track.append(otio.schema.Clip("plate", media, TR(RT(0, 24), RT(200, 24))))
    timeline.tracks.append(track)
    return timeline


def _request(request_id: str, start: int, duration: int) -> ShotRequest:
    return ShotRequest(request_id, "gap", "V1", 0, start, duration, Fraction(24))


def _result(request: ShotRequest) -> ShotResult:
    return ShotResult(
        request.id, f"job-{request.id}", f"/renders/{request.id}", "s.", request.duration, request.rate
    )


def _generated(timeline: otio.schema.Timeline) -> list:
    return [t for t in timeline.video_tracks() if is_generated_track(t)]


def test_a_shot_ending_where_a_placed_one_starts_shares_its_track_without_empty_gaps() -> None:
    timeline = _edit()
    later, earlier = _request("later", HOUR + 100, 10), _request("earlier", HOUR + 90, 10)
    for request in (later, earlier):
        place_generated_shot(timeline, request, _result(request))
    (track,) = _generated(timeline)
    assert track.kind == otio.schema.TrackKind.Video
    assert [(type(i).__name__, i.duration().to_frames()) for i in track] == [
        ("Gap", 90),
        ("Clip", 10),
        ("Clip", 10),
    ]
    assert [c.metadata["ttt_studio"]["request_id"] for c in track.find_clips()] == ["earlier", "later"]
    assert use_first_frame_references(timeline) == 2
    assert all(c.active_media_reference_key == FIRST_FRAME_KEY for c in track.find_clips())


def test_a_result_timeline_starts_at_frame_0_by_default_and_keeps_its_name() -> None:
    shot = _result(_request("r1", 0, 5))
    default = build_result_timeline([shot], 24)
    assert (default.name, default.global_start_time.to_frames()) == ("TTT result", 0)
    assert build_result_timeline([shot], 24, start_frame=HOUR, name="reel 2").name == "reel 2"
    shot.record_start = HOUR - 1
    with pytest.raises(
        PlacementError,
        match=r"^request 'r1' starts at frame 86399, before the timeline start 86400; "
        r"record frames are absolute \(they include global_start_time\)$",
    ):
        build_result_timeline([shot], 24, start_frame=HOUR)


def test_trimmed_stacks_and_foreign_items_on_a_generated_track_are_named() -> None:
    request = _request("r1", HOUR + 10, 5)
    trimmed = _edit()
    trimmed.tracks.source_range = TR(RT(0, 24), RT(100, 24))
    with pytest.raises(
        PlacementError, match=r"^timeline 'edit': its stack is trimmed \(source_range set\); unsupported$"
    ):
        place_generated_shot(trimmed, request, _result(request))

    timeline = _edit()
    place_generated_shot(timeline, request, _result(request))
    (track,) = _generated(timeline)
    track.append(otio.schema.Stack("nest", source_range=TR(RT(0, 24), RT(5, 24))))
    with pytest.raises(
        PlacementError,
        match=rf"^generated track '{GENERATED_TRACK_NAME}' holds a Stack \('nest'\); only clips and gaps "
        "are expected there$",
    ):
        place_generated_shot(timeline, request, _result(request))
    track.pop()
    track.source_range = TR(RT(0, 24), RT(5, 24))
    with pytest.raises(
        PlacementError,
        match=rf"^generated track '{GENERATED_TRACK_NAME}' is trimmed \(source_range set\); remove",
    ):
        place_generated_shot(timeline, request, _result(request))


def test_one_frame_from_frame_0_unpadded_is_a_result_and_bad_frames_are_named() -> None:
    result = _result(_request("r1", HOUR, 1))
    result.start_frame, result.padding = 0, 0
    clip = make_generated_clip(result, 1)
    assert clip.media_reference.target_url_for_image_number(0) == "file:///renders/r1/s.0.exr"
    with pytest.raises(PlacementError, match=r"^result 'r1' has 1 frames; cannot show 2 of them$"):
        make_generated_clip(result, 2)
    for start, padding in ((-1, 4), (1001, -1)):
        result.start_frame, result.padding = start, padding
        with pytest.raises(
            PlacementError, match=rf"^result 'r1': start_frame {start} and padding {padding} must be >= 0$"
        ):
            make_generated_clip(result, 1)
    result.start_frame, result.padding, result.frame_count = 1001, 4, 0
    with pytest.raises(PlacementError, match=r"^result 'r1' has 0 frames; need >= 1$"):
        make_generated_clip(result, 1)


def test_the_first_frame_reference_covers_the_whole_result() -> None:
    result = _result(_request("r1", HOUR, 12))
    first = make_generated_clip(result, 10).media_references()[FIRST_FRAME_KEY]
    assert first.target_url == "file:///renders/r1/s.1001.exr"
    assert first.available_range == TR(RT(1001, 24), RT(12, 24))


def test_a_clip_takes_the_request_name_storyboard_and_prompt_unless_the_result_has_its_own() -> None:
    request = _request("v0.i2.gap", HOUR, 10)
    request.name, request.prompt = "Dawn", "A field at dawn."
    request.storyboard = [{"text": "A field.", "neg_text": "", "requires_scene_transition": False}]
    clip = make_generated_clip(_result(request), 10, request)
    assert clip.name == "Dawn [TTT job-v0.i2.gap]"
    meta = clip.metadata["ttt_studio"]
    assert (meta["prompt"], [dict(s) for s in meta["storyboard"]]) == ("A field at dawn.", request.storyboard)
    result = _result(request)
    result.prompt = "A field at dusk."
    result.storyboard = [{"text": "Dusk.", "neg_text": "", "requires_scene_transition": False}]
    clip = make_generated_clip(result, 10, request)
    meta = clip.metadata["ttt_studio"]
    assert (meta["prompt"], [dict(s) for s in meta["storyboard"]]) == ("A field at dusk.", result.storyboard)
    request.name = ""
    assert make_generated_clip(_result(request), 10, request).name == "v0.i2.gap [TTT job-v0.i2.gap]"


def test_directory_urls_end_in_one_slash_and_bad_directories_are_named() -> None:
    assert directory_url("file:///renders/r1/") == "file:///renders/r1/"
    assert directory_url("/renders/r1") == "file:///renders/r1/"
    for bad in ("", 5):
        with pytest.raises(
            PlacementError, match=rf"^result directory must be a non-empty path or URL, got {bad!r}$"
        ):
            directory_url(bad)  # type: ignore[arg-type]


def test_a_new_generated_track_is_logged_with_its_request(caplog: Any) -> None:
    timeline = _edit()
    first, overlapping = _request("r1", HOUR + 10, 10), _request("r2", HOUR + 15, 10)
    with caplog.at_level(logging.INFO, logger="host_plugin.core.placement"):
        for request in (first, overlapping):
            place_generated_shot(timeline, request, _result(request))
    assert [r.getMessage() for r in caplog.records if r.name == "host_plugin.core.placement"] == [
        f"added track '{GENERATED_TRACK_NAME}' for request r1",
        f"added track '{GENERATED_TRACK_NAME} 2' for request r2",
    ]


def test_a_bad_storyboard_in_a_saved_result_names_the_result() -> None:
    data = dict(REQUIRED, storyboard=[{"text": 5}])
    with pytest.raises(
        RequestError, match=r"^result v0\.i1\.gap: storyboard\[0\]\['text'\] must be a non-empty"
    ):
        ShotResult.from_dict(data)
