"""Takes, approval and draft-first on a real server process on loopback (tiny model, real EXRs, real
OTIO): each take its own seed and frames, approval seen by GetJob and by a second client, another user
kept out, a preview job's drafts before its finals, and a cancel after the draft."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import opentimelineio as otio
import pytest
from srv_helpers import SMALL, STORYBOARD, TOKENS, ServerProcess

from host_plugin.core.exr_io import read_exr
from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient

pytestmark = pytest.mark.slow  # one server process for the module, about 30 s of jobs on 2 cores


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[ServerProcess]:
    """A server whose steps are slowed to 0.1 s, so an approval or a cancel lands while a job runs."""
    data = tmp_path_factory.mktemp("takes") / "data"
    process = ServerProcess(data, token_file, "--debug-step-delay", "0.1").start()
    yield process
    assert process.terminate() == 0, process.log_text()[-3000:]


def _client(server: ServerProcess, user: str) -> StudioClient:
    return StudioClient(server.address, token=TOKENS[user], retries=2)


def _code(call) -> grpc.StatusCode:  # noqa: ANN001 - a zero-argument callable that must fail
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_three_takes_three_seeds_approval_seen_by_a_second_client_and_hidden_from_others(
    server: ServerProcess, tmp_path: Path
) -> None:
    with (
        _client(server, "user01") as alice,
        _client(server, "user01") as monitor,
        _client(server, "bob") as bob,
    ):
        job_id = alice.submit(STORYBOARD, **{**SMALL, "seed": 40}, takes=3).job_id
        seen: list[pb.JobEvent] = []
        watcher = threading.Thread(target=lambda: seen.extend(monitor.watch(job_id)))
        watcher.start()
        for event in alice.watch(job_id):  # approve while the job runs (a director picks early)
            if event.WhichOneof("kind") == "frames" and event.frames.take == 1:
                assert alice.approve_take(job_id, 2).approved_take == 2
                break
        job = alice.wait(job_id)
        watcher.join(60)
        assert job.state == pb.JOB_STATE_COMPLETED, job.message

        # three takes, seeds 40, 41, 42, each complete with its own frames
        assert [(t.index, t.seed, t.state) for t in job.takes] == [
            (k, 40 + k, pb.JOB_STATE_COMPLETED) for k in range(3)
        ]
        assert job.parameters.takes == 3 and all(t.frames_ready == job.total_frames for t in job.takes)
        digests = []
        for take in range(3):
            paths = alice.fetch(job_id, tmp_path / f"take{take}", take=take)
            assert len(paths) == job.total_frames
            rgba, header = read_exr(paths[-1])
            assert header["ttt_studio/seed"] == str(40 + take) and int(header["ttt_studio/take"]) == take
            digests.append(rgba.tobytes())
        assert len(set(digests)) == 3, "three seeds made three different shots"

        # the approval: GetJob, the second client's live watch, the default result
        assert job.approved_take == 2
        approved = job.takes[2]
        assert approved.approved and approved.approved_by == "user01" and approved.approved_at.seconds > 0
        assert not job.takes[0].approved and not job.takes[1].approved
        messages = [e.state.message for e in seen if e.WhichOneof("kind") == "state"]
        assert "take 2 approved by user01" in messages
        result = alice.result(job_id)
        assert result.take == 2
        clip = otio.adapters.read_from_string(result.otio_json, "otio_json").find_clips()[0]
        meta = clip.metadata["ttt_studio"]
        assert meta["take"] == 2 and meta["seed"] == 42
        assert [(t["index"], t["seed"], t["approved"], t["frames"]) for t in meta["takes"]] == [
            (0, 40, False, job.total_frames),
            (1, 41, False, job.total_frames),
            (2, 42, True, job.total_frames),
        ]
        assert [f.sha256 for f in alice.result(job_id, take=1).frames] != [f.sha256 for f in result.frames]

        # a new approval replaces the first
        assert alice.approve_take(job_id, 0).approved_take == 0
        again = alice.job(job_id)
        assert [t.approved for t in again.takes] == [True, False, False] and alice.result(job_id).take == 0

        # the owner's bad take is named; another user sees nothing of the job and approves nothing
        error = pytest.raises(grpc.RpcError, alice.approve_take, job_id, 3).value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "take 3" in error.details()
        assert _code(lambda: alice.fetch(job_id, tmp_path / "x", take=3)) == grpc.StatusCode.INVALID_ARGUMENT
        for call in (
            lambda: bob.approve_take(job_id, 1),
            lambda: bob.job(job_id),
            lambda: bob.result(job_id, take=1),
            lambda: bob.fetch(job_id, tmp_path / "bob", take=1),
            lambda: list(bob.watch(job_id)),
        ):
            assert _code(call) == grpc.StatusCode.NOT_FOUND
        assert alice.job(job_id).approved_take == 0, "bob's attempt changed nothing"

        # quotas count every take's frames
        kept = sum(f.bytes for take in range(3) for f in alice.result(job_id, take=take).frames)
        assert alice.info().caller_usage.bytes == kept


def test_preview_job_drafts_every_take_before_any_final(server: ServerProcess, tmp_path: Path) -> None:
    with _client(server, "user02") as client:
        job_id = client.submit(
            STORYBOARD, **{**SMALL, "steps": 3}, priority="preview", takes=2, draft_steps=1
        ).job_id
        events = list(client.watch(job_id))
        job = client.job(job_id)
        assert job.state == pb.JOB_STATE_COMPLETED, job.message
        assert job.parameters.draft_steps == 1
        assert all(t.draft_steps == 1 and t.draft_complete for t in job.takes)
        assert all(t.draft_frames_ready == t.frames_ready == job.total_frames for t in job.takes)

        runs = []  # (take, draft) in the order their events came
        for event in events:
            kind = event.WhichOneof("kind")
            if kind in ("progress", "frames"):
                part = getattr(event, kind)
                if not runs or runs[-1] != (part.take, part.draft):
                    runs.append((part.take, part.draft))
                if kind == "progress":
                    assert part.total == (1 if part.draft else 3), "a draft samples draft_steps steps"
        assert runs == [(0, True), (1, True), (0, False), (1, False)]

        for take in range(2):
            draft = client.fetch(job_id, tmp_path / f"draft{take}", take=take, draft=True)
            final = client.fetch(job_id, tmp_path / f"final{take}", take=take)
            (d_rgba, d_header), (f_rgba, f_header) = read_exr(draft[0]), read_exr(final[0])
            assert (d_header["ttt_studio/steps"], f_header["ttt_studio/steps"]) == ("1", "3")
            assert int(d_header["ttt_studio/draft"]) == 1 and int(f_header["ttt_studio/draft"]) == 0
            assert d_header["ttt_studio/seed"] == f_header["ttt_studio/seed"] == str(SMALL["seed"] + take)
            assert d_rgba.tobytes() != f_rgba.tobytes()


def test_a_draft_starts_unguided_records_it_and_leaves_the_final_unchanged(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The server's default draft runs its first step without guidance (one forward: the first preview
    comes sooner); its frames say so, and the preview job's final is a final-only job's bit for bit."""
    guided = {**SMALL, "steps": 3, "guidance_scale": 4.0, "seed": 11, "preview_every": 1}
    with _client(server, "user06") as client:
        preview_id = client.submit(STORYBOARD, **guided, priority="preview", draft_steps=2).job_id
        events = list(client.watch(preview_id))
        final_id = client.submit(STORYBOARD, **guided).job_id
        assert client.wait(final_id).state == client.job(preview_id).state == pb.JOB_STATE_COMPLETED

        previews = [e.preview for e in events if e.WhichOneof("kind") == "preview"]
        assert [(p.draft, p.step) for p in previews] == [
            (True, 1),
            (True, 2),
            (False, 1),
            (False, 2),
            (False, 3),
        ]
        assert all(p.format == "png" and p.width > 0 and p.data for p in previews)

        draft = read_exr(client.fetch(preview_id, tmp_path / "draft", draft=True)[0])[1]
        assert (draft["ttt_studio/steps"], draft["ttt_studio/unguided_steps"]) == ("2", "1")
        assert float(draft["ttt_studio/guidance"]) == 4.0  # the other draft step is guided as asked
        finals = [client.fetch(j, tmp_path / j) for j in (preview_id, final_id)]
        headers = [read_exr(paths[0])[1] for paths in finals]
        assert [(h["ttt_studio/steps"], h["ttt_studio/unguided_steps"]) for h in headers] == [("3", "0")] * 2
        assert len(finals[0]) == len(finals[1]) > 0
        for ours, alone in zip(*finals):
            assert read_exr(ours)[0].tobytes() == read_exr(alone)[0].tobytes(), ours.name


