"""Benchmark: submit to a complete draft against submit to the final, through a real server.

    python -m server.bench_draft                       # the README's 6-s shot with the shipped model
    python -m server.bench_draft --repeats 3 --out bench_draft.json

A server process (`python -m server.main --model MODEL`, no auth, on loopback, --torch-threads THREADS)
runs, in turn and --repeats times:
- a PRIORITY_PREVIEW job: its draft (the server's default draft_steps unless --draft-steps) and then its
  final; "draft" is submit to the FramesReady event that completes the draft (every draft frame stored,
  decoded and conformed, fetchable), "preview job" submit to COMPLETED;
- a PRIORITY_FINAL job of the same shot and seed: submit to COMPLETED ("final"), what one waits without
  a draft.
A warm-up job (one step) comes first, so the model's first-use costs are not counted. The report gives
the medians and draft / final; the aim of issue 25 is under 1/3. The table names the machine; --out also
writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from server.process import ROOT, ServerProcess

DEFAULT_MODEL = ROOT / "ttt_engine" / "default_model"
DEFAULT_STORYBOARD = ROOT / "examples" / "chase_two_scenes.json"


def timed_job(
    client: Any, storyboard: list[dict[str, Any]], priority: str, **params: Any
) -> dict[str, float]:
    """Seconds from submit to the draft's last frames (preview jobs) and to completion."""
    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb

    t0 = time.perf_counter()
    job_id = client.submit(storyboard, priority=priority, **params).job_id
    times: dict[str, float] = {}
    for event in client.watch(job_id):
        frames = event.frames if event.WhichOneof("kind") == "frames" else None
        if frames is not None and frames.draft and frames.ready == frames.total and "draft_s" not in times:
            times["draft_s"] = time.perf_counter() - t0
    times["complete_s"] = time.perf_counter() - t0
    job = client.job(job_id)
    if job.state != pb.JOB_STATE_COMPLETED:
        raise RuntimeError(f"job {job_id} ended {pb.JobState.Name(job.state)}: {job.message}")
    times["steps"] = job.parameters.steps
    times["draft_steps"] = job.parameters.draft_steps
    times["frames"] = job.total_frames
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    from server.client import StudioClient
    from ttt_engine.storyboard import Storyboard

    storyboard = Storyboard.load(args.storyboard).to_list()
    tmp = Path(tempfile.mkdtemp(prefix="ttt_bench_draft_"))
    server = ServerProcess(
        tmp / "data",
        None,
        "--torch-threads",
        str(args.threads),
        "--log-format",
        "text",
        "--log-level",
        "WARNING",
        model=args.model,
        log_path=tmp / "server.log",
    ).start(timeout=300.0)
    params = {"seed": args.seed, **({"draft_steps": args.draft_steps} if args.draft_steps else {})}
    rows: list[dict[str, Any]] = []
    try:
        with StudioClient(server.address, token=None, timeout_s=600.0) as client:
            timed_job(client, storyboard, "final", seed=args.seed, steps=1)  # warm-up
            for _ in range(args.repeats):
                preview = timed_job(client, storyboard, "preview", **params)
                final = timed_job(client, storyboard, "final", seed=args.seed)
                rows.append({"preview": preview, "final": final})
    finally:
        server.terminate()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    draft = statistics.median(r["preview"]["draft_s"] for r in rows)
    final = statistics.median(r["final"]["complete_s"] for r in rows)
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} CPU(s), {platform.python_version()}",
        "model": str(args.model),
        "storyboard": str(args.storyboard),
        "threads": args.threads,
        "steps": rows[0]["preview"]["steps"],
        "draft_steps": rows[0]["preview"]["draft_steps"],
        "frames": rows[0]["preview"]["frames"],
        "draft_s": draft,
        "preview_job_s": statistics.median(r["preview"]["complete_s"] for r in rows),
        "final_s": final,
        "draft_over_final": draft / final,
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--storyboard", type=Path, default=DEFAULT_STORYBOARD)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draft-steps", type=int, default=0, help="0: the server's default")
    parser.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the server's data dir and log")
    args = parser.parse_args(argv)
    report = run(args)
    print(f"machine: {report['machine']}, torch threads {report['threads']}")
    print(f"shot: {report['storyboard']} ({report['frames']} frames), model {report['model']}")
    print(f"{'what':<44}{'seconds (median of ' + str(args.repeats) + ')':>26}")
    print(
        f"{'submit -> complete draft (' + str(report['draft_steps']) + ' steps)':<44}{report['draft_s']:>26.2f}"
    )
    print(f"{'submit -> preview job complete (draft + final)':<44}{report['preview_job_s']:>26.2f}")
    print(f"{'submit -> final (' + str(report['steps']) + ' steps, no draft)':<44}{report['final_s']:>26.2f}")
    print(f"draft / final: {report['draft_over_final']:.3f} (aim < 0.333)")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
