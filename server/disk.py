"""A full disk, recognised wherever the server writes (frames, latents, uploads, the database).

OpenEXR reports it as a RuntimeError carrying the C library's text, SQLite as "database or disk is
full", Python as OSError(ENOSPC); all three are the same condition for the job and the caller.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        return True
    return _ENOSPC_TEXT in str(exc)


def disk_full_message(data_dir: Path, what: str) -> str:
    """What the job or caller is told: where, and what the administrator can do."""
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError:
        free = -1
    return (
        f"disk full while {what}: the server's data disk has {free} bytes free. Free space or run "
        "`ttt-studio gc` (retention), then submit again."
    )


class DiskReserve:
    """A file of `size` bytes in the data dir, given back to the filesystem when the disk fills, so the
    database has room to record that the job failed; re-made (when there is room) before the next job."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = Path(path)
        self.size = size
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Make the reserve if it is missing (best effort: a disk without room keeps none)."""
        with self._lock:
            if not self.size or (self.path.is_file() and self.path.stat().st_size == self.size):
                return
            try:
                with open(self.path, "wb") as handle:
                    handle.write(b"\0" * self.size)  # written, not sparse: the space is really taken
                    os.fsync(handle.fileno())
            except OSError as exc:
                self.path.unlink(missing_ok=True)
                log.warning("no room for the %d-byte disk reserve: %s", self.size, exc)

    def release(self) -> None:
        with self._lock:
            if self.path.exists():
                self.path.unlink()
                log.warning("disk full: released the %d-byte reserve to record the failure", self.size)
