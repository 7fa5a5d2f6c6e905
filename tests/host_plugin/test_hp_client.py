"""host_plugin.core.client against a real server on loopback: connect checks, auth, idempotent submit,
chunked plate upload, watch and fetch that resume after a real dropped connection (a TCP proxy whose
sockets are cut), atomic resumable frame files, cancel and list."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hp_helpers import FAST, OTHER_TOKEN, TOKEN, DropProxy, ServerProcess, ThreadRecorder

from host_plugin.core.client import TTTClient, check_server_info
from host_plugin.core.errors import (
    AuthenticationError,
    ClientError,
    ServerMismatchError,
    ServerUnavailableError,
)
from host_plugin.core.exr_io import read_exr, write_rgba_exr

SEGMENT = [{"text": "A red ball rolls across a wooden floor."}]


class StartFrames(ThreadRecorder):
    """Also records the start_frame of every FetchFrames request and after_seq of every WatchJob."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, int]] = []

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.rsplit("/", 1)[-1]
        self.requests.append((method, request.start_frame if method == "FetchFrames" else request.after_seq))
        return super().intercept_unary_stream(continuation, details, request)


class LoseFirstSubmitResponse(grpc.UnaryUnaryClientInterceptor):
    """The first SubmitShot reaches the server, then its response is 'lost' (UNAVAILABLE), as when the
    connection drops after the server queued the job."""

    def __init__(self) -> None:
        self.lost = 0

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if details.method.endswith("/SubmitShot") and self.lost == 0:
            outcome.result()  # the server has the job
            self.lost += 1
            raise _Unavailable()
        return outcome


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection dropped (test)"


def test_connect_reports_what_the_server_runs_and_what_it_lacks(client: TTTClient, hp_server: Any) -> None:
    info = client.info
    assert info.api_version == "ttt_studio.v1" and info.caller == "alice"
    assert info.frames_per_segment == 8 and info.first_segment_frames == 9
    assert [info.num_frames(n) for n in (1, 2, 3)] == [9, 17, 25]
    assert [info.segments_for(f) for f in (1, 9, 10, 17, 18)] == [1, 1, 2, 2, 3]
    with pytest.raises(
        ServerMismatchError, match=r"lacks capabilities \['restyle_plate'\]; it offers"
    ) as exc:
        client.connect(required_capabilities=("storyboard", "restyle_plate"))
    assert exc.value.code == "CAPABILITY"
    with pytest.raises(ServerMismatchError, match="runs model 'tiny_random.*not 'cogvideox-5b'"):
        client.connect(model="cogvideox-5b")
    with pytest.raises(
        ServerMismatchError, match="speaks API 'ttt_studio.v1'; this plugin speaks 'ttt_studio.v2'"
    ):
        check_server_info(info, api_version="ttt_studio.v2")
    with pytest.raises(ServerMismatchError, match="frames_per_segment=0"):
        check_server_info(dataclasses.replace(info, frames_per_segment=0))


def test_bad_token_bad_address_and_no_server_are_clear(hp_server: Any, tmp_path: Path) -> None:
    with TTTClient(hp_server.address, token="not-a-real-token-0000000000") as bad:
        with pytest.raises(AuthenticationError, match="UNAUTHENTICATED.*check the token"):
            bad.connect()
    with pytest.raises(ValueError, match="host:port"):
        TTTClient("localhost")
    with pytest.raises(ValueError, match="root certificate file"):
        TTTClient(hp_server.address, token=TOKEN, root_certificates=str(tmp_path / "missing.pem"))
    with TTTClient("127.0.0.1:1", token=TOKEN, retries=1, retry_delay_s=0.01, timeout_s=2) as nowhere:
        with pytest.raises(ServerUnavailableError, match="UNAVAILABLE.*is the server running"):
            nowhere.connect()


