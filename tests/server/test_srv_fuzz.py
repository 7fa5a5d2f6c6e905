"""Every RPC fed arbitrary request messages, built from the proto descriptors, on a real loopback server.

A crash (the server process gone), a hang (the per-call deadline) or INTERNAL / UNKNOWN is a failure;
every other status is an answer. Requests are built generically (tests/server/proto_strategies.py):
every field of every type, nested messages, repeated fields, undeclared enum numbers, extreme ints, NaN
floats, odd strings and bytes; id fields also draw real ids (the caller's finished job, another
caller's, an upload), and half of the SubmitShot requests are a valid request with arbitrary fields
merged in, so that validation is reached past the first check.

Reproducible: derandomize=True (the examples are a function of the test), no example database. Each RPC
gets EXAMPLES = 200 examples (GetServerInfo, which has one possible request: one); measured on a 2-core CPU
shared with other jobs: 1,601 calls in ~25 s, plus ~30 s for the server to start (docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proto_strategies import messages
from srv_helpers import MINIMAL, STORYBOARD, TOKENS, ServerProcess, exr_bytes

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient

EXAMPLES = 200
CALL_TIMEOUT_S = 30.0  # a call still running after this is a hang
STREAM_MESSAGES = 64  # read at most this many messages of a server stream
FAILURES = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}
SERVICE = pb.DESCRIPTOR.services_by_name["TTTStudio"]
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


class Target:
    """The fuzzed server, a client of it, and the real ids worth putting into id fields."""

    def __init__(self, server: ServerProcess, client: StudioClient, pool: list[str], plate: bytes) -> None:
        self.server, self.client, self.pool, self.plate = server, client, pool, plate
        self.calls: dict[str, int] = {}

    def call(self, method: str, request: Any) -> None:
        """One call; fails the test on a crash, a hang, INTERNAL or UNKNOWN."""
        descriptor = SERVICE.methods_by_name[method]
        self.calls[method] = self.calls.get(method, 0) + 1
        stub_method = getattr(self.client.stub, method)
        kwargs = {"metadata": self.client.metadata, "timeout": CALL_TIMEOUT_S}
        try:
            if descriptor.server_streaming:
                stream = stub_method(request, **kwargs)
                for i, _ in enumerate(stream):
                    if i + 1 >= STREAM_MESSAGES:
                        stream.cancel()
                        break
            else:
                stub_method(iter(request) if descriptor.client_streaming else request, **kwargs)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            assert self.server.alive(), f"{method} killed the server:\n{self.server.log_text()[-3000:]}"
            assert exc.code() not in FAILURES, f"{method} -> {exc.code().name}: {exc.details()}\n{request}"
        assert self.server.alive(), f"{method} killed the server:\n{self.server.log_text()[-3000:]}"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(
        tmp / "data",
        token_file,
        *("--max-height", "32", "--max-width", "32", "--max-steps", "2", "--max-segments", "2"),
        *("--max-queued-per-caller", "2", "--max-upload-bytes", str(64 * 1024)),
        *("--max-adapter-bytes", str(64 * 1024)),
    ).start()
    plate = exr_bytes(tmp, np.full((16, 16, 4), 0.5, np.float32))
    with (
        StudioClient(server.address, token=TOKENS["alice"], retries=0) as alice,
        StudioClient(server.address, token=TOKENS["bob"], retries=0) as bob,
    ):
        own = alice.submit(STORYBOARD, **MINIMAL).job_id
        other = bob.submit(STORYBOARD, **MINIMAL).job_id
        for client, job_id in ((alice, own), (bob, other)):
            assert client.wait(job_id).state == pb.JOB_STATE_COMPLETED
        upload = alice.upload_plate(plate).upload_id
        yield Target(server, alice, [own, own, other, upload, "0" * 32], plate)
    code = server.terminate()
    assert code == 0, server.log_text()[-3000:]


def _requests(method: str, pool: list[str]) -> st.SearchStrategy[Any]:
    return messages(SERVICE.methods_by_name[method].input_type, pool)


@st.composite
def _near_valid_submit(draw: Any, pool: list[str]) -> pb.SubmitShotRequest:
    """A valid request with arbitrary fields merged over it: reaches the checks after the first ones."""
    request = pb.SubmitShotRequest(
        storyboard=pb.Storyboard(segments=[pb.Segment(text=STORYBOARD[0]["text"])]),
        parameters=pb.GenerationParameters(height=16, width=16, steps=1, guidance_scale=1.0),
    )
    request.MergeFrom(draw(messages(pb.SubmitShotRequest.DESCRIPTOR, pool)))
    return request


@st.composite
def _plate_stream(draw: Any, plate: bytes) -> list[pb.UploadPlateChunk]:
    """A real plate (whole or cut, with bytes flipped) in numbered chunks, with an arbitrary header."""
    data = bytearray(plate)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    data = bytes(data[: draw(st.integers(0, len(data)))])
    size = draw(st.integers(1, 4096))
    header = draw(messages(pb.PlateHeader.DESCRIPTOR))
    if draw(st.booleans()):
        header.total_bytes = len(data)
    chunks = [
        pb.UploadPlateChunk(sequence=i, data=data[o : o + size])
        for i, o in enumerate(range(0, len(data), size))
    ]
    if chunks:
        chunks[0].header.CopyFrom(header)
    return chunks


UNARY = [m.name for m in SERVICE.methods if not m.client_streaming]


@pytest.mark.slow
@pytest.mark.parametrize("method", UNARY)
def test_arbitrary_requests_get_an_answer(method: str, target: Target) -> None:
    strategy = _requests(method, target.pool)
    if method == "SubmitShot":
        strategy = st.one_of(strategy, _near_valid_submit(target.pool))

    @FUZZ
    @given(request=strategy)
    def check(request: Any) -> None:
        target.call(method, request)

    check()
    if SERVICE.methods_by_name[method].input_type.fields:  # GetServerInfoRequest has one value only
        assert target.calls[method] >= EXAMPLES, target.calls


@pytest.mark.slow
def test_arbitrary_upload_streams_get_an_answer(target: Target) -> None:
    chunk = messages(pb.UploadPlateChunk.DESCRIPTOR, target.pool)

    @FUZZ
    @given(chunks=st.one_of(st.lists(chunk, max_size=4), _plate_stream(target.plate)))
    def check(chunks: list[pb.UploadPlateChunk]) -> None:
        target.call("UploadPlate", chunks)

    check()
    assert target.calls["UploadPlate"] >= EXAMPLES, target.calls


@st.composite
def _adapter_stream(draw: Any, adapter: bytes) -> list[pb.UploadAdapterChunk]:
    """A real adapter file (whole or cut, with bytes flipped) in numbered chunks, with an arbitrary header."""
    data = bytearray(adapter)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    data = bytes(data[: draw(st.integers(0, len(data)))])
    size = draw(st.integers(1, 4096))
    header = draw(messages(pb.AdapterHeader.DESCRIPTOR))
    if draw(st.booleans()):
        header.total_bytes = len(data)
    if draw(st.booleans()):
        header.name = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True))
    chunks = [
        pb.UploadAdapterChunk(sequence=i, data=data[o : o + size])
        for i, o in enumerate(range(0, len(data), size))
    ]
    if chunks:
        chunks[0].header.CopyFrom(header)
    return chunks


@pytest.mark.slow
def test_arbitrary_adapter_uploads_get_an_answer(target: Target, tmp_path: Path) -> None:
    from tests.adapter_helpers import random_lora
    from ttt_engine.pipeline import VideoPipeline

    adapter = random_lora(
        VideoPipeline.tiny_random(seed=0).transformer, tmp_path / "look", seed=1
    ).read_bytes()
    chunk = messages(pb.UploadAdapterChunk.DESCRIPTOR, target.pool)

    @FUZZ
    @given(chunks=st.one_of(st.lists(chunk, max_size=4), _adapter_stream(adapter)))
    def check(chunks: list[pb.UploadAdapterChunk]) -> None:
        target.call("UploadAdapter", chunks)

    check()
    assert target.calls["UploadAdapter"] >= EXAMPLES, target.calls
    assert target.client.info().limits.max_adapter_bytes == 64 * 1024  # the serve flag reached the server
