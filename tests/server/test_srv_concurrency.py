"""20 concurrent clients (one user each) submitting 5 minimal jobs each to a real server process: all
100 complete, none is lost or duplicated, and the server's resident memory stays bounded."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from srv_helpers import MINIMAL, STORYBOARD, TOKENS, ServerProcess

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient

pytestmark = pytest.mark.slow

CLIENTS = 20
JOBS_EACH = 5
RSS_GROWTH_LIMIT_MB = 150


def test_100_jobs_from_20_concurrent_clients(tmp_path: Path, token_file: Path) -> None:
    server = ServerProcess(tmp_path / "data", token_file, "--max-queued-per-caller", str(JOBS_EACH)).start()
    try:
        users = [f"user{i:02d}" for i in range(CLIENTS)]
        with StudioClient(server.address, token=TOKENS[users[0]]) as warm:  # torch's first-run allocations
            assert warm.wait(warm.submit(STORYBOARD, **MINIMAL).job_id).state == pb.JOB_STATE_COMPLETED
        rss_before = server.rss_kb()

        results: dict[str, list[pb.Job]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(CLIENTS)

        def client_run(user: str) -> None:
            try:
                with StudioClient(server.address, token=TOKENS[user]) as client:
                    start.wait()
                    ids = [
                        client.submit(STORYBOARD, shot_name=f"{user}_{k}", **MINIMAL).job_id
                        for k in range(JOBS_EACH)
                    ]
                    results[user] = [client.wait(job_id) for job_id in ids]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=client_run, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not errors, errors
        rss_after = server.rss_kb()

        jobs = [job for user_jobs in results.values() for job in user_jobs]
        assert len(jobs) == CLIENTS * JOBS_EACH
        assert len({j.job_id for j in jobs}) == CLIENTS * JOBS_EACH
        assert all(j.state == pb.JOB_STATE_COMPLETED and j.frames_ready == 9 for j in jobs)
        for user in users:  # each caller sees exactly its own jobs
            with StudioClient(server.address, token=TOKENS[user]) as client:
                listed = {j.job_id for j in client.jobs()}
            own = {j.job_id for j in results[user]}
            assert own <= listed and len(listed) == JOBS_EACH + (user == users[0])
        growth_mb = (rss_after - rss_before) / 1024
        print(f"server RSS {rss_before / 1024:.0f} MB -> {rss_after / 1024:.0f} MB (+{growth_mb:.0f} MB)")
        assert growth_mb < RSS_GROWTH_LIMIT_MB
        assert server.terminate() == 0
    finally:
        server.kill9()
