"""Bearer tokens: the server interceptor that enforces them and the lookup behind it.

The interceptor rejects calls without a valid token with UNAUTHENTICATED before any servicer code runs;
the servicer then asks `Authenticator.caller(metadata)` who is calling. Tokens live hashed in the token
file (server.tokens); a token is checked against its line's PBKDF2 hash once, then remembered by its
SHA-256 digest until the file changes. The file is re-read when it changes (tokens are added or revoked
without a restart). It fails closed: a token file that disappears or cannot be parsed means NO valid
tokens (every call UNAUTHENTICATED, saying the server's token file is unreadable) until it is fixed,
logged once per distinct problem, never a traceback per call.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from server.errors import UnauthenticatedError
from server.tokens import TokenEntry, TokenFileError, read_token_file, split_token

log = logging.getLogger(__name__)

ANONYMOUS_USER = "local"
BEARER = "bearer"  # RFC 6750: the scheme name is case-insensitive
# Calls anyone may make: load balancers probe health without a token.
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
UNKNOWN_TOKEN = (
    "missing or unknown bearer token: send metadata 'authorization: Bearer <token>' "
    "(ttt-studio --token or env TTT_STUDIO_TOKEN)"
)
UNREADABLE_FILE = (
    "the server's token file is unreadable or malformed, so no token is accepted until its administrator "
    "fixes it (the server log says what is wrong)"
)

__all__ = ["ANONYMOUS_USER", "Authenticator", "TokenFileError", "bearer_token", "make_interceptor"]


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` entry (scheme in any case), else None."""
    for key, value in metadata or ():
        if key != "authorization" or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == BEARER and token.strip():
            return token.strip()
    return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator:
    """Who is calling. token_file=None means no authentication: every caller is ANONYMOUS_USER.

    The file must be valid when the server starts (TokenFileError otherwise); later problems fail closed.
    """

    def __init__(self, token_file: Path | None) -> None:
        self._path = None if token_file is None else Path(token_file)
        self._lock = threading.Lock()
        self._entries: dict[str, TokenEntry] = {}
        self._verified: dict[str, TokenEntry] = {}  # sha256(token) -> entry, emptied on every reload
        self._stamp: tuple[int, int, int] | None = None
        self._problem: str | None = None  # why the file is unusable now (None when it is fine)
        if self._path is not None:
            self._load(self._read_stamp())
            if not self._entries:
                raise TokenFileError(
                    f"token file {self._path} has no tokens; add one with `ttt-studio token add USER`"
                )

    @property
    def enabled(self) -> bool:
        return self._path is not None

    def _read_stamp(self) -> tuple[int, int, int]:
        assert self._path is not None
        try:
            st = self._path.stat()
        except OSError as exc:
            raise TokenFileError(f"token file {self._path} cannot be read: {exc.strerror or exc}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by group/others; chmod 600 it", self._path)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self, stamp: tuple[int, int, int]) -> None:
        assert self._path is not None
        self._entries = read_token_file(self._path)
        self._verified.clear()
        self._stamp, self._problem = stamp, None
        log.info("loaded %d token(s) from %s", len(self._entries), self._path)

    def _refresh(self) -> None:
        """Re-read the file if it changed; on any problem drop every token (fail closed), log once."""
        try:
            stamp = self._read_stamp()
            if stamp == self._stamp and self._problem is None:
                return
            self._load(stamp)
        except TokenFileError as exc:
            if self._problem != str(exc):
                log.error("token file problem, refusing every call until it is fixed: %s", exc)
            self._entries, self._stamp, self._problem = {}, None, str(exc)
            self._verified.clear()

    def entry_for(self, metadata: Iterable[tuple[str, Any]] | None) -> TokenEntry | None:
        """The token file entry of the call's bearer token, or None (missing, unknown, wrong secret)."""
        token = bearer_token(metadata)
        if not token:
            return None
        key = _digest(token)
        with self._lock:
            self._refresh()
            known = self._verified.get(key)
            if known is not None:
                return known
            parts = split_token(token)
            entry = self._entries.get(parts[0]) if parts else None
            if entry is None or not entry.matches(parts[1]):
                return None
            self._verified[key] = entry
            return entry

    def user_for(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        """The user of the `authorization: Bearer <token>` metadata, or None."""
        if self._path is None:
            return ANONYMOUS_USER
        entry = self.entry_for(metadata)
        return None if entry is None else entry.user

    def is_admin_user(self, user: str) -> bool:
        """Whether `user` holds an admin token (admins are exempt from per-user quotas)."""
        with self._lock:
            return any(e.admin and e.user == user for e in self._entries.values())

    def refusal(self) -> str:
        """What an unauthenticated caller is told."""
        return UNREADABLE_FILE if self._problem is not None else UNKNOWN_TOKEN

    def caller(self, metadata: Iterable[tuple[str, Any]] | None) -> str:
        """The calling user; raises UnauthenticatedError (the interceptor normally stops such calls first)."""
        user = self.user_for(metadata)
        if user is None:
            raise UnauthenticatedError(self.refusal())
        return user


def make_interceptor(authenticator: Authenticator) -> Any:
    """A grpc.ServerInterceptor answering UNAUTHENTICATED to calls without a known token."""
    import grpc

    def _deny(request: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, authenticator.refusal())

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
