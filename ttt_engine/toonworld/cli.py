"""`ttt-studio toonworld OUT_DIR`: write a toon-world clip dataset."""

from __future__ import annotations

import argparse
import sys
import time

from .dataset import write_dataset
from .memory import VARIANTS
from .world import CHASE_SETUP_PROB


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "toonworld",
        help="write a procedural toon-world dataset (clips + storyboards)",
        description="Render toon-world episodes into OUT_DIR in the clip dataset format "
        "(see `python -c 'import ttt_engine.toonworld as t; help(t)'`).",
    )
    p.add_argument("out", metavar="OUT_DIR", help="dataset folder to write")
    p.add_argument("--clips", type=int, default=100, help="number of clips (default 100)")
    p.add_argument(
        "--segments",
        type=int,
        nargs=2,
        default=(2, 4),
        metavar=("MIN", "MAX"),
        help="3-s segments per clip, inclusive range (default 2 4)",
    )
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--chase-setup",
        type=float,
        default=CHASE_SETUP_PROB,
        metavar="P",
        help=f"share of wide shots of 2+ characters lined up for a chase (default {CHASE_SETUP_PROB}; "
        "0 writes the clips of toon worlds before this option)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default="base",
        help="'memory': each episode's hero wears a hat whose colour only the first segment's text "
        "states (ttt_engine/toonworld/memory.py; needs --segments of at least 3)",
    )
    p.add_argument("--overwrite", action="store_true", help="write over an existing dataset.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        root = write_dataset(
            args.out,
            n_clips=args.clips,
            segments_range=tuple(args.segments),
            height=args.height,
            width=args.width,
            fps=args.fps,
            seed=args.seed,
            overwrite=args.overwrite,
            chase_setup_prob=args.chase_setup,
            variant=args.variant,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.clips} clips to {root} in {time.perf_counter() - start:.1f} s")
    return 0
