"""Bearer tokens: a token file (`TOKEN USER` per line) and the server interceptor that enforces it.

The interceptor rejects calls without a known token with UNAUTHENTICATED before any servicer code runs;
the servicer then asks `Authenticator.caller(metadata)` who is calling (a dictionary lookup). Tokens
are compared by their SHA-256 digest, so the file's tokens are never kept in memory in clear text after
loading. The file is re-read when its modification time changes, so tokens can be added or revoked
without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from server.errors import UnauthenticatedError

log = logging.getLogger(__name__)

ANONYMOUS_USER = "local"
MIN_TOKEN_LENGTH = 16
_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# Calls anyone may make: load balancers probe health without a token.
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


class TokenFileError(ValueError):
    """The token file is missing or malformed; the message names the line."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_token_file(text: str, source: str = "token file") -> dict[str, str]:
    """`TOKEN USER` lines (blank lines and # comments skipped) -> {sha256(token): user}."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenFileError(
                f"{source} line {number}: expected 'TOKEN USER' (two fields), got {len(parts)} field(s)"
            )
        token, user = parts
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenFileError(
                f"{source} line {number}: token for {user!r} is {len(token)} characters; use at least "
                f"{MIN_TOKEN_LENGTH} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if not _USER.match(user):
            raise TokenFileError(f"{source} line {number}: user {user!r} must match {_USER.pattern}")
        key = _digest(token)
        if key in users:
            raise TokenFileError(f"{source} line {number}: this token is already given to {users[key]!r}")
        users[key] = user
    return users


class Authenticator:
    """Who is calling. token_file=None means no authentication: every caller is ANONYMOUS_USER."""

    def __init__(self, token_file: Path | None) -> None:
        self._path = None if token_file is None else Path(token_file)
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}
        self._mtime: float | None = None
        if self._path is not None:
            self._reload(force=True)

    @property
    def enabled(self) -> bool:
        return self._path is not None

    def _reload(self, force: bool = False) -> None:
        assert self._path is not None
        try:
            st = self._path.stat()
        except FileNotFoundError:
            raise TokenFileError(f"token file {self._path} does not exist") from None
        if not force and st.st_mtime == self._mtime:
            return
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by group/others; chmod 600 it", self._path)
        users = parse_token_file(self._path.read_text(encoding="utf-8"), str(self._path))
        if not users:
            raise TokenFileError(f"token file {self._path} has no tokens; add lines 'TOKEN USER'")
        self._users, self._mtime = users, st.st_mtime
        log.info("loaded %d token(s) from %s", len(users), self._path)

    def user_for(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        """The user of the `authorization: Bearer <token>` metadata, or None."""
        if self._path is None:
            return ANONYMOUS_USER
        token = None
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                token = value[len("Bearer ") :].strip()
        if not token:
            return None
        with self._lock:
            try:
                self._reload()
            except (OSError, TokenFileError):
                log.exception("token file %s could not be re-read; keeping the previous tokens", self._path)
            return self._users.get(_digest(token))

    def caller(self, metadata: Iterable[tuple[str, Any]] | None) -> str:
        """The calling user; raises UnauthenticatedError (the interceptor normally stops such calls first)."""
        user = self.user_for(metadata)
        if user is None:
            raise UnauthenticatedError(
                "missing or unknown bearer token: send metadata 'authorization: Bearer <token>' "
                "(ttt-studio --token or env TTT_STUDIO_TOKEN)"
            )
        return user


def make_interceptor(authenticator: Authenticator) -> Any:
    """A grpc.ServerInterceptor answering UNAUTHENTICATED to calls without a known token."""
    import grpc

    def _deny(request: Any, context: grpc.ServicerContext) -> None:
        context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or unknown bearer token: send metadata 'authorization: Bearer <token>' "
            "(ttt-studio --token or env TTT_STUDIO_TOKEN)",
        )

    class AuthInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
            method = handler_call_details.method or ""
            if method.startswith(PUBLIC_METHOD_PREFIXES):
                return continuation(handler_call_details)
            if authenticator.user_for(handler_call_details.invocation_metadata) is not None:
                return continuation(handler_call_details)
            handler = continuation(handler_call_details)
            if handler is None:  # unknown method: let grpc answer UNIMPLEMENTED
                return None
            if handler.request_streaming and handler.response_streaming:
                return grpc.stream_stream_rpc_method_handler(lambda it, ctx: _deny(None, ctx))
            if handler.request_streaming:
                return grpc.stream_unary_rpc_method_handler(lambda it, ctx: _deny(None, ctx))
            if handler.response_streaming:
                return grpc.unary_stream_rpc_method_handler(
                    _deny_stream,
                    request_deserializer=handler.request_deserializer,
                )
            return grpc.unary_unary_rpc_method_handler(
                _deny, request_deserializer=handler.request_deserializer
            )

    def _deny_stream(request: Any, context: grpc.ServicerContext) -> Any:
        _deny(request, context)
        yield  # pragma: no cover - abort raised above

    return AuthInterceptor()


def generate_token() -> str:
    """A new random token for the token file."""
    import secrets

    return secrets.token_urlsafe(32)


def ensure_private(path: Path) -> None:
    """chmod 600 a file we create that holds secrets."""
    os.chmod(path, 0o600)
