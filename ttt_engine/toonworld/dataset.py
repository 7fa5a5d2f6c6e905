"""Writing and reading clip datasets (toon world or a user's own footage; the format is in __init__)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttt_engine.storyboard import SEGMENT_SECONDS, Storyboard, StoryboardError

from .memory import MIN_SEGMENTS, check_variant, variant_episode, variant_storyboard
from .render import frames_per_segment, render_episode_and_matte, to_uint8
from .world import CHASE_SETUP_PROB, Episode, check_chase_setup_prob

log = logging.getLogger(__name__)

FORMAT = "ttt-studio-clips"
VERSION = 1
INDEX = "dataset.json"
FRAMES_NPY = "frames.npy"
FRAMES_DIR = "frames"
MATTE_NPY = "matte.npy"
MATTE_DIR = "matte"
STORYBOARD = "storyboard.json"
META = "meta.json"
_PNG_NAME = re.compile(r"^(\d+)\.png$")


class DatasetError(ValueError):
    """A dataset folder or clip that does not follow the format; the message names the path."""


def clip_name(i: int) -> str:
    return f"clip_{i:06d}"


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_clip(
    clip_dir: str | Path,
    frames: np.ndarray,
    storyboard: Storyboard,
    fps: int,
    extra_meta: dict[str, Any] | None = None,
    matte: np.ndarray | None = None,
) -> Path:
    """Write one clip: frames.npy (uint8 [T, H, W, 3]), storyboard.json, meta.json and, when given, the
    subject matte as matte.npy (uint8 [T, H, W]; bool or float [0, 1] input is scaled to 0..255)."""
    clip_dir = Path(clip_dir)
    per = frames_per_segment(fps)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DatasetError(f"{clip_dir}: frames must have shape [T, H, W, 3], got {tuple(frames.shape)}")
    if frames.shape[0] != len(storyboard) * per:
        raise DatasetError(
            f"{clip_dir}: {frames.shape[0]} frames for {len(storyboard)} segments at {fps} fps; "
            f"expected {len(storyboard) * per}"
        )
    if frames.dtype != np.uint8:
        frames = to_uint8(frames)
    if matte is not None:
        matte = _matte_uint8(matte, clip_dir)
        if matte.shape != frames.shape[:3]:
            raise DatasetError(
                f"{clip_dir}: matte shape {tuple(matte.shape)} differs from the frames' {tuple(frames.shape[:3])}"
            )
    clip_dir.mkdir(parents=True, exist_ok=True)
    np.save(clip_dir / FRAMES_NPY, frames)
    if matte is not None:
        np.save(clip_dir / MATTE_NPY, matte)
    storyboard.dump(clip_dir / STORYBOARD)
    meta = {
        "fps": int(fps),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "n_segments": len(storyboard),
        "frames_per_segment": per,
    }
    meta.update(extra_meta or {})
    _write_json(clip_dir / META, meta)
    return clip_dir


def write_dataset(
    root: str | Path,
    n_clips: int,
    segments_range: tuple[int, int] = (2, 4),
    height: int = 64,
    width: int = 64,
    fps: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    chase_setup_prob: float = CHASE_SETUP_PROB,
    variant: str = "base",
) -> Path:
    """Render `n_clips` toon-world episodes of segments_range[0]..segments_range[1] segments (inclusive).

    Clip i is the episode of seed SeedSequence([seed, i]) (sample_episode, with `chase_setup_prob`: 0
    writes the clips written before that option existed); its plan goes into meta.json as "plan".
    variant 'memory': the episodes of `memory.sample_memory_episode` (a hat only the first segment's text
    states; at least memory.MIN_SEGMENTS segments; `chase_setup_prob` does not apply).
    Returns the root folder. Refuses to write over an existing dataset unless `overwrite`.
    """
    root = Path(root)
    lo, hi = segments_range
    if not (isinstance(n_clips, int) and n_clips >= 1):
        raise ValueError(f"n_clips: expected a positive int, got {n_clips!r}")
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"segments_range: expected 1 <= min <= max ints, got {segments_range!r}")
    frames_per_segment(fps)
    check_chase_setup_prob(chase_setup_prob)  # before any folder is made
    check_variant(variant)
    if variant == "memory" and lo < MIN_SEGMENTS:
        raise ValueError(
            f"segments_range: the memory variant needs at least {MIN_SEGMENTS} segments, got {segments_range!r}"
        )
    if (root / INDEX).exists() and not overwrite:
        raise FileExistsError(f"{root / INDEX} exists; pass overwrite=True (--overwrite) to write over it")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n_clips):
        n_seg = int(rng.integers(lo, hi + 1))
        clip_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        episode = variant_episode(variant, clip_seed, n_seg, chase_setup_prob)
        frames, matte = render_episode_and_matte(episode, height, width, fps)
        name = clip_name(i)
        write_clip(
            root / name,
            to_uint8(frames),
            variant_storyboard(episode),
            fps,
            {"source": "toonworld", "plan": episode.to_dict()},
            matte=matte,
        )
        names.append(name)
    index = {
        "format": FORMAT,
        "version": VERSION,
        "fps": int(fps),
        "height": int(height),
        "width": int(width),
        "frames_per_segment": frames_per_segment(fps),
        "clips": names,
        "generator": {
            "name": "toonworld",
            "seed": int(seed),
            "segments_range": [lo, hi],
            "chase_setup_prob": float(chase_setup_prob),
            **({"variant": variant} if variant != "base" else {}),
        },
    }
    _write_json(root / INDEX, index)
    log.info("wrote %d toon-world clips (%dx%d, %d fps) to %s", n_clips, height, width, fps, root)
    return root


# ----------------------------------------------------------------------------- reading


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"missing {what}: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None


def _positive_int(obj: dict, key: str, where: Path) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DatasetError(f"{where}: field {key!r} must be a positive integer, got {v!r}")
    return v


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DatasetError(f"{path}: not a readable .npy array ({e})") from None


def load_frames(clip_dir: str | Path) -> np.ndarray:
    """A clip's frames as uint8 [T, H, W, 3], from frames.npy or a numbered PNG sequence frames/0000.png..."""
    clip_dir = Path(clip_dir)
    npy, png_dir = clip_dir / FRAMES_NPY, clip_dir / FRAMES_DIR
    if npy.is_file():
        frames = _load_npy(npy)
        if frames.dtype != np.uint8:
            raise DatasetError(f"{npy}: dtype must be uint8, got {frames.dtype}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise DatasetError(f"{npy}: shape must be [T, H, W, 3] with T >= 1, got {tuple(frames.shape)}")
        return frames
    if png_dir.is_dir():
        return _load_png_sequence(png_dir)
    raise DatasetError(f"{clip_dir}: no frames; expected {FRAMES_NPY} or a {FRAMES_DIR}/0000.png... sequence")


def _load_png_sequence(png_dir: Path, matte: bool = False) -> np.ndarray:
    """Numbered PNGs -> uint8 [T, H, W, 3] (RGB/RGBA frames) or, with matte, [T, H, W] (L/LA/RGBA)."""
    from PIL import Image

    files = sorted(png_dir.iterdir())
    numbered = [(int(m.group(1)), f) for f in files if (m := _PNG_NAME.match(f.name))]
    if not numbered:
        raise DatasetError(f"{png_dir}: no numbered PNG frames (expected 0000.png, 0001.png, ...)")
    numbered.sort()
    indices = [i for i, _ in numbered]
    if indices != list(range(indices[0], indices[0] + len(indices))):
        missing = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices))
        raise DatasetError(f"{png_dir}: PNG sequence has gaps; missing frame numbers {missing[:10]}")
    modes = ("L", "LA", "RGBA") if matte else ("RGB", "RGBA")
    frames: list[np.ndarray] = []
    for _, f in numbered:
        with Image.open(f) as im:
            if im.mode not in modes:
                raise DatasetError(f"{f}: PNG mode must be one of {', '.join(modes)}, got {im.mode}")
            if not matte:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            elif im.mode == "L":
                arr = np.asarray(im, dtype=np.uint8)
            else:
                arr = np.asarray(im.getchannel("A"), dtype=np.uint8)
        if frames and arr.shape != frames[0].shape:
            raise DatasetError(
                f"{f}: size {arr.shape[1]}x{arr.shape[0]} differs from the first frame's "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}"
            )
        frames.append(arr)
    return np.stack(frames)


