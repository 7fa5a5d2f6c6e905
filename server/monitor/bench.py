"""Benchmark: submit to the first preview ON THE MONITOR PAGE, with the shipped model.

    python -m server.monitor.bench                       # 5 timed jobs, table on stdout
    python -m server.monitor.bench --screenshot docs/monitor.png --out bench.json

A real server process (`python -m server.main --model ttt_engine/default_model --torch-threads T`) and the
monitor (uvicorn in a thread) on loopback, and the page in Debian's headless Chromium (Playwright), signed in
with a token. Each timed job is the README's storyboard's first segment at the model's defaults (64 x 64,
25 steps), PRIORITY_PREVIEW as on set (its draft's first step makes the first preview), submitted with the
Python client while the page is open; then cancelled. Times per job, from just before SubmitShot to its
first preview, and the stages they add up to (each from the job's own events and the server's log):
- pickup: the worker claims the job (its "started" StateChanged event: submit RPC, queue wake-up);
- setup: the delivery plan, the run's bookkeeping, the noise and the scheduler (what is left between
  pickup and the first step's start, text excluded);
- text: the prompt encoding (the server log's "sampling ..." record, text_s);
- first step: the first step's own sampling time (its Progress event's elapsed_s): the transformer's
  forward(s), the solver step and the latent -> RGB preview projection;
- preview: the preview's PNG encode and its event stored (Progress event to Preview event);
- grpc / page: the preview received by a WatchJob client in this process (what a plugin sees) and by
  the page's EventSource handler (performance.timeOrigin + performance.now(), the same clock as
  time.time() on this machine); "to page" is the page's time less the server's.
The first job warms the model and is reported apart. --screenshot also makes a 3-take job, approves one,
starts another job and saves the page showing the queue, the live preview and the takes side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from server.process import ROOT, ServerProcess

CHROMIUM = "/usr/bin/chromium"
USER = "director"
STORYBOARD_FILE = ROOT / "examples" / "chase_two_scenes.json"
SHIPPED_MODEL = ROOT / "ttt_engine" / "default_model"
VIEWPORT = {"width": 1280, "height": 860}
TIMEOUT_MS = 120_000


def _token_file(folder: Path) -> tuple[Path, str]:
    from server.tokens import TokenEntry, hash_secret, split_token, write_token_file

    token = f"ttt.tok{USER}.bench-secret-0123456789abcdef"
    token_id, secret = split_token(token)
    path = folder / "tokens"
    write_token_file(path, {token_id: TokenEntry(token_id, USER, "user", hash_secret(secret))})
    return path, token


STAGES = ("pickup", "setup", "text", "first step", "preview", "to page")
TOTALS = ("server", "grpc", "page")


def _first_preview_over_grpc(client: Any, job_id: str, out: dict[str, float]) -> None:
    """Record the event times of the job's claim, first Progress and first Preview (time.time() seconds)."""
    for event in client.watch(job_id):
        at = event.time.ToNanoseconds() / 1e9
        kind = event.WhichOneof("kind")
        if kind == "state" and event.state.message == "started" and "started" not in out:
            out["started"] = at
        if kind == "progress" and "progress" not in out:
            out["progress"], out["elapsed"] = at, event.progress.elapsed_s
        if kind == "preview":
            out["grpc"], out["server"] = time.time(), at
            return


def _text_seconds(server: ServerProcess, job_id: str) -> float:
    """The job's prompt encoding time, from the pipeline's "sampling ..." log record (text_s)."""
    for record in server.log_records():
        if record.get("job_id") == job_id and "text_s" in record:
            return float(record["text_s"])
    raise RuntimeError(f"no sampling record with text_s for job {job_id} in {server.log_path}")


def stages(t0: float, seen: dict[str, float], text_s: float, page_at: float) -> dict[str, float]:
    """Seconds of each stage from submit (t0) to the page; they add up to the page's total."""
    loop_start = seen["progress"] - seen["elapsed"]
    return {
        "pickup": seen["started"] - t0,
        "setup": loop_start - seen["started"] - text_s,
        "text": text_s,
        "first step": seen["elapsed"],
        "preview": seen["server"] - seen["progress"],
        "to page": page_at - seen["server"],
        "server": seen["server"] - t0,
        "grpc": seen["grpc"] - t0,
        "page": page_at - t0,
    }