def test_submit_retry_after_a_lost_response_makes_one_job(hp_server: Any) -> None:
    lose = LoseFirstSubmitResponse()
    with TTTClient(hp_server.address, token=OTHER_TOKEN, retry_delay_s=0.01, interceptors=[lose]) as bob:
        before = {j.job_id for j in bob.list_jobs()}
        result = bob.submit(SEGMENT, shot_name="retry", **FAST)
        assert lose.lost == 1 and result.deduplicated  # the retry found the job the lost call made
        again = bob.submit(SEGMENT, shot_name="retry", idempotency_key=result.idempotency_key, **FAST)
        assert again.job_id == result.job_id and again.deduplicated
        new = [j for j in bob.list_jobs() if j.job_id not in before]
        assert [j.job_id for j in new] == [result.job_id]
        with pytest.raises(ClientError, match="ALREADY_EXISTS") as exc:  # same key, different request
            bob.submit([{"text": "Something else entirely."}], idempotency_key=result.idempotency_key, **FAST)
        assert exc.value.code == "ALREADY_EXISTS"
        with pytest.raises(ValueError, match="non-empty string"):
            bob.submit([{"text": " "}])


def test_plate_upload_is_chunked_in_order_and_checked(client: TTTClient, tmp_path: Path) -> None:
    rgba = np.random.default_rng(0).random((24, 40, 4)).astype(np.float32)
    path = write_rgba_exr(tmp_path / "plate.exr", rgba)
    data = Path(path).read_bytes()
    upload = client.upload_plate(path, chunk_bytes=1024)  # several chunks, numbered from 0
    assert len(data) > 3 * 1024
    assert (upload.width, upload.height, upload.bytes) == (40, 24, len(data))
    assert upload.sha256 == hashlib.sha256(data).hexdigest() and {"R", "G", "B", "A"} <= set(upload.channels)
    with pytest.raises(ClientError, match="INVALID_ARGUMENT") as exc:
        client.upload_plate(b"this is not an EXR file" * 10)
    assert exc.value.code == "INVALID_ARGUMENT"


def test_watch_resumes_after_a_dropped_connection_without_losing_or_repeating_events(hp_server: Any) -> None:
    proxy = DropProxy(hp_server.address)
    recorder = StartFrames()
    try:
        with TTTClient(
            proxy.address, token=TOKEN, retries=6, retry_delay_s=0.05, interceptors=[recorder]
        ) as c:
            job = c.submit(SEGMENT, **{**FAST, "steps": 12}).job  # 12 slowed steps: time to cut the line
            seqs = []
            for event in c.watch(job.job_id):
                seqs.append(event.seq)
                if len(seqs) == 3:
                    assert proxy.drop_all() > 0
            assert c.get_job(job.job_id).state == "completed"
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 12
        watches = [after for method, after in recorder.requests if method == "WatchJob"]
        assert len(watches) >= 2 and watches[0] == 0 and watches[1] >= 3  # resumed after what it had
        assert c.reconnects and c.reconnects[0][0] == "WatchJob"
    finally:
        proxy.close()


def test_fetch_resumes_after_a_drop_and_after_a_crash_with_atomic_files(
    hp_server: Any, tmp_path: Path
) -> None:
    proxy = DropProxy(hp_server.address)
    recorder = StartFrames()
    try:
        with TTTClient(
            proxy.address, token=TOKEN, retries=6, retry_delay_s=0.05, interceptors=[recorder]
        ) as c:
            job = c.submit(SEGMENT * 3, shot_name="fetchme", **FAST).job  # 25 frames of about 2 kB
            list(c.watch(job.job_id))
            proxy.cut_after(40_000)  # the line goes dead part way into the fetch (about 55 kB)
            landed: list = []  # frames on disk when the line died (gRPC may drop bytes it had buffered)
            frames = c.fetch_frames(
                job.job_id, tmp_path / "a", chunk_bytes=1024, on_frame=lambda f, n: landed.append(f.index)
            )
            result = c.result(job.job_id)
            assert [os.path.basename(f.path) for f in frames] == [name for _, _, name, _ in result.frames]
            assert [f.sha256 for f in frames] == [sha for _, _, _, sha in result.frames]
            starts = [s for m, s in recorder.requests if m == "FetchFrames"]
            fetch_resumes = [r for r in c.reconnects if r[0] == "FetchFrames"]
            assert (
                starts[0] == 0
                and len(starts) == 2
                and fetch_resumes == [("FetchFrames", job.job_id, starts[1])]
            )
            # resumed exactly after the frames it had, not from the start
            assert 0 < starts[1] < 25 and landed[: starts[1]] == list(range(starts[1])), (starts, landed)

            # a host that died after 5 frames: the next fetch starts at frame 5, nothing half-written remains
            class Crash(Exception):
                pass

            def crash_after_five(frame: Any, total: int) -> None:
                if frame.index == 4:
                    raise Crash()

            with pytest.raises(Crash):
                c.fetch_frames(job.job_id, tmp_path / "b", on_frame=crash_after_five)
            assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.suffix == ".exr") == [
                f"fetchme.{1001 + i}.exr" for i in range(5)
            ]
            recorder.requests.clear()
            resumed = c.fetch_frames(job.job_id, tmp_path / "b")
            assert [s for m, s in recorder.requests if m == "FetchFrames"] == [5]
            assert len(resumed) == 25 and not [
                p for p in (tmp_path / "b").iterdir() if p.name.endswith(".part")
            ]
            for frame in resumed:
                assert hashlib.sha256(Path(frame.path).read_bytes()).hexdigest() == frame.sha256
                pixels, _ = read_exr(frame.path)
                assert pixels.shape == (16, 16, 4)
    finally:
        proxy.close()


