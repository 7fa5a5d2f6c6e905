"""`ttt-studio` subcommands of the server: serve, submit, watch, fetch, cancel, jobs.

One module per subcommand, each with ``register(subparsers)`` (ttt_engine.cli imports only the module of
the command being run). Client commands share the connection options below.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.client import TOKEN_ENV, StudioClient

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "TTT_STUDIO_SERVER"


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"host:port of the server (env {SERVER_ENV}; default {DEFAULT_SERVER})",
    )
    parser.add_argument("--token", default=None, help=f"bearer token (default: env {TOKEN_ENV})")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system CA roots)")
    parser.add_argument(
        "--tls-ca", type=Path, default=None, help="PEM CA certificate for TLS (implies --tls)"
    )


def make_client(args: argparse.Namespace) -> StudioClient:
    roots = args.tls_ca.read_bytes() if args.tls_ca else None
    return StudioClient(args.server, token=args.token, tls=args.tls, root_certificates=roots)


def fail(message: str) -> int:
    print(f"ttt-studio: {message}", file=sys.stderr)
    return 1


def rpc_error_text(exc: BaseException) -> str:
    """'CODE: details' of a grpc.RpcError, else str(exc)."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc)
