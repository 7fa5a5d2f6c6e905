"""`ttt-studio gc [--dry-run]`: apply the retention policy to a data dir now.

A running server collects by itself every --gc-interval seconds; this command is for a stopped server
(it takes the data dir's lock, so it refuses while a server runs there, except with --dry-run, which
only reads). The policy options are serve's (--job-max-age, --upload-max-age, --max-total-bytes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.config import default_data_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    from server.main import add_resource_arguments

    parser = subparsers.add_parser(
        "gc",
        help="expire finished jobs' frames and unused uploads (the retention policy) now",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument("--data-dir", type=Path, default=None, help=f"default {default_data_dir()}")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    add_resource_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.engine import lock_data_dir
    from server.frames import FrameStore
    from server.main import resources_from_args
    from server.retention import Collector, FrameLeases
    from server.store import Store

    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "studio.sqlite3").is_file():
        print(f"ttt-studio gc: {data_dir} holds no server database (studio.sqlite3)", file=sys.stderr)
        return 1
    try:
        policy = resources_from_args(args)
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
