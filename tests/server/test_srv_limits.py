"""Untrusted input bounded before it is parsed (issue #23), against a real server process on loopback.

Each defect from the issue: deep OTIO context (SIGSEGV at 100,000 levels, ~10 s at 10,000), a list as
OTIO context, a 30-digit page token and an after_seq >= 2**63 (INTERNAL), plates above the job size and
with headers that would decode to more than the budget, 1 MB of segment text. The server is this
module's own process, so a regression that crashes it fails these tests instead of killing pytest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import grpc
import numpy as np
import OpenEXR
import opentimelineio as otio
import pytest
from srv_helpers import MINIMAL, STORYBOARD, TOKENS, ServerProcess, exr_bytes

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import StudioClient
from server.config import Limits
from server.limits import INT64_MAX, InputLimits, numeric_bounds, parse_input_limits

MAX_SIDE = 64
LIST_PAGE = 500  # set with --input-limit, so that the flag is seen to reach the server


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("limits") / "data"
    proc = ServerProcess(
        data,
        token_file,
        *("--max-height", str(MAX_SIDE), "--max-width", str(MAX_SIDE), "--max-steps", "4"),
        *("--input-limit", f"max_list_page={LIST_PAGE}"),
    ).start()
    yield proc
    code = proc.terminate()
    assert code == 0, proc.log_text()[-3000:]


@pytest.fixture()
def server(module_server: ServerProcess) -> ServerProcess:
    """The module's server, restarted if an earlier test killed it (so each test judges its own input)."""
    if not module_server.alive():
        module_server.start()
    return module_server


@pytest.fixture()
def alice(server: ServerProcess) -> Iterator[StudioClient]:
    with StudioClient(server.address, token=TOKENS["alice"], retries=0) as client:
        yield client


