"""The `ttt-studio` command: one entry point, subcommands owned by the package that implements them.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the default. Modules are imported only when the command line names them,
so ``ttt-studio serve`` never imports the training stack and the other way round.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module that registers it (imported lazily)
SUBCOMMANDS: dict[str, str] = {
    "bench-layer": "ttt_engine.bench.layer_cli",
    "toonworld": "ttt_engine.toonworld.cli",
    "eval": "ttt_engine.eval.cli",
    "compare": "ttt_engine.eval.compare",
    "probe-text": "ttt_engine.eval.text_probe",
    "generate": "ttt_engine.pipeline.cli",
    "adapter": "ttt_engine.adapters.cli",
    "train": "ttt_engine.train.cli",
    "swap-text-encoder": "ttt_engine.train.text_swap",
    "strip-ttt": "ttt_engine.train.ttt_strip",
    "serve": "server.cli.serve",
    "submit": "server.cli.submit",
    "watch": "server.cli.watch",
    "fetch": "server.cli.fetch",
    "cancel": "server.cli.cancel",
    "approve": "server.cli.approve",
    "jobs": "server.cli.jobs",
    "token": "server.cli.token",
    "gc": "server.cli.gc",
    "pool": "server.cli.pool",
    "monitor": "server.cli.monitor",
    "fill": "host_plugin.cli",
    "install-plugin": "host_plugin.install",
}


def _build_parser(only: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttt-studio", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=f"(see `ttt-studio {name} --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
