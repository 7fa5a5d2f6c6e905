"""A shot job's delivery: each request becomes exactly its record range at its rate, in the edit's format and
colour, and its storyboard length is counted in segments of three seconds of edit time."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import opentimelineio as otio
import pytest
from hp_helpers import FAST_DEFAULT, TOKEN

from host_plugin.core.client import ServerInfo
from host_plugin.core.delivery import Delivery
from host_plugin.core.errors import ClientError, RequestError
from host_plugin.core.exr_io import read_exr, write_rgba_exr
from host_plugin.core.placement import ShotResult, place_generated_shot
from host_plugin.core.requests import ShotRequest, find_shot_requests
from host_plugin.core.shot_job import (
    DELIVERY_DEFAULTS,
    DeliverySettings,
    Format,
    GenerationSettings,
    add_delivery_arguments,
    delivered_media,
    delivery_settings_from,
    generate_shot,
    storyboard_for,
)

NTSC_FILM = Fraction(24000, 1001)


def _info(max_segments: int = 20) -> ServerInfo:
    """The shipped model's shape: 8 fps, 25 native frames in segment 0 and 24 after."""
    return ServerInfo(
        address="loopback",
        server_version="test",
        api_version="1",
        model={"name": "default"},
        capabilities=("storyboard", "delivery"),
        limits={"max_segments": max_segments},
        fps=8.0,
        frames_per_segment=24,
        caller="alice",
        first_segment_frames=25,
    )


def _request(
    duration: int, rate: object, storyboard: list | None = None, prompt: str | None = None
) -> ShotRequest:
    return ShotRequest(
        "stack.m0",
        "marker",
        "",
        -1,
        86400,
        duration,
        rate,
        storyboard=storyboard or [],
        prompt=prompt,
        name="m",
    )


@pytest.mark.parametrize("rate", [24, NTSC_FILM])
def test_a_two_second_marker_takes_a_one_beat_storyboard(rate: object) -> None:
    request = _request(48, rate, storyboard=[{"text": "A cat yawns on a chair."}])
    delivery = DeliverySettings().for_request(request)
    assert (delivery.rate, delivery.duration, delivery.segments) == (Fraction(rate), 48, 1)
    assert storyboard_for(request, _info(), delivery) == [{"text": "A cat yawns on a chair."}]


@pytest.mark.parametrize(
    ("duration", "rate", "segments"),
    [(72, 24, 1), (73, 24, 2), (72, NTSC_FILM, 2), (71, NTSC_FILM, 1), (1512, NTSC_FILM, 22), (75, 25, 1)],
)
def test_a_prompt_is_repeated_over_the_segments_the_edit_time_needs(
    duration: int, rate: object, segments: int
) -> None:
    # 3 s at 23.976 is 71.93 frames: 72 frames need a second segment, 71 do not; 63 s is 1510.5 frames
    request = _request(duration, rate, prompt="A red ball rolls.")
    board = storyboard_for(request, _info(max_segments=30), DeliverySettings().for_request(request))
    assert len(board) == segments and {s["text"] for s in board} == {"A red ball rolls."}


def test_storyboard_length_errors_speak_in_segments_of_edit_time() -> None:
    short = _request(73, 24, storyboard=[{"text": "one beat"}])
    with pytest.raises(
        RequestError,
        match=r"storyboard has 1 segment\(s\) \(3 s of edit time each\); the shot needs exactly 2",
    ):
        storyboard_for(short, _info(), DeliverySettings().for_request(short))
    too_many = _request(48, 24, storyboard=[{"text": "one"}, {"text": "two"}])
    with pytest.raises(RequestError, match="has 2 segment.* the shot needs exactly 1: lengthen the shot"):
        storyboard_for(too_many, _info(), DeliverySettings().for_request(too_many))
    long = _request(24 * 3 * 5, 24, prompt="x")
    with pytest.raises(
        RequestError,
        match="needs 5 segments .* max_segments=4; split the shot into pieces of at most 12 seconds",
    ):
        storyboard_for(long, _info(max_segments=4), DeliverySettings().for_request(long))
    with pytest.raises(RequestError, match="neither a storyboard nor a prompt"):
        storyboard_for(_request(10, 24), _info(), DeliverySettings().for_request(_request(10, 24)))


def test_delivery_settings_take_the_hosts_format_and_colour_and_keep_delivery_defaults() -> None:
    assert (
        (DeliverySettings().fit, DeliverySettings().filter, DeliverySettings().retime)
        == (
            DELIVERY_DEFAULTS["fit"],
            DELIVERY_DEFAULTS["filter"],
            DELIVERY_DEFAULTS["retime"],
        )
        == ("fit", "lanczos", "flow")
    )

    class Host:
        def target_format(self) -> Format:
            return Format(2048, 858, 2.0)

        def working_colorspace(self) -> str:
            return "lin_ap1_scene"

    resolved = DeliverySettings(retime="blend").for_host(Host())
    delivery = resolved.for_request(_request(48, NTSC_FILM, prompt="x"), extra_frames=1)
    assert delivery == Delivery(NTSC_FILM, 49, 2048, 858, 2.0, "fit", "lanczos", "blend", "lin_ap1_scene")
    mine = DeliverySettings(format=Format(64, 64), colorspace="ACEScg").for_host(Host())
    assert (mine.format, mine.colorspace) == (Format(64, 64), "lin_ap1_scene")  # the user's choice wins


