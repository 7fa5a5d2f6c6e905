"""v-prediction diffusion loss with zero terminal SNR over 1000 DDPM steps (ttt-mlp.md section 3).

    t        ~ U{0, ..., 999}
    x_t      = sqrt(acp_t) x_0 + sqrt(1 - acp_t) eps           DDPMScheduler.add_noise
    v_target = sqrt(acp_t) eps - sqrt(1 - acp_t) x_0           DDPMScheduler.get_velocity
    loss     = mean((model(x_t, text, t) - v_target)^2)        in fp32
             = sum(w (model - v_target)^2) / sum(w)          with per-pixel weights w (subject mattes)

The beta schedule is the model's (its scheduler/ config, CogVideoX's scaled_linear 0.00085..0.012 by
default, with CogVideoX's SNR shift when it has one), rescaled to zero terminal SNR exactly as the
pipeline's samplers are (pipeline/schedulers.py), so training and sampling see the same alphas_cumprod.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..pipeline.schedulers import _shifted_betas, schedule_from_config


def make_noise_scheduler(config: dict[str, Any] | None = None) -> DDPMScheduler:
    """The training scheduler: DDPM, v-prediction, betas rescaled to zero terminal SNR.

    config: a scheduler config dict (e.g. the model folder's scheduler/scheduler_config.json) or None
    for CogVideoX's schedule.
    """
    schedule = schedule_from_config(config)
    kwargs: dict[str, Any] = {
        "num_train_timesteps": schedule["num_train_timesteps"],
        "beta_schedule": schedule["beta_schedule"],
        "beta_start": schedule["beta_start"],
        "beta_end": schedule["beta_end"],
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "clip_sample": False,
    }
    if float(schedule["snr_shift_scale"]) != 1.0:
        kwargs["trained_betas"] = _shifted_betas(schedule)
    return DDPMScheduler(**kwargs)


class VelocityLoss:
    """Noising and the v-prediction target for latents [B, F, C, h, w] (any shape with batch first)."""

    def __init__(self, scheduler: DDPMScheduler) -> None:
        if scheduler.config.prediction_type != "v_prediction":
            raise ValueError(
                f"scheduler: expected prediction_type 'v_prediction', got {scheduler.config.prediction_type!r}"
            )
        self.scheduler = scheduler
        self.num_timesteps = int(scheduler.config.num_train_timesteps)

    def sample_timesteps(self, batch: int, generator: torch.Generator, shift: float = 1.0) -> torch.Tensor:
        """[batch] long in [0, num_timesteps), drawn on the generator's device (CPU).

        shift 1: uniform. shift > 1 draws noisier timesteps more often: u ~ U(0, 1) is warped to
        shift * u / (1 + (shift - 1) * u) (the timestep shift of SD3 and CogVideoX 1.5, here applied to
        where training looks, not to the schedule), so the median is shift / (1 + shift) of the range.
        The noisiest steps are where a sampler fixes layout and motion, and where only the text can say
        which way a character runs: later, the noisy frames themselves show it.
        """
        if shift <= 0:
            raise ValueError(f"timestep shift: expected a number > 0, got {shift!r}")
        if shift == 1.0:
            return torch.randint(0, self.num_timesteps, (batch,), generator=generator)
        u = torch.rand(batch, generator=generator, dtype=torch.float64)
        warped = shift * u / (1.0 + (shift - 1.0) * u)
        return (warped * self.num_timesteps).long().clamp_(0, self.num_timesteps - 1)

    def noisy_and_target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, v_target), both shaped like latents, computed in fp32."""
        if latents.shape != noise.shape:
            raise ValueError(f"noise: expected shape {tuple(latents.shape)}, got {tuple(noise.shape)}")
        if timesteps.shape != (latents.shape[0],):
            raise ValueError(f"timesteps: expected shape ({latents.shape[0]},), got {tuple(timesteps.shape)}")
        x0, eps = latents.float(), noise.float()
        t = timesteps.to(latents.device)
        return self.scheduler.add_noise(x0, eps, t), self.scheduler.get_velocity(x0, eps, t)

    @staticmethod
    def loss(
        prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MSE in fp32 (a bf16 prediction is upcast); with weight (broadcastable to the target, e.g.
        [B, F, 1, h, w]) the weighted mean sum(w e) / sum(w), so the loss keeps its scale."""
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction: expected shape {tuple(target.shape)} (the target's), got {tuple(prediction.shape)}"
            )
        if weight is None:
            return F.mse_loss(prediction.float(), target.float())
        err = (prediction.float() - target.float()) ** 2
        w = weight.to(err.device, torch.float32).expand_as(err)
        return (w * err).sum() / w.sum()

    @staticmethod
    def per_sample_loss(
        prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B] losses: `loss` of each sample on its own (its weighted mean with weight), in fp32."""
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction: expected shape {tuple(target.shape)} (the target's), got {tuple(prediction.shape)}"
            )
        err = (prediction.float() - target.float()) ** 2
        if weight is None:
            return err.flatten(1).mean(1)
        w = weight.to(err.device, torch.float32).expand_as(err)
        return (w * err).flatten(1).sum(1) / w.flatten(1).sum(1)

    @staticmethod
    def motion_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean square of how the error changes from one latent frame to the next ([B, F, ...], frames on
        axis 1), in fp32. An error shared by every frame (a wrong colour) costs nothing here; one that
        differs between frames (a character in the wrong place as it moves) costs up to four times its
        square. Added to the loss with a stage's motion_weight, it weighs what moves."""
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction: expected shape {tuple(target.shape)} (the target's), got {tuple(prediction.shape)}"
            )
        if prediction.dim() < 2 or prediction.shape[1] < 2:
            raise ValueError(
                f"motion_loss: needs at least 2 frames on axis 1, got shape {tuple(prediction.shape)}"
            )
        err = prediction.float() - target.float()
        return ((err[:, 1:] - err[:, :-1]) ** 2).mean()
