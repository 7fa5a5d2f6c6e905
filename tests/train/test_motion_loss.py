"""motion_weight: a DiT stage can add the loss on the error's change from frame to frame."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttt_engine.train.diffusion_loss import VelocityLoss
from ttt_engine.train.trainer import Trainer

from .conftest import tiny_config


def test_an_error_shared_by_every_frame_costs_nothing_and_a_moving_one_does() -> None:
    target = torch.randn(2, 5, 3, 4, 4)
    still = target + 0.5  # the same error in every frame
    assert float(VelocityLoss.motion_loss(still, target)) == pytest.approx(0.0, abs=1e-12)
    moving = target.clone()
    moving[:, 2, :, 1, 1] += 1.0  # wrong in one frame only: two frame-to-frame changes of size 1
    expected = (
        2 * 2 * 3 / (2 * 4 * 3 * 4 * 4)
    )  # (batch x 2 changes x channels) of 1^2 over the [2, 4, 3, 4, 4] differences
    assert float(VelocityLoss.motion_loss(moving, target)) == pytest.approx(expected)
    assert VelocityLoss.motion_loss(moving.bfloat16(), target).dtype == torch.float32


def test_motion_loss_needs_two_frames_and_matching_shapes() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        VelocityLoss.motion_loss(torch.zeros(2, 1, 3), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="prediction: expected shape"):
        VelocityLoss.motion_loss(torch.zeros(2, 3, 3), torch.zeros(2, 4, 3))


def test_the_trainer_adds_the_weighted_motion_loss(tmp_path: Path, toon_dir: Path) -> None:
    def run(name: str, weight: float) -> Trainer:
        stage = {
            "name": "3s",
            "type": "dit",
            "segments": 1,
            "steps": 1,
            "batch_size": 2,
            "motion_weight": weight,
        }
        trainer = Trainer(tiny_config(tmp_path / name, toon_dir, [stage]), progress=False)
        trainer.run()
        return trainer

    plain, weighted = run("plain", 0.0), run("weighted", 2.0)
    # same items, noise and timesteps at step 1: the weighted loss is the plain one plus 2 x motion_loss > 0
    assert weighted.losses[0] > plain.losses[0]
