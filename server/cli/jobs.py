"""`ttt-studio jobs`: list your jobs, newest first."""

from __future__ import annotations

import argparse
import time

from server.cli import add_client_arguments, fail, make_client, rpc_error_text
from server.client import state_name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("jobs", help="list your jobs")
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=("queued", "sampling", "decoding", "completed", "failed", "cancelled"),
    )
    parser.add_argument("--limit", type=int, default=50)
    add_client_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc

    with make_client(args) as client:
        try:
            jobs = client.jobs(args.state, limit=args.limit)
        except grpc.RpcError as exc:
            return fail(rpc_error_text(exc))
    print(f"{'JOB':32}  {'STATE':9}  {'FRAMES':>9}  {'QUEUE':>5}  {'CREATED':19}  SHOT")
    for job in jobs:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created.seconds))
        queue = str(job.queue_position) if job.queue_position else "-"
        frames = f"{job.frames_ready}/{job.total_frames}"
        print(
            f"{job.job_id:32}  {state_name(job.state):9}  {frames:>9}  {queue:>5}  {created}  {job.context.shot_name}"
        )
    return 0
