"""`ttt-studio compare`: held-out storyboards, the random-init baseline, summaries and CLI errors."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from ttt_engine.eval import compare as cmp
from ttt_engine.eval.metrics import evaluate
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.toonworld.dataset import write_dataset
from ttt_engine.toonworld.render import render_episode
from ttt_engine.toonworld.world import sample_episode


def test_eval_cases_are_deterministic_and_held_out(tmp_path) -> None:
    a, b = cmp.eval_cases(7, 3), cmp.eval_cases(7, 3)
    assert [c.storyboard.to_list() for c in a] == [c.storyboard.to_list() for c in b]
    assert all(len(c.storyboard) == 7 and len(c.facts) == 7 for c in a)
    assert len({c.seed for c in a}) == 3 and min(c.seed for c in a) >= cmp.EVAL_SEED_BASE
    # a tuning range (first=3) shares no storyboard with the reporting range
    tuning = cmp.eval_cases(7, 3, first=3)
    assert {c.seed for c in tuning}.isdisjoint({c.seed for c in a})
    # training data written with the default seeds never contains an evaluation storyboard
    root = write_dataset(tmp_path / "d", n_clips=4, segments_range=(1, 2), height=32, width=32, fps=8, seed=0)
    texts = {p.read_text() for p in root.glob("clip_*/storyboard.json")}
    assert not any(seg["text"] in t for c in a for seg in c.storyboard.to_list() for t in texts)


def test_eval_cases_follow_the_planners_chase_setting() -> None:
    """--chase-setup 0 gives back the storyboards figures were measured on before chases were staged;
    each case re-plans its own episode (for the rendered ceilings) with its setting."""
    from ttt_engine.toonworld.storyboard_text import episode_storyboard

    new, old = cmp.eval_cases(2, 40), cmp.eval_cases(2, 40, chase_setup_prob=0.0)
    assert [c.seed for c in new] == [c.seed for c in old]
    assert [c.storyboard.to_list() for c in new] != [c.storyboard.to_list() for c in old]
    for case in new + old:
        assert episode_storyboard(case.episode()).to_list() == case.storyboard.to_list()

    def chases(cases: list) -> int:
        return sum("chases" in s["text"] for c in cases for s in c.storyboard.to_list())

    assert chases(new) > chases(old)
    with pytest.raises(ValueError, match="chase_setup_prob"):
        cmp.CompareConfig(chase_setup_prob=2.0)


def test_summary_of_ground_truth_scores_high_and_has_first_last_columns() -> None:
    cases = cmp.eval_cases(3, 2)
    reports = []
    for case in cases:
        frames = render_episode(sample_episode(case.seed, 3), 64, 64, 8)
        reports.append(evaluate(frames, case.storyboard, 8, facts=case.facts))
    summary = cmp.summarise(reports, tail=1)
    assert (
        summary["adherence"] > 0.9
        and summary["adherence_first_1"] > 0.9
        and summary["adherence_last_1"] > 0.9
    )
    noise = np.random.default_rng(0).random((72, 64, 64, 3), dtype=np.float32)
    bad = cmp.summarise([evaluate(noise, cases[0].storyboard, 8, facts=cases[0].facts)], tail=1)
    assert bad["adherence"] < 0.5
    table = cmp.format_summary({"truth": summary, "noise": bad})
    assert "adherence_last_1" in table and "truth" in table.splitlines()[0]


def test_random_init_copy_keeps_the_vae_and_architecture_only() -> None:
    pipe = VideoPipeline.tiny_random(0)
    rand = cmp.random_init_like(pipe, seed=1)
    assert rand.vae is pipe.vae and rand.transformer.config == pipe.transformer.config
    assert rand.fps == pipe.fps and "random-init" in rand.source
    a, b = pipe.transformer.state_dict(), rand.transformer.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    again = cmp.random_init_like(pipe, seed=1)
    assert all(torch.equal(b[k], v) for k, v in again.transformer.state_dict().items())


def test_with_vae_swaps_the_decoder_only_when_the_encoder_is_shared() -> None:
    import copy

    pipe = VideoPipeline.tiny_random(0)
    tuned = copy.deepcopy(pipe.vae)
    with torch.no_grad():
        next(tuned.decoder.parameters()).add_(0.5)  # a fine-tuned decoder
    swapped = cmp.with_vae(pipe, tuned, "m", "tuned/")
    assert swapped.vae is tuned and swapped.transformer is pipe.transformer and "tuned/" in swapped.source
    z = torch.randn(1, 7, tuned.config.latent_channels, 8, 8)
    assert not np.allclose(swapped.decode(z), pipe.decode(z))
    other = copy.deepcopy(pipe.vae)
    with torch.no_grad():
        next(other.encoder.parameters()).add_(0.5)
    with pytest.raises(ValueError, match="--vae: its encoder or latent scale differs from m's"):
        cmp.with_vae(pipe, other, "m", "other/")
    rescaled = copy.deepcopy(pipe.vae)
    rescaled.register_to_config(scaling_factor=2.0)
    with pytest.raises(ValueError, match="--vae: its encoder or latent scale differs from m's"):
        cmp.with_vae(pipe, rescaled, "m", "rescaled/")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ttt-studio")
    cmp.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["random-init"], "'random-init' needs a model before it"),
        (["just-a-path"], "'just-a-path': expected NAME=MODEL_DIR"),
        (["a=/nonexistent/model"], "/nonexistent/model does not exist"),
        (["x=/nonexistent", "--segments", "0"], "CompareConfig.segments: expected >= 1, got 0"),
        (
            ["x=/nonexistent", "--first-storyboard", "-1"],
            "CompareConfig.first_storyboard: expected >= 0, got -1",
        ),
        (["x=/nonexistent", "--unguided-steps", "-1"], "CompareConfig.unguided_steps: expected >= 0, got -1"),
        (
            ["default", "--steps", "6", "--unguided-steps", "7"],
            "unguided_steps: expected an int in [0, steps=6], got 7",
        ),
    ],
)
def test_cli_errors_exit_2_and_say_what_is_wrong(argv, message, capsys) -> None:
    args = _parse(argv)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


def test_default_names_the_shipped_model_alone_or_after_a_name(monkeypatch) -> None:
    from ttt_engine.default_model import default_model_dir

    loaded: list[str] = []
    monkeypatch.setattr(VideoPipeline, "from_folder", staticmethod(lambda path: loaded.append(path) or path))
    models = cmp._load_models(["default", "cfg4=default", "mine=runs/x/model"])
    assert list(models) == ["default", "cfg4", "mine"]
    assert loaded == [str(default_model_dir()), str(default_model_dir()), "runs/x/model"]


def test_reference_arms_render_the_cases_as_is_and_through_the_vae() -> None:
    from ttt_engine.default_model import default_model_dir

    pipe = VideoPipeline.from_folder(default_model_dir())
    cases = cmp.eval_cases(2, 2, first=5)
    rendered = cmp.reference_arm(cmp.RENDERED, pipe)
    trip = cmp.reference_arm(cmp.VAE_ROUND_TRIP, pipe)
    assert rendered.vae_of is None and trip.vae_of is pipe and rendered.size == (64, 64) and rendered.fps == 8
    truth = rendered.frames(cases[0])
    assert np.array_equal(truth, render_episode(sample_episode(cases[0].seed, 2), 64, 64, 8))
    through = trip.frames(cases[0])
    assert through.shape == (49, 64, 64, 3)  # the leading frame, then 2 segments of 24
    err = np.abs(through[1:] - truth).mean()
    assert 0 < err < 0.12, err  # the small VAE blurs (about 0.07 here) but keeps the frames aligned
    summaries, reports = cmp.compare(
        {"rendered": rendered, "vae": trip}, cmp.CompareConfig(segments=2, storyboards=2, first_storyboard=5)
    )
    assert summaries["rendered"]["adherence"] == 1.0
    assert summaries["vae"]["adherence"] > 0.6 and len(reports["vae"]) == 2
    with pytest.raises(ValueError, match="reference arm 'gt': expected 'rendered' or 'vae-round-trip'"):
        cmp.reference_arm("gt", pipe)


def test_reference_arm_needs_a_model_before_it(capsys) -> None:
    args = _parse(["rendered", "default"])
    assert args.func(args) == 2
    assert "'rendered' needs a model before it" in capsys.readouterr().err
