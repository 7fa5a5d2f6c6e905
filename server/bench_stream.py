"""Benchmark: EXR frames streamed by the server over loopback gRPC vs the same files read from local disk.

    python -m server.bench_stream                                  # 48 frames of 480x720
    python -m server.bench_stream --height 1080 --width 1920 --frames 24 --out bench.json
    python -m server.bench_stream --server HOST:PORT --token T --job-id J   # a running server's job

What it measures (each row: best of --repeats passes over all frames, the rows taken in turn):
- raw bytes: every file read into memory vs FetchFrames into memory (one bytes object per frame), per
  chunk size.
- usable frames (what a host does): read + EXR decode vs FetchFrames + EXR decode from memory, and vs
  StudioClient.fetch (writes each frame, checks its sha256) + EXR decode of the written file.
- warm: the files are in the page cache (written just now and read once). cold: before every pass each
  file's pages are dropped with posix_fadvise(DONTNEED) on both sides (dropping all caches needs root);
  `fincore` checks that they left when it is installed. On a virtual machine the host may still cache
  the virtual disk, so "cold" means cold for this OS only.
- the server's overhead from submit to the first preview (minus the first step's own compute), with the
  tiny model at 64x64.

The frames: synthetic scene-linear content (gradients drifting over time with 3 % grain, so ZIP
compresses them about as much as real footage rather than perfectly) written by the server's own frame
writer (write_rgba_exr: half RGBA, ZIP, then FrameStore.commit and the frames index) as one completed
job in a fresh data dir; the model does not make them (the tiny random model takes minutes per job at
480x720 on a CPU). The server runs as its own process (`python -m server.main --tiny-random`) on that
data dir, as a host would see it. The table names the machine; --out also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.process import ServerProcess

STORYBOARD = [
    {"text": "A red ball rolls across a wooden floor. It stops by a chair."},
    {"text": "A cat jumps onto the chair. It looks at the ball and yawns."},
]
OWNER = "local"  # the caller name of a --insecure-no-auth server
CHUNKS_KIB = (64, 256, 1024, 4096)
DEFAULT_CHUNK_KIB = 1024  # the server's default chunk size (ServerConfig.chunk_bytes)


# ---------------------------------------------------------------------- the frames and the server


def synthetic_frame(index: int, height: int, width: int, rng: Any) -> Any:
    """Scene-linear RGB [H, W, 3] float32: smooth colour fields that drift with `index`, 3 % grain."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / width, yy / height
    base = np.stack(
        [
            0.18 + 0.30 * np.sin(6 * u + 0.1 * index) * v,
            0.10 + 0.20 * v + 0.05 * np.cos(9 * u * v - 0.07 * index),
            0.05 + 0.10 * np.cos(4 * v - 0.05 * index) + 0.4 * (u - 0.5) ** 2,
        ],
        axis=-1,
    )  # (H, W, 3)
    return (base * (1 + 0.03 * rng.standard_normal(base.shape, dtype=np.float32))).astype(np.float32)


def seed_job(data_dir: Path, frames: int, height: int, width: int, fps: float = 16.0) -> str:
    """A completed job of `frames` EXR frames in data_dir, written as the worker writes them."""
    from fractions import Fraction

    import numpy as np

    from host_plugin.core.exr_io import write_rgba_exr
    from server.frames import FrameStore, sha256_file
    from server.jobs import FrameRecord, JobSpec, Priority
    from server.store import Store

    store = Store(data_dir / "studio.sqlite3")
    files = FrameStore(data_dir)
    spec = JobSpec(
        storyboard=STORYBOARD,
        params={"height": height, "width": width},
        shot_name="bench",
        n_segments=len(STORYBOARD),
        total_frames=frames,
    )
    try:
        job, _ = store.create_job(uuid.uuid4().hex, OWNER, Priority.FINAL, spec, "bench", None, 1 << 30)
        rng = np.random.default_rng(0)
        for index in range(frames):
            relpath = files.frame_relpath(job.job_id, index)
            final, tmp = files.path_of(relpath), files.temp_path(".exr")
            write_rgba_exr(
                tmp,
                synthetic_frame(index, height, width, rng),
                attributes={"ttt_studio/job_id": job.job_id, "ttt_studio/frame": 1001 + index},
                frames_per_second=Fraction(fps).limit_denominator(1001),
            )
            files.commit(tmp, final)
            store.add_frame(
                FrameRecord(
                    job.job_id,
                    index,
                    1001 + index,
                    0,
                    spec.frame_filename(index),
                    relpath,
                    final.stat().st_size,
                    sha256_file(final),
                    time.time(),
                )
            )
        store.complete(job.job_id, "", "frames written by server.bench_stream")
        return job.job_id
    finally:
        store.close()


