"""Toon-world dataset: write / read round trip, PNG sequences, corrupt datasets, CLI."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ttt_engine.storyboard import Storyboard
from ttt_engine.toonworld import (
    ClipDataset,
    DatasetError,
    Episode,
    episode_storyboard,
    load_frames,
    render_episode,
    write_clip,
    write_dataset,
)
from ttt_engine.toonworld.cli import register


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("toon") / "ds"
    write_dataset(root, n_clips=4, segments_range=(1, 3), height=48, width=64, fps=4, seed=7)
    return root


def _copy(dataset, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(dataset, dst)
    return dst


def test_round_trip(dataset) -> None:
    index = json.loads((dataset / "dataset.json").read_text())
    assert index["version"] == 1 and index["fps"] == 4 and (index["height"], index["width"]) == (48, 64)
    ds = ClipDataset(dataset)
    assert len(ds) == 4 and ds.names == index["clips"]
    lengths = set()
    for clip in ds:
        episode = clip.plan
        assert isinstance(episode, Episode)
        n = len(episode)
        lengths.add(n)
        assert clip.frames.shape == (n * 12, 48, 64, 3) and clip.frames.dtype == np.float32
        expected = render_episode(episode, 48, 64, 4)
        assert np.abs(clip.frames - expected).max() <= 0.5 / 255 + 1e-6  # uint8 storage
        assert clip.storyboard == episode_storyboard(episode)
        assert clip.meta["n_segments"] == n and clip.meta["frames_per_segment"] == 12 and clip.fps == 4
    assert lengths <= {1, 2, 3} and len(lengths) > 1


def test_same_seed_same_dataset(dataset, tmp_path) -> None:
    again = write_dataset(
        tmp_path / "again", n_clips=2, segments_range=(1, 3), height=48, width=64, fps=4, seed=7
    )
    for name in ("clip_000000", "clip_000001"):
        np.testing.assert_array_equal(load_frames(again / name), load_frames(dataset / name))
        assert (again / name / "storyboard.json").read_text() == (
            dataset / name / "storyboard.json"
        ).read_text()


def test_png_sequence_clip_without_index(tmp_path) -> None:
    """A user's own footage: numbered PNGs, a storyboard and a meta.json with the fps; no dataset.json."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 20, 30, 3), dtype=np.uint8)
    clip = tmp_path / "my_shot"
    (clip / "frames").mkdir(parents=True)
    for i, f in enumerate(frames):
        mode = "RGBA" if i % 2 else "RGB"
        img = Image.fromarray(f).convert(mode)
        img.save(clip / "frames" / f"{i:04d}.png")
    Storyboard.from_texts(["Tom the cat runs left. In the kitchen. A wide shot."]).dump(
        clip / "storyboard.json"
    )
    (clip / "meta.json").write_text(json.dumps({"fps": 2}))
    (tmp_path / "notes").mkdir()  # folders without a storyboard are not clips
    ds = ClipDataset(tmp_path)
    assert ds.names == ["my_shot"]
    loaded = ds[0]
    np.testing.assert_allclose(loaded.frames, frames / 255.0, atol=1e-6)
    assert loaded.plan is None and loaded.meta["n_segments"] == 1


def test_write_dataset_refuses_to_overwrite(dataset) -> None:
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(dataset, n_clips=1)


def test_write_dataset_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="n_clips"):
        write_dataset(tmp_path / "a", n_clips=0)
    with pytest.raises(ValueError, match="segments_range"):
        write_dataset(tmp_path / "b", n_clips=1, segments_range=(3, 2))


