"""`ttt-studio eval VIDEO... --storyboard FILE --fps N`: score generated videos against a storyboard.

VIDEO is [NAME=]PATH; PATH is a directory of EXR frames (sorted by file name; linear values are
converted to sRGB display values before detection), a .npy array [T, H, W, 3] (uint8, or float
display values in [0, 1]), or a clip folder of the dataset format (frames.npy or frames/*.png).
Several videos are printed side by side, e.g. `default=out/a random-init=out/b`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ttt_engine.storyboard import Storyboard, StoryboardError


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB display values (IEC 61966-2-1 curve), clipped to [0, 1]."""
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def load_exr_frames(directory: str | Path) -> np.ndarray:
    """Display frames float32 [T, H, W, 3] from a directory of linear-light EXR files."""
    import OpenEXR

    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".exr")
    if not files:
        raise ValueError(f"{directory}: no .exr files")
    frames = []
    for f in files:
        channels = OpenEXR.File(str(f)).channels()
        if "RGBA" in channels:
            rgb = channels["RGBA"].pixels[..., :3]
        elif "RGB" in channels:
            rgb = channels["RGB"].pixels
        else:
            raise ValueError(f"{f}: no RGB(A) channels; found {sorted(channels)}")
        if frames and rgb.shape != frames[0].shape:
            raise ValueError(
                f"{f}: size {rgb.shape[:2]} differs from the first frame's {frames[0].shape[:2]}"
            )
        frames.append(linear_to_srgb(rgb))
    return np.stack(frames)


def load_video(path: str | Path) -> tuple[np.ndarray, int | None]:
    """(frames, fps if the source knows it) from an EXR directory, a .npy file or a clip folder."""
    from ttt_engine.toonworld.dataset import META, load_frames

    path = Path(path)
    if path.is_file() and path.suffix == ".npy":
        frames = np.load(path, allow_pickle=False)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{path}: expected an array [T, H, W, 3], got shape {tuple(frames.shape)}")
        return frames, None
    if path.is_dir():
        if any(p.suffix.lower() == ".exr" for p in path.iterdir()):
            return load_exr_frames(path), None
        meta = path / META
        fps = json.loads(meta.read_text()).get("fps") if meta.is_file() else None
        return load_frames(path), fps
    raise ValueError(f"{path}: not a .npy file, an EXR directory or a clip folder")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score generated toon-world videos against a storyboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", nargs="+", metavar="[NAME=]VIDEO_DIR_OR_FILE")
    p.add_argument("--storyboard", required=True, help="format-3 storyboard (.json/.yaml)")
    p.add_argument(
        "--fps", type=int, default=None, help="frame rate (required unless a clip folder's meta.json has it)"
    )
    p.add_argument(
        "--meta",
        default=None,
        help="toon-world meta.json: take the requested facts from its plan, not the text",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="also write the full reports as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .facts import facts_from_episode
    from .metrics import evaluate, format_table

    try:
        storyboard = Storyboard.load(args.storyboard)
        facts = None
        if args.meta:
            from ttt_engine.toonworld.world import Episode

            meta = json.loads(Path(args.meta).read_text())
            if "plan" not in meta:
                raise ValueError(f"{args.meta}: no 'plan' (only toon-world clips carry one)")
            facts = facts_from_episode(Episode.from_dict(meta["plan"]))
        reports = {}
        for spec in args.videos:
            name, _, path = spec.rpartition("=")
            name = name or Path(path).stem
            if name in reports:
                raise ValueError(f"two videos named {name!r}; name them NAME=PATH")
            frames, fps = load_video(path)
            fps = args.fps or fps
            if fps is None:
                raise ValueError(f"{path}: frame rate unknown; pass --fps")
            reports[name] = evaluate(frames, storyboard, fps, facts=facts)
    except (ValueError, StoryboardError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(reports))
    if args.json:
        Path(args.json).write_text(json.dumps({n: r.to_dict() for n, r in reports.items()}, indent=2) + "\n")
    return 0
