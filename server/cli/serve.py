"""`ttt-studio serve`: run the gRPC server (see server.main for the options)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from server.main import add_serve_arguments

    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the ttt-studio gRPC server (Ctrl-C / SIGTERM stops it).",
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.main import serve

    return serve(args)