def _matte_uint8(matte: np.ndarray, where: Path) -> np.ndarray:
    """bool, uint8 or float [0, 1] [T, H, W] -> uint8 0..255."""
    m = np.asarray(matte)
    if m.ndim != 3:
        raise DatasetError(f"{where}: matte must have shape [T, H, W], got {tuple(m.shape)}")
    if m.dtype == np.uint8:
        return m
    if m.dtype == bool:
        return m.astype(np.uint8) * 255
    if np.issubdtype(m.dtype, np.floating):
        if not (np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0):
            raise DatasetError(f"{where}: a float matte must hold values in [0, 1]")
        return np.rint(m * 255.0).astype(np.uint8)
    raise DatasetError(f"{where}: matte dtype must be bool, uint8 or float, got {m.dtype}")


def load_matte(clip_dir: str | Path) -> np.ndarray | None:
    """A clip's subject matte as uint8 [T, H, W] (255 = subject), or None when the clip has none.

    From matte.npy (uint8 [T, H, W]) or a numbered PNG sequence matte/0000.png... (grey: its value; with
    alpha: the alpha, as a roto matte rendered over black usually is)."""
    clip_dir = Path(clip_dir)
    npy, png_dir = clip_dir / MATTE_NPY, clip_dir / MATTE_DIR
    if npy.is_file():
        matte = _load_npy(npy)
        if matte.dtype != np.uint8 or matte.ndim != 3:
            raise DatasetError(f"{npy}: expected uint8 [T, H, W], got {matte.dtype} {tuple(matte.shape)}")
        return matte
    if png_dir.is_dir():
        return _load_png_sequence(png_dir, matte=True)
    return None


