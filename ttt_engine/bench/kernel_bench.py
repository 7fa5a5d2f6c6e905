"""Benchmark of the fused TTT scan kernels (a script, not a test; needs a CUDA GPU and cupy).

    python -m ttt_engine.bench.kernel_bench                      # defaults below, ~5 min on an H100
    python -m ttt_engine.bench.kernel_bench --lengths 8192,65536 --kinds mlp,linear --max-ref-tokens 0

Prints markdown tables headed by the device name:

1. Scan time for batch 1, 48 heads x 64, bf16, over sequence lengths from 8k to ~350k tokens: the
   kernel, the eager PyTorch reference and the torch.compile'd reference (compile_step=True), and two
   floors from the matmul rate measured here (an 8192^3 bf16 product):
     FLOP floor  = all the scan's matmul FLOPs / measured rate (the whole chip on one scan);
     chain floor = n_mini_batches x FLOPs of one head's mini-batch / (rate x SMs per head / SMs),
                   i.e. the sequential chain of one head at its share of the chip (the kernel gives each
                   head a cluster of `ctas_per_head` SMs), never below the FLOP floor.
2. The paper's 63-s layout for one block (ttt-mlp.md section 2): bidirectional TTT-MLP (two scans over
   21 x [226 text + 12 or 13 x 1350 video] = 346,296 tokens, run as one batch-2 launch) against the
   block's local attention (SDPA over 21 segments of 226 + 13 x 1350 = 17,776 tokens, 48 heads x 64),
   next to the paper's 2.5x (whole-model time, TTT-MLP over local attention only, inference).
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ttt_engine.ops.ttt import LinearState, MLPState, ttt_scan

log = logging.getLogger(__name__)

HEAD_DIM = 64
MINI_BATCH = 64
HIDDEN = {"mlp": 256, "linear": 64}
# paper context lengths (video tokens of 3 / 9 / 18 / 30 / 63 s) plus a short one
DEFAULT_LENGTHS = (8192, 18048, 51456, 99894, 168320, 341550)
PAPER_RATIO_63S = 2.5  # fig. 6: TTT-MLP model / local-attention-only model, inference
SEGMENTS_63S, TEXT_TOKENS, FRAME_TOKENS = 21, 226, 1350


@dataclass(frozen=True)
class Config:
    lengths: tuple[int, ...]
    heads: int
    kinds: tuple[str, ...]
    repeats: int
    max_ref_tokens: int
    compile_ref: bool
    layout_63s: bool


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn on the GPU (CUDA events), after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def time_scan(kind: str, args: tuple, repeats: int, **kwargs: object) -> float:
    """Time the public op (padding and dispatch included, input validation off)."""
    return time_ms(lambda: ttt_scan(kind, *args, validate=False, **kwargs), repeats)


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = time_ms(lambda: a @ b, repeats, warmup=3)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def flops_per_mini_batch(kind: str) -> float:
    """Matmul FLOPs of one head's mini-batch as the kernel computes it (primal form, readout fused)."""
    b, d, f = MINI_BATCH, HEAD_DIM, HIDDEN[kind]
    if kind == "mlp":
        # [Q;K] W1, [Xq;X2] W2, g2 W2^T, the two weight updates
        return 2 * (2 * b) * d * f * 2 + 2 * b * d * f + 2 * (2 * b * d * f)
    return 2 * (2 * b) * d * d + 2 * b * d * d  # [Q;K] W, W update


def make_inputs(kind: str, batch: int, heads: int, length: int) -> tuple:
    d, f = HEAD_DIM, HIDDEN[kind]
    dev = torch.device("cuda")
    q = F.normalize(torch.randn(batch, heads, length, d, device=dev), dim=-1).bfloat16()
    k = F.normalize(torch.randn(batch, heads, length, d, device=dev), dim=-1)
    v = (k + torch.randn_like(k) / 8).bfloat16()
    k = k.bfloat16()
    # the layer's scale: base_lr * sigmoid(.) / head_dim / mini_batch
    eta = 0.1 * torch.rand(batch, heads, length, device=dev) / d / MINI_BATCH
    ln_w, ln_b = torch.ones(heads, d, device=dev), torch.zeros(heads, d, device=dev)
    if kind == "mlp":
        state = MLPState(
            0.02 * torch.randn(batch, heads, d, f, device=dev),
            torch.zeros(batch, heads, 1, f, device=dev),
            0.02 * torch.randn(batch, heads, f, d, device=dev),
            torch.zeros(batch, heads, 1, d, device=dev),
        )
    else:
        state = LinearState(
            0.02 * torch.randn(batch, heads, d, d, device=dev), torch.zeros(batch, heads, 1, d, device=dev)
        )
    return q, k, v, eta, ln_w, ln_b, state


def fmt(ms: float | None) -> str:
    return "-" if ms is None else (f"{ms:,.1f}" if ms >= 10 else f"{ms:.2f}")


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.1f}x"


