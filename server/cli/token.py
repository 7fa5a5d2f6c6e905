"""`ttt-studio token add USER [--admin] | revoke USER|ID | list | migrate`: manage the server's token file.

The file (default <data-dir>/tokens, the one `ttt-studio serve` reads) keeps only salted hashes
(server.tokens). `add` prints the new token once, on stdout, and nothing else there; `list` shows ids,
users and roles, never a secret; `migrate` turns a clear-text `TOKEN USER` file into the hashed format
with a new token per user. A running server picks the changes up at its next call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.config import default_data_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    where = _where(default=None)
    parser = subparsers.add_parser(
        "token",
        parents=[where],
        help="add, revoke or list the server's bearer tokens",
        description="Manage the server's token file (salted hashes only; see docs/reliability.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    where = _where(default=argparse.SUPPRESS)  # after the action too, without resetting what came before
    add = actions.add_parser("add", parents=[where], help="issue a new token for USER and print it once")
    add.add_argument("user")
    add.add_argument("--admin", action="store_true", help="an admin token (its user is exempt from quotas)")
    revoke = actions.add_parser(
        "revoke", parents=[where], help="remove a token by its id, or a user's tokens"
    )
    revoke.add_argument("who", metavar="USER|ID")
    actions.add_parser("list", parents=[where], help="token ids, users and roles (never the secrets)")
    actions.add_parser(
        "migrate", parents=[where], help="convert a clear-text 'TOKEN USER' file; prints the new tokens once"
    )
    parser.set_defaults(func=run)


def _where(default: object) -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--token-file", type=Path, default=default, help="token file (default <data-dir>/tokens)"
    )
    where.add_argument("--data-dir", type=Path, default=default, help=f"default {default_data_dir()}")
    return where


def token_file_of(args: argparse.Namespace) -> Path:
    if args.token_file is not None:
        return args.token_file
    return (args.data_dir or default_data_dir()) / "tokens"


def run(args: argparse.Namespace) -> int:
    from server import tokens

    path = token_file_of(args)
    try:
        if args.action == "add":
            path.parent.mkdir(parents=True, exist_ok=True)
            token = tokens.add_token(path, args.user, admin=args.admin)
            print(token)
            print(f"token for {args.user} added to {path}; it is shown only now", file=sys.stderr)
        elif args.action == "revoke":
            for entry in tokens.revoke(path, args.who):
                print(f"revoked {entry.token_id} ({entry.user}, {entry.role})")
        elif args.action == "list":
            entries = tokens.read_token_file(path)
            print(f"{'ID':<14}{'USER':<24}ROLE")
            for entry in entries.values():
                print(f"{entry.token_id:<14}{entry.user:<24}{entry.role}")
        else:
            for user, token in tokens.migrate(path).items():
                print(f"{user} {token}")
            print(f"{path} now holds hashed tokens; hand each user the new token above", file=sys.stderr)
    except tokens.TokenFileError as exc:
        print(f"ttt-studio token: {exc}", file=sys.stderr)
        return 1
    return 0
