"""The monitor's endpoints over real HTTP (uvicorn on loopback) in front of a real server process.

Every page request becomes a gRPC call with the signed-in user's token: these tests check what each user
sees, the event stream, the takes' playback sheets and the approve / cancel actions, and that GetJob (the
API itself) agrees."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import ssl
import subprocess
import time

import grpc
import httpx
import numpy as np
import pytest
from monitor_helpers import in_process_server, page_client, submit
from PIL import Image
from srv_helpers import TOKENS, wait_for, write_token_file

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from server.monitor.app import COOKIE, create_app
from server.monitor.background import MonitorThread
from server.monitor.config import JPEG_MAX_SIDE, MonitorConfig
from server.monitor.gateway import MAX_SHEET_PIXELS, preview_data_url, sheet_layout
from server.monitor.sessions import SessionStore
from server.tokens import read_token_file, split_token
from server.tokens import write_token_file as write_tokens

# ---------------------------------------------------------------------- sign-in and what a user sees


def test_a_wrong_or_empty_token_is_refused_and_sees_nothing(monitor, alice: StudioClient) -> None:
    submit(alice)  # there is something to see, for the right user
    page = page_client(monitor)
    refused = page.post("/api/signin", json={"token": "ttt.tokmallory.not-a-real-secret"})
    assert refused.status_code == 401
    assert "sign-in refused" in refused.json()["error"] and "token add" in refused.json()["error"]
    assert COOKIE not in refused.headers.get("set-cookie", "")
    empty = page.post("/api/signin", json={"token": "  "})
    assert empty.status_code == 400 and "enter your ttt-studio token" in empty.json()["error"]
    assert page.post("/api/signin", content=b"token=x").status_code == 400
    for path in ("/api/me", "/api/jobs", "/api/stream"):
        response = page.get(path)
        assert response.status_code == 401, path
        assert "not signed in" in response.json()["error"]
        assert "jobs" not in response.json()


def test_sign_in_sets_an_httponly_same_site_cookie_and_sign_out_ends_it(monitor) -> None:
    page = page_client(monitor)
    response = page.post("/api/signin", json={"token": TOKENS["alice"]})
    assert response.status_code == 200 and response.json()["caller"] == "alice"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert TOKENS["alice"].lower() not in cookie  # the token stays in the monitor
    assert page.get("/api/me").json()["caller"] == "alice"
    assert page.post("/api/signout").status_code == 200
    assert page.get("/api/jobs").status_code == 401


def test_another_users_job_is_not_visible(monitor, alice: StudioClient) -> None:
    job_id = submit(alice)
    mine = page_client(monitor, "alice").get("/api/jobs").json()["jobs"]
    assert job_id in [row["job_id"] for row in mine]
    bob = page_client(monitor, "bob")
    assert job_id not in [row["job_id"] for row in bob.get("/api/jobs").json()["jobs"]]
    for method, path in [
        ("GET", f"/api/jobs/{job_id}"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("POST", f"/api/jobs/{job_id}/takes/0/approve"),
        ("GET", f"/api/jobs/{job_id}/takes/0/playback"),
        ("GET", f"/api/jobs/{job_id}/takes/0/sheet.jpg"),
    ]:
        response = bob.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "NOT_FOUND"
    job = alice.wait(job_id)
    assert job.state == pb.JOB_STATE_COMPLETED and not job.cancel_requested
    assert not job.HasField("approved_take")


# ---------------------------------------------------------------------- the event stream


def _sse(lines) -> tuple[str, dict]:
    """The next (event name, data) of a text/event-stream."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: ") and name is not None:
            return name, json.loads(line.removeprefix("data: "))
    raise AssertionError("the event stream ended")


