"""`ttt-studio approve JOB TAKE`: mark one take of your job approved (replaces an earlier approval)."""

from __future__ import annotations

import argparse

from server.cli import add_client_arguments, fail, make_client, rpc_error_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("approve", help="approve one take of one of your jobs")
    parser.add_argument("job_id")
    parser.add_argument("take", type=int, help="the take's index (0-based)")
    add_client_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc

    if args.take < 0:
        return fail(f"take must be an index >= 0, got {args.take}")
    with make_client(args) as client:
        try:
            job = client.approve_take(args.job_id, args.take)
        except grpc.RpcError as exc:
            return fail(rpc_error_text(exc))
    take = job.takes[job.approved_take]
    print(f"{job.job_id} take {take.index} (seed {take.seed}) approved by {take.approved_by}")
    return 0
