"""`serve --ray` (issue #26) on a real two-node Ray cluster on this machine (ray.cluster_utils.Cluster, one
CPU per node) with real front-end processes: jobs spread over two workers and the pool resizes live; a
worker killed mid-job is replaced and its job finishes once with the frames stored before the kill kept
and the same pixels as a job nobody killed; the front end killed (kill -9) and restarted loses no job; a
job that kills its worker is failed after max_worker_deaths and the pool stays healthy; a front end
stopped with SIGTERM requeues the running job, which resumes on the next start; a preview job of two takes
with drafts, an adapter and an element inside mattes makes the same pixels as the in-process server."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from srv_helpers import MINIMAL, ROOT, STORYBOARD, STORYBOARD_2, TOKENS, ServerProcess, wait_for
from test_srv_element import disc, exr, plate_rgba

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from server.ray_worker import TEST_CRASH_ENV
from tests.adapter_helpers import random_lora
from ttt_engine.adapters.record import ATTRIBUTE as ADAPTERS_ATTRIBUTE
from ttt_engine.cli import main as ttt_studio

pytestmark = pytest.mark.slow

CRASH_SHOT = "crashes_its_worker"
FRAMES = 17  # two segments of the tiny model
JOB = {**MINIMAL, "steps": 2}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """Two raylets (one CPU each); their workers import this checkout and know the crash hook's shot."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", TEST_CRASH_ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
    os.environ[TEST_CRASH_ENV] = CRASH_SHOT
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _front_end(data: Path, token_file: Path, address: str, *extra: str) -> ServerProcess:
    args = ("--ray", address, "--ray-threads", "1", "--ray-max-worker-deaths", "2", "--metrics-port", "0")
    return ServerProcess(data, token_file, *args, *extra).start(timeout=180)


class FrontEnd:
    """The module's front end, restartable on its data dir (the kill -9 test replaces `server`)."""

    def __init__(self, data: Path, token_file: Path, address: str, adapters: Path) -> None:
        self.args = (data, token_file, address, "--ray-workers", "1", "--debug-segment-delay", "1.5")
        self.server = _front_end(*self.args, "--adapters", str(adapters))
        self.adapters = adapters

    def restart(self) -> ServerProcess:
        self.server = _front_end(*self.args, "--adapters", str(self.adapters))
        return self.server


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published adapters folder: "warm", a random LoRA folder of the tiny model."""
    from ttt_engine.pipeline import VideoPipeline

    folder = tmp_path_factory.mktemp("adapters")
    random_lora(VideoPipeline.tiny_random(seed=0).transformer, folder / "warm", seed=1)
    return folder


@pytest.fixture(scope="module")
def front(
    ray_cluster: str, tmp_path_factory: pytest.TempPathFactory, token_file: Path, adapters_dir: Path
) -> Iterator[FrontEnd]:
    """A front end starting with one worker; workers pause 1.5 s after each decoded segment (so a kill
    lands mid-job)."""
    front = FrontEnd(tmp_path_factory.mktemp("ray") / "data", token_file, ray_cluster, adapters_dir)
    yield front
    code = front.server.terminate()
    assert code == 0, front.server.log_text()[-3000:]


def _resize(server: ServerProcess, client: StudioClient, workers: int) -> list[str]:
    assert ttt_studio(["pool", "--data-dir", str(server.data_dir), "--workers", str(workers)]) == 0
    info = wait_for(
        lambda: (i := client.info()).workers == workers and i, timeout=180, what=f"{workers} workers"
    )
    return list(info.devices)


def _db(data: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data / 'studio.sqlite3'}?mode=ro", uri=True)


def _work_log(data: Path, job_id: str) -> list[tuple]:
    with _db(data) as db:
        return db.execute(
            "SELECT kind, segment, pid FROM work_log WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()


def _frames(data: Path, job_id: str) -> dict[int, tuple]:
    with _db(data) as db:
        rows = db.execute(
            "SELECT frame_index, created, sha256, relpath FROM frames WHERE job_id = ?", (job_id,)
        )
        return {
            i: (created, sha, os.stat(data / rel).st_mtime_ns) for i, created, sha, rel in rows.fetchall()
        }


def _pixels(data: Path, job_id: str) -> list[str]:
    """sha256 of each stored frame's pixels (EXR headers name the job, so whole files differ by job)."""
    from host_plugin.core.exr_io import read_exr

    with _db(data) as db:
        rows = db.execute(
            "SELECT relpath FROM frames WHERE job_id = ? ORDER BY frame_index", (job_id,)
        ).fetchall()
    return [
        hashlib.sha256(read_exr(data / rel, check_finite=True)[0].tobytes()).hexdigest() for (rel,) in rows
    ]


