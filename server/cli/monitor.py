"""`ttt-studio monitor --server ADDR`: serve the monitor page for the video village (server.monitor)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from server.cli import DEFAULT_SERVER, SERVER_ENV, fail


def register(subparsers: argparse._SubParsersAction) -> None:
    from server.monitor.config import DEFAULT_LISTEN

    parser = subparsers.add_parser(
        "monitor",
        help="serve the monitor web page (queue, live previews, takes, approve, cancel)",
        description=(
            "Serve the monitor page: a client of the ttt-studio server that people sign in to with their own "
            "server token; the page shows each user what the API shows them. Ctrl-C stops it."
        ),
    )
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"host:port of the ttt-studio server (env {SERVER_ENV}; default {DEFAULT_SERVER})",
    )
    parser.add_argument("--tls", action="store_true", help="connect to the server with TLS (system CA roots)")
    parser.add_argument(
        "--tls-ca", type=Path, default=None, help="PEM CA of the server's TLS (implies --tls)"
    )
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"host:port the page is served on (default {DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--https-cert", type=Path, default=None, help="PEM certificate: serve the page over HTTPS"
    )
    parser.add_argument("--https-key", type=Path, default=None, help="PEM private key of --https-cert")
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback --listen (tokens then cross the set's network in clear)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.config import split_address
    from server.monitor.app import create_app
    from server.monitor.config import MonitorConfig

    try:
        config = MonitorConfig(
            server=args.server,
            listen=args.listen,
            tls=args.tls,
            tls_ca=args.tls_ca,
            https_cert=args.https_cert,
            https_key=args.https_key,
            insecure_http=args.insecure_http,
        )
    except ValueError as exc:
        return fail(str(exc))
    host, port = split_address(config.listen)
    scheme = "https" if config.https else "http"
    print(f"ttt-studio monitor: {scheme}://{args.listen} (server {config.server})", flush=True)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        ssl_certfile=str(config.https_cert) if config.https_cert else None,
        ssl_keyfile=str(config.https_key) if config.https_key else None,
        log_level="info",
    )
    return 0
