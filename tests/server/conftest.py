"""Fixtures of the server tests: tokens, a tiny pipeline for in-process servers, a real server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from srv_helpers import TOKENS, ServerProcess, write_token_file

from server.client import StudioClient


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token_file(tmp_path_factory.mktemp("tokens") / "tokens")


@pytest.fixture(scope="session")
def server_pipe():
    from ttt_engine.pipeline import VideoPipeline

    return VideoPipeline.tiny_random(seed=0)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[ServerProcess]:
    """A real `python -m server.main` process shared by a test module (each step slowed to 0.15 s so a
    cancel can land mid-sampling; max message 1 MiB so the size limit is cheap to hit)."""
    data = tmp_path_factory.mktemp("live") / "data"
    server = ServerProcess(
        data,
        token_file,
        "--debug-step-delay",
        "0.15",
        "--max-message-bytes",
        str(1 << 20),
        "--max-upload-bytes",
        str(256 * 1024),
        "--max-queued-per-caller",
        "6",
        "--max-height",
        "64",
        "--max-width",
        "64",
        "--max-segments",
        "3",
    ).start()
    yield server
    code = server.terminate()
    assert code == 0, server.log_text()[-3000:]


@pytest.fixture()
def alice(live_server: ServerProcess) -> Iterator[StudioClient]:
    with StudioClient(live_server.address, token=TOKENS["alice"], retries=2) as client:
        yield client


@pytest.fixture()
def bob(live_server: ServerProcess) -> Iterator[StudioClient]:
    with StudioClient(live_server.address, token=TOKENS["bob"], retries=2) as client:
        yield client