def time_one(
    server: ServerProcess, client: Any, page: Any, storyboard: list[dict[str, Any]], seed: int
) -> dict[str, float]:
    """Submit one job; its stages and the seconds from submit to its first preview at the server, a gRPC
    client and the page."""
    seen: dict[str, float] = {}
    t0 = time.time()
    job_id = client.submit(storyboard, priority="preview", seed=seed, shot_name=f"bench{seed:02d}").job_id
    watcher = threading.Thread(target=_first_preview_over_grpc, args=(client, job_id, seen), daemon=True)
    watcher.start()
    page.wait_for_function("(id) => window.monitorStats.firstPreview[id] > 0", arg=job_id, timeout=TIMEOUT_MS)
    page_at = page.evaluate("(id) => window.monitorStats.firstPreview[id]", job_id) / 1000.0
    watcher.join(TIMEOUT_MS / 1000)
    client.cancel(job_id)
    client.wait(job_id)
    return stages(t0, seen, _text_seconds(server, job_id), page_at)


def screenshot(client: Any, page: Any, storyboard: list[dict[str, Any]], path: Path) -> None:
    """The page as the director sees it: a 3-take job with one approved, and a job sampling now."""
    job_id = client.submit(storyboard, takes=3, seed=6, shot_name="sh010_chase").job_id
    client.wait(job_id)
    client.approve_take(job_id, 1)
    running = client.submit(storyboard, priority="preview", seed=7, shot_name="sh020_kitchen").job_id
    page.wait_for_function(
        "(id) => window.monitorStats.firstPreview[id] > 0", arg=running, timeout=TIMEOUT_MS
    )
    page.click(f"#queue [data-job='{job_id}']")
    page.wait_for_function(
        "() => document.querySelectorAll('#takes canvas[data-fps]').length === 3", timeout=TIMEOUT_MS
    )
    page.wait_for_timeout(400)  # a few frames into playback
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    client.cancel(running)
    client.wait(running)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed jobs (after one warm-up job)")
    parser.add_argument("--torch-threads", type=int, default=2, help="the server's torch threads (2 cores)")
    parser.add_argument(
        "--screenshot", type=Path, default=None, help="save a screenshot of the page here (PNG)"
    )
    parser.add_argument(
        "--draft-unguided-steps",
        type=int,
        default=None,
        help="the server's --draft-unguided-steps (default: the server's own; 0: the draft guided throughout)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not os.path.exists(CHROMIUM):
        parser.error(f"no Chromium at {CHROMIUM}: apt-get install chromium")

    from playwright.sync_api import sync_playwright

    from server.client import StudioClient
    from server.monitor.app import create_app
    from server.monitor.background import MonitorThread
    from server.monitor.config import MonitorConfig

    storyboard = json.loads(STORYBOARD_FILE.read_text())[:1]
    with tempfile.TemporaryDirectory(prefix="ttt-monitor-bench-") as tmp:
        token_file, token = _token_file(Path(tmp))
        extra = (
            []
            if args.draft_unguided_steps is None
            else ["--draft-unguided-steps", str(args.draft_unguided_steps)]
        )
        server = ServerProcess(
            Path(tmp) / "data",
            token_file,
            "--torch-threads",
            str(args.torch_threads),
            *extra,
            model=SHIPPED_MODEL,
        ).start()
        try:
            with (
                MonitorThread(create_app(MonitorConfig(server=server.address))) as monitor,
                StudioClient(server.address, token=token) as client,
                sync_playwright() as playwright,
            ):
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(monitor.url)
                page.fill("#token", token)
                page.click("#signin-form button[type=submit]")
                page.wait_for_selector(f"[data-testid=who]:text('{USER}')")
                warm = time_one(server, client, page, storyboard, seed=100)
                runs = [time_one(server, client, page, storyboard, seed=101 + i) for i in range(args.repeats)]
                if args.screenshot is not None:
                    screenshot(client, page, storyboard, args.screenshot)
                browser.close()
        finally:
            server.stop()

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "torch_threads": args.torch_threads,
        "draft_unguided_steps": args.draft_unguided_steps,
        "poll_interval_s": MonitorConfig(server="127.0.0.1:1").poll_interval_s,
        "warm_up": warm,
        "runs": runs,
    }
    unguided = "server default" if args.draft_unguided_steps is None else args.draft_unguided_steps
    print(
        f"submit -> first preview, shipped model, {report['machine']}, server torch threads {args.torch_threads}, "
        f"draft unguided steps: {unguided}"
    )
    print(f"{'stage':10} {'median':>9} {'min':>9} {'max':>9}   (warm-up job)")
    for key in STAGES + TOTALS:
        values = [run[key] * 1000 for run in runs]
        print(
            f"{key:10} {statistics.median(values):7.0f}ms {min(values):7.0f}ms {max(values):7.0f}ms"
            f"   ({warm[key] * 1000:.0f} ms)"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
