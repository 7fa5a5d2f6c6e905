"""Conform cost per delivered frame: `python -m ttt_engine.conform.bench` (docs/benchmarks.md, "Conform").

The default model's case: 64 x 64 frames at 8 fps delivered at 1920 x 1080, 23.976 fps, ACEScg, with
flow retime, Lanczos scaling, OCIO colour and half-float ZIP EXR files. The native frames are a
synthetic textured picture moving a few pixels a frame (no model is run). The stage runs as the server
runs it (Conformer.frames then write_delivered); each step's time is measured by wrapping the functions
the stage calls, so the breakdown is of the real path.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np

from host_plugin.core import exr_io
from host_plugin.core.delivery import Delivery

from . import conform as stage
from .time import native_frames_needed

HALF_CONVERSION = "_as_half_rgba"  # exr_io's float -> half conversion and checks, inside the write
STEPS = {
    "colour (OCIO, generation size)": ("convert", "to_display"),
    "flow (DIS, both directions)": ("compute_flows",),
    "warp (flow interpolation)": ("flow_interpolate", "blend"),
    "scale (cv2 Lanczos to target)": ("scale_to",),
}


def native_frames(count: int, size: int = 64) -> list[np.ndarray]:
    """count (size, size, 3) sRGB-encoded frames of a smooth texture panning 3 px and a square moving 5 px
    a frame."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for i in range(count):
        u = x - 3.0 * i
        tex = 0.5 + 0.2 * np.sin(u / 4.0) * np.cos(y / 5.0) + 0.1 * np.sin((u + y) / 7.0)
        frame = np.stack([tex, 0.9 * tex, 0.7 * tex], axis=-1)
        left = int(5 * i) % (size - 12)
        frame[20:32, left : left + 12] = (0.9, 0.3, 0.2)
        frames.append(frame.astype(np.float32))
    return frames


@contextlib.contextmanager
def timed(module: ModuleType, names: set[str], totals: dict[str, float]) -> Iterator[None]:
    """Wrap `module`'s functions `names` so their time adds up in totals[name]."""
    originals = {name: getattr(module, name) for name in names}

    def wrap(name: str, fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        return inner

    for name, fn in originals.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def run(duration: int, out_dir: Path) -> dict[str, float]:
    """Seconds per delivered frame: total, each step, and the EXR write."""
    rate, native_fps = Fraction(24000, 1001), Fraction(8)
    count = native_frames_needed(duration, rate, native_fps)
    natives = native_frames(count)
    delivery = Delivery(rate=rate, duration=duration, width=1920, height=1080, colorspace="ACEScg")
    conformer = stage.Conformer(delivery, native_fps, count, (64, 64), "srgb_rec709_scene")
    totals: dict[str, float] = {}
    names = {name for group in STEPS.values() for name in group}
    start = time.perf_counter()
    with timed(stage, names, totals), timed(exr_io, {HALF_CONVERSION}, totals):
        for frame in conformer.frames(lambda i: natives[i]):
            t0 = time.perf_counter()
            stage.write_delivered(str(out_dir / f"bench.{1001 + frame.index}.exr"), frame)
            totals["write"] = totals.get("write", 0.0) + time.perf_counter() - t0
    result = {"total": (time.perf_counter() - start) / duration}
    for label, group in STEPS.items():
        result[label] = sum(totals.get(name, 0.0) for name in group) / duration
    result["EXR write (half, ZIP)"] = totals.get("write", 0.0) / duration
    result["  of which float32 -> half + checks"] = totals.get(HALF_CONVERSION, 0.0) / duration
    result["flow fallbacks"] = float(conformer.report.flow_fallbacks)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="delivered frames (default 48: 2 s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ttt_conform_bench_") as tmp:
        run(3, Path(tmp))  # warm up: OCIO processors, OpenCV
        result = run(args.frames, Path(tmp))
    print(f"conform 64x64 8 fps -> 1920x1080 23.976 ACEScg, flow + Lanczos, {args.frames} frames")
    for label, value in result.items():
        if label == "flow fallbacks":
            print(f"  {label:36s} {int(value)}")
        else:
            print(f"  {label:36s} {value * 1000:8.1f} ms per delivered frame")


if __name__ == "__main__":
    main()
