"""Fixtures of the monitor tests: a real server process and the monitor app on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_helpers import STEP_DELAY_S
from srv_helpers import TOKENS, ServerProcess

from server.client import StudioClient
from server.monitor.app import create_app
from server.monitor.background import MonitorThread
from server.monitor.config import MonitorConfig


@pytest.fixture(scope="package")
def studio(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[ServerProcess]:
    """A real `python -m server.main --tiny-random` on loopback (32 x 32, 16 fps, 9-frame one-segment shots), shared by the monitor tests."""
    server = ServerProcess(
        tmp_path_factory.mktemp("monitor") / "data", token_file, "--debug-step-delay", str(STEP_DELAY_S)
    ).start()
    yield server
    code = server.terminate()
    assert code == 0, server.log_text()[-3000:]


@pytest.fixture(scope="package")
def monitor(studio: ServerProcess) -> Iterator[MonitorThread]:
    """`ttt-studio monitor` of that server: the Starlette app under uvicorn in a thread, on loopback."""
    with MonitorThread(create_app(MonitorConfig(server=studio.address))) as thread:
        yield thread


@pytest.fixture()
def alice(studio: ServerProcess) -> Iterator[StudioClient]:
    with StudioClient(studio.address, token=TOKENS["alice"], retries=2) as client:
        yield client
