from __future__ import annotations

import pytest
import torch

from ttt_engine.pipeline.params import GenerationParams, PipelineError, StepInfo


def test_defaults_follow_the_contract() -> None:
    p = GenerationParams()
    assert (p.steps, p.guidance_scale, p.sampler, p.dtype, p.cpu_offload, p.preview_every) == (
        50,
        6.0,
        "dpmpp_2m",
        "float32",
        False,
        1,
    )
    assert GenerationParams(dtype="bfloat16").torch_dtype is torch.bfloat16


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("steps", 0, "steps"),
        ("steps", 1001, "at most 1000"),
        ("steps", 2.5, "steps"),
        ("height", -8, "height"),
        ("width", "64", "width"),
        ("guidance_scale", -1.0, "guidance_scale"),
        ("guidance_scale", float("nan"), "guidance_scale"),
        ("sampler", "euler", "dpmpp_2m"),
        ("dtype", "float64", "bfloat16"),
        ("seed", -1, "seed"),
        ("cpu_offload", "yes", "cpu_offload"),
        ("preview_every", -1, "preview_every"),
        ("cfg_schedule", "cosine", "dynamic"),
        ("unguided_steps", -1, "unguided_steps"),
        ("unguided_steps", 51, "steps=50"),
        ("unguided_steps", True, "unguided_steps"),
    ],
)
def test_bad_values_name_the_field_and_the_value(field: str, value: object, needle: str) -> None:
    with pytest.raises(PipelineError, match=needle) as info:
        GenerationParams(**{field: value})
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


def test_dict_round_trip_and_unknown_fields() -> None:
    p = GenerationParams(height=64, width=96, steps=7, seed=3, sampler="ddim")
    assert GenerationParams.from_dict(p.to_dict()) == p
    with pytest.raises(PipelineError, match="unknown fields \\['cfg'\\]"):
        GenerationParams.from_dict({"cfg": 3})


def test_step_info_progress() -> None:
    assert StepInfo(step=5, total=20, timestep=700, elapsed_s=1.0).progress == 0.25
