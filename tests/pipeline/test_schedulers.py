from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, DDIMScheduler, DPMSolverMultistepScheduler

from ttt_engine.pipeline.params import PipelineError
from ttt_engine.pipeline.schedulers import (
    cfg_scales,
    dynamic_cfg_scale,
    load_scheduler_config,
    make_scheduler,
    save_scheduler_config,
)


@pytest.mark.parametrize(
    ("sampler", "cls"), [("dpmpp_2m", DPMSolverMultistepScheduler), ("ddim", DDIMScheduler)]
)
def test_samplers_are_v_prediction_zero_terminal_snr_trailing(sampler: str, cls: type) -> None:
    s = make_scheduler(sampler)
    assert type(s) is cls
    cfg = s.config
    assert cfg.prediction_type == "v_prediction"
    assert cfg.rescale_betas_zero_snr is True
    assert cfg.timestep_spacing == "trailing"
    acp = s.alphas_cumprod.double()
    snr = acp / (1 - acp)
    # zero terminal SNR: the last training timestep is pure noise. DDIM keeps exactly 0; DPM-Solver
    # clamps it to 2**-24 so its log-SNR stays finite (diffusers), i.e. SNR ~6e-8.
    assert snr[-1].item() < 1e-7
    if sampler == "ddim":
        assert acp[-1].item() == 0.0
    assert snr[0].item() > 1000  # and the first one almost clean
    s.set_timesteps(10)
    assert int(s.timesteps[0]) == 999  # trailing spacing starts from pure noise


def test_dpm_solver_is_second_order_dpmsolver_pp() -> None:
    cfg = make_scheduler("dpmpp_2m").config
    assert cfg.algorithm_type == "dpmsolver++"
    assert cfg.solver_order == 2


def test_cogvideox_snr_shift_is_reproduced_exactly() -> None:
    """A CogVideoX scheduler config with snr_shift_scale gives the same alphas_cumprod as CogVideoX's class."""
    config = {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "snr_shift_scale": 3.0,
        "prediction_type": "v_prediction",
    }
    ours = make_scheduler("ddim", config)
    ref = CogVideoXDDIMScheduler(**config, rescale_betas_zero_snr=True, timestep_spacing="trailing")
    torch.testing.assert_close(
        ours.alphas_cumprod.double(), ref.alphas_cumprod.double(), atol=2e-6, rtol=1e-4
    )
    plain = make_scheduler("ddim")
    assert not torch.allclose(ours.alphas_cumprod, plain.alphas_cumprod)


def test_scheduler_config_round_trip_and_bad_configs(tmp_path) -> None:
    save_scheduler_config(tmp_path / "scheduler", {"snr_shift_scale": 2.0, "beta_end": 0.02})
    loaded = load_scheduler_config(tmp_path / "scheduler")
    assert loaded["snr_shift_scale"] == 2.0 and loaded["beta_end"] == 0.02
    torch.testing.assert_close(
        make_scheduler("dpmpp_2m", loaded).alphas_cumprod[:-1],
        make_scheduler("dpmpp_2m", {"snr_shift_scale": 2.0, "beta_end": 0.02}).alphas_cumprod[:-1],
    )
    (tmp_path / "eps").mkdir()
    (tmp_path / "eps" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "epsilon"}))
    with pytest.raises(PipelineError, match="prediction_type 'epsilon'"):
        load_scheduler_config(tmp_path / "eps")
    with pytest.raises(PipelineError, match="scheduler_config.json not found"):
        load_scheduler_config(tmp_path / "nothing")
    with pytest.raises(PipelineError, match="sampler"):
        make_scheduler("heun")


@pytest.mark.parametrize("steps", [1, 2, 10, 50])
def test_dynamic_cfg_rises_monotonically_from_1_to_1_plus_s_by_step_count(steps: int) -> None:
    s = 6.0
    scales = cfg_scales(steps, s, "dynamic")
    assert len(scales) == steps
    assert all(b >= a for a, b in zip(scales, scales[1:]))
    assert scales[-1] == pytest.approx(1 + s)
    if steps >= 10:
        assert scales[0] == pytest.approx(1.0, abs=1e-3)
        # the curve is the paper's 1 + s (1 - cos(pi (k/K)^5)) / 2 with k counted in steps
        k = steps // 2
        assert scales[k - 1] == pytest.approx(1 + s * (1 - math.cos(math.pi * (k / steps) ** 5)) / 2)


def test_dynamic_cfg_is_indexed_by_step_not_by_ddpm_timestep() -> None:
    """The paper's code indexed by the timestep: step 0 (t = 999) got ~1 + s. Ours gives ~1 there."""
    sched = make_scheduler("dpmpp_2m")
    sched.set_timesteps(50)
    first_t = int(sched.timesteps[0])
    buggy_first = 1 + 6.0 * (1 - math.cos(math.pi * (first_t / 1000) ** 5)) / 2
    assert buggy_first > 6.5
    assert dynamic_cfg_scale(0, 50, 6.0) < 1.001
    # same value for the same step whatever the sampler's timesteps
    assert cfg_scales(50, 6.0) == cfg_scales(50, 6.0, "dynamic")


def test_constant_cfg_and_bad_steps() -> None:
    assert cfg_scales(4, 5.0, "constant") == [5.0] * 4
    with pytest.raises(PipelineError, match="step must be in"):
        dynamic_cfg_scale(5, 5, 6.0)
    with pytest.raises(PipelineError, match="cfg schedule"):
        cfg_scales(4, 5.0, "linear")