def _completions(data: Path, job_id: str) -> int:
    with _db(data) as db:
        query = "SELECT COUNT(*) FROM job_states WHERE job_id = ? AND state = 'completed'"
        return db.execute(query, (job_id,)).fetchone()[0]


def _metric(server: ServerProcess, name: str) -> float:
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{server.info['metrics_port']}/metrics", timeout=10
    ).read()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text.decode(), re.M)
    assert match, f"{name} missing from the metrics"
    return float(match.group(1))


def test_jobs_spread_over_two_workers_and_the_pool_resizes_live(front: FrontEnd) -> None:
    front_end = front.server
    data = front_end.data_dir
    with StudioClient(front_end.address, token=TOKENS["alice"]) as client:
        assert len(_resize(front_end, client, 1)) == 1
        devices = _resize(front_end, client, 2)  # a worker added while serving
        assert len(devices) == 2 and all(re.fullmatch(r"ray:.+/cpu\(1 thread\)", d) for d in devices), devices
        ids = [client.submit(STORYBOARD_2, **{**JOB, "seed": i}).job_id for i in range(4)]
        for job_id in ids:
            job = client.wait(job_id)
            assert job.state == pb.JOB_STATE_COMPLETED and job.frames_ready == FRAMES, job.message
            assert len(client.fetch(job_id, front_end.data_dir.parent / "out" / job_id)) == FRAMES
        samplers = {_work_log(data, j)[0][2] for j in ids}
        assert len(samplers) == 2, f"4 jobs ran on {len(samplers)} worker(s), expected both"
        assert front_end.pid not in samplers, "the front end sampled a job itself"
        wait_for(lambda: _metric(front_end, 'ttt_pool_workers{state="idle"}') == 2, what="2 idle workers")
        assert _metric(front_end, 'ttt_jobs_finished_total{state="completed"}') >= 4
        assert _metric(front_end, "ttt_frames_written_total") >= 4 * FRAMES  # relayed from the workers
        cancelled = client.submit(STORYBOARD_2, **JOB).job_id  # a cancel reaches the job on its worker
        wait_for(
            lambda: ("decode", 0) in [r[:2] for r in _work_log(data, cancelled)], timeout=180, what="decoding"
        )
        client.cancel(cancelled)
        job = client.wait(cancelled)
        assert job.state == pb.JOB_STATE_CANCELLED and job.frames_ready < FRAMES, (
            job.state,
            job.frames_ready,
        )


def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes_once(front: FrontEnd) -> None:
    front_end = front.server
    data = front_end.data_dir
    with StudioClient(front_end.address, token=TOKENS["alice"]) as client:
        _resize(front_end, client, 2)
        reference = client.submit(STORYBOARD_2, **{**JOB, "seed": 11}).job_id
        assert client.wait(reference).state == pb.JOB_STATE_COMPLETED
        victim = client.submit(STORYBOARD_2, **{**JOB, "seed": 11}).job_id
        pid = wait_for(
            lambda: next((p for k, s, p in _work_log(data, victim) if (k, s) == ("decode", 0)), None),
            timeout=180,
            what="segment 0 decoding",
        )
        wait_for(lambda: len(_frames(data, victim)) == 9, what="segment 0's frames stored")
        before = _frames(data, victim)
        os.kill(pid, signal.SIGKILL)  # the worker process, in its pause after segment 0
        job = client.wait(victim)
        assert job.state == pb.JOB_STATE_COMPLETED, job.message
        assert job.attempts == 2 and job.frames_ready == FRAMES
        after = _frames(data, victim)
        assert sorted(after) == list(range(FRAMES))
        for index, facts in before.items():
            assert after[index] == facts, f"frame {index}, stored before the kill, was made again"
        assert _pixels(data, victim) == _pixels(data, reference), "the resumed job's pixels differ"
        log = _work_log(data, victim)
        assert log[:2] == [("sample", None, pid), ("decode", 0, pid)] and len(log) == 3, log
        assert log[2][:2] == ("decode", 1) and log[2][2] != pid, "segment 1 decoded once, by another worker"
        assert _completions(data, victim) == 1
        with _db(data) as db:
            messages = [
                m for (m,) in db.execute("SELECT message FROM job_states WHERE job_id = ?", (victim,))
            ]
        assert any(m.startswith("worker died: ray-worker-") and f"pid {pid}" in m for m in messages), messages
        wait_for(lambda: client.info().workers == 2, timeout=120, what="the replacement worker")
        assert _metric(front_end, "ttt_pool_worker_deaths_total") >= 1


