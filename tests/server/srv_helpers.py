"""Helpers for the server tests: a real server process on loopback, tokens, EXR plates, job arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
USERS = ["alice", "bob"] + [f"user{i:02d}" for i in range(20)]
TOKENS = {user: f"tok-{user}-0123456789abcdef" for user in USERS}

STORYBOARD = [{"text": "A red ball rolls across a wooden floor. It stops by a chair. The room is quiet."}]
STORYBOARD_2 = STORYBOARD + [{"text": "A cat jumps onto the chair. It looks at the ball. It yawns."}]
# minimal job: one forward per step (guidance 1), no previews, 16x16
MINIMAL = {"height": 16, "width": 16, "steps": 1, "guidance_scale": 1.0, "preview_every": 0, "seed": 7}
SMALL = {"height": 32, "width": 32, "steps": 2, "guidance_scale": 1.0, "seed": 3}


def write_token_file(path: Path) -> Path:
    path.write_text("# test tokens\n" + "".join(f"{tok} {user}\n" for user, tok in TOKENS.items()))
    path.chmod(0o600)
    return path


def exr_bytes(tmp: Path, rgba: np.ndarray, name: str = "plate.exr") -> bytes:
    """A real RGBA half EXR (written with OpenEXR directly, so NaN plates can be made too)."""
    import OpenEXR

    path = tmp / name
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"RGBA": np.ascontiguousarray(rgba, dtype=np.float16)}).write(str(path))
    return path.read_bytes()


class ServerProcess:
    """`python -m server.main --tiny-random` on 127.0.0.1 with a free port, in its own data dir."""

    def __init__(self, data_dir: Path, token_file: Path | None, *extra: str) -> None:
        self.data_dir = Path(data_dir)
        self.token_file = token_file
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._log = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info_path = self.data_dir / "server.json"
        info_path.unlink(missing_ok=True)
        args = [sys.executable, "-m", "server.main", "--tiny-random", "--address", "127.0.0.1:0"]
        args += ["--data-dir", str(self.data_dir), "--torch-threads", "1", "--grace", "2"]
        args += ["--token-file", str(self.token_file)] if self.token_file else ["--insecure-no-auth"]
        args += self.extra
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            if info_path.exists():
                info = json.loads(info_path.read_text())
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    return self
            time.sleep(0.1)
        self.kill9()
        raise TimeoutError(f"server did not start in {timeout} s:\n{self.log_text()[-4000:]}")

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._close_log()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return records


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