def drop_from_page_cache(paths: list[Path]) -> None:
    """Evict the files' pages from this OS's page cache (fsync first: only clean pages can go)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(paths: list[Path]) -> int | None:
    """Bytes of the files in the page cache per `fincore` (None when it is not installed)."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(v) for v in out.split())


# ---------------------------------------------------------------------- the passes


def read_files(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            total += len(handle.read())
    return total


def fetch_frames(
    client: Any, job_id: str, chunk_bytes: int, on_frame: Callable[[bytes], None] | None = None
) -> int:
    """FetchFrames into memory: each frame's chunks joined into one bytes object; returns the bytes."""
    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb

    total = 0
    parts: list[bytes] = []
    request = pb.FetchFramesRequest(job_id=job_id, chunk_bytes=chunk_bytes)
    for chunk in client.stub.FetchFrames(request, metadata=client.metadata):
        parts.append(chunk.data)
        if chunk.last:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            parts = []
            total += len(data)
            if on_frame is not None:
                on_frame(data)
    return total


def decode_exr(source: str | bytes) -> int:
    """Decode one EXR (a path or its bytes) to its RGBA pixel array; returns the pixel count."""
    import OpenEXR

    with OpenEXR.File(source if isinstance(source, str) else io.BytesIO(source)) as exr:
        pixels = exr.channels()["RGBA"].pixels
        return int(pixels.shape[0] * pixels.shape[1])


def read_and_decode(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        total += path.stat().st_size
        decode_exr(str(path))
    return total


def fetch_and_decode(client: Any, job_id: str) -> int:
    return fetch_frames(client, job_id, 0, on_frame=decode_exr)


def fetch_files_and_decode(client: Any, job_id: str, out_dir: Path) -> int:
    """StudioClient.fetch (write, sha256 check, rename) decoding each file as it lands."""
    shutil.rmtree(out_dir, ignore_errors=True)
    sizes: list[int] = []

    def on_frame(path: Path, _chunk: Any) -> None:
        sizes.append(path.stat().st_size)
        decode_exr(str(path))

    client.fetch(job_id, out_dir, on_frame=on_frame)
    return sum(sizes)


def measure(passes: dict[str, Callable[[], int]], repeats: int, before: Callable[[], None]) -> dict[str, Any]:
    """Run every pass `repeats` times, rotating their order; before() runs before each pass."""
    names = list(passes)
    times: dict[str, list[float]] = {n: [] for n in names}
    sizes: dict[str, int] = {}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            before()
            t0 = time.perf_counter()
            sizes[name] = passes[name]()
            times[name].append(time.perf_counter() - t0)
    return {
        name: {
            "bytes": sizes[name],
            "best_s": min(times[name]),
            "median_s": statistics.median(times[name]),
            "MB_per_s": sizes[name] / min(times[name]) / 1e6,
            "median_MB_per_s": sizes[name] / statistics.median(times[name]) / 1e6,
        }
        for name in names
    }


# ---------------------------------------------------------------------- latency


def latency(client: Any, repeats: int) -> dict[str, float]:
    """Submit -> first preview, minus the first step's compute: the server's own overhead (median)."""
    job_args = {
        "height": 64,
        "width": 64,
        "steps": 2,
        "guidance_scale": 1.0,
        "preview_every": 1,
        "seed": 1,
    }
    runs = []
    for _ in range(repeats + 1):  # the first one warms up torch and fits the preview projection
        t0 = time.perf_counter()
        job_id = client.submit(STORYBOARD[:1], **job_args).job_id
        first_preview = None
        step1 = 0.0
        for event in client.watch(job_id):
            kind = event.WhichOneof("kind")
            if kind == "progress" and event.progress.step == 1:
                step1 = event.progress.elapsed_s
            elif kind == "preview" and first_preview is None:
                first_preview = time.perf_counter() - t0
        if first_preview is None:
            raise RuntimeError(f"job {job_id} produced no preview")
        runs.append({"first_preview_s": first_preview, "step1_s": step1, "overhead_s": first_preview - step1})
    return {key: statistics.median(r[key] for r in runs[1:]) for key in runs[0]}


# ---------------------------------------------------------------------- machine and table


def machine() -> dict[str, Any]:
    import google.protobuf
    import grpc
    import OpenEXR

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "openexr": OpenEXR.__version__,
        "load_average": os.getloadavg(),
    }


def filesystem(path: Path) -> str:
    """'ext4 on /dev/vda' for the mount holding path (from /proc/mounts)."""
    best = ("", "?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) >= len(best[0]):
                best = (mount, kind, device)
    except OSError:
        pass
    return f"{best[1]} on {best[2]}"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    f = report["frames"]
    lines = [
        f"machine: {m['host']}: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}; "
        f"Python {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}, OpenEXR {m['openexr']}; "
        f"load average at start {m['load_average'][0]:.2f}, at end {report['load_average_end'][0]:.2f}",
        f"frames: {f['count']} x {f['width']}x{f['height']} half RGBA ZIP EXR, {f['avg_MB']:.2f} MB each "
        f"({f['total_MB']:.1f} MB), {f['where']}; server and client are separate processes on 127.0.0.1",
        f"cold: {report['cold_note']}",
        f"best of {report['repeats']} passes (median in brackets); ratio = MB/s / the disk row of its kind",
        "",
        f"{'':40s} {'warm page cache':>34s}   {'cold (fadvise DONTNEED)':>34s}",
        f"{'':40s} {'MB/s':>16s} {'frames/s':>9s} {'ratio':>7s}   {'MB/s':>16s} {'frames/s':>9s} {'ratio':>7s}",
    ]
    for kind, rows in (("raw", report["raw_rows"]), ("usable", report["usable_rows"])):
        disk = rows[0][0]
        for name, label in rows:
            cells = []
            for cache in ("warm", "cold"):
                r = report[kind][cache].get(name)
                if r is None:
                    cells.append(f"{'-':>16s} {'-':>9s} {'-':>7s}")
                    continue
                d = report[kind][cache].get(disk)
                ratio = f"{r['MB_per_s'] / d['MB_per_s']:.2f}" if d else "-"
                mbs = f"{r['MB_per_s']:.0f} ({r['median_MB_per_s']:.0f})"
                fps = f"{f['count'] / r['best_s']:.0f}"
                cells.append(f"{mbs:>16s} {fps:>9s} {ratio:>7s}")
            lines.append(f"{label:40s} {cells[0]}   {cells[1]}")
    lat = report.get("latency")
    if lat:
        lines += [
            "",
            f"submit -> first preview (64x64, tiny model): {lat['first_preview_s'] * 1e3:.0f} ms, of which "
            f"step 1 compute {lat['step1_s'] * 1e3:.0f} ms; server overhead {lat['overhead_s'] * 1e3:.0f} ms "
            "(median)",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    from server.client import StudioClient

    report: dict[str, Any] = {"machine": machine(), "repeats": args.repeats}
    tmp = Path(tempfile.mkdtemp(prefix="ttt_bench_", dir=args.tmp))
    server = None
    try:
        if args.server is None:
            data_dir = tmp / "data"
            data_dir.mkdir()
            t0 = time.perf_counter()
            job_id = seed_job(data_dir, args.frames, args.height, args.width)
            report["write_s"] = time.perf_counter() - t0
            server = ServerProcess(
                data_dir, None, "--log-format", "text", "--log-level", "WARNING", log_path=tmp / "server.log"
            ).start(timeout=180.0)
            address, token = server.address, None
        else:
            if not args.job_id:
                raise SystemExit("--server needs --job-id (a completed job of that server)")
            address, token, job_id = args.server, args.token, args.job_id
        with StudioClient(address, token=token) as client:
            client.token = token
            if server is not None:
                files = server.data_dir / "jobs" / job_id / "frames"
                paths = sorted(files.glob("*.exr"))
            else:
                paths = []
            result = client.result(job_id)
            frames = list(result.frames)
            total = sum(fr.bytes for fr in frames)
            report["frames"] = {
                "count": len(frames),
                "width": result.width,
                "height": result.height,
                "total_bytes": total,
                "total_MB": total / 1e6,
                "avg_MB": total / len(frames) / 1e6,
                "where": filesystem(paths[0]) if paths else f"on the server {address}",
            }
            raw: dict[str, Callable[[], int]] = {}
            raw_rows = []
            if paths:
                raw["disk"] = lambda: read_files(paths)
                raw_rows.append(("disk", "raw: read the files"))
            for kib in CHUNKS_KIB:
                raw[f"grpc_{kib}"] = lambda kib=kib: fetch_frames(client, job_id, kib * 1024)
                raw_rows.append((f"grpc_{kib}", f"raw: FetchFrames, {kib} KiB chunks"))
            usable: dict[str, Callable[[], int]] = {}
            usable_rows = []
            if paths:
                usable["disk"] = lambda: read_and_decode(paths)
                usable_rows.append(("disk", "usable: read + decode"))
            usable["grpc_mem"] = lambda: fetch_and_decode(client, job_id)
            usable_rows.append(("grpc_mem", "usable: FetchFrames + decode in memory"))
            usable["grpc_files"] = lambda: fetch_files_and_decode(client, job_id, tmp / "fetched")
            usable_rows.append(("grpc_files", "usable: client.fetch to files + decode"))
            report["raw_rows"], report["usable_rows"] = raw_rows, usable_rows

            if paths:
                read_files(paths)  # warm: every page in the cache
            report["raw"] = {"warm": measure(raw, args.repeats, lambda: None)}
            report["usable"] = {"warm": measure(usable, args.repeats, lambda: None)}
            if paths and not args.no_cold:
                drop_from_page_cache(paths)
                left = resident_bytes(paths)
                report["cold_note"] = (
                    f"fincore finds {left} of {total} bytes cached after the drop"
                    if left is not None
                    else "not checked (no fincore)"
                ) + "; the host of a VM may still cache its virtual disk"
                before = lambda: drop_from_page_cache(paths)  # noqa: E731
                report["raw"]["cold"] = measure(raw, args.repeats, before)
                report["usable"]["cold"] = measure(usable, args.repeats, before)
            else:
                report["cold_note"] = "not measured (needs the server's files on this machine)"
                report["raw"]["cold"] = report["usable"]["cold"] = {}
            if args.latency_repeats and server is not None:
                report["latency"] = latency(client, args.latency_repeats)
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report["load_average_end"] = os.getloadavg()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-repeats", type=int, default=3, help="0: skip the latency measurement")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache passes")
    parser.add_argument(
        "--tmp", type=Path, default=None, help="where the data dir goes (default: the system's)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument("--server", default=None, help="a running server instead (network side only)")
    parser.add_argument("--token", default=None)
    parser.add_argument("--job-id", default=None, help="with --server: a completed job to fetch")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.repeats < 1:
        parser.error("--frames and --repeats must be >= 1")
    report = run(args)
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