def test_bad_delivery_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match="delivery retime must be one of flow, blend, hold; got 'twixtor'"):
        DeliverySettings(retime="twixtor")
    with pytest.raises(ValueError, match="colour space 'Rec.1886 wrong' is not one ttt-studio delivers"):
        GenerationSettings("out", delivery=DeliverySettings(colorspace="Rec.1886 wrong"))
    with pytest.raises(ValueError, match="is not WIDTHxHEIGHT"):
        Format.parse("1080p")
    assert Format.parse("2048x858:2") == Format(2048, 858, 2.0)
    assert str(Format(1920, 1080)) == "1920x1080"
    with pytest.raises(ValueError, match="format width must be a whole number in 1..8192, got 0"):
        Format(0, 1080)


def test_delivered_frames_are_checked_against_the_delivery(tmp_path: Path) -> None:
    delivery = Delivery(NTSC_FILM, 48, 32, 18, 1.0, colorspace="lin_ap1_scene")
    good = write_rgba_exr(
        tmp_path / "good.exr", np.zeros((18, 32, 4), np.float32), "lin_ap1_scene", frames_per_second=NTSC_FILM
    )
    media = delivered_media(good, delivery)
    assert (media.rate, media.width, media.height, media.colorspace) == (NTSC_FILM, 32, 18, "lin_ap1_scene")
    native = write_rgba_exr(
        tmp_path / "native.exr",
        np.zeros((16, 16, 4), np.float32),
        "lin_rec709_scene",
        frames_per_second=Fraction(8),
    )
    with pytest.raises(
        ClientError,
        match=r"framesPerSecond 8 \(asked 24000/1001\); format 16x16 \(asked 32x18\); "
        r"colorInteropID 'lin_rec709_scene' \(asked 'lin_ap1_scene'\)",
    ):
        delivered_media(native, delivery)
    untimed = write_rgba_exr(tmp_path / "untimed.exr", np.zeros((18, 32, 4), np.float32), "lin_ap1_scene")
    with pytest.raises(ClientError, match="has no framesPerSecond attribute"):
        delivered_media(untimed, delivery)


def test_delivery_options_of_fill_and_resolves_script() -> None:
    parser = argparse.ArgumentParser()
    add_delivery_arguments(parser)
    settings = delivery_settings_from(
        parser.parse_args(["--format", "2048x858:2", "--retime", "hold", "--colorspace", "ACEScg"])
    )
    assert settings == DeliverySettings(Format(2048, 858, 2.0), "fit", "lanczos", "hold", "lin_ap1_scene")
    assert delivery_settings_from(parser.parse_args([])) == DeliverySettings()
    with pytest.raises(ValueError, match="is not WIDTHxHEIGHT"):
        delivery_settings_from(parser.parse_args(["--format", "HD"]))


def test_the_shipped_model_fills_a_two_second_marker_at_23976_in_aces(
    hp_default_server: Any, tmp_path: Path
) -> None:
    """64 x 64 frames at 8 fps become the 48 frames of a 2-s marker at 23.976, in a 16:9 format and ACEScg,
    and the placed clip records how (one truth: EXR framesPerSecond = clip rate = the request's rate)."""
    from host_plugin.core.client import TTTClient

    timeline = otio.schema.Timeline("edit", global_start_time=otio.opentime.RationalTime(86400, 24000 / 1001))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(
            source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(24, 24000 / 1001))
        )
    )
    timeline.tracks.append(track)
    marker = otio.schema.Marker(
        "beat",
        otio.opentime.TimeRange(
            otio.opentime.RationalTime(24, 24000 / 1001), otio.opentime.RationalTime(48, 24000 / 1001)
        ),
        metadata={"ttt_studio": {"storyboard": [{"text": "The cat runs right across the garden."}]}},
    )
    timeline.tracks.markers.append(marker)
    (request,) = find_shot_requests(timeline)
    assert (request.record_start, request.duration, request.rate) == (86424, 48, NTSC_FILM)
    delivery = DeliverySettings(format=Format(128, 72), colorspace="ACEScg")
    settings = GenerationSettings(str(tmp_path / "out"), delivery=delivery, **FAST_DEFAULT)
    with TTTClient(hp_default_server.address, token=TOKEN) as client:
        client.connect()
        result = generate_shot(client, request, settings)
    assert (result.frame_count, result.rate) == (48, NTSC_FILM)
    assert (result.media.rate, result.media.width, result.media.height, result.media.colorspace) == (
        NTSC_FILM,
        128,
        72,
        "lin_ap1_scene",
    )
    for path in result.frame_paths()[::47]:
        _, header = read_exr(path)
        assert header["framesPerSecond"] == NTSC_FILM and header["displayWindow"] == ((0, 0), (127, 71))
        assert header["colorInteropID"] == "lin_ap1_scene"
    report = result.conform
    assert (report["native_fps"], report["rate"], report["retime"]) == ("8", "24000/1001", "flow")
    assert report["generation_size"] == [64, 64] and report["colourspace"] == "lin_ap1_scene"
    place_generated_shot(timeline, request, result)
    otio.adapters.write_to_file(timeline, str(tmp_path / "out.otio"))
    back = otio.adapters.read_from_file(str(tmp_path / "out.otio"))
    (clip,) = back.tracks[-1].find_clips()
    recorded = clip.metadata["ttt_studio"]["conform"]
    assert recorded["native_fps"] == "8" and recorded["delivered"]["rate"] == "24000/1001"
    assert (
        list(recorded["generation_size"]) == [64, 64]
        and recorded["delivered"]["colorspace"] == "lin_ap1_scene"
    )
    assert (
        clip.media_reference.rate == pytest.approx(24000 / 1001)
        and ShotResult.from_dict(result.to_dict()) == result
    )
