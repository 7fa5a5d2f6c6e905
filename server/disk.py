"""A full disk, recognised wherever the server writes (frames, latents, uploads, the database).

OpenEXR reports it as a RuntimeError carrying the C library's text, SQLite as "database or disk is
full", Python as OSError(ENOSPC); all three are the same condition for the job and the caller.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

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
