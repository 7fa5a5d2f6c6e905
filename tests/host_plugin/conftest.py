"""Fixtures of the host plugin tests: real ttt-studio servers, one per session each (see hp_helpers): the
tiny random model (client tests) and the shipped default model (the plugins, whose shots are delivered
in 3-second segments of edit time)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hp_helpers import OTHER_TOKEN, TOKEN, DefaultModelServer, ServerProcess

from server.tokens import add_token


def _tokens(root: Any) -> Any:
    """A hashed token file for alice (TOKEN) and bob (OTHER_TOKEN)."""
    tokens = root / "tokens"
    add_token(tokens, "alice", token=TOKEN)
    add_token(tokens, "bob", token=OTHER_TOKEN)
    return tokens


@pytest.fixture(scope="session")
def hp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hp_server")
    server = ServerProcess(root / "data", _tokens(root)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hp_default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shipped default model (64 x 64, 8 fps) on loopback."""
    root = tmp_path_factory.mktemp("hp_default_server")
    server = DefaultModelServer(root / "data", _tokens(root)).start()
    yield server
    server.stop()


@pytest.fixture()
def client(hp_server: ServerProcess) -> Iterator[Any]:
    from host_plugin.core.client import TTTClient

    with TTTClient(hp_server.address, token=TOKEN, retries=3, retry_delay_s=0.05) as c:
        c.connect()
        yield c


@pytest.fixture(scope="session")
def hp_adapter(hp_default_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random LoRA of the shipped default model uploaded to hp_default_server for alice; its name."""
    from server.client import StudioClient
    from tests.adapter_helpers import random_lora
    from ttt_engine.default_model import default_model_dir
    from ttt_engine.models.loading import load_video_dit

    transformer = load_video_dit(default_model_dir() / "transformer")
    path = random_lora(transformer, tmp_path_factory.mktemp("hp_adapter") / "hp_look", seed=5)
    with StudioClient(hp_default_server.address, token=TOKEN) as client:
        return client.upload_adapter(path).name
