"""Access (issue #23 item 4): hashed tokens managed by `ttt-studio token`, a token file that fails
closed, the Bearer scheme in any case, plaintext off loopback only with --insecure, and no servicer code
for an unauthenticated call. Real gRPC on loopback, real token files."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from srv_helpers import ROOT, TOKENS

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from protos.ttt_studio.v1 import ttt_studio_pb2_grpc as pb_grpc
from server import tokens
from server.config import ServerConfig
from server.main import StudioServer
from server.service import StudioServicer
from ttt_engine.cli import main as cli_main

SERVICE = pb.DESCRIPTOR.services_by_name["TTTStudio"]


@contextmanager
def running(token_file: Path, tmp_path: Path, pipe: Any) -> Iterator[StudioServer]:
    config = ServerConfig(address="127.0.0.1:0", data_dir=tmp_path / "data", token_file=token_file)
    server = StudioServer(config, pipelines=[("cpu", pipe)])
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)


def _info(address: str, authorization: str | None) -> pb.ServerInfo:
    metadata = [] if authorization is None else [("authorization", authorization)]
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.TTTStudioStub(channel).GetServerInfo(
            pb.GetServerInfoRequest(), metadata=metadata, timeout=30
        )


def _refused(address: str, authorization: str | None) -> str:
    with pytest.raises(grpc.RpcError) as info:
        _info(address, authorization)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
    return info.value.details()


def test_token_cli_stores_only_hashes_and_tokens_work_until_revoked(
    tmp_path: Path, server_pipe: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens"
    assert cli_main(["token", "--token-file", str(path), "add", "alice"]) == 0
    alice = capsys.readouterr().out.strip()
    assert cli_main(["token", "--token-file", str(path), "add", "root", "--admin"]) == 0
    root = capsys.readouterr().out.strip()
    text = path.read_text()
    for token in (alice, root):
        assert tokens.split_token(token) is not None, token
        assert tokens.split_token(token)[1] not in text, "a secret is stored in clear"
    assert "pbkdf2_sha256$" in text and oct(path.stat().st_mode & 0o777) == "0o600"
    assert cli_main(["token", "--token-file", str(path), "list"]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "admin" in listing
    assert tokens.split_token(alice)[1] not in listing and "pbkdf2" not in listing

    with running(path, tmp_path, server_pipe) as server:
        assert _info(server.address, f"Bearer {alice}").caller == "alice"
        assert _info(server.address, f"Bearer {root}").caller_usage.quota_exempt
        assert not _info(server.address, f"Bearer {alice}").caller_usage.quota_exempt
        token_id = tokens.split_token(alice)[0]
        assert _refused(server.address, f"Bearer ttt.{token_id}.wrong-secret-0123456789")
        assert cli_main(["token", "--token-file", str(path), "revoke", "alice"]) == 0
        assert token_id in capsys.readouterr().out
        assert "unknown bearer token" in _refused(server.address, f"Bearer {alice}")
        assert _info(server.address, f"Bearer {root}").caller == "root"


def test_bearer_scheme_is_case_insensitive(tmp_path: Path, token_file: Path, server_pipe: Any) -> None:
    token = TOKENS["alice"]
    with running(token_file, tmp_path, server_pipe) as server:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            assert _info(server.address, f"{scheme} {token}").caller == "alice", scheme
        assert _refused(server.address, f"Basic {token}")
        assert _refused(server.address, token)


@pytest.mark.parametrize("damage", ["delete", "corrupt", "clear-text"])
def test_token_file_fails_closed_loudly_once_and_recovers(
    damage: str, tmp_path: Path, server_pipe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    token = tokens.add_token(path, "alice")
    good = path.read_bytes()
    with running(path, tmp_path, server_pipe) as server:
        assert _info(server.address, f"Bearer {token}").caller == "alice"
        if damage == "delete":
            path.unlink()
        elif damage == "corrupt":
            path.write_bytes(good[: len(good) // 2] + b"\x00garbage \xff\n")
        else:
            path.write_text(f"{token} alice\n")
        with caplog.at_level(logging.INFO, logger="server"):
            for _ in range(5):
                details = _refused(server.address, f"Bearer {token}")
                assert "token file is unreadable" in details, details
        problems = [r for r in caplog.records if r.name == "server.auth" and r.levelno >= logging.ERROR]
        assert len(problems) == 1, [r.getMessage() for r in problems]
        assert all(r.exc_info is None for r in caplog.records), "a traceback was logged for a refused call"
        path.write_bytes(good)
        assert _info(server.address, f"Bearer {token}").caller == "alice"


def test_clear_text_token_file_is_refused_and_migrated_by_command(
    tmp_path: Path, server_pipe: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens"
    path.write_text("# old format\nold-token-of-alice-0123456789 alice\nold-token-of-bob-0123456789 bob\n")
    config = ServerConfig(address="127.0.0.1:0", data_dir=tmp_path / "data", token_file=path)
    with pytest.raises(tokens.TokenFileError, match="clear-text.*ttt-studio token migrate"):
        StudioServer(config, pipelines=[("cpu", server_pipe)])
    assert cli_main(["token", "--token-file", str(path), "migrate"]) == 0
    issued = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert sorted(issued) == ["alice", "bob"]
    assert "old-token-of-alice" not in path.read_text()
    with running(path, tmp_path, server_pipe) as server:
        assert _info(server.address, f"Bearer {issued['bob']}").caller == "bob"
        assert _refused(server.address, "Bearer old-token-of-alice-0123456789")


def test_plaintext_off_loopback_needs_insecure(tmp_path: Path, token_file: Path) -> None:
    with pytest.raises(ValueError, match="refusing plaintext on '0.0.0.0'.*--insecure"):
        ServerConfig(address="0.0.0.0:0", token_file=token_file, data_dir=tmp_path)
    ServerConfig(address="0.0.0.0:0", token_file=token_file, data_dir=tmp_path, insecure=True)
    tls = {"tls_cert": tmp_path / "c.pem", "tls_key": tmp_path / "k.pem"}
    ServerConfig(address="0.0.0.0:0", token_file=token_file, data_dir=tmp_path, **tls)
    out = subprocess.run(
        [sys.executable, "-m", "server.main", "--address", "0.0.0.0:0", "--token-file", str(token_file)]
        + ["--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "refusing plaintext" in out.stderr and "--insecure" in out.stderr


def _request_of(method: Any) -> Any:
    return getattr(pb, method.input_type.name)()


def _call(channel: grpc.Channel, method: Any, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method.name}"
    request = _request_of(method)
    serialize = type(request).SerializeToString
    try:
        if method.client_streaming:
            call = channel.stream_unary(path, request_serializer=serialize, response_deserializer=bytes)
            call(iter([request]), metadata=metadata, timeout=30)
        elif method.server_streaming:
            call = channel.unary_stream(path, request_serializer=serialize, response_deserializer=bytes)
            list(call(request, metadata=metadata, timeout=30))
        else:
            call = channel.unary_unary(path, request_serializer=serialize, response_deserializer=bytes)
            call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_no_servicer_code_runs_for_an_unauthenticated_call(
    tmp_path: Path, token_file: Path, server_pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #31: every RPC, without a token and with a bad one, is refused by the interceptor before
    any servicer method is entered (each method is wrapped to record that it ran)."""
    entered: list[str] = []

    def recording(name: str, original: Any) -> Any:
        def method(self: Any, request: Any, context: Any) -> Any:
            entered.append(name)
            return original(self, request, context)

        return method

    for method in SERVICE.methods:
        monkeypatch.setattr(
            StudioServicer, method.name, recording(method.name, getattr(StudioServicer, method.name))
        )
    bad = "ttt.tokalice.not-alices-secret-0123456789"
    with (
        running(token_file, tmp_path, server_pipe) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        for method in SERVICE.methods:
            for metadata in ([], [("authorization", f"Bearer {bad}")], [("authorization", "Bearer")]):
                assert _call(channel, method, metadata) == grpc.StatusCode.UNAUTHENTICATED, (
                    method.name,
                    metadata,
                )
        assert entered == [], f"servicer methods ran for unauthenticated calls: {entered}"
        # the recorders do see authenticated calls (so the check above can fail)
        assert _call(
            channel, SERVICE.methods_by_name["GetServerInfo"], [("authorization", f"Bearer {TOKENS['bob']}")]
        ) == (grpc.StatusCode.OK)
        assert entered == ["GetServerInfo"]


def test_token_file_errors_name_the_file_and_line() -> None:
    good = tokens.TokenEntry("abcdef12", "alice", "user", tokens.hash_secret("s" * 20)).line()
    assert list(tokens.parse_token_file(f"{tokens.HEADER}\n# c\n\n{good}\n")) == ["abcdef12"]
    cases = {
        f"{tokens.HEADER}\n{good}\nlonely\n": "f line 3: expected 'ID USER ROLE HASH'",
        f"{tokens.HEADER}\n{good}\n{good}\n": "token id abcdef12 appears twice",
        f"{tokens.HEADER}\n{good.replace('alice', '../bob')}\n": "user '../bob' must match",
        f"{tokens.HEADER}\n{good.replace(' user ', ' root ')}\n": "role 'root' must be one of",
        f"{tokens.HEADER}\nabcdef12 alice user sha1$1$x\n": "hash must be 'pbkdf2_sha256",
        f"{good}\n": "does not start with '# ttt-studio tokens v1'",
        "tok-alice-0123456789abcdef alice\n": "clear-text 'TOKEN USER' lines",
    }
    for text, message in cases.items():
        with pytest.raises(tokens.TokenFileError, match=message.replace("$", r"\$")):
            tokens.parse_token_file(text, "f")
