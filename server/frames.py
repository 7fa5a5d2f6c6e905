"""The frame store on disk: every file the server writes lives under its data dir, named by server ids.

Layout under <data_dir>:
    jobs/<job_id>/frames/<index:06d>.exr    take 0's final frames (the client-facing name is only metadata)
    jobs/<job_id>/latents.safetensors       take 0's latents saved after sampling (decode resumes from them)
    jobs/<job_id>/take<k>/<final|draft>/    every other take's (and every draft's) frames and latents.safetensors
    uploads/<upload_id>.exr                 validated plates
    tmp/                                    partial uploads and writes before their atomic rename

Paths are built only from ids that match the server's own formats (checked here again), so no string
from a client ever becomes a path. Every write goes to a temporary file and is renamed into place, so a
kill -9 leaves either the whole file or none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from server.jobs import JOB_ID, UPLOAD_ID, FrameChunkData, FrameRecord


class FrameStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.tmp_dir = self.root / "tmp"
        for sub in ("jobs", "uploads", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _check(pattern, value: str, what: str) -> str:  # noqa: ANN001 - a compiled regex
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError(f"{what} {value!r} is not a server-issued id")
        return value

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / self._check(JOB_ID, job_id, "job id")

    @staticmethod
    def _run_dir(take: int, draft: bool) -> str:
        """A run's folder under its job: take 0's final keeps the layout of jobs stored before takes."""
        if not isinstance(take, int) or take < 0:
            raise ValueError(f"take must be an int >= 0, got {take!r}")
        if take == 0 and not draft:
            return ""
        return f"take{take}/{'draft' if draft else 'final'}/"

    def frame_relpath(self, job_id: str, index: int, take: int = 0, draft: bool = False) -> str:
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"frame index must be an int >= 0, got {index!r}")
        return (
            f"jobs/{self._check(JOB_ID, job_id, 'job id')}/{self._run_dir(take, draft)}frames/{index:06d}.exr"
        )

    def path_of(self, relpath: str) -> Path:
        """Absolute path of a relpath recorded in the frames index (written by this module only)."""
        path = (self.root / relpath).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"recorded path {relpath!r} points outside the data dir")
        return path

    def run_dir(self, job_id: str, take: int = 0, draft: bool = False) -> Path:
        """The folder of one take's final or draft run (latents, conform report)."""
        return self.job_dir(job_id) / self._run_dir(take, draft)

    def latents_path(self, job_id: str, take: int = 0, draft: bool = False) -> Path:
        return self.run_dir(job_id, take, draft) / "latents.safetensors"

    def upload_path(self, upload_id: str) -> Path:
        return self.root / "uploads" / f"{self._check(UPLOAD_ID, upload_id, 'upload id')}.exr"

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh temporary path on the same filesystem (so os.replace is atomic)."""
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}"

    @staticmethod
    def commit(tmp: Path, final: Path) -> None:
        """fsync then atomically move a finished temporary file into place."""
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def clear_tmp(self) -> int:
        """Remove leftovers of writes interrupted by a crash (called at start); returns how many."""
        removed = 0
        for entry in self.tmp_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prefetch(store: FrameStore, frame: FrameRecord) -> None:
    """Ask the OS to start reading a stored frame into the page cache (returns at once; best effort)."""
    try:
        fd = os.open(store.path_of(frame.relpath), os.O_RDONLY)
    except OSError:
        return  # a missing file is reported when it is read
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def iter_frame_chunks(
    store: FrameStore, frame: FrameRecord, chunk_bytes: int, total_frames: int
) -> Iterator[FrameChunkData]:
    """A stored frame as chunks of at most chunk_bytes; the last carries the whole file's sha256.

    The file is read once (one read of a few MB) and the chunks are memoryview slices of it, so
    chunking copies nothing; wire.frame_chunk_bytes copies each slice once into its message.
    A frame indexed but missing on disk raises FileNotFoundError.
    """
    with open(store.path_of(frame.relpath), "rb") as handle:
        data = memoryview(handle.read())
    size = len(data)
    offset = 0
    while True:
        piece = data[offset : offset + chunk_bytes]
        last = offset + len(piece) >= size
        yield FrameChunkData(
            index=frame.index,
            number=frame.number,
            filename=frame.filename,
            offset=offset,
            total_bytes=size,
            data=piece,
            last=last,
            sha256=frame.sha256 if last else "",
            total_frames=total_frames,
            take=frame.take,
            draft=frame.draft,
        )
        offset += len(piece)
        if last:
            return
