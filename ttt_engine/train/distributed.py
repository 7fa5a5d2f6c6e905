"""Data-parallel plumbing: process-group setup, spawning N local processes, small collectives.

Two ways in: `launch(fn, nproc, *args)` spawns N processes with torch.multiprocessing on this machine
(MASTER_ADDR 127.0.0.1 and a free port), or run under torchrun, which sets RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT itself and `init_from_env()` picks them up. Backend: NCCL when the process
trains on CUDA, gloo on CPU. Rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """rank / world_size / local_rank of this process (0 / 1 / 0 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_world() -> DistInfo | None:
    """DistInfo from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or None when not set."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as err:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} / WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    return DistInfo(rank, world, local)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the process group (no-op for one process or when already initialised)."""
    if not info.enabled or dist.is_initialized():
        return
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ValueError(
                f"{key} is not set: start with launch(...) or torchrun for {info.world_size} processes"
            )
    dist.init_process_group(backend_for(device), rank=info.rank, world_size=info.world_size)
    log.debug("rank %d/%d joined (%s)", info.rank, info.world_size, backend_for(device))


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def mean_across(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All-reduced mean of a scalar tensor over the ranks (the value itself for one process)."""
    value = value.detach().clone()
    if info.enabled and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj` on every rank (a one-item list for one process)."""
    if not (info.enabled and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _worker(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
        }
    )
    # share the cores instead of every process taking all of them
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    fn(DistInfo(rank, world_size, rank), *args)


def launch(fn: Callable[..., Any], nproc: int, *args: Any) -> None:
    """Run fn(DistInfo, *args) in `nproc` spawned processes on this machine; fn must be picklable
    (a module-level function). nproc 1 runs it in this process. A failing rank raises here."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc: expected an integer >= 1, got {nproc!r}")
    if nproc == 1:
        fn(DistInfo(), *args)
        return
    port = free_port()
    log.info("spawning %d processes (MASTER_ADDR 127.0.0.1, port %d)", nproc, port)
    mp.spawn(_worker, args=(nproc, port, fn, args), nprocs=nproc, join=True)
