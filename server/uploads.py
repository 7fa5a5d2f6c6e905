"""Receiving a plate: numbered chunks into a temporary file, limits on the way, EXR checks at the end.
(`receive_chunks`, the chunk handling, also receives adapters: server.adapters.)

Order is strict: sequence 0 carries the header (its total_bytes is checked against the upload limit
before any data is taken), every next chunk has sequence + 1. A wrong number, a size beyond the
announced total or the limit, a checksum mismatch, a corrupt EXR or one with NaN/inf pixels each end
the upload with a typed error and leave nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from server.config import Limits
from server.errors import DataLossError, InvalidArgumentError, ResourceExhaustedError
from server.frames import FrameStore
from server.jobs import UploadChunk, UploadRecord
from server.store import Store

log = logging.getLogger(__name__)


def receive_chunks(
    what: str,
    chunks: Iterable[UploadChunk],
    tmp: Path,
    max_bytes: int,
    limit_name: str,
    admit: Callable[[int], None] = lambda total_bytes: None,
) -> tuple[UploadChunk, int, str]:
    """Write a client stream of numbered chunks to `tmp`; returns (the header chunk, bytes, sha256 hex).

    Chunk 0 carries the header: its total_bytes is checked against max_bytes (named `limit_name` in the
    error) and passed to admit() before any data is taken; every next chunk has sequence + 1. More bytes
    than announced or than the limit, a short stream and a checksum mismatch each raise a typed error
    (`what` names the upload in every message). The caller removes `tmp`.
    """
    digest = hashlib.sha256()
    received = 0
    expected_seq = 0
    header: UploadChunk | None = None
    with open(tmp, "wb") as out:
        for chunk in chunks:
            if chunk.sequence != expected_seq:
                raise InvalidArgumentError(
                    f"{what}: chunk sequence {chunk.sequence} arrived where {expected_seq} was expected; "
                    "send chunks numbered 0, 1, 2, ... in order"
                )
            if expected_seq == 0:
                if not chunk.has_header:
                    raise InvalidArgumentError(f"{what}: chunk 0 must carry the header (total_bytes)")
                if chunk.total_bytes < 1:
                    raise InvalidArgumentError(
                        f"{what}: header total_bytes must be >= 1, got {chunk.total_bytes}"
                    )
                if chunk.total_bytes > max_bytes:
                    raise ResourceExhaustedError(
                        f"{what} of {chunk.total_bytes} bytes exceeds {limit_name}={max_bytes}"
                    )
                admit(chunk.total_bytes)
                header = chunk
            elif chunk.has_header:
                raise InvalidArgumentError(f"{what}: chunk {chunk.sequence} repeats the header")
            expected_seq += 1
            received += len(chunk.data)
            if received > max_bytes:
                raise ResourceExhaustedError(
                    f"{what} exceeds {limit_name}={max_bytes} (received {received} bytes)"
                )
            assert header is not None
            if received > header.total_bytes:
                raise InvalidArgumentError(
                    f"{what}: received {received} bytes, more than the announced total_bytes={header.total_bytes}"
                )
            digest.update(chunk.data)
            out.write(chunk.data)
    if header is None:
        raise InvalidArgumentError(f"{what}: no chunks received; expected chunk 0 with the header")
    if received != header.total_bytes:
        raise InvalidArgumentError(
            f"{what} ended after {received} bytes; the header announced total_bytes={header.total_bytes}"
        )
    sha = digest.hexdigest()
    if header.sha256 and header.sha256.lower() != sha:
        raise DataLossError(f"{what}: sha256 of the received bytes is {sha}, the header says {header.sha256}")
    return header, received, sha


def receive_plate(
    owner: str,
    chunks: Iterable[UploadChunk],
    store: Store,
    frames: FrameStore,
    limits: Limits,
    admit: Callable[[int], None] = lambda total_bytes: None,
) -> UploadRecord:
    """Store one uploaded EXR plate for `owner`; returns its record (upload id, size, resolution).

    The plate limit is the job limit: a plate larger than max_width x max_height could never be used,
    so its header is refused before any pixel is decoded (host_plugin.core.exr_header), as are more
    channels than max_plate_channels and pixels beyond max_plate_decode_bytes once decoded.
    admit(total_bytes) raises when the owner may not store that much more (quotas): it is asked when the
    header announces the size and again before the plate is kept.
    """
    from host_plugin.core.errors import PlateError
    from host_plugin.core.exr_io import validate_plate

    max_upload_bytes = limits.max_upload_bytes
    tmp = frames.temp_path(".exr")
    try:
        header, received, sha = receive_chunks(
            "plate upload", chunks, tmp, max_upload_bytes, "max_upload_bytes", admit
        )
        try:
            info = validate_plate(
                tmp,
                max_width=limits.max_width,
                max_height=limits.max_height,
                max_bytes=max_upload_bytes,
                max_channels=limits.input.max_plate_channels,
                max_header_bytes=limits.input.max_plate_header_bytes,
                max_decode_bytes=limits.input.max_plate_decode_bytes,
            )
        except PlateError as exc:
            name = header.display_name or "plate"
            raise InvalidArgumentError(f"{name}: {str(exc).replace(str(tmp), 'upload')}") from None
        admit(received)
        upload_id = "u" + uuid.uuid4().hex
        frames.commit(tmp, frames.upload_path(upload_id))
        record = UploadRecord(
            upload_id=upload_id,
            owner=owner,
            display_name=header.display_name[:200],
            size=received,
            sha256=sha,
            width=info.width,
            height=info.height,
            channels=tuple(info.channels),
            created=time.time(),
        )
        store.add_upload(record)
        log.info("plate %s stored (%d bytes, %dx%d)", upload_id, received, info.width, info.height)
        return record
    finally:
        tmp.unlink(missing_ok=True)
