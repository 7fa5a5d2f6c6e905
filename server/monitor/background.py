"""The monitor app served by uvicorn in a background thread on loopback (tests and the benchmark)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


class MonitorThread:
    """uvicorn on 127.0.0.1 with a free port, in a daemon thread: start() waits until it serves."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", https_cert: Path | None = None, https_key: Path | None = None
    ) -> None:
        self.scheme = "https" if https_cert is not None else "http"
        config = uvicorn.Config(
            app,
            host=host,
            port=0,
            log_level="warning",
            lifespan="on",
            ssl_certfile=str(https_cert) if https_cert is not None else None,
            ssl_keyfile=str(https_key) if https_key is not None else None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="monitor", daemon=True)

    def start(self, timeout_s: float = 30.0) -> MonitorThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the monitor did not start within {timeout_s} s")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"{self.scheme}://{host}:{port}"

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"the monitor did not stop within {timeout_s} s")

    def __enter__(self) -> MonitorThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
