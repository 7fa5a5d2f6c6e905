"""A real server process on loopback, for tests and benchmarks: start, wait until it serves, stop or kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """`python -m server.main --tiny-random` (or `--model MODEL`) on 127.0.0.1 with a free port, in its own
    data dir.

    token_file None means --insecure-no-auth (loopback only). The server announces itself by writing
    <data_dir>/server.json with its pid and address; start() waits for that.
    """

    def __init__(
        self,
        data_dir: Path,
        token_file: Path | None,
        *extra: str,
        log_path: Path | None = None,
        model: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.model = model
        self.token_file = token_file
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._log = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info_path = self.data_dir / "server.json"
        info_path.unlink(missing_ok=True)
        source = ["--tiny-random"] if self.model is None else ["--model", str(self.model)]
        args = [sys.executable, "-m", "server.main", *source, "--address", "127.0.0.1:0"]
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

    stop = terminate

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
