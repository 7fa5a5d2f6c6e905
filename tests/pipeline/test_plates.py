"""Plates into generation on the tiny random pipeline: restyle (SDEdit) and continue (inpainting in time).

The tiny VAE is random, so decode(encode(plate)) is far from the plate (mean abs diff ~0.16); closeness is
measured against the plate's latents and against that VAE round trip, and against the raw plate only
where the order must hold whatever the VAE does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ttt_engine.pipeline.params import GenerationParams, PipelineError
from ttt_engine.pipeline.video_pipeline import VideoPipeline

from .conftest import storyboard_of


def moving_plate(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Model-space (0..1) [T, H, W, 3]: colour ramps that drift over time, plus a little texture."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, frames)[:, None, None]
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    display = np.stack([0.2 + 0.6 * xx + 0 * t, 0.5 * yy + 0.3 * t, 0.7 - 0.4 * t + 0 * xx], axis=-1)
    display = display + 0.05 * rng.standard_normal(display.shape)
    return np.clip(display, 0, 1).astype(np.float32)


def mad(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


BASE = GenerationParams(steps=4, seed=2, preview_every=0)  # dpmpp_2m
STRENGTHS = (1.0, 0.5, 0.25)


@dataclasses.dataclass
class Run:
    latents: torch.Tensor
    frames: np.ndarray
    steps: list


@pytest.fixture(scope="module")
def two_segments(tiny_pipe: VideoPipeline) -> tuple:
    h, w = tiny_pipe.default_size
    return storyboard_of(2), moving_plate(tiny_pipe.num_frames(2), h, w)


@pytest.fixture(scope="module")
def runs(tiny_pipe: VideoPipeline, two_segments) -> dict:
    """One text-to-video run, restyles at STRENGTHS and a continue of segment 0, all with BASE's seed."""
    sb, plate = two_segments
    out = {}

    def run(key: object, params: GenerationParams, init: np.ndarray | None) -> None:
        steps: list = []
        latents = tiny_pipe.sample(sb, params, callback=steps.append, init_frames=init)
        out[key] = Run(latents, tiny_pipe.decode(latents), steps)

    run("t2v", BASE, None)
    for strength in STRENGTHS:
        run(strength, dataclasses.replace(BASE, strength=strength), plate)
    run("continue", dataclasses.replace(BASE, plate_mode="continue"), plate[: tiny_pipe.num_frames(1)])
    return out


def test_strength_one_is_text_to_video_for_the_seed(tiny_pipe: VideoPipeline, two_segments, runs) -> None:
    """At strength 1.0 the plate is noised to t = 999, where zero terminal SNR leaves it weight
    sqrt(alphas_cumprod[999]): 0 for DDIM (exactly text-to-video), 2**-12 for DPM-Solver (text-to-video up
    to that residue). The result depends on the seed's noise, not on the plate."""
    sb, plate = two_segments
    other_plate = moving_plate(len(plate), *plate.shape[1:3], seed=5)[:, ::-1].copy()
    ddim = GenerationParams(steps=2, seed=4, sampler="ddim", preview_every=0)
    t2v = tiny_pipe.sample(sb, ddim)
    assert torch.equal(tiny_pipe.sample(sb, ddim, init_frames=plate), t2v)
    assert torch.equal(tiny_pipe.sample(sb, ddim, init_frames=other_plate), t2v)

    full, half, t2v = runs[1.0].latents, runs[0.5].latents, runs["t2v"].latents
    assert not torch.equal(full, t2v)  # the 2**-12 residue of the plate is there ...
    assert mad(full, t2v) < 1e-3 < mad(half, t2v)  # ... and tiny next to what a real restyle changes


