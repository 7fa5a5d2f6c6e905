"""`ttt-studio fill` resumes on a real server: a rerun keeps what OUT already holds, finished jobs are
fetched instead of generated again (idempotency keys from request + settings), and jobs that ended
cancelled or failed are submitted anew rather than handed back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import opentimelineio as otio
from hp_helpers import FAST, TOKEN, job_states

from host_plugin import cli
from host_plugin.core.requests import find_shot_requests, is_generated_track
from host_plugin.core.shot_job import GenerationSettings

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
START = 86400


def _edit(path: Path) -> Path:
    """V1: gap with a prompt (10) | clip (20) | gap marked without text (10): needs --prompt."""
    tl = otio.schema.Timeline("resume", global_start_time=RT(START, 24))
    track = otio.schema.Track("V1")
    track.append(
        otio.schema.Gap(
            source_range=TR(duration=RT(10, 24)), metadata={"ttt_studio": {"prompt": "A kite rises."}}
        )
    )
    media = otio.schema.ExternalReference("file:///m/a.mov", TR(RT(0, 24), RT(100, 24)))
    track.append(otio.schema.Clip("A", media, TR(RT(0, 24), RT(20, 24))))
    track.append(otio.schema.Gap(source_range=TR(duration=RT(10, 24)), metadata={"ttt_studio": {}}))
    tl.tracks.append(track)
    otio.adapters.write_to_file(tl, str(path))
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


def _placed_jobs(path: Path) -> dict:
    timeline = otio.adapters.read_from_file(str(path))
    return {
        c.metadata["ttt_studio"]["request_id"]: c.metadata["ttt_studio"]["job_id"]
        for t in timeline.video_tracks()
        if is_generated_track(t)
        for c in t.find_clips()
    }


def test_a_rerun_keeps_what_was_placed_and_makes_only_the_rest(
    hp_server: Any, tmp_path: Path, capsys: Any
) -> None:
    """Before: a failure wrote nothing (the frames of finished shots stayed on disk) and a rerun
    generated every shot again."""
    edit, out = _edit(tmp_path / "edit.otio"), tmp_path / "out.otio"
    jobs_before = len(job_states(hp_server.address))
    assert _fill(hp_server, str(edit), "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "failed: request v0.i2.gap" in err and "1 of 2 request(s) failed, 1 shot(s) placed" in err
    first = _placed_jobs(out)
    assert list(first) == ["v0.i0.gap"]  # what worked is placed
    assert len(job_states(hp_server.address)) == jobs_before + 1

    assert _fill(hp_server, str(edit), "-o", str(out), "--prompt", "Waves roll in.") == 0
    assert "1 shot(s) placed, 1 kept from" in capsys.readouterr().out
    second = _placed_jobs(out)
    assert second["v0.i0.gap"] == first["v0.i0.gap"] and set(second) == {"v0.i0.gap", "v0.i2.gap"}
    assert len(job_states(hp_server.address)) == jobs_before + 2  # one new job, not two
    assert find_shot_requests(otio.adapters.read_from_file(str(out))) == []


def test_finished_jobs_are_fetched_not_generated_again(hp_server: Any, tmp_path: Path, capsys: Any) -> None:
    """A run that stopped after the server finished (OUT never written) is resumed from the server."""
    edit = _edit(tmp_path / "edit.otio")
    args = ["--prompt", "Leaves fall."]
    assert _fill(hp_server, str(edit), "-o", str(tmp_path / "a.otio"), *args) == 0
    jobs = len(job_states(hp_server.address))
    # another output (nothing to carry over), frames into another folder: the same jobs come back
    assert _fill(hp_server, str(edit), "-o", str(tmp_path / "b.otio"), *args) == 0
    assert _placed_jobs(tmp_path / "b.otio") == _placed_jobs(tmp_path / "a.otio")
    assert len(job_states(hp_server.address)) == jobs
    assert len(list((tmp_path / "b_frames").rglob("*.exr"))) >= 20  # fetched again into b's folder
    # other settings are another request: a new job
    assert _fill(hp_server, str(edit), "-o", str(tmp_path / "c.otio"), "--seed", "7", *args) == 0
    assert len(job_states(hp_server.address)) == jobs + 2
    capsys.readouterr()


def test_idempotency_key_follows_request_and_settings(tmp_path: Path) -> None:
    request = find_shot_requests(otio.adapters.read_from_file(str(_edit(tmp_path / "e.otio"))))[0]
    settings = GenerationSettings(output_dir=str(tmp_path / "x"), steps=1)
    key = cli.idempotency_key(request, settings)
    assert key.startswith(cli.KEY_PREFIX) and len(key) <= 200  # the server's limit
    assert cli.idempotency_key(request, GenerationSettings(output_dir=str(tmp_path / "y"), steps=1)) == key
    assert cli.idempotency_key(request, GenerationSettings(output_dir=str(tmp_path / "x"), steps=2)) != key
    request.prompt = "another prompt"
    assert cli.idempotency_key(request, settings) != key


def test_a_cancelled_job_is_submitted_anew(client: Any) -> None:
    segments = [{"text": "A slow pan across a desert."}]
    params = dict(FAST, steps=200)  # seconds on the slowed server: cancelled while running
    key = f"test-resume-{time.time_ns()}"
    first = client.submit(segments, idempotency_key=key, **params)
    client.cancel(first.job_id)
    deadline = time.monotonic() + 60
    while client.get_job(first.job_id).state != "cancelled":
        assert time.monotonic() < deadline, client.get_job(first.job_id)
        time.sleep(0.05)
    assert (
        client.submit(segments, idempotency_key=key, **params).job_id == first.job_id
    )  # the server's answer

    resuming = cli.ResumingClient(client)
    again = resuming.submit(segments, idempotency_key=key, **params)
    assert again.job_id != first.job_id and again.idempotency_key == f"{key}.retry1"
    assert resuming.submit(segments, idempotency_key=key, **params).job_id == again.job_id  # then resumed
    client.cancel(again.job_id)