def test_a_job_that_kills_its_workers_fails_after_max_deaths_and_the_pool_stays_healthy(
    front: FrontEnd,
) -> None:
    front_end = front.server
    with StudioClient(front_end.address, token=TOKENS["alice"]) as client:
        _resize(front_end, client, 2)
        bad = client.submit(STORYBOARD_2, shot_name=CRASH_SHOT, **JOB).job_id
        job = client.wait(bad)
        assert job.state == pb.JOB_STATE_FAILED
        assert job.attempts == 2
        assert "worker died 2 times while running this job (max_worker_deaths=2)" in job.message, job.message
        assert "not retried" in job.message
        good = client.submit(STORYBOARD_2, **JOB).job_id
        assert client.wait(good).state == pb.JOB_STATE_COMPLETED
        wait_for(lambda: client.info().workers == 2, timeout=120, what="a healthy pool of 2")


def test_front_end_stopped_gracefully_requeues_the_running_job(front: FrontEnd) -> None:
    first = front.server
    data = first.data_dir
    with StudioClient(first.address, token=TOKENS["alice"]) as client:
        _resize(first, client, 2)
        job_id = client.submit(STORYBOARD_2, **{**JOB, "seed": 8}).job_id
        wait_for(lambda: len(_frames(data, job_id)) == 9, timeout=180, what="segment 0's frames stored")
    assert first.terminate() == 0, first.log_text()[-3000:]  # SIGTERM: the worker stops and requeues
    with _db(data) as db:
        state, message = db.execute("SELECT state, message FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    assert (state, message) == ("queued", "interrupted by server shutdown; will resume")
    second = front.restart()
    with StudioClient(second.address, token=TOKENS["alice"]) as client:
        job = client.wait(job_id)
        assert job.state == pb.JOB_STATE_COMPLETED and job.frames_ready == FRAMES, job.message
    assert [k for k, _, _ in _work_log(data, job_id)] == ["sample", "decode", "decode"], "resumed, not redone"


def test_front_end_killed_and_restarted_loses_no_job(front: FrontEnd) -> None:
    first = front.server
    data = first.data_dir
    with StudioClient(first.address, token=TOKENS["alice"]) as client:
        _resize(first, client, 2)
        ids = [client.submit(STORYBOARD_2, **{**JOB, "seed": 5}).job_id for _ in range(4)]
        wait_for(lambda: any(_frames(data, j) for j in ids), timeout=180, what="a job with stored frames")
    workers = {p for j in ids for _, _, p in _work_log(data, j)}
    first.kill9()
    wait_for(
        lambda: not any(_alive(p) for p in workers), timeout=60, what="the dead front end's workers to end"
    )
    second = front.restart()
    with StudioClient(second.address, token=TOKENS["alice"]) as client:
        for job_id in ids:
            job = client.wait(job_id)
            assert job.state == pb.JOB_STATE_COMPLETED and job.frames_ready == FRAMES, job.message
    pixels = {tuple(_pixels(data, j)) for j in ids}
    assert len(pixels) == 1 and len(next(iter(pixels))) == FRAMES, "the same request made different frames"
    assert all(_completions(data, j) == 1 for j in ids)
    with _db(data) as db:
        requeued = db.execute(
            "SELECT COUNT(DISTINCT job_id) FROM job_states WHERE message = 'requeued after a server restart'"
        ).fetchone()[0]
    assert requeued >= 1, "no job was running at the kill"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _submit_everything(client: StudioClient, tmp: Path) -> str:
    """A preview job of two takes, each with a draft, the adapter "warm", and an element inside mattes
    (its plates and single-channel mattes uploaded by this client)."""
    plates, mattes = [], []
    for i in range(9):  # one segment of the tiny model, at its native 32 x 32
        rgba = plate_rgba(i).astype(np.float32)
        plates.append(
            client.upload_plate(exr(tmp / f"p{i}.exr", {c: rgba[..., k] for k, c in enumerate("RGB")}))
        )
        mattes.append(client.upload_plate(exr(tmp / f"m{i}.exr", {"A": disc()})))
    return client.submit(
        STORYBOARD,
        steps=2,
        guidance_scale=1.0,
        seed=21,
        preview_every=1,
        strength=1.0,
        priority="preview",
        takes=2,
        draft_steps=1,
        adapters=[("warm", 1.0)],
        plate_upload_ids=[p.upload_id for p in plates],
        plate_mode="element",
        matte_upload_ids=[m.upload_id for m in mattes],
        matte_feather=1.5,
    ).job_id


def _fetched(client: StudioClient, job_id: str, out: Path) -> dict[tuple[int, bool], list]:
    """Every take's draft and final frames: (take, draft) -> [(pixels, header)]."""
    from host_plugin.core.exr_io import read_exr

    job = client.wait(job_id)
    assert job.state == pb.JOB_STATE_COMPLETED, job.message
    return {
        (take, draft): [
            read_exr(p, check_finite=True)
            for p in sorted(client.fetch(job_id, out / f"{take}{draft}", take=take, draft=draft))
        ]
        for take in range(2)
        for draft in (False, True)
    }


def test_takes_drafts_an_adapter_and_an_element_make_the_in_process_servers_pixels(
    front: FrontEnd, token_file: Path, adapters_dir: Path, tmp_path: Path
) -> None:
    ray_front = front.server
    local = ServerProcess(tmp_path / "local", token_file, "--adapters", str(adapters_dir)).start()
    try:
        with StudioClient(ray_front.address, token=TOKENS["alice"]) as client:
            job_id = _submit_everything(client, tmp_path)
            ray_frames = _fetched(client, job_id, tmp_path / "ray")
            job = client.job(job_id)
            events = list(client.watch(job_id))
        with StudioClient(local.address, token=TOKENS["alice"]) as client:
            local_frames = _fetched(client, _submit_everything(client, tmp_path), tmp_path / "local")
    finally:
        assert local.terminate() == 0, local.log_text()[-3000:]
    assert [(t.state, t.frames_ready, t.draft_frames_ready, t.draft_complete) for t in job.takes] == [
        (pb.JOB_STATE_COMPLETED, 9, 9, True)
    ] * 2
    for run, frames in ray_frames.items():
        assert len(frames) == 9, run
        for (pixels, _), (expected, _) in zip(frames, local_frames[run], strict=True):
            assert np.array_equal(pixels, expected), f"take {run[0]} (draft {run[1]}) differs"
        assert '"name": "warm"' in frames[0][1][ADAPTERS_ATTRIBUTE], "the adapter is recorded"
        assert int(frames[0][1]["ttt_studio/take"]) == run[0] and frames[0][1]["ttt_studio/steps"] == str(
            1 if run[1] else 2
        )
    assert not np.array_equal(ray_frames[0, False][0][0], ray_frames[1, False][0][0]), "two takes, one shot"
    alpha = ray_frames[0, False][0][0][..., 3]
    assert alpha.min() == 0.0 and alpha.max() == 1.0, "an element's alpha is its feathered matte"
    previews = {(e.preview.take, e.preview.draft) for e in events if e.WhichOneof("kind") == "preview"}
    assert previews == {(0, True), (1, True), (0, False), (1, False)}, previews
    with _db(ray_front.data_dir) as db:
        samples = db.execute(
            "SELECT take, draft, pid FROM work_log WHERE job_id = ? AND kind = 'sample' ORDER BY id",
            (job_id,),
        ).fetchall()
    assert [s[:2] for s in samples] == [(0, 1), (1, 1), (0, 0), (1, 0)], samples
    assert ray_front.pid not in {s[2] for s in samples}, "the front end sampled the job itself"