@torch.no_grad()
def scan_table(cfg: Config, rate: float, num_sms: int) -> list[str]:
    from cuda.loader import device_arch, select_spec  # noqa: PLC0415

    rows = [
        "| kind | tokens | mini-batches | kernel ms | eager ref ms | compiled ref ms | vs eager | vs compiled "
        "| FLOP floor ms | chain floor ms | kernel / chain floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in cfg.kinds:
        # the variant the backend runs here (TTT_STUDIO_TTT_CUDA_VARIANT=sm80 forces the no-cluster one)
        spec = select_spec(kind, torch.bfloat16, device_arch(torch.device("cuda")))
        if cfg.compile_ref:  # compile the step once on a short sequence (step shapes do not depend on L)
            ttt_scan(
                kind, *make_inputs(kind, 1, cfg.heads, 2 * MINI_BATCH), backend="reference", compile_step=True
            )
        for length in cfg.lengths:
            args = make_inputs(kind, 1, cfg.heads, length)
            n_mb = -(-length // MINI_BATCH)
            kernel = time_scan(kind, args, cfg.repeats, backend="cuda")
            eager = compiled = None
            if length <= cfg.max_ref_tokens:
                eager = time_scan(kind, args, 1, backend="reference")
                if cfg.compile_ref:
                    compiled = time_scan(kind, args, 1, backend="reference", compile_step=True)
            per_mb = flops_per_mini_batch(kind)
            flop_floor = n_mb * cfg.heads * per_mb / (rate * 1e12) * 1e3
            sms_per_head = min(num_sms, spec.ctas_per_head)
            chain_floor = max(flop_floor, n_mb * per_mb / (rate * 1e12 * sms_per_head / num_sms) * 1e3)
            rows.append(
                f"| {kind} ({spec.source}) | {length:,} | {n_mb:,} | {fmt(kernel)} | {fmt(eager)} | {fmt(compiled)} | "
                f"{ratio(eager, kernel)} | {ratio(compiled, kernel)} | {fmt(flop_floor)} | {fmt(chain_floor)} | "
                f"{ratio(kernel, chain_floor)} |"
            )
            log.info("%s", rows[-1])
            del args
            torch.cuda.empty_cache()
    return rows


def time_attention(segments: int, heads: int, tokens: int, repeats: int) -> float:
    """Full (non-causal) SDPA inside each segment: q, k, v [segments, heads, tokens, 64] bf16."""
    shape = (segments, heads, tokens, HEAD_DIM)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    return time_ms(lambda: F.scaled_dot_product_attention(q, k, v), repeats)


@torch.no_grad()
def layout_63s_table(cfg: Config) -> list[str]:
    video_frames = [13] + [12] * (SEGMENTS_63S - 1)
    ttt_tokens = sum(TEXT_TOKENS + FRAME_TOKENS * n for n in video_frames)  # 346,296
    seg_tokens = TEXT_TOKENS + 13 * FRAME_TOKENS  # 17,776 per attention segment (1 frame overlap)

    # batch 2 = the forward and the reversed scan (fresh W0 each, same parameters)
    ttt_ms = time_scan("mlp", make_inputs("mlp", 2, cfg.heads, ttt_tokens), cfg.repeats, backend="cuda")
    torch.cuda.empty_cache()
    attn_ms = time_attention(SEGMENTS_63S, cfg.heads, seg_tokens, cfg.repeats)
    torch.cuda.empty_cache()

    return [
        "| 63-s block (48 heads x 64) | ms |",
        "|---|---|",
        f"| local attention: SDPA over {SEGMENTS_63S} x {seg_tokens:,} tokens | {fmt(attn_ms)} |",
        f"| bidirectional TTT-MLP kernel: 2 scans x {ttt_tokens:,} tokens (one batch-2 launch) | {fmt(ttt_ms)} |",
        f"| TTT / attention | {ttt_ms / attn_ms:.2f}x |",
        f"| (attention + TTT) / attention, this block | {(attn_ms + ttt_ms) / attn_ms:.2f}x |",
        f"| paper fig. 6, whole model, TTT-MLP / local attention only (inference) | {PAPER_RATIO_63S:.1f}x |",
    ]


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--lengths", default=",".join(str(n) for n in DEFAULT_LENGTHS), help="comma-separated tokens"
    )
    p.add_argument("--heads", type=int, default=48)
    p.add_argument("--kinds", default="mlp", help="comma-separated: mlp, linear")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--max-ref-tokens",
        type=int,
        default=100_000,
        help="time the references only up to this length (0: never)",
    )
    p.add_argument("--no-compile-ref", action="store_true", help="skip the torch.compile reference")
    p.add_argument("--no-63s", action="store_true", help="skip the 63-s block comparison")
    a = p.parse_args(argv)
    lengths = tuple(int(x) for x in a.lengths.split(",") if x)
    kinds = tuple(x for x in a.kinds.split(",") if x)
    for kind in kinds:
        if kind not in HIDDEN:
            p.error(f"--kinds: expected mlp or linear, got {kind!r}")
    if not lengths or min(lengths) < 1:
        p.error(f"--lengths: expected positive token counts, got {a.lengths!r}")
    return Config(lengths, a.heads, kinds, a.repeats, a.max_ref_tokens, not a.no_compile_ref, not a.no_63s)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("kernel_bench needs a CUDA GPU (torch.cuda.is_available() is False)")
    props = torch.cuda.get_device_properties(0)
    rate = matmul_tflops()
    print(
        f"## TTT scan kernels on {props.name} ({props.multi_processor_count} SMs, torch {torch.__version__})\n"
    )
    print(f"measured bf16 matmul rate (8192^3): {rate:.0f} TFLOP/s\n")
    print("\n".join(scan_table(cfg, rate, props.multi_processor_count)))
    if cfg.layout_63s:
        print()
        print("\n".join(layout_63s_table(cfg)))


if __name__ == "__main__":
    main()
