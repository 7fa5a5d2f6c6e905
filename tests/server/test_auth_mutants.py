"""Bearer-token lookup behaviour the mutation run of server/auth.py found untested (issue #31).

These call `bearer_token` and `Authenticator` directly on a real hashed token file; the interceptor
itself, over real gRPC, is tested in test_srv_access.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from server import tokens
from server.auth import (
    ANONYMOUS_USER,
    UNKNOWN_TOKEN,
    UNREADABLE_FILE,
    Authenticator,
    TokenFileError,
    bearer_token,
)
from server.errors import UnauthenticatedError

TOKEN = "ttt.abcdef12.secret-of-alice-0123456789"


@pytest.mark.parametrize(
    "metadata",
    [
        [("x-api-key", f"Bearer {TOKEN}")],  # a bearer value under another key is no authorization
        [("authorization", f"Bearer {TOKEN}".encode())],  # a binary value is no bearer token
        [("authorization", "Bearer   ")],
        [("authorization", f"Basic {TOKEN}")],
        None,
    ],
)
def test_only_an_authorization_bearer_entry_carries_a_token(metadata: object) -> None:
    assert bearer_token(metadata) is None  # type: ignore[arg-type]


def test_the_token_is_what_follows_the_scheme() -> None:
    assert bearer_token([("authorization", f"  bearer  {TOKEN} ")]) == TOKEN
    assert bearer_token([("x-trace", "1"), ("authorization", f"BEARER {TOKEN}")]) == TOKEN


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    tokens.add_token(path, "alice", token=TOKEN)
    return path


def test_no_token_file_means_every_caller_is_the_local_user() -> None:
    auth = Authenticator(None)
    assert not auth.enabled
    assert (
        auth.caller(None)
        == auth.user_for([("authorization", "Bearer nonsense")])
        == ANONYMOUS_USER
        == "local"
    )
    assert not auth.is_admin_user("alice")


def test_a_file_without_tokens_or_a_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(tokens.HEADER + "\n")
    with pytest.raises(
        TokenFileError, match=rf"^token file {empty} has no tokens; add one with `ttt-studio token add"
    ):
        Authenticator(empty)
    missing = tmp_path / "missing"
    with pytest.raises(
        TokenFileError, match=rf"^token file {missing} cannot be read: No such file or directory$"
    ):
        Authenticator(missing)


def test_a_token_file_others_can_read_is_warned_about(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def warnings() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.name == "server.auth" and r.levelno == logging.WARNING
        ]

    with caplog.at_level(logging.INFO, logger="server.auth"):
        token_file.chmod(0o600)
        Authenticator(token_file)
        assert warnings() == []
        for mode in (0o640, 0o604):
            token_file.chmod(mode)
            Authenticator(token_file)
    assert warnings() == [f"token file {token_file} is readable by group/others; chmod 600 it"] * 2


def test_the_file_is_read_once_until_it_changes(token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="server.auth"):
        auth = Authenticator(token_file)
        for _ in range(3):
            assert auth.user_for([("authorization", f"Bearer {TOKEN}")]) == "alice"
        tokens.add_token(token_file, "bob", admin=True)
        for _ in range(2):
            assert auth.user_for([("authorization", f"Bearer {TOKEN}")]) == "alice"
    loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded")]
    assert loads == [f"loaded 1 token(s) from {token_file}", f"loaded 2 token(s) from {token_file}"]
    assert auth.is_admin_user("bob") and not auth.is_admin_user("alice")


def test_a_vanished_file_refuses_every_token_logs_why_once_and_recovers(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auth = Authenticator(token_file)
    good = token_file.read_bytes()
    bearer = [("authorization", f"Bearer {TOKEN}")]
    assert auth.refusal() == UNKNOWN_TOKEN
    token_file.unlink()
    with caplog.at_level(logging.INFO, logger="server.auth"):
        assert [auth.user_for(bearer) for _ in range(3)] == [None] * 3
    assert auth.refusal() == UNREADABLE_FILE
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"token file problem, refusing every call until it is fixed: token file {token_file} cannot be read: "
        "No such file or directory"
    ]
    token_file.write_bytes(good)
    assert auth.user_for(bearer) == "alice" and auth.refusal() == UNKNOWN_TOKEN


def test_a_token_is_hashed_once_then_remembered_until_the_file_changes(
    token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []
    matches = tokens.TokenEntry.matches

    def counting(entry: tokens.TokenEntry, secret: str) -> bool:
        checks.append(entry.user)
        return matches(entry, secret)

    monkeypatch.setattr(tokens.TokenEntry, "matches", counting)
    auth = Authenticator(token_file)
    bearer = [("authorization", f"Bearer {TOKEN}")]
    assert [auth.user_for(bearer) for _ in range(3)] == ["alice"] * 3
    assert checks == ["alice"]  # PBKDF2 once (~30 ms), not once per call
    tokens.add_token(token_file, "bob")
    assert auth.user_for(bearer) == "alice"
    assert checks == ["alice", "alice"]  # a changed file is checked afresh (the token may be revoked)


def test_the_servicer_check_tells_an_unknown_caller_how_to_authenticate(token_file: Path) -> None:
    auth = Authenticator(token_file)
    with pytest.raises(UnauthenticatedError) as refused:
        auth.caller([("authorization", "Bearer ttt.abcdef12.not-the-secret-0123456789")])
    assert str(refused.value) == UNKNOWN_TOKEN
    assert "authorization: Bearer <token>" in UNKNOWN_TOKEN
