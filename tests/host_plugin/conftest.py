"""Fixtures of the host plugin tests: one real ttt-studio server per session (see hp_helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hp_helpers import OTHER_TOKEN, TOKEN, ServerProcess

from server.tokens import add_token


@pytest.fixture(scope="session")
def hp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hp_server")
    tokens = root / "tokens"
    add_token(tokens, "alice", token=TOKEN)
    add_token(tokens, "bob", token=OTHER_TOKEN)
    server = ServerProcess(root / "data", tokens).start()
    yield server
    server.stop()


@pytest.fixture()
def client(hp_server: ServerProcess) -> Iterator[Any]:
    from host_plugin.core.client import TTTClient

    with TTTClient(hp_server.address, token=TOKEN, retries=3, retry_delay_s=0.05) as c:
        c.connect()
        yield c