def test_stream_sends_the_queue_and_previews_while_the_job_samples(monitor, alice: StudioClient) -> None:
    page = page_client(monitor, "alice")
    with page.stream("GET", "/api/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        name, first = _sse(lines)
        assert name == "jobs"
        job_id = submit(alice, steps=6)
        seen_in_queue, preview = False, None
        deadline = time.monotonic() + 60
        while preview is None and time.monotonic() < deadline:
            name, data = _sse(lines)
            if name == "jobs":
                seen_in_queue |= job_id in [row["job_id"] for row in data]
            elif name == "event" and data["job_id"] == job_id:
                assert not (data["kind"] == "state" and data["state"] in ("completed", "failed"))
                if data["kind"] == "preview":
                    preview = data
    assert seen_in_queue and preview is not None
    assert (
        preview["step"] == 1 and not preview["draft"] and preview["take"] == 0
    )  # no terminal state before it
    assert preview["image"].startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(preview["image"].split(",", 1)[1])))
    assert image.size == (preview["width"], preview["height"]) and preview["frames"] >= 1
    alice.cancel(job_id)


# ---------------------------------------------------------------------- takes, playback, approve, cancel


def _take_frames(client: StudioClient, job_id: str, take: int) -> list[bytes]:
    frames: dict[int, list[bytes]] = {}
    request = pb.FetchFramesRequest(job_id=job_id, take=take)
    for chunk in client.stub.FetchFrames(request, metadata=client.metadata, timeout=60):
        frames.setdefault(chunk.frame_index, []).append(chunk.data)
    return [b"".join(frames[i]) for i in sorted(frames)]


