"""timestep_shift: a DiT stage can train on noisy timesteps more often than uniform sampling would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttt_engine.train.config import ConfigError, TrainConfig
from ttt_engine.train.diffusion_loss import VelocityLoss, make_noise_scheduler
from ttt_engine.train.trainer import Trainer

from .conftest import tiny_config, tiny_config_dict


def test_shift_one_is_the_uniform_draw() -> None:
    vl = VelocityLoss(make_noise_scheduler())
    a = vl.sample_timesteps(64, torch.Generator().manual_seed(3), shift=1.0)
    b = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_shift_moves_the_draws_towards_noise_as_the_warp_says() -> None:
    vl = VelocityLoss(make_noise_scheduler())
    t = vl.sample_timesteps(20000, torch.Generator().manual_seed(0), shift=3.0)
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    # u ~ U(0, 1) -> 3u / (1 + 2u): median 0.75, and t >= 800 when u >= 4/7
    assert float(t.float().median()) == pytest.approx(750, abs=15)
    assert float((t >= 800).float().mean()) == pytest.approx(3 / 7, abs=0.015)
    again = vl.sample_timesteps(20000, torch.Generator().manual_seed(0), shift=3.0)
    assert torch.equal(t, again)
    # a shift below 1 leans the other way
    low = vl.sample_timesteps(20000, torch.Generator().manual_seed(0), shift=1 / 3)
    assert float(low.float().median()) == pytest.approx(250, abs=15)


def test_shift_must_be_positive() -> None:
    vl = VelocityLoss(make_noise_scheduler())
    with pytest.raises(ValueError, match="timestep shift: expected a number > 0, got 0.0"):
        vl.sample_timesteps(4, torch.Generator(), shift=0.0)


def test_timestep_shift_is_validated(tmp_path: Path, toon_dir: Path) -> None:
    stage = {"name": "3s", "type": "dit", "segments": 1, "steps": 1, "timestep_shift": 0.0}
    with pytest.raises(ConfigError, match=r"stages\[0\].timestep_shift: expected a number > 0"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path, toon_dir, [stage]))
    vae_stage = {"name": "vae", "type": "vae", "steps": 1, "timestep_shift": 2.0}
    with pytest.raises(ConfigError, match="timestep_shift: not used by a 'vae' stage"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path, toon_dir, [vae_stage]))


def test_the_trainer_draws_with_the_stage_shift(
    tmp_path: Path, toon_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shifts: list[float] = []
    original = VelocityLoss.sample_timesteps

    def recording(
        self: VelocityLoss, batch: int, generator: torch.Generator, shift: float = 1.0
    ) -> torch.Tensor:
        shifts.append(shift)
        return original(self, batch, generator, shift)

    monkeypatch.setattr(VelocityLoss, "sample_timesteps", recording)
    stage = {"name": "3s", "type": "dit", "segments": 1, "steps": 2, "batch_size": 2, "timestep_shift": 4.0}
    trainer = Trainer(tiny_config(tmp_path / "run", toon_dir, [stage]), progress=False)
    trainer.run()
    # one draw per sample (each sample has its own generator): 2 steps x batch 2
    assert shifts == [4.0] * 4 and len(trainer.losses) == 2
