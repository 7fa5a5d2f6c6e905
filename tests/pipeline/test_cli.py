"""`ttt-studio generate`: driven through the parser that `register` builds, as ttt_engine.cli does."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from host_plugin.core.exr_io import read_exr
from ttt_engine.pipeline import cli
from ttt_engine.pipeline.exr_out import gif_frames
from ttt_engine.pipeline.latents_io import load_latents
from ttt_engine.pipeline.video_pipeline import VideoPipeline

from .conftest import storyboard_of


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ttt-studio")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def storyboard_file(tmp_path):
    return storyboard_of(2, transition_at=(1,)).dump(tmp_path / "shot010.json")


def test_generate_two_segments_writes_everything(storyboard_file, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = run_cli(
        [
            "generate",
            str(storyboard_file),
            "-o",
            str(out),
            "--tiny-random",
            "--steps",
            "2",
            "--seed",
            "3",
            "--gif",
        ]
    )
    assert code == 0
    expected = VideoPipeline.tiny_random(0).num_frames(2)
    frames = sorted((out / "frames").glob("*.exr"))
    assert [f.name for f in frames] == [f"shot010.{1001 + i}.exr" for i in range(expected)]
    for frame in frames:  # every file is a readable, finite EXR
        pixels, header = read_exr(frame, check_finite=True)
    assert pixels.shape == (32, 32, 4) and (pixels[..., 3] == 1).all()
    assert header["colorInteropID"] == "lin_rec709_scene" and header["compression"] == "ZIP_COMPRESSION"
    assert header["pixel_types"]["R"] == "HALF"
    # how the shot was sampled, as `ttt-studio eval --random-init` reads it back
    assert header["ttt_studio/seed"] == "3" and header["ttt_studio/steps"] == "2"
    params = VideoPipeline.tiny_random(0).generation_params()
    assert header["ttt_studio/guidance"] == str(params.guidance_scale)
    assert header["ttt_studio/cfg_schedule"] == params.cfg_schedule
    latents, meta = load_latents(out / "latents.safetensors")
    assert (
        latents.shape[1]
        == meta["model"]["transformer"]["first_segment_frames"]
        + meta["model"]["transformer"]["segment_frames"]
    )
    assert json.loads((out / "storyboard.json").read_text())[1]["requires_scene_transition"] is True
    assert len(gif_frames(out / "preview.gif")) >= 2
    printed = capsys.readouterr().out
    assert (
        str(out / "frames") in printed
        and str(out / "latents.safetensors") in printed
        and "preview.gif" in printed
    )


def test_from_latents_decodes_without_sampling(storyboard_file, tmp_path, monkeypatch) -> None:
    first = tmp_path / "a"
    assert (
        run_cli(
            [
                "generate",
                str(storyboard_file),
                "-o",
                str(first),
                "--tiny-random",
                "--steps",
                "2",
                "--seed",
                "7",
            ]
        )
        == 0
    )

    def no_sampling(*args, **kwargs):
        raise AssertionError("sample() must not run with --from-latents")

    monkeypatch.setattr(VideoPipeline, "sample", no_sampling)
    second = tmp_path / "b"
    code = run_cli(
        [
            "generate",
            str(storyboard_file),
            "-o",
            str(second),
            "--tiny-random",
            "--from-latents",
            str(first / "latents.safetensors"),
        ]
    )
    assert code == 0
    a = read_exr(first / "frames" / "shot010.1005.exr")[0]
    b, header = read_exr(second / "frames" / "shot010.1005.exr")
    np.testing.assert_array_equal(a, b)
    assert header["ttt_studio/seed"] == "7"  # how the latents were made, not the (unused) --seed default


def test_errors_are_reported_with_exit_codes(storyboard_file, tmp_path, capsys) -> None:
    # generate without --model (the shipped default, or a clear error): tests/pipeline/test_default_model.py
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"text": "ok"}, {"txt": "typo"}]))
    assert run_cli(["generate", str(bad), "-o", str(tmp_path / "x"), "--tiny-random"]) == 2
    assert "segment 1: unknown field(s) ['txt']" in capsys.readouterr().err
    long = storyboard_of(22).dump(tmp_path / "long.json")
    assert run_cli(["generate", str(long), "-o", str(tmp_path / "x"), "--tiny-random"]) == 2
    assert "at most 21" in capsys.readouterr().err
    assert (
        run_cli(
            ["generate", str(storyboard_file), "-o", str(tmp_path / "x"), "--tiny-random", "--height", "30"]
        )
        == 2
    )
    assert "height 30 must be a multiple of 8" in capsys.readouterr().err
    assert (
        run_cli(
            ["generate", str(storyboard_file), "-o", str(tmp_path / "x"), "--model", str(tmp_path / "none")]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_from_latents_refuses_another_storyboard(storyboard_file, tmp_path, capsys) -> None:
    first = tmp_path / "a"
    assert run_cli(["generate", str(storyboard_file), "-o", str(first), "--tiny-random", "--steps", "1"]) == 0
    other = storyboard_of(1).dump(tmp_path / "other.json")
    code = run_cli(
        [
            "generate",
            str(other),
            "-o",
            str(tmp_path / "b"),
            "--tiny-random",
            "--from-latents",
            str(first / "latents.safetensors"),
        ]
    )
    assert code == 2
    assert "different storyboard" in capsys.readouterr().err


def test_unset_sampling_flags_take_the_models_own_defaults(storyboard_file, tmp_path) -> None:
    tiny = VideoPipeline.tiny_random(0)
    tuned = {"steps": 2, "guidance_scale": 4.5, "cfg_schedule": "constant"}
    folder = VideoPipeline(
        tiny.transformer, tiny.vae, tiny.text_encoder, tiny.scheduler_config, sampling=tuned
    ).save_folder(tmp_path / "model")
    base = ["generate", str(storyboard_file), "--model", str(folder)]
    assert run_cli([*base, "-o", str(tmp_path / "a")]) == 0
    params = load_latents(tmp_path / "a" / "latents.safetensors")[1]["params"]
    assert (params["steps"], params["guidance_scale"], params["cfg_schedule"]) == (2, 4.5, "constant")
    assert run_cli([*base, "-o", str(tmp_path / "b"), "--guidance", "1.5", "--steps", "1"]) == 0
    params = load_latents(tmp_path / "b" / "latents.safetensors")[1]["params"]
    assert (params["steps"], params["guidance_scale"], params["cfg_schedule"]) == (1, 1.5, "constant")