def _refused(server: ServerProcess, call, *words: str) -> str:
    """Run call; it must be INVALID_ARGUMENT whose message has every word, and the server must stay up."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert server.alive(), f"the server died (exit {server.proc.returncode}):\n{server.log_text()[-3000:]}"
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    for word in words:
        assert word in err.value.details(), err.value.details()
    return err.value.details()


def _submit(client: StudioClient, **request_fields) -> pb.SubmitShotResponse:
    request = pb.SubmitShotRequest(
        storyboard=pb.Storyboard(segments=[pb.Segment(text=STORYBOARD[0]["text"])]),
        parameters=pb.GenerationParameters(height=16, width=16, steps=1, guidance_scale=1.0, seed=7),
    )
    for name, value in request_fields.items():
        target, _, leaf = name.rpartition(".")
        message = request
        for part in filter(None, target.split(".")):
            message = getattr(message, part)
        if isinstance(value, list):  # a repeated field: replaced
            del getattr(message, leaf)[:]
            getattr(message, leaf).extend(value)
        else:
            setattr(message, leaf, value)
    return client.stub.SubmitShot(request, metadata=client.metadata, timeout=60)


# ---------------------------------------------------------------------------- OTIO context


def test_100k_nested_brackets_are_refused_without_crashing_the_server(
    server: ServerProcess, alice: StudioClient
) -> None:
    deep = "[" * 100_000 + "]" * 100_000  # 200 KB: overflowed the C stack of the server before
    _refused(server, lambda: _submit(alice, **{"context.otio_json": deep}), "max_otio_depth=64")
    assert alice.info().api_version == "ttt_studio.v1"


def test_10k_nested_levels_are_refused_by_the_pre_scan(server: ServerProcess, alice: StudioClient) -> None:
    deep = '{"OTIO_SCHEMA": "Timeline.1", "metadata": ' + '{"a": ' * 10_000 + "1" + "}" * 10_001
    details = _refused(server, lambda: _submit(alice, **{"context.otio_json": deep}), "nests deeper than 64")
    assert "not valid OTIO" not in details, "the pre-scan, not the OTIO parser, must refuse it"


def test_otio_context_must_be_an_otio_object(server: ServerProcess, alice: StudioClient) -> None:
    for text, got in (
        ("[1,2,3]", "a JSON list"),
        ('{"name": "x"}', "without OTIO_SCHEMA"),
        ("7", "a JSON int"),
    ):
        _refused(server, lambda t=text: _submit(alice, **{"context.otio_json": t}), "OTIO_SCHEMA", got)


def test_a_real_otio_context_is_still_accepted(alice: StudioClient) -> None:
    timeline = otio.schema.Timeline("edit", tracks=[otio.schema.Track("V1")])
    timeline.tracks[0].append(otio.schema.Gap(duration=otio.opentime.RationalTime(24, 24)))
    timeline.metadata["ttt_studio"] = {"nested": {"a": [1, 2, {"b": [3]}]}, "inf": float("inf")}
    text = otio.adapters.write_to_string(timeline, "otio_json")
    job = _submit(alice, **{"context.otio_json": text}).job
    assert job.context.otio_json == text
    alice.cancel(job.job_id)


# ---------------------------------------------------------------------------- numbers


def test_a_30_digit_page_token_is_invalid_argument(server: ServerProcess, alice: StudioClient) -> None:
    request = pb.ListJobsRequest(page_token="1" * 30)
    _refused(server, lambda: alice.stub.ListJobs(request, metadata=alice.metadata, timeout=30), "page_token")


def test_after_seq_beyond_int64_is_invalid_argument(server: ServerProcess, alice: StudioClient) -> None:
    job_id = _submit(alice).job_id  # a real job of the caller: the bound, not the lookup, must answer
    for after in (2**63, 2**64 - 1):
        request = pb.WatchJobRequest(job_id=job_id, after_seq=after)
        _refused(
            server,
            lambda r=request: list(alice.stub.WatchJob(r, metadata=alice.metadata, timeout=30)),
            f"after_seq={after}",
            str(INT64_MAX),
        )
    alice.cancel(job_id)


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("parameters.guidance_scale", float("nan"), "not a finite number"),
        ("parameters.guidance_scale", 1e30, "max_guidance_scale=50"),
        ("parameters.strength", float("inf"), "not a finite number"),
        ("parameters.preview_every", 4_000_000_000, "max_steps=4"),
        ("context.record_start", 2**62, "max_record_start=1000000000"),
        ("context.start_frame", 2**32 - 1, "max_start_frame=9999000"),
        ("priority", 7, "not a Priority value"),
    ],
)
def test_every_numeric_field_is_bounded(
    name: str, value: float, words: str, server: ServerProcess, alice: StudioClient
) -> None:
    _refused(server, lambda: _submit(alice, **{name: value}), name, words)


def test_list_limit_above_the_page_limit_is_refused(server: ServerProcess, alice: StudioClient) -> None:
    request = pb.ListJobsRequest(limit=LIST_PAGE + 1)
    _refused(
        server,
        lambda: alice.stub.ListJobs(request, metadata=alice.metadata, timeout=30),
        f"max_list_page={LIST_PAGE}",
    )


def test_numeric_bounds_cover_every_numeric_field_of_every_request() -> None:
    """A numeric field added to a request message without a bound fails here (check_request would
    refuse every value of it)."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    numeric = {FD.CPPTYPE_INT32, FD.CPPTYPE_INT64, FD.CPPTYPE_UINT32, FD.CPPTYPE_UINT64}
    numeric |= {FD.CPPTYPE_FLOAT, FD.CPPTYPE_DOUBLE}
    found, seen = set(), set()

    def walk(descriptor) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            if field.cpp_type == FD.CPPTYPE_MESSAGE:
                walk(field.message_type)
            elif field.cpp_type in numeric:
                found.add((descriptor.full_name, field.name))

    for method in pb.DESCRIPTOR.services_by_name["TTTStudio"].methods:
        walk(method.input_type)
    assert found == set(numeric_bounds(Limits()))


