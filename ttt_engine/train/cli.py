"""`ttt-studio train CONFIG [--resume DIR] [--nproc N] [--sharding ddp|fsdp]`: run a training config.

--nproc N spawns N local data-parallel processes (gloo on CPU, NCCL on GPUs). Under torchrun the
ranks come from its environment (RANK, WORLD_SIZE, LOCAL_RANK) and --nproc must be left at 1, e.g.
`torchrun --nproc_per_node 8 -m ttt_engine.cli train CONFIG --sharding fsdp` (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .config import SHARDINGS

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a training config (VAE and DiT curriculum stages)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("config", metavar="CONFIG", help="training config (.yaml/.yml/.json)")
    p.add_argument(
        "--resume", metavar="DIR", default=None, help="a checkpoint folder, or a run folder (its latest)"
    )
    p.add_argument("--nproc", type=int, default=1, help="local data-parallel processes (default 1)")
    p.add_argument(
        "--sharding",
        choices=SHARDINGS,
        default=None,
        help="DiT stages across ranks: ddp (replicated weights) or fsdp (sharded per block); default: the config's",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=run)


def _rank_main(info: Any, config_dict: dict[str, Any], resume: str | None, progress: bool) -> None:
    """One spawned rank (module level so torch.multiprocessing can pickle it)."""
    from .config import TrainConfig
    from .distributed import destroy
    from .trainer import Trainer

    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank{info.rank} %(levelname)s %(name)s: %(message)s"
    )
    try:
        Trainer(TrainConfig.from_dict(config_dict), info=info, resume=resume, progress=progress).run()
    finally:
        destroy()


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, TrainConfig
    from .distributed import destroy, env_world, launch
    from .trainer import Trainer

    world = None
    try:
        config = TrainConfig.load(args.config)
        if args.sharding is not None:
            config = TrainConfig.from_dict({**config.to_dict(), "sharding": args.sharding})
        if args.nproc < 1:
            raise ConfigError(f"--nproc: expected an integer >= 1, got {args.nproc}")
        world = env_world()
        if world is not None and args.nproc != 1:
            raise ConfigError(
                f"--nproc {args.nproc}: under torchrun (WORLD_SIZE={world.world_size}) leave --nproc at 1"
            )
        progress = not args.no_progress
        if world is not None:
            try:
                out = Trainer(config, info=world, resume=args.resume, progress=progress).run()
            finally:
                destroy()
        elif args.nproc > 1:
            launch(_rank_main, args.nproc, config.to_dict(), args.resume, progress)
            out = config.model_dir
        else:
            out = Trainer(config, resume=args.resume, progress=progress).run()
    except ValueError as err:  # ConfigError, DataError, ResumeError, DatasetError, CheckpointError ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    if world is None or world.rank == 0:
        print(f"model folder: {Path(out)}")
    return 0
