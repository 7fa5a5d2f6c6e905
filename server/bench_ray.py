"""Benchmark: the Ray worker pool (`serve --ray`) against the in-process server, and the front end's costs.

    python -m server.bench_ray                       # 8 jobs; in-process, Ray 1 worker, Ray 2 workers
    python -m server.bench_ray --jobs 8 --repeats 3 --out bench_ray.json

What it measures:
- throughput: `--jobs` small jobs (the tiny random model, two segments, 32 x 32, 4 steps (--steps), 17 frames)
  submitted at once over loopback gRPC, timed from the first submit to the last completion, on (a) the
  in-process server with one worker, (b) a Ray pool of one worker and (c) of two workers, each worker
  one torch thread, on a local Ray instance of 2 CPUs. The pool's workers are started and warm before the
  clock starts. Ratio = (b) / (c); the front end's overhead per job = ((b) - (a)) / jobs.
- the front end's CPU: process time of this process (the front end and the gRPC client; the workers are
  other processes) per job during (b) and (c).
- the front end's cost of applying one worker message (WorkerPool._apply into a real store and data
  dir): a progress event, a 160-px preview, a 1920 x 1080 half-float frame (sha256 check, write, fsync,
  index row). Its inverse is what one front-end thread sustains (docs/scaling.md).
The table names the machine and its load average; best of --repeats (median in brackets).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from server.bench_stream import machine, synthetic_frame

STORYBOARD = [
    {"text": "A red ball rolls across a wooden floor. It stops by a chair. The room is quiet."},
    {"text": "A cat jumps onto the chair. It looks at the ball. It yawns."},
]
JOB = {"height": 32, "width": 32, "steps": 4, "guidance_scale": 1.0, "preview_every": 0}
RAY_CPUS = 2


def _server(data_dir: Path, workers: int | None) -> Any:
    """A started StudioServer: in-process (workers None) or on the Ray pool with `workers` workers."""
    from server.config import Limits, RayPoolConfig, ServerConfig
    from server.main import StudioServer

    ray = None if workers is None else RayPoolConfig(address="local", workers=workers, threads=1)
    config = ServerConfig(
        address="127.0.0.1:0",
        data_dir=data_dir,
        tiny_random=True,
        insecure_no_auth=True,
        workers=1,
        log_level="WARNING",
        ray=ray,
        limits=Limits(max_queued_jobs_per_caller=1 << 10),
    )
    server = StudioServer(config)
    server.start()
    return server


def run_jobs(workers: int | None, jobs: int, steps: int) -> dict[str, float]:
    """Seconds from the first submit to the last completion, and this process's CPU seconds per job."""
    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
    from server.client import StudioClient

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        server = _server(Path(tmp) / "data", workers)
        try:
            with StudioClient(server.address) as client:
                deadline = time.monotonic() + 600
                while workers is not None and client.info().workers < workers:  # warm workers first
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the pool did not reach {workers} workers")
                    time.sleep(0.2)
                cpu0, t0 = time.process_time(), time.perf_counter()
                params = {**JOB, "steps": steps}
                ids = [client.submit(STORYBOARD, seed=i, **params).job_id for i in range(jobs)]
                for job_id in ids:
                    job = client.wait(job_id)
                    if job.state != pb.JOB_STATE_COMPLETED:
                        raise RuntimeError(f"job {job_id} ended {job.state}: {job.message}")
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            server.stop(grace=1)
    return {"wall_s": wall, "front_end_cpu_ms_per_job": 1000 * cpu / jobs}


