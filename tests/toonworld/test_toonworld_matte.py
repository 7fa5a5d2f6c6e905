"""Subject mattes: the toon world's matte is exactly its characters' visible pixels, and clips carry mattes
(matte.npy or a PNG sequence) that the dataset reads back and checks against the frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ttt_engine.storyboard import Storyboard
from ttt_engine.toonworld import (
    ClipDataset,
    DatasetError,
    load_matte,
    render_background,
    render_episode,
    render_episode_and_matte,
    sample_episode,
    write_clip,
    write_dataset,
)

FPS = 8


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_matte_marks_exactly_the_character_pixels(seed: int) -> None:
    episode = sample_episode(seed, 3)
    frames, matte = render_episode_and_matte(episode, 64, 64, FPS)
    assert matte.dtype == bool and matte.shape == frames.shape[:3]
    assert np.array_equal(frames, render_episode(episode, 64, 64, FPS))  # the frames do not change
    per = 3 * FPS
    for i, seg in enumerate(episode.segments):
        empty = render_background(seg.background, seg.framing, 64, 64)
        f, m = frames[i * per : (i + 1) * per], matte[i * per : (i + 1) * per]
        # off the matte the frame is the empty set (the prop is drawn over characters and is off the matte)
        assert np.array_equal(f[~m], np.broadcast_to(empty, f.shape)[~m])
        differs = np.abs(f - empty).max(axis=-1) > 0
        # on it, character paint (a sprite may share a colour with the set in a few pixels)
        if m.any():
            assert differs[m].mean() > 0.9
        if not seg.actors:
            assert not m.any()
    assert matte.any()


def _board(n: int) -> Storyboard:
    return Storyboard.from_list(
        [{"text": f"Segment {i}.", "requires_scene_transition": False} for i in range(n)]
    )


def test_write_clip_round_trips_the_matte(tmp_path: Path) -> None:
    frames = np.zeros((24, 8, 8, 3), np.uint8)
    matte = np.zeros((24, 8, 8), np.float32)
    matte[3, 2:4, 5] = 1.0
    matte[4, 0, 0] = 0.5
    write_clip(tmp_path / "c", frames, _board(1), FPS, matte=matte)
    raw = load_matte(tmp_path / "c")
    assert (
        raw.dtype == np.uint8 and raw[3, 2, 5] == 255 and raw[4, 0, 0] == 128 and raw.sum() == 2 * 255 + 128
    )
    clip = ClipDataset(tmp_path)[0]
    assert clip.matte is not None and clip.matte[3, 3, 5] == 1.0 and clip.matte.dtype == np.float32
    assert np.array_equal(ClipDataset(tmp_path).matte(0), raw)
    # a clip without a matte has None
    write_clip(tmp_path / "d", frames, _board(1), FPS)
    assert ClipDataset(tmp_path)[1].matte is None and ClipDataset(tmp_path).matte(1) is None


@pytest.mark.parametrize(
    ("matte", "message"),
    [
        (np.zeros((23, 8, 8), bool), r"matte shape \(23, 8, 8\) differs from the frames' \(24, 8, 8\)"),
        (np.full((24, 8, 8), 1.5, np.float32), r"float matte must hold values in \[0, 1\]"),
        (np.zeros((24, 8, 8), np.int32), "matte dtype must be bool, uint8 or float, got int32"),
        (np.zeros((24, 8, 8, 1), bool), r"matte must have shape \[T, H, W\]"),
    ],
)
def test_write_clip_rejects_a_bad_matte(tmp_path: Path, matte: np.ndarray, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        write_clip(tmp_path / "c", np.zeros((24, 8, 8, 3), np.uint8), _board(1), FPS, matte=matte)
    assert not (tmp_path / "c").exists()  # nothing half-written


def test_png_matte_sequence_reads_grey_or_alpha_and_is_checked(tmp_path: Path) -> None:
    clip = tmp_path / "c"
    write_clip(clip, np.zeros((24, 8, 8, 3), np.uint8), _board(1), FPS)
    (clip / "matte").mkdir()
    for i in range(24):
        rgba = np.zeros((8, 8, 4), np.uint8)
        rgba[..., 3] = 200 if i == 5 else 0
        rgba[..., :3] = 255  # colour is ignored: the alpha is the matte
        Image.fromarray(rgba, "RGBA").save(clip / "matte" / f"{i:04d}.png")
    matte = ClipDataset(tmp_path).matte(0)
    assert matte.shape == (24, 8, 8) and matte[5].min() == 200 and matte[:5].max() == 0
    Image.fromarray(np.full((8, 8), 7, np.uint8), "L").save(clip / "matte" / "0003.png")
    assert ClipDataset(tmp_path).matte(0)[3].max() == 7
    Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB").save(clip / "matte" / "0004.png")
    with pytest.raises(DatasetError, match="0004.png: PNG mode must be one of L, LA, RGBA, got RGB"):
        ClipDataset(tmp_path).matte(0)
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(clip / "matte" / "0004.png")
    (clip / "matte" / "0023.png").unlink()
    with pytest.raises(DatasetError, match="matte is 23 frames of 8x8 but the clip's frames are 24 of 8x8"):
        ClipDataset(tmp_path).matte(0)
    with pytest.raises(DatasetError, match="matte is 23 frames"):
        ClipDataset(tmp_path)[0]


def test_write_dataset_writes_the_toon_world_mattes(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", n_clips=2, segments_range=(1, 2), height=32, width=32, fps=FPS)
    ds = ClipDataset(root)
    for i in range(len(ds)):
        clip = ds[i]
        episode = clip.plan
        _, matte = render_episode_and_matte(episode, 32, 32, FPS)
        assert np.array_equal(ds.matte(i), matte.astype(np.uint8) * 255)
