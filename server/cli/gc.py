"""`ttt-studio gc [--dry-run]`: apply the retention policy to a data dir now.

A running server collects by itself every --gc-interval seconds; this command is for a stopped server
(it takes the data dir's lock, so it refuses while a server runs there, except with --dry-run, which
only reads). The retention options are serve's (--job-max-age, --upload-max-age, --max-total-bytes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.config import default_data_dir
from server.resources import ResourcePolicy


def register(subparsers: argparse._SubParsersAction) -> None:
    r = ResourcePolicy()
    parser = subparsers.add_parser(
        "gc",
        help="expire finished jobs' frames and unused uploads (the retention policy) now",
        description="Apply the retention policy to a stopped server's data dir (see docs/reliability.md).",
    )
    add = parser.add_argument
    add("--data-dir", type=Path, default=None, help=f"default {default_data_dir()}")
    add("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    add("--job-max-age", type=float, default=r.job_max_age_s, help="seconds a finished job's frames are kept")
    add("--upload-max-age", type=float, default=r.upload_max_age_s, help="seconds an unused upload is kept")
    add("--max-total-bytes", type=int, default=r.max_total_bytes, help="cap on all stored bytes (0: none)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.engine import lock_data_dir
    from server.frames import FrameStore
    from server.retention import Collector, FrameLeases
    from server.store import Store

    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "studio.sqlite3").is_file():
        print(f"ttt-studio gc: {data_dir} holds no server database (studio.sqlite3)", file=sys.stderr)
        return 1
    try:
        policy = ResourcePolicy(
            job_max_age_s=args.job_max_age,
            upload_max_age_s=args.upload_max_age,
            max_total_bytes=args.max_total_bytes,
        )
        lock = None if args.dry_run else lock_data_dir(data_dir)
    except (ValueError, RuntimeError) as exc:
        print(f"ttt-studio gc: {exc}; a running server collects by itself (--gc-interval)", file=sys.stderr)
        return 1
    store = Store(data_dir / "studio.sqlite3")
    try:
        report = Collector(store, FrameStore(data_dir), policy, FrameLeases()).run(dry_run=args.dry_run)
    finally:
        store.close()
        if lock is not None:
            lock.close()
    for item in report.removed:
        print(f"{item.kind}\t{item.item_id}\t{item.owner}\t{item.bytes}\t{item.reason}")
    print(report.summary(), file=sys.stderr)
    return 0
