"""`ttt-studio cancel JOB`: cancel one of your jobs."""

from __future__ import annotations

import argparse

from server.cli import add_client_arguments, fail, make_client, rpc_error_text
from server.client import state_name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cancel", help="cancel one of your jobs")
    parser.add_argument("job_id")
    add_client_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc

    with make_client(args) as client:
        try:
            job = client.cancel(args.job_id)
        except grpc.RpcError as exc:
            return fail(rpc_error_text(exc))
    note = (
        " (stops at the next step)" if job.cancel_requested and state_name(job.state) != "cancelled" else ""
    )
    print(f"{job.job_id} {state_name(job.state)}{note}")
    return 0
