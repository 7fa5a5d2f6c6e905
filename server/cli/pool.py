"""`ttt-studio pool --workers N|auto`: resize the Ray worker pool of a server running on this data dir.

The size is written to <data_dir>/ray_workers, which a `serve --ray` front end reads every second: more
workers start at once (as the cluster's resources allow), fewer retire after their running job. `auto`
follows the cluster (one worker per GPU, or per --ray-threads CPUs) as nodes join and leave. Without
--workers it prints the size asked for now. The file outlives the server, so a restart keeps the size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.config import default_data_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pool",
        help="resize the Ray worker pool of a running `serve --ray` server",
        description="Resize the Ray worker pool of the server on a data dir (see docs/scaling.md).",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help=f"default {default_data_dir()}")
    parser.add_argument(
        "--workers", default=None, metavar="N|auto", help="workers wanted (auto: follow the cluster)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.ray_pool import AUTO, POOL_FILE, read_pool_target, write_pool_target

    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "studio.sqlite3").is_file():
        print(f"ttt-studio pool: {data_dir} holds no server database (studio.sqlite3)", file=sys.stderr)
        return 1
    if args.workers is None:
        wanted = read_pool_target(data_dir, None)
        print(f"{AUTO if wanted is None else wanted} ({data_dir / POOL_FILE})")
        return 0
    workers: int | None = None
    if args.workers != AUTO:
        try:
            workers = int(args.workers)
            if workers < 0:
                raise ValueError
        except ValueError:
            print(
                f"ttt-studio pool: --workers expects a count >= 0 or 'auto', got {args.workers!r}",
                file=sys.stderr,
            )
            return 2
    path = write_pool_target(data_dir, workers)
    print(f"pool size {args.workers} written to {path}; the server applies it within a second")
    return 0
