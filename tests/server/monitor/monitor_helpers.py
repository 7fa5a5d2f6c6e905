"""Helpers of the monitor tests: an HTTP client of the page, jobs with takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from srv_helpers import STORYBOARD, TOKENS

from server.client import StudioClient
from server.config import ServerConfig
from server.main import StudioServer
from server.monitor.background import MonitorThread

STEP_DELAY_S = 0.2
"""Each sampling step of the test server is slowed to this, so previews arrive while the job still samples."""


def page_client(monitor: MonitorThread, user: str | None = None) -> httpx.Client:
    """An HTTP client of the monitor (keeps its cookies), signed in as `user` when given."""
    client = httpx.Client(base_url=monitor.url, timeout=60.0)
    if user is not None:
        response = client.post("/api/signin", json={"token": TOKENS[user]})
        assert response.status_code == 200, response.text
    return client


def submit(
    client: StudioClient, takes: int = 1, steps: int = 4, seed: int = 11, priority: str = "final"
) -> str:
    """A one-segment 32 x 32 shot of `takes` takes, a preview every step; returns its job id."""
    response = client.submit(
        STORYBOARD,
        height=32,
        width=32,
        steps=steps,
        guidance_scale=1.0,
        seed=seed,
        takes=takes,
        preview_every=1,
        priority=priority,
        shot_name="sh010",
    )
    return response.job_id


@contextmanager
def in_process_server(
    data_dir: Path, token_file: Path, pipe: Any, **overrides: Any
) -> Iterator[StudioServer]:
    """A StudioServer in this process on 127.0.0.1 (a free port), for tests that change its tokens or TLS."""
    config = ServerConfig(address="127.0.0.1:0", data_dir=data_dir, token_file=token_file, **overrides)
    server = StudioServer(config, pipelines=[("cpu", pipe)])
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)