def _corrupt_cases():
    def missing_frames(root):
        (root / "clip_000000" / "frames.npy").unlink()

    def float_frames(root):
        np.save(root / "clip_000000" / "frames.npy", np.zeros((12, 48, 64, 3), np.float32))

    def wrong_shape(root):
        np.save(root / "clip_000000" / "frames.npy", np.zeros((12, 48, 64), np.uint8))

    def segment_count(root):
        p = root / "clip_000000" / "storyboard.json"
        board = json.loads(p.read_text())
        p.write_text(json.dumps(board + [{"text": "One more segment."}]))

    def bad_storyboard(root):
        (root / "clip_000000" / "storyboard.json").write_text('[{"text": ""}]')

    def missing_storyboard(root):
        (root / "clip_000000" / "storyboard.json").unlink()

    def meta_no_fps(root):
        (root / "clip_000000" / "meta.json").write_text("{}")

    def meta_height(root):
        p = root / "clip_000000" / "meta.json"
        p.write_text(json.dumps({**json.loads(p.read_text()), "height": 99}))

    def other_size(root):
        frames = load_frames(root / "clip_000000")
        np.save(root / "clip_000000" / "frames.npy", frames[:, :32])
        p = root / "clip_000000" / "meta.json"
        meta = json.loads(p.read_text())
        meta.pop("height")
        p.write_text(json.dumps(meta))

    return {
        "missing-frames": (missing_frames, r"no frames; expected frames.npy"),
        "float-frames": (float_frames, r"dtype must be uint8, got float32"),
        "wrong-shape": (wrong_shape, r"shape must be \[T, H, W, 3\]"),
        "segment-count": (segment_count, r"frames but the storyboard has \d+ segments x 3 s x 4 fps"),
        "bad-storyboard": (bad_storyboard, r"storyboard.json: segment 0: field 'text' is empty"),
        "missing-storyboard": (missing_storyboard, r"missing storyboard"),
        "meta-no-fps": (meta_no_fps, r"meta.json: field 'fps' must be a positive integer, got None"),
        "meta-height": (meta_height, r"height is 99 but the clip has 48"),
        "size-vs-index": (other_size, r"height 32 differs from the dataset's 48"),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_corrupt_clip_errors(dataset, tmp_path, case) -> None:
    corrupt, message = _corrupt_cases()[case]
    root = _copy(dataset, tmp_path)
    corrupt(root)
    ds = ClipDataset(root)
    with pytest.raises(DatasetError, match=message):
        ds[0]
    ds[1]  # other clips still load


def test_corrupt_index_errors(dataset, tmp_path) -> None:
    root = _copy(dataset, tmp_path)
    index = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**index, "clips": index["clips"] + ["clip_999999"]}))
    with pytest.raises(DatasetError, match="lists clip 'clip_999999'"):
        ClipDataset(root)
    (root / "dataset.json").write_text(json.dumps({**index, "version": 7}))
    with pytest.raises(DatasetError, match="unsupported version 7"):
        ClipDataset(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        ClipDataset(root)
    with pytest.raises(DatasetError, match="not found"):
        ClipDataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no dataset.json and no clip folders"):
        ClipDataset(tmp_path / "copy" / "clip_000000")


def test_png_gap_error(tmp_path) -> None:
    clip = tmp_path / "c"
    (clip / "frames").mkdir(parents=True)
    for i in (0, 1, 3):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(clip / "frames" / f"{i:04d}.png")
    with pytest.raises(DatasetError, match=r"gaps; missing frame numbers \[2\]"):
        load_frames(clip)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(clip / "frames" / "0002.png")
    with pytest.raises(DatasetError, match="mode must be one of RGB, RGBA, got L"):
        load_frames(clip)


def test_write_clip_checks_frame_count(tmp_path) -> None:
    board = Storyboard.from_texts(["a.", "b."])
    with pytest.raises(DatasetError, match="7 frames for 2 segments at 1 fps; expected 6"):
        write_clip(tmp_path / "c", np.zeros((7, 8, 8, 3), np.uint8), board, fps=1)


def test_cli_writes_dataset(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["toonworld", str(tmp_path / "cli"), "--clips", "2", "--segments", "1", "2", "--fps", "2"]
    )
    assert args.func(args) == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    assert len(ClipDataset(tmp_path / "cli")) == 2
    assert args.func(args) == 2  # exists, no --overwrite
    assert "overwrite" in capsys.readouterr().err