def _check_matte_shape(clip_dir: Path, matte: np.ndarray, shape: tuple[int, int, int]) -> None:
    if tuple(matte.shape) != tuple(shape):
        raise DatasetError(
            f"{clip_dir}: matte is {matte.shape[0]} frames of {matte.shape[2]}x{matte.shape[1]} but the clip's "
            f"frames are {shape[0]} of {shape[2]}x{shape[1]}; the matte needs one frame per frame, same size"
        )


@dataclass(frozen=True)
class Clip:
    """One loaded clip. frames: float32 [T, H, W, 3] display values in [0, 1]; matte: the subject matte,
    float32 [T, H, W] in [0, 1], or None when the clip has none."""

    name: str
    frames: np.ndarray
    storyboard: Storyboard
    meta: dict[str, Any]
    matte: np.ndarray | None = None

    @property
    def fps(self) -> int:
        return int(self.meta["fps"])

    @property
    def plan(self) -> Episode | None:
        """The toon-world plan when the clip has one (meta.json "plan")."""
        return Episode.from_dict(self.meta["plan"]) if "plan" in self.meta else None


class ClipDataset:
    """Clips of a dataset folder, loaded and validated one at a time.

    With a dataset.json the clips are the ones it lists (and must all share its fps and size);
    without one, every sub-folder holding a storyboard.json is a clip (sorted by name).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder not found: {self.root}")
        self.index: dict[str, Any] | None = None
        index_path = self.root / INDEX
        if index_path.exists():
            self.index = _read_json(index_path, "dataset index")
            self._check_index(index_path)
            self.names = list(self.index["clips"])
        else:
            self.names = sorted(p.name for p in self.root.iterdir() if (p / STORYBOARD).is_file())
            if not self.names:
                raise DatasetError(
                    f"{self.root}: no {INDEX} and no clip folders (sub-folders with {STORYBOARD})"
                )
        for name in self.names:
            if not (self.root / name).is_dir():
                raise DatasetError(
                    f"{self.root / INDEX}: lists clip {name!r} but {self.root / name} is not a folder"
                )

    def _check_index(self, path: Path) -> None:
        idx = self.index
        if not isinstance(idx, dict):
            raise DatasetError(f"{path}: expected a JSON object, got {type(idx).__name__}")
        if idx.get("version") != VERSION:
            raise DatasetError(
                f"{path}: unsupported version {idx.get('version')!r}; this reader supports {VERSION}"
            )
        for key in ("fps", "height", "width"):
            _positive_int(idx, key, path)
        clips = idx.get("clips")
        if not isinstance(clips, list) or not clips or not all(isinstance(c, str) for c in clips):
            raise DatasetError(
                f"{path}: field 'clips' must be a non-empty list of folder names, got {clips!r}"
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Clip:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip index {i} out of range for {len(self)} clips")
        name = self.names[i]
        clip_dir = self.root / name
        meta = _read_json(clip_dir / META, "clip meta")
        if not isinstance(meta, dict):
            raise DatasetError(f"{clip_dir / META}: expected a JSON object, got {type(meta).__name__}")
        fps = _positive_int(meta, "fps", clip_dir / META)
        if not (clip_dir / STORYBOARD).is_file():
            raise DatasetError(f"missing storyboard: {clip_dir / STORYBOARD}")
        try:
            storyboard = Storyboard.load(clip_dir / STORYBOARD)
        except StoryboardError as e:
            raise DatasetError(str(e)) from None
        frames = load_frames(clip_dir)
        t, h, w, _ = frames.shape
        per = SEGMENT_SECONDS * fps
        expected = len(storyboard) * per
        if t != expected:
            raise DatasetError(
                f"{clip_dir}: {t} frames but the storyboard has {len(storyboard)} segments x {SEGMENT_SECONDS} s x "
                f"{fps} fps = {expected} frames"
            )
        for key, actual in (
            ("height", h),
            ("width", w),
            ("n_segments", len(storyboard)),
            ("frames_per_segment", per),
        ):
            if key in meta and meta[key] != actual:
                raise DatasetError(f"{clip_dir / META}: {key} is {meta[key]!r} but the clip has {actual}")
        if self.index is not None:
            for key, actual in (("fps", fps), ("height", h), ("width", w)):
                if self.index[key] != actual:
                    raise DatasetError(
                        f"{clip_dir}: {key} {actual} differs from the dataset's {self.index[key]} ({self.root / INDEX})"
                    )
        meta = {**meta, "height": h, "width": w, "n_segments": len(storyboard), "frames_per_segment": per}
        matte = load_matte(clip_dir)
        if matte is not None:
            _check_matte_shape(clip_dir, matte, (t, h, w))
        return Clip(
            name=name,
            frames=frames.astype(np.float32) / 255.0,
            storyboard=storyboard,
            meta=meta,
            matte=None if matte is None else matte.astype(np.float32) / 255.0,
        )

    def matte(self, i: int) -> np.ndarray | None:
        """Clip i's subject matte, uint8 [T, H, W], without reading its frames; None when it has none.

        Checked against the clip's storyboard length and fps (meta.json) and its size (meta.json or
        dataset.json)."""
        clip_dir = self.root / self.names[i]
        meta = _read_json(clip_dir / META, "clip meta")
        fps = _positive_int(meta, "fps", clip_dir / META)
        try:
            n_segments = len(Storyboard.load(clip_dir / STORYBOARD))
        except StoryboardError as e:
            raise DatasetError(str(e)) from None
        size = self.index if self.index is not None else meta
        h, w = size.get("height"), size.get("width")
        matte = load_matte(clip_dir)
        if matte is None:
            return None
        expected = (n_segments * SEGMENT_SECONDS * fps, h or matte.shape[1], w or matte.shape[2])
        _check_matte_shape(clip_dir, matte, expected)
        return matte

    def __iter__(self) -> Iterator[Clip]:
        for i in range(len(self)):
            yield self[i]
