"""Helpers of the host plugin tests: a real ttt-studio server process on loopback and its settings.

`python -m server.main --tiny-random` with a token file in tmp; every sampling step is slowed by
0.05 s so a job of many steps is "a slow server" (cancel and main-thread tests) while a 1-step job of
16x16 frames stays fast (about a second).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from server import process as server_process

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ttt.hpalice.secret-hp-alice-0123456789abcdef"
OTHER_TOKEN = "ttt.hpbob01.secret-hp-bob-0123456789abcdef"
STEP_DELAY_S = 0.05
# a fast job: one step, no guidance, 16x16 (the tiny model's multiple-of-16 minimum)
FAST: dict[str, Any] = {"height": 16, "width": 16, "steps": 1, "guidance_scale": 1.0}
# a fast job on the shipped default model: one step, no guidance, the model's own 64x64
FAST_DEFAULT: dict[str, Any] = {"steps": 1, "guidance_scale": 1.0}


class ServerProcess(server_process.ServerProcess):
    """The shared server process with text logs, every sampling step slowed by STEP_DELAY_S."""

    def __init__(self, data_dir: Path, token_file: Path, *extra: str) -> None:
        super().__init__(
            data_dir,
            token_file,
            "--log-format",
            "text",
            "--debug-step-delay",
            str(STEP_DELAY_S),
            *extra,
            log_path=Path(data_dir).parent / "server.log",
        )


class DefaultModelServer(ServerProcess):
    """The server on the shipped default model (no --tiny-random), every sampling step slowed the same."""

    def start(self, timeout: float = 180.0) -> DefaultModelServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info_path = self.data_dir / "server.json"
        info_path.unlink(missing_ok=True)
        args = [
            sys.executable,
            "-m",
            "server.main",
            "--address",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
        ]
        args += ["--torch-threads", "1", "--grace", "2", "--token-file", str(self.token_file), *self.extra]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            if info_path.exists() and json.loads(info_path.read_text()).get("pid") == self.proc.pid:
                self.info = json.loads(info_path.read_text())
                return self
            time.sleep(0.1)
        self.kill9()
        raise TimeoutError(f"server did not start in {timeout} s:\n{self.log_text()[-4000:]}")


def job_states(address: str, token: str = TOKEN) -> list[Any]:
    """Every job of the token's user, via a separate client (what the server says, not the plugin)."""
    from host_plugin.core.client import TTTClient

    with TTTClient(address, token=token) as c:
        return c.list_jobs()


FAKES = ROOT / "tests" / "fakes"


def use_fakes() -> None:
    """Put tests/fakes first on sys.path so `import nuke` / `import DaVinciResolveScript` find the fakes."""
    if str(FAKES) not in sys.path:
        sys.path.insert(0, str(FAKES))


class ThreadRecorder(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor
):
    """A grpc client interceptor that records which thread starts every RPC: (method, thread, is main)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    def _record(self, details: Any) -> None:
        here = threading.current_thread()
        self.calls.append((details.method.rsplit("/", 1)[-1], here.name, here is threading.main_thread()))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(details)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        self._record(details)
        return continuation(details, request_iterator)

    def methods(self) -> list[str]:
        return [c[0] for c in self.calls]


class DropProxy:
    """A TCP proxy in front of the server whose live connections can be cut (a real network drop):
    drop_all() closes every socket it holds; new connections keep working."""

    def __init__(self, target: str) -> None:
        import socket

        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._socket = socket
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self.connections = 0
        self._budget: int | None = None
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
                self.connections += 1
            for src, dst, down in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pump, args=(src, dst, down), name="proxy-pump", daemon=True
                ).start()

    def cut_after(self, downstream_bytes: int) -> None:
        """Cut every connection once this many more bytes went from the server to the client (mid-stream,
        whatever grpc buffers), then forward normally again."""
        with self._lock:
            self._budget = downstream_bytes

    def _pump(self, src: Any, dst: Any, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                cut = False
                if downstream:
                    with self._lock:
                        if self._budget is not None:
                            if len(data) >= self._budget:
                                data, cut, self._budget = data[: self._budget], True, None
                            else:
                                self._budget -= len(data)
                dst.sendall(data)
                if cut:
                    self.drop_all()
                    break
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(self._socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop_all(self) -> int:
        """Cut every open connection; returns how many sockets were closed."""
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            try:
                sock.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(sockets)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()


def delivered_takes(
    folder: Path,
    takes: int = 3,
    frames: int = 4,
    size: tuple[int, int] = (8, 8),
    rate: Any = 24,
    colorspace: str = "lin_ap1_scene",
    shot: str = "sh010",
    start: int = 1001,
) -> list[list[str]]:
    """Takes as the plugin fetches them: <folder>/take_01/sh010.1001.exr ..., each take its own grey
    (0.1, 0.2, ...), framesPerSecond and colorInteropID set as the server delivers them."""
    from fractions import Fraction

    import numpy as np

    from host_plugin.core.exr_io import write_sequence
    from host_plugin.core.takes import take_folder

    width, height = size
    return [
        write_sequence(
            take_folder(str(folder), index),
            f"{shot}.",
            (np.full((height, width, 4), 0.1 * (index + 1), np.float32) for _ in range(frames)),
            start=start,
            colour_interop_id=colorspace,
            frames_per_second=Fraction(rate),
        )
        for index in range(takes)
    ]


def delivered_element(
    folder: Path,
    frames: int = 4,
    size: tuple[int, int] = (8, 8),
    rate: Any = 24,
    colorspace: str = "lin_ap1_scene",
    shot: str = "sh010",
    start: int = 1001,
) -> tuple[list[str], list[str], list[str]]:
    """(plate, matte, element) frames: a grey plate, a single-channel matte whose left half is 1 and an
    RGBA element that is red where the matte is (premultiplied: RGB = colour x alpha)."""
    from fractions import Fraction

    import numpy as np

    from host_plugin.core.exr_io import write_matte_exr, write_sequence

    width, height = size
    matte = np.zeros((height, width), np.float32)
    matte[:, : width // 2] = 1.0
    element = np.zeros((height, width, 4), np.float32)
    element[..., 0], element[..., 3] = matte, matte
    fps = Fraction(rate)
    plate = write_sequence(
        folder / "plate",
        "plate.",
        (np.full((height, width, 4), 0.18, np.float32) for _ in range(frames)),
        start=start,
        colour_interop_id=colorspace,
        frames_per_second=fps,
    )
    (folder / "matte").mkdir(parents=True, exist_ok=True)
    mattes = [write_matte_exr(folder / "matte" / f"matte.{start + i:04d}.exr", matte) for i in range(frames)]
    generated = write_sequence(
        folder / "element",
        f"{shot}.",
        (element for _ in range(frames)),
        start=start,
        colour_interop_id=colorspace,
        frames_per_second=fps,
    )
    return plate, mattes, generated
