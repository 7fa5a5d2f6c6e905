"""`ttt-studio eval`: EXR directories, .npy files and clip folders, table and JSON output."""

from __future__ import annotations

import argparse
import json

import numpy as np
import OpenEXR
import pytest

from ttt_engine.eval.cli import linear_to_srgb, load_exr_frames, register
from ttt_engine.toonworld import episode_storyboard, render_episode, sample_episode, write_dataset

FPS = 4


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    ep = sample_episode(9, 2)
    frames = render_episode(ep, 64, 64, FPS)
    board = episode_storyboard(ep).dump(root / "board.json")
    exr_dir = root / "exr"
    exr_dir.mkdir()
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    for t, f in enumerate(frames):
        rgba = np.concatenate([_srgb_to_linear(f), np.ones(f.shape[:2] + (1,), np.float32)], -1)
        OpenEXR.File(header, {"RGBA": rgba.astype(np.float16)}).write(str(exr_dir / f"frame.{t:04d}.exr"))
    np.save(root / "noise.npy", np.random.default_rng(0).random(frames.shape, dtype=np.float32))
    return root, frames, board


def test_linear_to_srgb() -> None:
    x = np.array([-1.0, 0.0, 0.0031308, 0.18, 1.0, 4.0], np.float32)
    y = linear_to_srgb(x)
    np.testing.assert_allclose(y, [0.0, 0.0, 0.04045, 0.46135, 1.0, 1.0], atol=2e-4)
    grid = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(_srgb_to_linear(grid)), grid, atol=1e-5)


def test_exr_frames_read_back_as_display_values(clip) -> None:
    root, frames, _ = clip
    loaded = load_exr_frames(root / "exr")
    assert loaded.shape == frames.shape
    np.testing.assert_allclose(loaded, frames, atol=2e-3)  # half-float EXR storage


def test_eval_exr_vs_noise_table_and_json(clip, capsys) -> None:
    root, _, board = clip
    out = root / "report.json"
    rc = _run(
        [
            f"default={root / 'exr'}",
            f"random-init={root / 'noise.npy'}",
            "--storyboard",
            str(board),
            "--fps",
            str(FPS),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    header, *_ = table.splitlines()
    assert "default" in header and "random-init" in header
    reports = json.loads(out.read_text())
    assert reports["default"]["adherence"] >= 0.9
    assert reports["random-init"]["adherence"] <= 0.4
    adherence_row = next(line for line in table.splitlines() if line.startswith("adherence"))
    assert adherence_row.split()[1:] == [
        f"{reports['default']['adherence']:.3f}",
        f"{reports['random-init']['adherence']:.3f}",
    ]


def test_eval_clip_folder_with_plan_facts(tmp_path, capsys) -> None:
    root = write_dataset(tmp_path / "ds", n_clips=1, segments_range=(2, 2), fps=FPS, seed=3)
    clip_dir = root / "clip_000000"
    rc = _run(
        [
            str(clip_dir),
            "--storyboard",
            str(clip_dir / "storyboard.json"),
            "--meta",
            str(clip_dir / "meta.json"),
        ]
    )
    assert rc == 0
    assert "clip_000000" in capsys.readouterr().out


def test_eval_errors(clip, tmp_path, capsys) -> None:
    root, _, board = clip
    assert _run([str(root / "noise.npy"), "--storyboard", str(board)]) == 2
    assert "pass --fps" in capsys.readouterr().err
    assert _run([str(root / "noise.npy"), "--storyboard", str(tmp_path / "none.json"), "--fps", "4"]) == 2
    assert "not found" in capsys.readouterr().err
    assert _run([str(root / "noise.npy"), "--storyboard", str(board), "--fps", "8"]) == 2
    assert "frames do not match the storyboard" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run([str(empty), "--storyboard", str(board), "--fps", "4"]) == 2
    assert "no frames" in capsys.readouterr().err
    assert (
        _run([f"a={root / 'noise.npy'}", f"a={root / 'noise.npy'}", "--storyboard", str(board), "--fps", "4"])
        == 2
    )
    assert "two videos named 'a'" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"Z": np.zeros((4, 4), np.float32)}).write(
        str(bad / "0.exr")
    )
    assert _run([str(bad), "--storyboard", str(board), "--fps", "4"]) == 2
    assert "no RGB(A) channels; found ['Z']" in capsys.readouterr().err
