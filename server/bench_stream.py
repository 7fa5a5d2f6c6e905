"""Benchmark: frame streaming over loopback gRPC vs reading the same EXR files from disk, and the
submit-to-first-preview latency minus the first step's own compute (the server's overhead).

    python -m server.bench_stream --height 128 --width 128 --segments 2 --repeats 5 --out /tmp/bench.json

Runs an in-process server with the tiny random model on 127.0.0.1 (a real socket, real SQLite, real
EXR files in a temporary data dir), or measures a running server given --server and --token (then
only the network side: the disk side needs the server's files).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STORYBOARD = [
    {"text": "A red ball rolls across a wooden floor. It stops by a chair."},
    {"text": "A cat jumps onto the chair. It looks at the ball and yawns."},
    {"text": "The cat jumps down and pushes the ball back across the floor."},
]


def _latency(client: Any, job_args: dict[str, Any]) -> dict[str, float]:
    """Submit, watch; time to the first preview minus the first step's elapsed compute."""
    t0 = time.perf_counter()
    job_id = client.submit(**job_args).job_id
    first_step = first_preview = None
    step1_compute = 0.0
    for event in client.watch(job_id):
        kind = event.WhichOneof("kind")
        if kind == "progress" and event.progress.step == 1:
            step1_compute = event.progress.elapsed_s
            first_step = time.perf_counter() - t0
        elif kind == "preview" and first_preview is None:
            first_preview = time.perf_counter() - t0
    if first_preview is None or first_step is None:
        raise RuntimeError("the job produced no preview; check preview_every")
    return {
        "submit_to_first_preview_s": first_preview,
        "first_step_compute_s": step1_compute,
        "overhead_s": first_preview - step1_compute,
        "job_id": job_id,
    }


def _fetch_rate(client: Any, job_id: str, chunk_bytes: int, repeats: int) -> dict[str, float]:
    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb

    times, total = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        total = 0
        request = pb.FetchFramesRequest(job_id=job_id, chunk_bytes=chunk_bytes)
        for chunk in client.stub.FetchFrames(request, metadata=client.metadata):
            total += len(chunk.data)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "bytes": total,
        "best_s": best,
        "median_s": statistics.median(times),
        "MB_per_s": total / best / 1e6,
    }


def _disk_rate(paths: list[Path], repeats: int) -> dict[str, float]:
    times, total = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        total = sum(len(p.read_bytes()) for p in paths)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "bytes": total,
        "best_s": best,
        "median_s": statistics.median(times),
        "MB_per_s": total / best / 1e6,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from server.client import StudioClient

    job_args = {
        "storyboard": STORYBOARD[: args.segments],
        "height": args.height,
        "width": args.width,
        "steps": args.steps,
        "guidance_scale": 1.0,
        "preview_every": 1,
        "seed": 1,
    }
    report: dict[str, Any] = {"job": {k: v for k, v in job_args.items() if k != "storyboard"}}
    report["job"]["segments"] = args.segments
    server = None
    tmp = None
    address, token = args.server, args.token
    if address is None:
        from server.config import ServerConfig
        from server.main import StudioServer

        tmp = tempfile.TemporaryDirectory(prefix="ttt_bench_")
        config = ServerConfig(
            address="127.0.0.1:0", data_dir=Path(tmp.name), tiny_random=True, insecure_no_auth=True
        )
        server = StudioServer(config)
        server.start()
        address, token = server.address, None
    try:
        with StudioClient(address, token=token) as client:
            report["warmup"] = _latency(client, job_args)  # first run: torch warm-up, preview fit
            runs = [_latency(client, job_args) for _ in range(args.repeats)]
            report["latency"] = {
                key: statistics.median(r[key] for r in runs)
                for key in ("submit_to_first_preview_s", "first_step_compute_s", "overhead_s")
            }
            job_id = runs[-1]["job_id"]
            result = client.result(job_id)
            report["frames"] = len(result.frames)
            report["grpc"] = {
                f"chunk_{size // 1024}KiB": _fetch_rate(client, job_id, size, args.repeats)
                for size in (64 * 1024, 256 * 1024, 1024 * 1024)
            }
            if server is not None:
                frames = server.engine.store.frames(job_id)
                paths = [server.engine.frames.path_of(f.relpath) for f in frames]
                report["disk"] = _disk_rate(paths, args.repeats)
                best = max(v["MB_per_s"] for v in report["grpc"].values())
                report["grpc_vs_disk"] = best / report["disk"]["MB_per_s"]
    finally:
        if server is not None:
            server.stop(grace=1)
        if tmp is not None:
            tmp.cleanup()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--segments", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server", default=None, help="measure a running server instead (network side only)")
    parser.add_argument("--token", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