def test_small_strength_stays_close_to_the_plate(tiny_pipe: VideoPipeline, two_segments, runs) -> None:
    _, plate = two_segments
    plate_latents = tiny_pipe.encode_frames(plate)
    assert plate_latents.shape == tiny_pipe.latent_shape(2, BASE)
    round_trip = tiny_pipe.decode(plate_latents)  # the plate as this VAE reproduces it
    latent_gap, frame_gap, trip_gap = [], [], []
    for strength in STRENGTHS:
        r = runs[strength]
        assert r.frames.shape == plate.shape
        # only the last round(steps x strength) steps run, starting later in the schedule
        assert len(r.steps) == dataclasses.replace(BASE, strength=strength).denoise_steps
        assert [s.timestep for s in r.steps] == {1.0: [999, 749, 499, 249], 0.5: [499, 249], 0.25: [249]}[
            strength
        ]
        assert r.steps[-1].total == len(r.steps)
        latent_gap.append(mad(r.latents, plate_latents))
        frame_gap.append(mad(r.frames, plate))
        trip_gap.append(mad(r.frames, round_trip))
    assert latent_gap[0] > latent_gap[1] > latent_gap[2]
    assert trip_gap[0] > trip_gap[1] > trip_gap[2]
    assert frame_gap[2] < frame_gap[0], f"mean abs diff vs the plate by strength {STRENGTHS}: {frame_gap}"


def test_continue_keeps_the_plate_segment_and_generates_the_rest(
    tiny_pipe: VideoPipeline, two_segments, runs
) -> None:
    sb, plate = two_segments
    n = tiny_pipe.num_frames(1)  # the plate covers segment 0
    r, t2v = runs["continue"], runs["t2v"]
    kept = tiny_pipe.encode_frames(plate[:n])  # (1, L, C, h, w)
    assert torch.equal(r.latents[:, : kept.shape[1]], kept)
    assert len(r.steps) == BASE.steps
    # the causal VAE decodes the kept segment from the plate's latents alone: its VAE round trip
    np.testing.assert_allclose(r.frames[:n], tiny_pipe.decode(kept), atol=1e-5)
    assert mad(r.frames[:n], plate[:n]) < mad(t2v.frames[:n], plate[:n])
    assert mad(r.frames[n:], t2v.frames[n:]) > 1e-3, "segment 1 is generated, not the text-to-video one"
    # a single start frame is a plate too (image to video)
    params = GenerationParams(steps=1, seed=3, preview_every=0, plate_mode="continue")
    one = tiny_pipe.sample(sb, params, init_frames=plate[:1])
    assert torch.equal(one[:, :1], tiny_pipe.encode_frames(plate[:1]))


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("strength", 0.0, r"strength: expected a number in \(0, 1\], got 0.0"),
        ("strength", 1.5, r"got 1.5"),
        ("strength", float("nan"), r"got nan"),
        ("strength", True, r"got True"),
        (
            "plate_mode",
            "extend",
            r"plate_mode: expected one of \('restyle', 'continue', 'element'\), got 'extend'",
        ),
    ],
)
def test_bad_strength_and_mode_name_the_value(field: str, value: object, needle: str) -> None:
    with pytest.raises(PipelineError, match=needle):
        GenerationParams(**{field: value})
    with pytest.raises(PipelineError, match="strength must be 1.0; got 0.5"):
        GenerationParams(plate_mode="continue", strength=0.5)


def test_bad_plates_say_what_is_expected(tiny_pipe: VideoPipeline, two_segments) -> None:
    sb, plate = two_segments
    h, w = plate.shape[1:3]
    restyle = GenerationParams(steps=2, strength=0.5, preview_every=0)
    cont = GenerationParams(steps=2, plate_mode="continue", preview_every=0)
    cases = [
        (restyle, plate[:9], "got 9 frames for plate_mode 'restyle'; expected exactly 17"),
        (restyle, plate[:, : h // 2], f"frames are {w}x{h // 2} .* expected {w}x{h}, the generation size"),
        (cont, plate, r"got 17 frames for plate_mode 'continue'; expected 1 \+ 4k frames fewer than .* 17"),
        (cont, plate[:3], r"got 3 frames .* \(1, 5, 9, 13\); whole segments: \[9\]"),
        (restyle, plate.tolist(), "expected a numpy float32 array"),
        (restyle, plate[..., :2], r"expected shape \[T, H, W, 3\]"),
        (restyle, (plate * 255).astype(np.uint8), "dtype uint8"),
        (restyle, np.where(np.arange(17)[:, None, None, None] == 4, np.nan, plate), "NaN/inf .* frame 4"),
    ]
    for params, frames, needle in cases:
        with pytest.raises(PipelineError, match=needle):
            tiny_pipe.sample(sb, params, init_frames=frames)
    with pytest.raises(PipelineError, match="need init_frames"):
        tiny_pipe.sample(sb, restyle)
    with pytest.raises(PipelineError, match="need init_frames"):
        tiny_pipe.sample(sb, cont)
