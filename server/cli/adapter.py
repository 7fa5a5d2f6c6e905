"""`ttt-studio adapter upload PATH` / `adapter list`: the server's LoRA adapters from the command line.

`add_client_commands(subparsers)` adds `upload` and `list` to the `adapter` command group, which
ttt_engine.adapters.cli creates (with `train` and `info`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli import add_client_arguments, fail, make_client, rpc_error_text


def parse_adapter_ref(text: str) -> tuple[str, float]:
    """'NAME' or 'NAME:SCALE' (scale default 1.0) -> (name, scale), for argparse's type=."""
    from host_plugin.core.adapters import parse_choice

    try:
        choice = parse_choice(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return choice.name, choice.scale


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    upload = subparsers.add_parser("upload", help="upload a LoRA adapter to a ttt-studio server")
    upload.add_argument(
        "path",
        type=Path,
        help="a .safetensors adapter file, or an adapter folder (pytorch_lora_weights.safetensors)",
    )
    upload.add_argument(
        "--name", default="", help="its name on the server (default: the file's stem / folder name)"
    )
    upload.add_argument("--publish", action="store_true", help="every user may use it (admin tokens only)")
    add_client_arguments(upload)
    upload.set_defaults(func=run_upload)
    listing = subparsers.add_parser("list", help="the adapters you may use on a server")
    add_client_arguments(listing)
    listing.set_defaults(func=run_list)


def run_upload(args: argparse.Namespace) -> int:
    import grpc

    if not args.path.exists():
        return fail(f"adapter upload: {args.path} does not exist")
    with make_client(args) as client:
        try:
            info = client.upload_adapter(args.path, name=args.name, publish=args.publish)
        except grpc.RpcError as exc:
            return fail(rpc_error_text(exc))
    print(
        f"{info.name}  sha256 {info.sha256}  {info.bytes} bytes  {'published' if info.published else 'private'}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    import grpc

    with make_client(args) as client:
        try:
            adapters = client.adapters()
        except grpc.RpcError as exc:
            return fail(rpc_error_text(exc))
    print(f"{'NAME':24}  {'KIND':7}  {'TRIGGER':12}  {'RANK':>4}  {'OWNER':12}  SHA256")
    for a in adapters:
        owner = (
            "(published)"
            if a.published and not a.owner
            else a.owner + (" (published)" if a.published else "")
        )
        print(
            f"{a.name:24}  {a.kind or '-':7}  {a.trigger or '-':12}  {a.rank:>4}  {owner:12}  {a.sha256[:16]}"
        )
    return 0