def test_cancel_and_list(client: TTTClient) -> None:
    job = client.submit(SEGMENT, **{**FAST, "steps": 200}).job
    cancelled = client.cancel(job.job_id)
    assert cancelled.cancel_requested or cancelled.state == "cancelled"
    final = list(client.watch(job.job_id))[-1]
    assert final.kind == "state" and final.state == "cancelled"
    assert client.get_job(job.job_id).state == "cancelled"
    assert job.job_id in {j.job_id for j in client.list_jobs(states=["cancelled"])}
    assert job.job_id not in {j.job_id for j in client.list_jobs(states=["completed"])}
    with pytest.raises(ValueError, match="unknown job states"):
        client.list_jobs(states=["done"])
    with pytest.raises(ClientError, match="NOT_FOUND"):
        client.get_job("0" * 32)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make test certificates"
)
def test_tls_with_a_root_certificate(tmp_path_factory: pytest.TempPathFactory, hp_server: Any) -> None:
    """A second real server with TLS: the CA's PEM connects; plaintext or another CA does not."""
    certs = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other_ca"):
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=ttt {ca}",
            cwd=certs,
        )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=certs,
    )
    (certs / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=certs,
    )
    root = tmp_path_factory.mktemp("tls_server")
    server = ServerProcess(
        root / "data",
        hp_server.token_file,
        "--tls-cert",
        str(certs / "server.pem"),
        "--tls-key",
        str(certs / "server.key"),
    ).start()
    try:
        with TTTClient(server.address, token=TOKEN, root_certificates=str(certs / "ca.pem")) as secure:
            assert secure.connect().caller == "alice"
        for kwargs in ({}, {"root_certificates": (certs / "other_ca.pem").read_bytes()}):
            with TTTClient(server.address, token=TOKEN, retries=0, timeout_s=5, **kwargs) as wrong:
                with pytest.raises(ServerUnavailableError):
                    wrong.connect()
    finally:
        server.stop()


def test_plate_modes_are_checked_before_anything_is_queued(client: TTTClient, tmp_path: Path) -> None:
    from host_plugin.core.errors import RequestError
    from host_plugin.core.requests import ShotRequest
    from host_plugin.core.shot_job import GenerationSettings, Plates, generate_shot

    with pytest.raises(ValueError, match="plate_mode must be"):
        client.submit(SEGMENT, plate_mode="sideways")
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        client.submit(SEGMENT, strength=1.5)
    with pytest.raises(ValueError, match="restyling a plate needs a strength"):
        Plates(("a.exr",), "restyle")
    with pytest.raises(ValueError, match="continuing a plate takes no strength"):
        Plates(("a.exr",), "continue", 0.5)
    plate = write_rgba_exr(tmp_path / "p.exr", np.zeros((16, 16, 4), np.float32))
    request = ShotRequest("r1", "clip", "V1", 0, 1001, 3, 24, prompt="A red ball rolls.")
    before = len(client.list_jobs())
    with pytest.raises(RequestError, match="one plate frame per shot frame; got 2 plate frames for 3"):
        generate_shot(
            client,
            request,
            GenerationSettings(str(tmp_path / "out")),
            plates=Plates((plate,) * 2, "restyle", 0.5),
        )
    assert len(client.list_jobs()) == before  # nothing was queued
