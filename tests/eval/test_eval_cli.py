"""`ttt-studio eval`: EXR directories, .npy files and clip folders, table and JSON output."""

from __future__ import annotations

import argparse
import json

import numpy as np
import OpenEXR
import pytest

from ttt_engine.conform import convert, exr_colour_attributes
from ttt_engine.eval.cli import load_exr_frames, register, sampling_of
from ttt_engine.toonworld import episode_storyboard, render_episode, sample_episode, write_dataset

FPS = 4


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def _write_exrs(
    directory, frames: np.ndarray, attributes: dict[str, str] | None = None, space: str = "lin_rec709_scene"
) -> None:
    """Display (sRGB-encoded) frames as a half-float EXR sequence in `space` (converted by OCIO; tagged
    unless it is the untagged default), each frame with `attributes` in its header."""
    directory.mkdir()
    tags = exr_colour_attributes(space) if space != "lin_rec709_scene" else {}
    header = {
        "compression": OpenEXR.ZIP_COMPRESSION,
        "type": OpenEXR.scanlineimage,
        **tags,
        **(attributes or {}),
    }
    for t, f in enumerate(frames):
        rgb = convert(f, "srgb_rec709_scene", space)
        rgba = np.concatenate([rgb, np.ones(f.shape[:2] + (1,), np.float32)], -1)
        OpenEXR.File(header, {"RGBA": rgba.astype(np.float16)}).write(str(directory / f"frame.{t:04d}.exr"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    ep = sample_episode(9, 2)
    frames = render_episode(ep, 64, 64, FPS)
    board = episode_storyboard(ep).dump(root / "board.json")
    _write_exrs(root / "exr", frames)
    np.save(root / "noise.npy", np.random.default_rng(0).random(frames.shape, dtype=np.float32))
    return root, frames, board


def test_exr_frames_read_back_as_display_values(clip) -> None:
    root, frames, _ = clip
    loaded = load_exr_frames(root / "exr")
    assert loaded.shape == frames.shape
    np.testing.assert_allclose(loaded, frames, atol=2e-3)  # half-float precision


def test_exr_frames_are_read_in_the_colour_space_their_header_declares(tmp_path, clip) -> None:
    """An ACEScg sequence (colorInteropID lin_ap1_scene + AP1 chromaticities) shows the same display values
    as the Rec.709 one: the eval detectors see the picture, not the working space's numbers."""
    _, frames, _ = clip
    _write_exrs(tmp_path / "aces", frames[:3], space="lin_ap1_scene")
    np.testing.assert_allclose(load_exr_frames(tmp_path / "aces"), frames[:3], atol=3e-3)


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


RECORDED = {
    "ttt_studio/steps": "2",
    "ttt_studio/seed": "3",
    "ttt_studio/sampler": "ddim",
    "ttt_studio/guidance": "1.5",
    "ttt_studio/cfg_schedule": "constant",
}


def test_sampling_is_read_from_the_frames_generate_wrote(clip, tmp_path) -> None:
    root, frames, _ = clip
    _write_exrs(tmp_path / "shot", frames[:2], RECORDED)
    assert sampling_of(tmp_path / "shot") == {
        "steps": 2,
        "seed": 3,
        "sampler": "ddim",
        "guidance_scale": 1.5,
        "cfg_schedule": "constant",
    }
    assert sampling_of(root / "noise.npy") == {} and sampling_of(root / "exr") == {}
    _write_exrs(tmp_path / "bad", frames[:1], {"ttt_studio/steps": "many"})
    with pytest.raises(ValueError, match=r"frame.0000.exr: attribute ttt_studio/steps = 'many' is not a int"):
        sampling_of(tmp_path / "bad")


def test_random_init_errors(clip, capsys) -> None:
    root, _, board = clip
    named = [f"random-init={root / 'noise.npy'}", "--storyboard", str(board), "--fps", str(FPS)]
    assert _run([*named, "--random-init"]) == 2
    assert "a video is named 'random-init', which --random-init adds" in capsys.readouterr().err
    # the default model makes 8 fps videos; these are 4 fps
    assert (
        _run([str(root / "noise.npy"), "--storyboard", str(board), "--fps", str(FPS), "--random-init"]) == 2
    )
    assert "makes 8 fps videos, the videos are 4 fps" in capsys.readouterr().err


@pytest.mark.slow
def test_random_init_beside_samples_like_the_first_video(tmp_path, capsys) -> None:
    """`--random-init` generates the storyboard with a random-init copy of the default model, sampled as the
    first video's EXR attributes record: the same frames as that copy generating with those settings."""
    from ttt_engine.default_model import default_model_dir
    from ttt_engine.eval import evaluate
    from ttt_engine.eval.compare import display_frames, random_init_like
    from ttt_engine.pipeline.video_pipeline import VideoPipeline

    episode = sample_episode(9, 2)
    board = episode_storyboard(episode).dump(tmp_path / "board.json")
    _write_exrs(tmp_path / "shot", render_episode(episode, 64, 64, 8), RECORDED)
    argv = [str(tmp_path / "shot"), "--storyboard", str(board), "--fps", "8", "--random-init"]
    assert _run([*argv, "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "2 ddim steps, constant guidance 1.5, seed 3" in out and "random-init" in out.splitlines()[1]
    reports = json.loads((tmp_path / "r.json").read_text())
    assert set(reports) == {"shot", "random-init"}
    assert f"adherence shot: {reports['shot']['adherence']:.3f} = " in out

    pipe = random_init_like(VideoPipeline.from_folder(default_model_dir()))
    params = pipe.generation_params(
        steps=2, seed=3, sampler="ddim", guidance_scale=1.5, cfg_schedule="constant"
    )
    frames = pipe.generate(episode_storyboard(episode), params).frames
    direct = evaluate(display_frames(frames, pipe.spec.colorspace), episode_storyboard(episode), 8).to_dict()
    assert reports["random-init"]["smoothness"] == pytest.approx(direct["smoothness"], abs=1e-6)
    assert reports["random-init"]["adherence"] == direct["adherence"]