def test_input_limit_settings_are_checked() -> None:
    assert parse_input_limits(["max_otio_depth=32", "max_list_page = 7"]) == InputLimits(
        max_otio_depth=32, max_list_page=7
    )
    for bad, words in (
        ("max_otio_depth", "NAME=VALUE"),
        ("nope=1", "NAME=VALUE"),
        ("max_otio_depth=x", "'x'"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_input_limits([bad])
    with pytest.raises(ValueError, match="max_otio_depth: expected a positive int, got 0"):
        parse_input_limits(["max_otio_depth=0"])


def test_server_info_reports_every_limit(alice: StudioClient) -> None:
    reported = alice.info().limits
    input_limits = InputLimits(max_list_page=LIST_PAGE)
    limits = Limits(max_height=MAX_SIDE, max_width=MAX_SIDE, max_steps=4, input=input_limits)
    for item in fields(limits):
        if item.name != "input":
            assert getattr(reported, item.name) == getattr(limits, item.name), item.name
    for item in fields(InputLimits):
        assert getattr(reported, item.name) == getattr(limits.input, item.name), item.name


# ---------------------------------------------------------------------------- storyboard text


def test_one_megabyte_of_segment_text_is_refused(server: ServerProcess, alice: StudioClient) -> None:
    text = "A cat. " * 150_000  # ~1 MB, under the 8 MiB message limit
    _refused(
        server,
        lambda: _submit(alice, **{"storyboard.segments": [pb.Segment(text=text)]}),
        "storyboard.segments[0].text",
        "max_segment_text_bytes=4096",
    )


def test_total_storyboard_text_is_bounded(server: ServerProcess, alice: StudioClient) -> None:
    segments = [pb.Segment(text="é" * 2000) for _ in range(17)]  # 4000 bytes each, 68,000 in all
    _refused(
        server,
        lambda: _submit(alice, **{"storyboard.segments": segments}),
        "68000 bytes",
        "max_storyboard_text_bytes=65536",
    )


# ---------------------------------------------------------------------------- plates


def _upload(client: StudioClient, data: bytes) -> pb.UploadPlateResponse:
    return client.upload_plate(data)


def _with_windows(data: bytes, width: int, height: int) -> bytes:
    """The EXR `data` with its dataWindow and displayWindow rewritten to width x height (pixels unchanged)."""
    out = bytearray(data)
    for name in (b"dataWindow\0box2i\0", b"displayWindow\0box2i\0"):
        at = out.index(name) + len(name) + 4
        out[at : at + 16] = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    return bytes(out)


def test_a_plate_larger_than_the_job_limit_is_refused(
    server: ServerProcess, alice: StudioClient, tmp_path: Path
) -> None:
    big = exr_bytes(tmp_path, np.full((MAX_SIDE * 2, MAX_SIDE, 4), 0.5, np.float32))
    _refused(server, lambda: _upload(alice, big), "128", f"above the limit of {MAX_SIDE}x{MAX_SIDE}")


def test_an_8k_header_is_refused_before_its_pixels_are_decoded(
    server: ServerProcess, alice: StudioClient, tmp_path: Path
) -> None:
    """A small file whose header declares 8192 x 8192 (as the issue's 416 KB ZIP plate does): refused by
    its header against the job limit, not by a decode that fails (or succeeds) later."""
    small = exr_bytes(tmp_path, np.full((16, 16, 4), 0.5, np.float32))
    details = _refused(
        server, lambda: _upload(alice, _with_windows(small, 8192, 8192)), "8192x8192", "above the limit"
    )
    assert "corrupt" not in details
    assert list((server.data_dir / "tmp").iterdir()) == []


def test_a_plate_with_too_many_channels_is_refused(
    server: ServerProcess, alice: StudioClient, tmp_path: Path
) -> None:
    path = tmp_path / "many.exr"
    planes = {name: np.full((16, 16), 0.5, np.float16) for name in "RGBA"}
    planes.update(
        {f"aux{i:02d}": np.zeros((16, 16), np.float16) for i in range(InputLimits().max_plate_channels)}
    )
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, planes).write(str(path))
    _refused(server, lambda: _upload(alice, path.read_bytes()), "20 channels", "expected 3 to 16")


def test_a_plate_at_the_job_size_is_still_accepted(alice: StudioClient, tmp_path: Path) -> None:
    plate = exr_bytes(tmp_path, np.full((MAX_SIDE, MAX_SIDE, 4), 0.25, np.float32))
    upload = _upload(alice, plate)
    assert (upload.width, upload.height) == (MAX_SIDE, MAX_SIDE)
    assert set(upload.channels) == set("RGBA")


def test_minimal_job_still_runs(alice: StudioClient) -> None:
    job = alice.submit(STORYBOARD, **MINIMAL)
    assert alice.wait(job.job_id).state == pb.JOB_STATE_COMPLETED