def test_cancel_after_the_draft_makes_no_final(server: ServerProcess, tmp_path: Path) -> None:
    with _client(server, "user03") as client:
        job_id = client.submit(STORYBOARD, **{**SMALL, "steps": 6}, priority="preview", draft_steps=1).job_id
        for event in client.watch(job_id):
            if event.WhichOneof("kind") == "frames" and event.frames.ready == event.frames.total:
                assert event.frames.draft
                client.cancel(job_id)
                break
        job = client.wait(job_id)
        assert job.state == pb.JOB_STATE_CANCELLED
        take = job.takes[0]
        assert take.draft_complete and take.draft_frames_ready == job.total_frames
        assert take.frames_ready == 0 and take.state == pb.JOB_STATE_CANCELLED
        assert len(client.fetch(job_id, tmp_path / "draft", draft=True)) == job.total_frames
        assert _code(lambda: client.result(job_id)) == grpc.StatusCode.FAILED_PRECONDITION


def test_takes_and_drafts_are_checked_at_submit_and_fetch(server: ServerProcess, tmp_path: Path) -> None:
    with _client(server, "user04") as client:
        error = pytest.raises(grpc.RpcError, client.submit, STORYBOARD, **SMALL, draft_steps=1).value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "PRIORITY_PREVIEW" in error.details()
        error = pytest.raises(grpc.RpcError, client.submit, STORYBOARD, **SMALL, takes=99).value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_takes" in error.details()
        info = client.info()
        assert info.limits.max_takes >= 2 and info.defaults.draft_steps > 0
        # a preview whose default draft would not be fewer steps makes none
        job = client.submit(STORYBOARD, **SMALL, priority="preview").job
        assert job.parameters.draft_steps == 0 and [t.draft_steps for t in job.takes] == [0]
        assert client.wait(job.job_id).state == pb.JOB_STATE_COMPLETED
        error = pytest.raises(grpc.RpcError, client.fetch, job.job_id, tmp_path / "d", draft=True).value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "no draft" in error.details()