def _srgb(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding, written out here so the check does not reuse the monitor's OCIO path."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def test_takes_play_from_a_sheet_at_the_shots_rate_and_approval_reaches_get_job(
    monitor, alice: StudioClient, studio
) -> None:
    from host_plugin.core.exr_io import read_exr

    job_id = submit(alice, takes=2, steps=2)
    assert alice.wait(job_id).state == pb.JOB_STATE_COMPLETED
    page = page_client(monitor, "alice")
    row = page.get(f"/api/jobs/{job_id}").json()
    native = alice.info()
    assert row["fps"] == pytest.approx(native.native_fps_num / native.native_fps_den)
    assert [t["index"] for t in row["takes"]] == [0, 1] and row["approved_take"] is None
    assert len({t["seed"] for t in row["takes"]}) == 2
    cells = []
    for take in (0, 1):
        layout = page.get(f"/api/jobs/{job_id}/takes/{take}/playback").json()
        assert layout["fps"] == row["fps"] and layout["rate"] == row["rate"]
        exrs = _take_frames(alice, job_id, take)
        assert layout["frames"] == len(exrs) == row["takes"][take]["total_frames"]
        sheet_response = page.get(layout["sheet"])
        assert sheet_response.headers["content-type"] == "image/jpeg"
        sheet = np.asarray(Image.open(io.BytesIO(sheet_response.content)).convert("RGB"), np.float32) / 255
        w, h, cols = layout["frame_width"], layout["frame_height"], layout["columns"]
        assert sheet.shape == (-(-layout["frames"] // cols) * h, cols * w, 3)
        for index, exr in enumerate(exrs):
            path = studio.data_dir.parent / f"monitor-check-{take}-{index}.exr"
            path.write_bytes(exr)
            pixels, header = read_exr(path)
            assert header["colorInteropID"] == "lin_rec709_scene" and pixels.shape[:2] == (h, w)
            cell = sheet[
                (index // cols) * h : (index // cols + 1) * h, (index % cols) * w : (index % cols + 1) * w
            ]
            assert np.abs(cell - _srgb(pixels[..., :3])).mean() < 0.03, (take, index)  # JPEG's loss
            cells.append(cell)
    assert np.abs(cells[0] - cells[len(exrs)]).mean() > 0.01  # two seeds, two different takes

    approved = page.post(f"/api/jobs/{job_id}/takes/1/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_take"] == 1
    job = alice.job(job_id)  # the API agrees
    assert job.approved_take == 1 and job.takes[1].approved and job.takes[1].approved_by == "alice"
    assert not job.takes[0].approved
    assert page.post(f"/api/jobs/{job_id}/takes/7/approve").status_code == 400
    assert page.post(f"/api/jobs/{job_id}/takes/{2**32}/approve").json()["error"].startswith("take must be")
    assert page.get(f"/api/jobs/{job_id}/takes/0/playback?draft=2").status_code == 400


def test_a_preview_jobs_draft_plays_before_its_final(monitor, alice: StudioClient) -> None:
    job_id = submit(alice, steps=8, priority="preview")
    page = page_client(monitor, "alice")

    def draft_done() -> dict | None:
        row = page.get(f"/api/jobs/{job_id}").json()
        return row if row["takes"][0]["draft_complete"] else None

    row = wait_for(draft_done, what="the draft")
    assert 0 < row["takes"][0]["draft_steps"] < 8
    layout = page.get(f"/api/jobs/{job_id}/takes/0/playback?draft=1").json()
    assert layout["draft"] and layout["frames"] == row["takes"][0]["total_frames"]
    assert layout["sheet"].endswith("draft=1")
    assert page.get(layout["sheet"]).headers["content-type"] == "image/jpeg"
    assert alice.wait(job_id).state == pb.JOB_STATE_COMPLETED
    final = page.get(f"/api/jobs/{job_id}/takes/0/playback").json()
    assert not final["draft"] and final["frames"] == layout["frames"]


def test_cancel_from_the_page_stops_the_job_and_unfinished_takes_do_not_play(
    monitor, alice: StudioClient
) -> None:
    job_id = submit(alice, steps=40)
    wait_for(lambda: alice.job(job_id).state == pb.JOB_STATE_SAMPLING, what="sampling")
    page = page_client(monitor, "alice")
    refused = page.get(f"/api/jobs/{job_id}/takes/0/playback")
    assert refused.status_code == 400 and "no complete final frames yet" in refused.json()["error"]
    response = page.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    job = alice.wait(job_id)
    assert job.state == pb.JOB_STATE_CANCELLED
    assert job.frames_ready == 0  # stopped while sampling, with 40 steps of STEP_DELAY_S to go


def test_grpc_errors_keep_their_meaning(monitor) -> None:
    page = page_client(monitor, "alice")
    missing = page.get("/api/jobs/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and missing.json()["code"] == grpc.StatusCode.NOT_FOUND.name


# ---------------------------------------------------------------------- parts without a server


def test_sheet_layout_scales_down_to_fit_and_refuses_what_cannot() -> None:
    config = MonitorConfig(server="127.0.0.1:1")
    small = sheet_layout(9, 32, 32, config)
    assert (small.frame_width, small.frame_height, small.columns, small.rows) == (32, 32, 9, 1)  # never up
    hd = sheet_layout(144, 1920, 1080, config)
    assert hd.frame_height == config.sheet_frame_height and hd.frame_width == 320
    assert hd.size[0] <= config.sheet_max_width and hd.columns * hd.rows >= 144
    minute = sheet_layout(1440, 1920, 1080, config)
    assert minute.size[0] * minute.size[1] <= MAX_SHEET_PIXELS and minute.size[1] <= JPEG_MAX_SIDE
    assert minute.frame_height < hd.frame_height
    with pytest.raises(ValueError, match="do not fit one playback sheet"):
        sheet_layout(200_000, 1920, 1080, config)
    with pytest.raises(ValueError, match="frames >= 1"):
        sheet_layout(0, 32, 32, config)


def test_sessions_expire_when_idle_and_the_oldest_goes_first() -> None:
    now = [0.0]
    store = SessionStore(idle_s=10.0, max_sessions=2, clock=lambda: now[0])
    a = store.create("token-a", "alice", 8.0)
    b = store.create("token-b", "bob", 8.0)
    now[0] = 5.0
    assert store.get(a).caller == "alice"  # a used at 5: b is now the oldest
    c = store.create("token-c", "user07", 8.0)
    assert store.get(b) is None and store.get(c).caller == "user07"
    now[0] = 15.1
    assert store.get(a) is None  # 10.1 s idle
    assert store.get(None) is None and store.get("made-up") is None


def test_plain_http_off_loopback_is_refused_unless_asked_for() -> None:
    with pytest.raises(ValueError, match="--https-cert"):
        MonitorConfig(server="127.0.0.1:1", listen="0.0.0.0:8765")
    assert MonitorConfig(server="127.0.0.1:1", listen="0.0.0.0:8765", insecure_http=True).listen
    with pytest.raises(ValueError, match="both --https-cert and --https-key"):
        MonitorConfig(server="127.0.0.1:1", https_key=__import__("pathlib").Path("key.pem"))


def test_raw_previews_become_png_and_bad_ones_are_named() -> None:
    rgb = bytes(range(24)) * 2  # 4 x 4 RGB
    url = preview_data_url(pb.Preview(format="rgb8", width=4, height=4, data=rgb))
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size == (4, 4) and image.getpixel((1, 0)) == (3, 4, 5)
    with pytest.raises(ValueError, match="expected 48"):
        preview_data_url(pb.Preview(format="rgb8", width=4, height=4, data=rgb[:-1]))
    with pytest.raises(ValueError, match="unknown preview format 'jpeg'"):
        preview_data_url(pb.Preview(format="jpeg", width=4, height=4, data=b"x"))


def test_an_unreachable_server_is_named_at_sign_in() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    config = MonitorConfig(server=address, rpc_timeout_s=5.0)
    with MonitorThread(create_app(config)) as thread:
        response = httpx.post(f"{thread.url}/api/signin", json={"token": TOKENS["alice"]}, timeout=30)
    assert response.status_code == 503
    assert response.json()["error"].startswith(f"the ttt-studio server at {address} is unreachable")


def test_the_command_refuses_plain_http_off_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    from ttt_engine.cli import main

    assert main(["monitor", "--server", "127.0.0.1:1", "--listen", "0.0.0.0:8765"]) == 1
    assert "--https-cert and --https-key, or --insecure-http" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate"
)
def test_tls_to_the_server_and_https_to_the_page(tmp_path, token_file, server_pipe) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    with in_process_server(tmp_path / "data", token_file, server_pipe, tls_cert=cert, tls_key=key) as server:
        config = MonitorConfig(server=server.address, tls_ca=cert, https_cert=cert, https_key=key)
        with MonitorThread(create_app(config), https_cert=cert, https_key=key) as thread:
            assert thread.url.startswith("https://")
            trusted = ssl.create_default_context(cafile=str(cert))
            with httpx.Client(base_url=thread.url, verify=trusted, timeout=30) as page:
                response = page.post("/api/signin", json={"token": TOKENS["alice"]})
                assert response.status_code == 200, response.text
                assert "secure" in response.headers["set-cookie"].lower()
                assert page.get("/api/jobs").status_code == 200
        plain = MonitorConfig(server=server.address, rpc_timeout_s=5.0)  # no TLS towards a TLS server
        with MonitorThread(create_app(plain)) as thread:
            response = httpx.post(f"{thread.url}/api/signin", json={"token": TOKENS["alice"]}, timeout=30)
            assert response.status_code == 503 and "unreachable" in response.json()["error"]


def test_a_token_revoked_while_the_page_is_open_signs_it_out(tmp_path, server_pipe) -> None:
    tokens = write_token_file(tmp_path / "tokens")
    with in_process_server(tmp_path / "data", tokens, server_pipe) as server:
        with MonitorThread(create_app(MonitorConfig(server=server.address))) as thread:
            page = page_client(thread, "user07")
            with page.stream("GET", "/api/stream") as stream:
                lines = stream.iter_lines()
                assert _sse(lines)[0] == "jobs"
                entries = read_token_file(tokens)
                token_id, _ = split_token(TOKENS["user07"])
                write_tokens(tokens, {k: v for k, v in entries.items() if k != token_id})  # revoke user07
                name, data = _sse(lines)
                while name == "jobs":
                    name, data = _sse(lines)
            assert name == "signed-out" and "no longer accepts your token" in data["error"]
            assert page.get("/api/jobs").json()["error"].startswith("not signed in")
