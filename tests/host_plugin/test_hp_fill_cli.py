"""`ttt-studio fill` against a real server: OTIO edits at 24 and 23.976 fps starting at 01:00:00:00, with
requests written the three ways (gap metadata, marker metadata, clip running past its media), every
generated clip placed at its exact absolute frame; malformed edits give clear errors and no output."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio
import pytest
from hp_helpers import FAST, TOKEN

from host_plugin import cli
from host_plugin.core.exr_io import read_exr
from host_plugin.core.placement import file_url_to_path
from host_plugin.core.requests import find_shot_requests

START = 86400  # 01:00:00:00


def _edit(path: Path, rate: Fraction) -> Path:
    """V1: A (30) | gap with a prompt (12) | B (40, a marker with a storyboard at +5 for 10) | C (12 of 6
    available frames, with a prompt: a clip asking for new media)."""
    fps = float(rate)

    def tr(start: int, duration: int) -> otio.opentime.TimeRange:
        return otio.opentime.TimeRange(
            otio.opentime.RationalTime(start, fps), otio.opentime.RationalTime(duration, fps)
        )

    def clip(name: str, duration: int, available: int = 1000) -> otio.schema.Clip:
        ref = otio.schema.ExternalReference(f"file:///media/{name}.mov", available_range=tr(0, available))
        return otio.schema.Clip(name, media_reference=ref, source_range=tr(0, duration))

    timeline = otio.schema.Timeline("edit", global_start_time=otio.opentime.RationalTime(START, fps))
    track = otio.schema.Track("V1")
    gap = otio.schema.Gap(source_range=tr(0, 12))
    gap.metadata["ttt_studio"] = {"prompt": "A red ball rolls across a wooden floor."}
    b = clip("B", 40)
    marker = otio.schema.Marker("cat", marked_range=tr(5, 10))
    marker.metadata["ttt_studio"] = {"storyboard": [{"text": "A cat jumps onto a chair and yawns."}]}
    b.markers.append(marker)
    c = clip("C", 12, available=6)  # at most half a second: the tiny model's one segment
    c.metadata["ttt_studio"] = {"prompt": "The camera pans to the window."}
    track.extend([clip("A", 30), gap, b, c])
    timeline.tracks.append(track)
    otio.adapters.write_to_file(timeline, str(path))
    return path


def _fill(hp_server: Any, *args: str) -> int:
    fast = [
        "--steps",
        "1",
        "--height",
        str(FAST["height"]),
        "--width",
        str(FAST["width"]),
        "--guidance-scale",
        "1",
    ]
    return cli.main(["fill", *args, "--server", hp_server.address, "--token", TOKEN, *fast])


def _frames(time: otio.opentime.RationalTime, rate: Fraction) -> int:
    """Exact integer frames of an OTIO time at `rate` (OTIO stores 23.976 as a float; round, never truncate)."""
    return round(Fraction(time.value) * rate / Fraction(time.rate).limit_denominator(1001))


@pytest.mark.parametrize("rate", [Fraction(24), Fraction(24000, 1001)], ids=["24", "23.976"])
def test_fill_places_every_shot_frame_accurately(
    hp_server: Any, tmp_path: Path, rate: Fraction, capsys: Any
) -> None:
    edit = _edit(tmp_path / "edit.otio", rate)
    requests = find_shot_requests(otio.adapters.read_from_file(str(edit)))
    assert sorted(r.kind for r in requests) == ["clip", "gap", "marker"]  # the three ways are all found
    out, report = tmp_path / "out.otio", tmp_path / "report.json"
    assert _fill(hp_server, str(edit), "-o", str(out), "--report", str(report)) == 0, capsys.readouterr().err

    timeline = otio.adapters.read_from_file(str(out))
    generated = [t for t in timeline.video_tracks() if t.name == "TTT generated"]
    assert len(generated) == 1
    placed = {}
    for clip in generated[0].find_clips(shallow_search=True):
        start = START + _frames(generated[0].range_of_child(clip).start_time, rate)
        placed[clip.metadata["ttt_studio"]["request_id"]] = (
            start,
            _frames(clip.source_range.duration, rate),
            clip,
        )
    expected = {"v0.i1.gap": (START + 30, 12), "v0.i2.m0": (START + 47, 10), "v0.i3.clip": (START + 82, 12)}
    assert {k: v[:2] for k, v in placed.items()} == expected
    for _, duration, clip in placed.values():
        ref = clip.media_reference
        assert isinstance(ref, otio.schema.ImageSequenceReference) and ref.start_frame == 1001
        paths = [
            file_url_to_path(ref.target_url_base + f"{ref.name_prefix}{1001 + i:04d}{ref.name_suffix}")
            for i in range(duration)
        ]
        for path in (paths[0], paths[-1]):
            pixels, _ = read_exr(path, check_finite=True)
            assert pixels.shape == (16, 16, 4)
        assert (
            clip.metadata["ttt_studio"]["job_id"]
            and abs(float(Fraction(ref.rate).limit_denominator(1001)) - float(rate)) < 1e-9
        )
    assert json.loads(report.read_text())["results"][0]["job_id"]
    # the filled edit asks for nothing more: a second fill places no new shot
    assert _fill(hp_server, str(out), "-o", str(tmp_path / "again.otio")) == 0
    assert "0 shot(s) placed" in capsys.readouterr().out


def test_malformed_edits_give_clear_errors_and_no_output(hp_server: Any, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "out.otio"
    bad_json = tmp_path / "bad.otio"
    bad_json.write_text('{"OTIO_SCHEMA": "Timeline.1", "tracks": [')
    assert _fill(hp_server, str(bad_json), "-o", str(out)) == 2
    assert "bad.otio: not a readable OTIO file: ValueError: JSON parse error" in capsys.readouterr().err
    deep = tmp_path / "deep.otio"
    deep.write_text("[" * 100_000)  # OTIO's parser would crash on it: refused before parsing
    assert _fill(hp_server, str(deep), "-o", str(out)) == 2
    assert "JSON nested deeper than 512 levels" in capsys.readouterr().err
    clip_file = tmp_path / "clip.otio"
    otio.adapters.write_to_file(otio.schema.Clip("lonely"), str(clip_file))
    assert _fill(hp_server, str(clip_file), "-o", str(out)) == 2
    assert "holds a Clip.2, expected a Timeline (Timeline.1)" in capsys.readouterr().err
    assert _fill(hp_server, str(tmp_path / "missing.otio"), "-o", str(out)) == 2
    assert "no such OTIO file" in capsys.readouterr().err
    assert not out.exists()


def test_plain_gaps_need_a_prompt(hp_server: Any, tmp_path: Path, capsys: Any) -> None:
    timeline = otio.schema.Timeline("plain", global_start_time=otio.opentime.RationalTime(START, 24))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(9, 24)))
    )
    track.append(
        otio.schema.Clip(
            "A", source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(5, 24))
        )
    )
    timeline.tracks.append(track)
    edit, out = tmp_path / "plain.otio", tmp_path / "out.otio"
    otio.adapters.write_to_file(timeline, str(edit))
    assert _fill(hp_server, str(edit), "-o", str(out)) == 0  # a plain gap is not a request by default
    assert "0 shot(s) placed" in capsys.readouterr().out
    assert _fill(hp_server, str(edit), "-o", str(out), "--requests-from", "gaps") == 1
    err = capsys.readouterr().err
    assert "failed: request v0.i0.gap" in err and "neither a storyboard nor a prompt" in err
    assert "1 of 1 request(s) failed, 0 shot(s) placed" in err
    assert _fill(hp_server, str(edit), "-o", str(out), "--requests-from", "gapz") == 2
    assert "--requests-from: unknown kind(s) ['gapz']" in capsys.readouterr().err
    args = ["--include-plain-gaps", "--prompt", "Waves on a beach.", "--first-frame-references"]
    assert _fill(hp_server, str(edit), "-o", str(out), *args) == 0
    placed = otio.adapters.read_from_file(str(out)).video_tracks()[-1]
    (clip,) = placed.find_clips()
    assert placed.range_of_child(clip).start_time.to_frames() == 0 and clip.duration().to_frames() == 9
    # for Resolve / Nuke Studio import: the active reference is the first frame's file
    assert clip.active_media_reference_key == "first_frame"
    assert Path(file_url_to_path(clip.media_reference.target_url)).name.endswith(".1001.exr")


def test_select_and_no_keep_going(hp_server: Any, tmp_path: Path, capsys: Any) -> None:
    timeline = otio.schema.Timeline("plain", global_start_time=otio.opentime.RationalTime(START, 24))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(8, 24)))
    )
    timeline.tracks.append(track)
    edit, out = tmp_path / "plain.otio", tmp_path / "out.otio"
    otio.adapters.write_to_file(timeline, str(edit))
    # a selected name that matches nothing is refused; --no-keep-going then generates and writes nothing
    assert _fill(hp_server, str(edit), "-o", str(out), "--select", "nothing", "--no-keep-going") == 1
    err = capsys.readouterr().err
    assert "selected name 'nothing' matches no gap, clip or marker name" in err
    assert f"{out} left as it was" in err and not out.exists()
    # the plain gap picked by its request id (as a previous run printed it)
    assert (
        _fill(hp_server, str(edit), "-o", str(out), "--select", "v0.i0.gap", "--prompt", "Dust drifts.") == 0
    )
    assert "1 shot(s) placed" in capsys.readouterr().out
    (clip,) = otio.adapters.read_from_file(str(out)).video_tracks()[-1].find_clips()
    assert clip.metadata["ttt_studio"]["request_id"] == "v0.i0.gap"