def apply_costs(repeats: int) -> dict[str, float]:
    """Milliseconds per message the front end applies (WorkerPool._apply), on a real store and disk."""
    import numpy as np

    from host_plugin.core.exr_io import write_rgba_exr
    from server.config import RayPoolConfig, ServerConfig
    from server.frames import FrameStore, sha256_file
    from server.jobs import FrameRecord
    from server.metrics import Metrics
    from server.queue import JobQueue
    from server.ray_pool import PoolCancels, WorkerPool
    from server.store import Store
    from server.worker import encode_preview

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-ray-apply-") as tmp:
        data = Path(tmp)
        config = ServerConfig(data_dir=data, insecure_no_auth=True, tiny_random=True, ray=RayPoolConfig())
        store, frames = Store(data / "studio.sqlite3"), FrameStore(data)
        pool = WorkerPool(config, store, frames, JobQueue(store), PoolCancels(), Metrics(), lambda: False)
        job_id = uuid.uuid4().hex
        progress = (
            "event",
            ("progress", {"step": 1, "total": 50, "timestep": 999.0, "elapsed_s": 1.0}, None),
        )
        shots = [synthetic_frame(i, 90, 160, rng) for i in range(13)]  # a preview of 13 frames of 160 x 90
        png = encode_preview((np.clip(np.stack(shots), 0, 1) * 255).astype(np.uint8), 160)[0]
        preview = ("event", ("preview", {"step": 1, "width": 640, "height": 90, "format": "png"}, png))
        exr = data / "frame.exr"
        write_rgba_exr(exr, synthetic_frame(0, 1080, 1920, rng), attributes={})
        blob = exr.read_bytes()

        def frame(index: int) -> Any:
            relpath = frames.frame_relpath(job_id, index)
            record = FrameRecord(
                job_id,
                index,
                1001 + index,
                0,
                f"f.{index}.exr",
                relpath,
                len(blob),
                sha256_file(exr),
                time.time(),
            )
            return ("frame", (record, blob))

        def per_message(messages: list[Any]) -> float:
            t0 = time.perf_counter()
            for message in messages:
                pool._apply(job_id, message)
            return 1000 * (time.perf_counter() - t0) / len(messages)

        out = {
            "progress_ms": min(per_message([progress] * 200) for _ in range(repeats)),
            "preview_ms": min(per_message([preview] * 100) for _ in range(repeats)),
            "preview_bytes": float(len(png)),
            "frame_1080p_ms": min(per_message([frame(r * 8 + i) for i in range(8)]) for r in range(repeats)),
            "frame_1080p_bytes": float(len(blob)),
        }
        store.close()
    return out


def table(report: dict[str, Any]) -> str:
    runs, jobs = report["runs"], report["jobs"]

    def cell(name: str, key: str, fmt: str = "{:.1f}") -> str:
        values = [r[key] for r in runs[name]]
        return f"{fmt.format(min(values))} ({fmt.format(statistics.median(values))})"

    best = {name: min(r["wall_s"] for r in rows) for name, rows in runs.items()}
    lines = [
        f"{jobs} jobs of {report['job']['steps']} steps; best of {report['repeats']} (median); machine: {report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores, load average {report['machine']['load_average']}",
        "",
        "| server | wall s | jobs/min | front-end CPU ms/job |",
        "|---|---:|---:|---:|",
    ]
    for name, label in (
        ("inprocess", "in-process, 1 worker"),
        ("ray1", "Ray, 1 worker"),
        ("ray2", "Ray, 2 workers"),
    ):
        lines.append(
            f"| {label} | {cell(name, 'wall_s')} | {60 * jobs / best[name]:.1f} | "
            f"{cell(name, 'front_end_cpu_ms_per_job', '{:.0f}')} |"
        )
    lines += [
        "",
        f"throughput 2 workers / 1 worker: {best['ray1'] / best['ray2']:.2f}x; front-end overhead per job "
        f"(Ray 1 worker - in-process): {1000 * (best['ray1'] - best['inprocess']) / jobs:.0f} ms",
    ]
    costs = report["apply"]
    lines.append(
        f"front end per message: progress {costs['progress_ms']:.2f} ms, preview ({costs['preview_bytes'] / 1024:.0f} KiB)"
        f" {costs['preview_ms']:.2f} ms, 1080p frame ({costs['frame_1080p_bytes'] / 2**20:.1f} MiB) "
        f"{costs['frame_1080p_ms']:.1f} ms"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=JOB["steps"], help="denoising steps per job")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)

    import ray
    import torch

    torch.set_num_threads(1)  # the in-process worker: one thread, like each Ray worker
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, configure_logging=False)
    runs: dict[str, list[dict[str, float]]] = {"inprocess": [], "ray1": [], "ray2": []}
    try:
        for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every kind
            for name, workers in (("inprocess", None), ("ray1", 1), ("ray2", 2)):
                runs[name].append(run_jobs(workers, args.jobs, args.steps))
                print(name, runs[name][-1], file=sys.stderr)
    finally:
        ray.shutdown()
    report = {
        "jobs": args.jobs,
        "repeats": args.repeats,
        "job": {**JOB, "steps": args.steps, "segments": len(STORYBOARD)},
        "runs": runs,
        "apply": apply_costs(args.repeats),
        "machine": machine(),
    }
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
