"""The token file: bearer tokens stored as salted PBKDF2 hashes, never in clear.

A token is `ttt.<id>.<secret>`: the id says which line to check (so a call costs one hash, not one per
line) and is not secret; the secret is 32 random bytes (urlsafe base64). The file holds one line per
token under a format header:

    # ttt-studio tokens v1
    <id> <user> <role> pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>

role is `user` or `admin`. The file is written atomically with mode 600 by `ttt-studio token add |
revoke` (server.cli.token); the server re-reads it when it changes. A file of clear-text `TOKEN USER`
lines (the format before v1) is refused with a message naming `ttt-studio token migrate`, which
issues new tokens for its users (the old secrets cannot be kept: they carry no id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

HEADER = "# ttt-studio tokens v1"
ROLES = ("user", "admin")
PBKDF2_ITERATIONS = 100_000  # ~30 ms per check on one core; each token is checked once, then cached
SALT_BYTES = 16
SECRET_BYTES = 32
MIN_SECRET_LENGTH = 16
USER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
TOKEN_ID = re.compile(r"^[A-Za-z0-9]{6,32}$")
_TOKEN = re.compile(rf"^ttt\.([A-Za-z0-9]{{6,32}})\.([A-Za-z0-9_-]{{{MIN_SECRET_LENGTH},256}})$")
_HASH = re.compile(r"^pbkdf2_sha256\$(\d{1,9})\$([A-Za-z0-9+/=]{4,64})\$([A-Za-z0-9+/=]{44})$")


class TokenFileError(ValueError):
    """The token file is missing, unreadable or malformed; the message names the file and line."""


@dataclass(frozen=True)
class TokenEntry:
    """One line of the token file: who the token is for and the salted hash of its secret."""

    token_id: str
    user: str
    role: str
    hashed: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def matches(self, secret: str) -> bool:
        """Constant-time comparison of the secret's hash with the stored one."""
        match = _HASH.match(self.hashed)
        assert match is not None  # checked when the line was parsed
        iterations, salt, stored = int(match[1]), base64.b64decode(match[2]), base64.b64decode(match[3])
        digest = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, iterations)
        return hmac.compare_digest(digest, stored)

    def line(self) -> str:
        return f"{self.token_id} {self.user} {self.role} {self.hashed}"


def hash_secret(secret: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def split_token(token: str) -> tuple[str, str] | None:
    """`ttt.<id>.<secret>` -> (id, secret); None for anything else."""
    match = _TOKEN.match(token)
    return (match[1], match[2]) if match else None


def new_token() -> tuple[str, str, str]:
    """A fresh token: (token, id, secret)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"ttt.{token_id}.{secret}", token_id, secret


def parse_token_file(text: str, source: str = "token file") -> dict[str, TokenEntry]:
    """The v1 format -> {token id: entry}. Clear-text files and malformed lines raise TokenFileError."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        if any(len(line.split()) == 2 for line in lines if line.strip() and not line.startswith("#")):
            raise TokenFileError(
                f"{source} holds clear-text 'TOKEN USER' lines; tokens must be stored hashed. Convert it with "
                f"`ttt-studio token migrate {source}` (it issues new tokens for the same users and prints "
                "them once), or start a new file with `ttt-studio token add USER --token-file FILE`"
            )
        raise TokenFileError(
            f"{source} does not start with {HEADER!r}; create it with `ttt-studio token add`"
        )
    entries: dict[str, TokenEntry] = {}
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4:
            raise TokenFileError(
                f"{source} line {number}: expected 'ID USER ROLE HASH' (four fields), got {len(parts)} field(s)"
            )
        token_id, user, role, hashed = parts
        if not TOKEN_ID.match(token_id):
            raise TokenFileError(
                f"{source} line {number}: token id {token_id!r} must match {TOKEN_ID.pattern}"
            )
        if not USER.match(user):
            raise TokenFileError(f"{source} line {number}: user {user!r} must match {USER.pattern}")
        if role not in ROLES:
            raise TokenFileError(f"{source} line {number}: role {role!r} must be one of {ROLES}")
        if not _HASH.match(hashed):
            raise TokenFileError(
                f"{source} line {number}: hash must be 'pbkdf2_sha256$ITERATIONS$SALT$HASH' (base64)"
            )
        if token_id in entries:
            raise TokenFileError(f"{source} line {number}: token id {token_id} appears twice")
        entries[token_id] = TokenEntry(token_id, user, role, hashed)
    return entries


def parse_clear_text(text: str, source: str) -> dict[str, str]:
    """A pre-v1 file of `TOKEN USER` lines -> {user: role} (the secrets are not kept)."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not USER.match(parts[1]):
            raise TokenFileError(f"{source} line {number}: expected 'TOKEN USER', got {len(parts)} field(s)")
        users[parts[1]] = "user"
    return users


def read_token_file(path: Path) -> dict[str, TokenEntry]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenFileError(
            f"token file {path} does not exist; create it with `ttt-studio token add`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"token file {path} cannot be read: {exc}") from None
    return parse_token_file(text, str(path))


def write_token_file(path: Path, entries: dict[str, TokenEntry]) -> None:
    """Atomically replace the file (mode 600) with these entries."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    body = HEADER + "\n" + "".join(e.line() + "\n" for e in entries.values())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def add_token(path: Path, user: str, admin: bool = False, token: str | None = None) -> str:
    """Add a token for `user` to the file (created if missing); returns the token (shown once).

    token: a given `ttt.<id>.<secret>` instead of a random one (tests that need known tokens)."""
    if not USER.match(user):
        raise TokenFileError(f"user {user!r} must match {USER.pattern}")
    entries = read_token_file(path) if Path(path).exists() else {}
    if token is None:
        token, token_id, secret = new_token()
    else:
        parts = split_token(token)
        if parts is None:
            raise TokenFileError(
                "a token must look like 'ttt.<id 6-32 letters/digits>.<secret of 16+ chars>'"
            )
        token_id, secret = parts
    if token_id in entries:
        raise TokenFileError(f"token id {token_id} is already in {path}")
    entries[token_id] = TokenEntry(token_id, user, "admin" if admin else "user", hash_secret(secret))
    write_token_file(path, entries)
    return token


def revoke(path: Path, who: str) -> list[TokenEntry]:
    """Remove the token with id `who`, or every token of user `who`; returns what was removed."""
    entries = read_token_file(path)
    gone = [e for e in entries.values() if who in (e.token_id, e.user)]
    if not gone:
        raise TokenFileError(f"no token id or user {who!r} in {path}")
    write_token_file(path, {k: e for k, e in entries.items() if e not in gone})
    return gone


def migrate(path: Path) -> dict[str, str]:
    """Replace a clear-text `TOKEN USER` file by a v1 file with a new token per user; returns {user: token}."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"token file {path} cannot be read: {exc}") from None
    if text.splitlines()[:1] == [HEADER]:
        raise TokenFileError(f"{path} is already in the hashed format; nothing to migrate")
    users = parse_clear_text(text, str(path))
    issued: dict[str, str] = {}
    entries: dict[str, TokenEntry] = {}
    for user, role in users.items():
        token, token_id, secret = new_token()
        entries[token_id] = TokenEntry(token_id, user, role, hash_secret(secret))
        issued[user] = token
    write_token_file(path, entries)
    return issued
