"""The weight average (ema_decay): its arithmetic, its state, and a stage that ends on the average and
resumes exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from ttt_engine.models.loading import load_video_dit
from ttt_engine.train.checkpoint import STATE_FILE, ResumeError, list_checkpoints, load_state, new_model_parts
from ttt_engine.train.config import ConfigError
from ttt_engine.train.ema import WARMUP_OFFSET, WeightAverage, trained_parameters
from ttt_engine.train.trainer import StepReport, Trainer

from .conftest import tiny_config
from .test_trainer import _stage


def test_average_follows_the_formula_with_its_warm_up() -> None:
    layer = nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    params = trained_parameters({"m": layer})
    assert set(params) == {"m.weight"}
    ema = WeightAverage(params, decay=0.9)
    expected = layer.weight.detach().clone()
    for step in range(1, 30):
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight))
        d = min(0.9, (1 + step) / (WARMUP_OFFSET + step))
        expected = d * expected + (1 - d) * layer.weight.detach()
        ema.update(step)
    assert ema.decay_at(1) == pytest.approx(2 / (WARMUP_OFFSET + 1)) and ema.decay_at(1000) == 0.9
    assert torch.allclose(ema.shadow["m.weight"], expected, atol=1e-6)
    ema.copy_to_params()
    assert torch.allclose(layer.weight, expected, atol=1e-6)


def test_state_round_trips_and_refuses_another_model() -> None:
    a = nn.Linear(3, 2)
    ema = WeightAverage(trained_parameters({"m": a}), decay=0.99)
    with torch.no_grad():
        a.weight.mul_(2)
    ema.update(5)
    other = WeightAverage(trained_parameters({"m": nn.Linear(3, 2)}), decay=0.99)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    with pytest.raises(ResumeError, match="other parameters"):
        WeightAverage(trained_parameters({"n": nn.Linear(3, 2)}), 0.99).load_state_dict(ema.state_dict())
    with pytest.raises(ResumeError, match="decay 0.99, the config 0.9"):
        WeightAverage(trained_parameters({"m": nn.Linear(3, 2)}), 0.9).load_state_dict(ema.state_dict())
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="decay must be in"):
            WeightAverage({}, bad)


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_config_rejects_a_decay_outside_0_1(tmp_path: Path, toon_dir: Path, bad: float) -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.ema_decay: expected a number in \[0, 1\)"):
        tiny_config(tmp_path, toon_dir, [_stage("3s", steps=1, ema_decay=bad)])


def test_stage_ends_on_the_average_of_its_steps(tmp_path: Path, toon_dir: Path) -> None:
    """The exported transformer is the EMA, computed here by hand, of the weights after each step."""
    config = tiny_config(tmp_path / "run", toon_dir, [_stage("3s", steps=5, ema_decay=0.6)])
    # the run's initial weights: new_model_parts seeds itself, so the same call builds the same model
    initial = {
        k: v.detach().clone()
        for k, v in new_model_parts(config.model, config.seed).transformer.named_parameters()
    }
    seen: list[dict[str, torch.Tensor]] = []

    def record(t: Trainer, report: StepReport) -> None:  # runs before the stage's end swaps in the average
        seen.append({k: v.detach().clone() for k, v in t.parts.transformer.named_parameters()})

    out = Trainer(config, callbacks=[record], progress=False).run()
    assert len(seen) == 5
    average = dict(initial)
    schedule = WeightAverage({}, 0.6)
    for step, weights in enumerate(seen, start=1):
        d = schedule.decay_at(step)
        average = {k: d * average[k] + (1 - d) * weights[k] for k in average}
    exported = load_video_dit(out / "transformer").state_dict()
    for k, v in average.items():
        assert torch.allclose(exported[k], v, atol=1e-6), k
    moved = [k for k in average if not torch.allclose(seen[-1][k], average[k], atol=1e-5)]
    assert moved, "the average equals the last step's weights: the test cannot tell them apart"


def test_resume_mid_stage_averages_as_an_uninterrupted_run(tmp_path: Path, toon_dir: Path) -> None:
    stages = [_stage("3s", steps=4, batch_size=1, ema_decay=0.7)]
    config = tiny_config(tmp_path / "run", toon_dir, stages, checkpoint_every=2, keep_checkpoints=5)
    full = Trainer(config, progress=False)
    full.run()
    full_weights = {k: v.clone() for k, v in full.parts.transformer.state_dict().items()}
    half = [c for c in list_checkpoints(tmp_path / "run") if c.name.endswith("step0000002")]
    assert load_state(half[0])["ema"]["decay"] == 0.7
    saved = tmp_path / "half"
    shutil.copytree(half[0], saved)
    resumed = Trainer(config, resume=saved, progress=False)
    resumed.run()
    assert resumed.losses == pytest.approx(full.losses[2:], abs=1e-6, rel=0)
    for k, v in resumed.parts.transformer.state_dict().items():
        assert torch.allclose(v, full_weights[k], atol=1e-6, rtol=0), k

    state = load_state(saved)  # a checkpoint written without an average cannot resume an averaging stage
    state["ema"] = None
    torch.save(state, saved / STATE_FILE)
    with pytest.raises(ResumeError, match="has no weight average"):
        Trainer(config, resume=saved, progress=False).run()