def test_cli_submit_takes_approve_and_fetch_a_take(
    server: ServerProcess, tmp_path: Path, capsys, monkeypatch
) -> None:
    import argparse
    import importlib

    def cli(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="ttt-studio")
        sub = parser.add_subparsers(dest="command")
        for name in ("submit", "approve", "fetch"):
            importlib.import_module(f"server.cli.{name}").register(sub)
        args = parser.parse_args(argv)
        return args.func(args)

    monkeypatch.setenv("TTT_STUDIO_TOKEN", TOKENS["user05"])
    board = tmp_path / "board.json"
    board.write_text(json.dumps(STORYBOARD))
    common = ["--server", server.address]
    size = ["--height", "16", "--width", "16", "--steps", "1", "--guidance-scale", "1", "--seed", "9"]
    assert cli(["submit", str(board), *size, "--takes", "2", "--watch", *common]) == 0
    job_id = capsys.readouterr().out.split()[0]
    assert cli(["approve", job_id, "1", *common]) == 0
    assert capsys.readouterr().out.strip() == f"{job_id} take 1 (seed 10) approved by user05"
    assert cli(["fetch", job_id, str(tmp_path / "t1"), "--take", "1", *common]) == 0
    result = otio.adapters.read_from_file(str(tmp_path / "t1" / f"{job_id}.otio"))
    assert result.find_clips()[0].metadata["ttt_studio"]["seed"] == 10
    assert len(list((tmp_path / "t1").glob("*.exr"))) == 9
    assert cli(["approve", job_id, "2", *common]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
