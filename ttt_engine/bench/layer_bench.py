"""Layer benchmark: TTT-MLP and TTT-Linear forward against full softmax attention (torch SDPA).

For each sequence length, one child process builds the layer, warms up, times the forward and
reports its peak memory (CUDA: max_memory_allocated; CPU: the child's peak RSS above its baseline).
The TTT cost per token should stay flat with length while attention's grows linearly.

    python -m ttt_engine.bench.layer_bench --lengths 1024 4096 16384 65536
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TTTConfig
from ..layers import TTTLayer

KINDS = ("ttt-mlp", "ttt-linear", "attention")


class AttentionLayer(nn.Module):
    """Full bidirectional softmax attention with the same projections as the TTT layer."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, dim))


@dataclass(frozen=True)
class BenchCase:
    kind: str
    length: int
    heads: int
    head_dim: int
    device: str
    dtype: str
    repeats: int


def _build(case: BenchCase) -> nn.Module:
    dim = case.heads * case.head_dim
    if case.kind == "attention":
        return AttentionLayer(dim, case.heads)
    inner = "mlp" if case.kind == "ttt-mlp" else "linear"
    return TTTLayer(TTTConfig(dim=dim, num_heads=case.heads, head_dim=case.head_dim, inner=inner))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_case(case: BenchCase) -> dict:
    """Time one (kind, length) in this process; returns seconds per forward and peak memory in MB."""
    torch.manual_seed(0)
    dtype = getattr(torch, case.dtype)
    device = torch.device(case.device)
    layer = _build(case).to(device=device, dtype=dtype).eval()
    x = torch.randn(1, case.length, case.heads * case.head_dim, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    base_rss = _peak_rss_mb()  # inputs and weights are not counted
    with torch.no_grad():
        layer(x)  # warm-up
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_cuda = torch.cuda.memory_allocated()
        times = []
        for _ in range(case.repeats):
            t0 = time.perf_counter()
            layer(x)
            sync()
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak_mb = max(_peak_rss_mb() - base_rss, 0.0)
    return {"seconds": min(times), "peak_mb": peak_mb}


def _child(case: BenchCase, conn) -> None:
    torch.set_num_threads(torch.get_num_threads())
    try:
        conn.send(run_case(case))
    except Exception as err:  # report, don't hang the parent
        conn.send({"error": f"{type(err).__name__}: {err}"})


def run_isolated(case: BenchCase) -> dict:
    """Run a case in a fresh process so peak memory is its own."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(case, child))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768, 65536]
    )
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--repeats", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    print(
        f"device: {device_name(args.device)}; torch {torch.__version__}; batch 1, "
        f"{args.heads} heads x {args.head_dim}, {dtype}, mini-batch 64, best of {args.repeats}\n"
    )
    print("| layer | tokens | ms / forward | us / token | peak MB |")
    print("|---|---:|---:|---:|---:|")
    per_token: dict[str, dict[int, float]] = {k: {} for k in args.kinds}
    for kind in args.kinds:
        for length in args.lengths:
            case = BenchCase(kind, length, args.heads, args.head_dim, args.device, dtype, args.repeats)
            res = run_isolated(case)
            if "error" in res:
                print(f"| {kind} | {length} | failed: {res['error']} | | |")
                continue
            us = res["seconds"] / length * 1e6
            per_token[kind][length] = us
            print(
                f"| {kind} | {length} | {res['seconds'] * 1e3:.1f} | {us:.2f} | {res['peak_mb']:.0f} |",
                flush=True,
            )
    print()
    for kind, row in per_token.items():
        longer = [n for n in row if n >= 4096]
        if len(longer) >= 2:
            lo, hi = min(longer), max(longer)
            print(f"{kind}: per-token cost {hi} vs {lo} tokens = {row[hi] / row[lo]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
