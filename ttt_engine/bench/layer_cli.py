"""`ttt-studio bench-layer`: the TTT layer benchmark from the command line."""

from __future__ import annotations

import argparse

from . import layer_bench


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench-layer", help="time TTT-MLP / TTT-Linear against full attention")
    layer_bench.add_arguments(parser)
    parser.set_defaults(func=layer_bench.run)
