"""v-prediction with zero terminal SNR: the schedule matches the samplers', the target is the velocity."""

from __future__ import annotations

import pytest
import torch

from ttt_engine.pipeline.schedulers import make_scheduler
from ttt_engine.train.diffusion_loss import VelocityLoss, make_noise_scheduler


@pytest.mark.parametrize("config", [None, {"snr_shift_scale": 3.0}])
def test_schedule_is_the_samplers_with_zero_terminal_snr(config: dict | None) -> None:
    train = make_noise_scheduler(config)
    assert train.config.prediction_type == "v_prediction" and train.config.num_train_timesteps == 1000
    acp = train.alphas_cumprod
    assert acp[-1] == 0.0 and bool((acp[1:] < acp[:-1]).all())
    for sampler in ("ddim", "dpmpp_2m"):
        assert torch.allclose(acp, make_scheduler(sampler, config).alphas_cumprod, atol=1e-7, rtol=0)


def test_noisy_and_velocity_target() -> None:
    vl = VelocityLoss(make_noise_scheduler())
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, 4, 8, 8, generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 500, 999])
    noisy, v = vl.noisy_and_target(x0, eps, t)
    acp = vl.scheduler.alphas_cumprod[t].view(3, 1, 1, 1, 1)
    assert torch.allclose(noisy, acp.sqrt() * x0 + (1 - acp).sqrt() * eps, atol=1e-6)
    assert torch.allclose(v, acp.sqrt() * eps - (1 - acp).sqrt() * x0, atol=1e-6)
    # zero terminal SNR: at t = 999 the input is pure noise and the target is -x0
    assert torch.allclose(noisy[2], eps[2]) and torch.allclose(v[2], -x0[2], atol=1e-6)
    # x0 = sqrt(acp) x_t - sqrt(1 - acp) v recovers the clean latents (the pipeline's preview formula)
    assert torch.allclose(acp.sqrt() * noisy - (1 - acp).sqrt() * v, x0, atol=1e-5)


def test_loss_is_fp32_mse() -> None:
    target = torch.randn(2, 3, 4, 2, 2)
    assert float(VelocityLoss.loss(target.clone(), target)) == 0.0
    pred = (target + 0.5).bfloat16()
    loss = VelocityLoss.loss(pred, target)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(((pred.float() - target) ** 2).mean()))
    with pytest.raises(ValueError, match="prediction"):
        VelocityLoss.loss(target[:1], target)


def test_timesteps_cover_the_range_and_follow_the_generator() -> None:
    vl = VelocityLoss(make_noise_scheduler())
    a = vl.sample_timesteps(4000, torch.Generator().manual_seed(1))
    b = vl.sample_timesteps(4000, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 999 and a.unique().numel() > 900


def test_shape_checks() -> None:
    vl = VelocityLoss(make_noise_scheduler())
    with pytest.raises(ValueError, match="noise"):
        vl.noisy_and_target(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="timesteps"):
        vl.noisy_and_target(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1]))
