"""Helpers of the host plugin tests: a real ttt-studio server process on loopback and its settings.

`python -m server.main --tiny-random` with a token file in tmp; every sampling step is slowed by
0.05 s so a job of many steps is "a slow server" (cancel and main-thread tests) while a 1-step job of
16x16 frames stays fast (about a second).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-hp-alice-0123456789abcdef"
OTHER_TOKEN = "tok-hp-bob-0123456789abcdef"
STEP_DELAY_S = 0.05
# a fast job: one step, no guidance, 16x16 (the tiny model's multiple-of-16 minimum)
FAST: dict[str, Any] = {"height": 16, "width": 16, "steps": 1, "guidance_scale": 1.0}


class ServerProcess:
    """The server process, its address and its log."""

    def __init__(self, data_dir: Path, token_file: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.token_file = token_file
        self.extra = list(extra)
        self.proc: Any = None
        self.address = ""
        self.log_path = data_dir.parent / "server.log"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "server.main", "--tiny-random", "--address", "127.0.0.1:0"]
        args += ["--data-dir", str(self.data_dir), "--token-file", str(self.token_file)]
        args += [
            "--torch-threads",
            "1",
            "--grace",
            "2",
            "--log-format",
            "text",
            "--debug-step-delay",
            str(STEP_DELAY_S),
        ]
        args += self.extra
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        info_path = self.data_dir / "server.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            if info_path.exists():
                info = json.loads(info_path.read_text())
                if info.get("pid") == self.proc.pid:
                    self.address = info["address"]
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server did not start in {timeout} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc is not None else 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def job_states(address: str, token: str = TOKEN) -> list[Any]:
    """Every job of the token's user, via a separate client (what the server says, not the plugin)."""
    from host_plugin.core.client import TTTClient

    with TTTClient(address, token=token) as c:
        return c.list_jobs()
