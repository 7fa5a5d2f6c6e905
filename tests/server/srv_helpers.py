"""Helpers for the server tests: a real server process on loopback, tokens, EXR plates, job arguments."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from server.process import ServerProcess  # noqa: F401 - re-exported for the tests
from server.tokens import TokenEntry, hash_secret, split_token
from server.tokens import write_token_file as write_tokens

ROOT = Path(__file__).resolve().parents[2]
USERS = ["alice", "bob"] + [f"user{i:02d}" for i in range(20)]
TOKENS = {user: f"ttt.tok{user}.secret-{user}-0123456789abcdef" for user in USERS}

STORYBOARD = [{"text": "A red ball rolls across a wooden floor. It stops by a chair. The room is quiet."}]
STORYBOARD_2 = STORYBOARD + [{"text": "A cat jumps onto the chair. It looks at the ball. It yawns."}]
# minimal job: one forward per step (guidance 1), no previews, 16x16
MINIMAL = {"height": 16, "width": 16, "steps": 1, "guidance_scale": 1.0, "preview_every": 0, "seed": 7}
SMALL = {"height": 32, "width": 32, "steps": 2, "guidance_scale": 1.0, "seed": 3}


def write_token_file(path: Path, admins: tuple[str, ...] = ()) -> Path:
    """The hashed token file of TOKENS (the format `ttt-studio token add` writes)."""
    entries = {}
    for user, token in TOKENS.items():
        token_id, secret = split_token(token)
        entries[token_id] = TokenEntry(
            token_id, user, "admin" if user in admins else "user", hash_secret(secret)
        )
    write_tokens(path, entries)
    return path


def exr_bytes(tmp: Path, rgba: np.ndarray, name: str = "plate.exr") -> bytes:
    """A real RGBA half EXR (written with OpenEXR directly, so NaN plates can be made too)."""
    import OpenEXR

    path = tmp / name
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"RGBA": np.ascontiguousarray(rgba, dtype=np.float16)}).write(str(path))
    return path.read_bytes()


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
