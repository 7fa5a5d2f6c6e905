"""Samplers from diffusers, configured as the paper trains (ttt-mlp.md sections 3-4), and the dynamic CFG scale.

Both samplers use v-prediction, zero terminal SNR (the last training timestep is pure noise) and
"trailing" timestep spacing (so the first step starts at t = 999, where zero SNR puts pure noise).
A diffusers CogVideoX folder's scheduler/ config gives the beta schedule; CogVideoX's own scheduler
classes also apply an SNR shift (`snr_shift_scale`), which we reproduce exactly through trained betas so
the plain DDIMScheduler / DPMSolverMultistepScheduler see the same alphas_cumprod.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .params import SAMPLERS, PipelineError

log = logging.getLogger(__name__)

# CogVideoX's training schedule (its scheduler_config.json); used when a model brings none
DEFAULT_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "snr_shift_scale": 1.0,
}
_SCHEDULE_KEYS = tuple(DEFAULT_SCHEDULE)
SCHEDULER_CONFIG_NAME = "scheduler_config.json"


def _shifted_betas(schedule: dict[str, Any]) -> list[float]:
    """Betas whose cumulative product is CogVideoX's SNR-shifted alphas_cumprod (before zero-SNR rescale)."""
    base = DDIMScheduler(
        num_train_timesteps=schedule["num_train_timesteps"],
        beta_schedule=schedule["beta_schedule"],
        beta_start=schedule["beta_start"],
        beta_end=schedule["beta_end"],
    )
    acp = base.alphas_cumprod.double()
    shift = float(schedule["snr_shift_scale"])
    acp = acp / (shift + (1 - shift) * acp)
    prev = torch.cat([acp.new_ones(1), acp[:-1]])
    return (1 - acp / prev).tolist()


def schedule_from_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The beta schedule keys we honour from a scheduler config (others are fixed by the paper's recipe)."""
    schedule = dict(DEFAULT_SCHEDULE)
    if config:
        schedule.update({k: config[k] for k in _SCHEDULE_KEYS if k in config})
    shift = schedule["snr_shift_scale"]
    if not isinstance(shift, int | float) or shift <= 0:
        raise PipelineError(f"scheduler config: snr_shift_scale must be a positive number, got {shift!r}")
    pred = (config or {}).get("prediction_type", "v_prediction")
    if pred != "v_prediction":
        raise PipelineError(
            f"scheduler config: prediction_type {pred!r} is not supported; the pipeline samples "
            "v-prediction models only (zero terminal SNR needs v-prediction)"
        )
    return schedule


def make_scheduler(sampler: str, config: dict[str, Any] | None = None) -> SchedulerMixin:
    """A fresh diffusers scheduler for one generation.

    sampler: "dpmpp_2m" -> DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2);
    "ddim" -> DDIMScheduler (eta 0). config: a scheduler config dict (e.g. from a diffusers folder);
    its beta schedule is kept, prediction type / zero SNR / spacing are set to the paper's recipe.
    """
    if sampler not in SAMPLERS:
        raise PipelineError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
    schedule = schedule_from_config(config)
    common: dict[str, Any] = {
        "num_train_timesteps": schedule["num_train_timesteps"],
        "beta_schedule": schedule["beta_schedule"],
        "beta_start": schedule["beta_start"],
        "beta_end": schedule["beta_end"],
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
    }
    if float(schedule["snr_shift_scale"]) != 1.0:
        common["trained_betas"] = _shifted_betas(schedule)
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    return DPMSolverMultistepScheduler(
        **common,
        algorithm_type="dpmsolver++",
        solver_order=2,
        lower_order_final=True,
        final_sigmas_type="zero",
    )


def load_scheduler_config(folder: str | Path) -> dict[str, Any]:
    """Read scheduler/scheduler_config.json style files (folder is the scheduler/ directory)."""
    path = Path(folder) / SCHEDULER_CONFIG_NAME
    if not path.is_file():
        raise PipelineError(f"scheduler: {SCHEDULER_CONFIG_NAME} not found in {folder}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f"scheduler: {path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise PipelineError(f"scheduler: {path} must hold a JSON object, got {type(config).__name__}")
    schedule_from_config(config)  # validate now, not at the first generation
    return config


def save_scheduler_config(folder: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Write our scheduler config (diffusers layout) so from_folder reads back the same schedule."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    schedule = schedule_from_config(config)
    scheduler = make_scheduler("ddim", schedule)
    scheduler.save_config(folder)
    # keep the SNR shift, which DDIMScheduler's own config does not carry
    path = folder / SCHEDULER_CONFIG_NAME
    data = json.loads(path.read_text())
    data.pop("trained_betas", None)
    data.update(schedule)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path


def dynamic_cfg_scale(step: int, steps: int, s: float) -> float:
    """CFG scale for 0-based step `step` of `steps`: 1 + s * (1 - cos(pi * (k / K)^5)) / 2, k = step + 1, K = steps.

    Indexed by the step count (the paper's code indexed it by the DDPM timestep, a bug that made the
    scale jump between 1 and 1 + s). It rises monotonically from ~1 at the first step to exactly 1 + s
    at the last.
    """
    if not 0 <= step < steps:
        raise PipelineError(f"dynamic_cfg_scale: step must be in [0, {steps}), got {step}")
    frac = (step + 1) / steps
    return 1.0 + s * (1.0 - math.cos(math.pi * frac**5)) / 2.0


def cfg_scales(steps: int, guidance_scale: float, schedule: str = "dynamic") -> list[float]:
    """The CFG scale of every step: dynamic (1 -> 1 + s) or constant (s)."""
    if schedule == "dynamic":
        return [dynamic_cfg_scale(k, steps, guidance_scale) for k in range(steps)]
    if schedule == "constant":
        return [float(guidance_scale)] * steps
    raise PipelineError(f"cfg schedule: expected 'dynamic' or 'constant', got {schedule!r}")
