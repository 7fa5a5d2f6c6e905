"""The hand-serialized FetchFrames chunk is byte-for-byte a FrameChunk: it parses to the message form."""

from __future__ import annotations

import pytest

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.jobs import FrameChunkData
from server.wire import frame_chunk_bytes, frame_chunk_message, serialize_frame_chunk


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_384, (1 << 20) + 3])
def test_frame_chunk_bytes_parse_to_the_message(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    chunk = FrameChunkData(
        index=3,
        number=1004,
        filename="sh010.1004.exr",
        offset=2 << 20,
        total_bytes=5 << 20,
        data=memoryview(data),
        last=True,
        sha256="ab" * 32,
        total_frames=17,
    )
    raw = frame_chunk_bytes(chunk)
    parsed = pb.FrameChunk.FromString(raw)
    assert parsed == frame_chunk_message(chunk)
    assert parsed.data == data and parsed.filename == "sh010.1004.exr" and parsed.last
    assert serialize_frame_chunk(raw) is raw
    assert serialize_frame_chunk(parsed) == parsed.SerializeToString()
