from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ttt_engine.models import VideoDiT
from ttt_engine.pipeline.latents_io import load_latents
from ttt_engine.pipeline.params import DecodeError, GenerationCancelled, GenerationParams, PipelineError
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.storyboard import Storyboard, StoryboardError

from .conftest import CallCounter, storyboard_of


def test_tiny_random_is_complete_and_real(tiny_pipe: VideoPipeline) -> None:
    assert isinstance(tiny_pipe.transformer, VideoDiT)
    info = tiny_pipe.model_info()
    assert info["source"] == "tiny_random(seed=0)"
    assert info["first_segment_frames"] == tiny_pipe.num_frames(1)
    # frames come from the model's config: first segment 1 + 4 (first - 1), later 4 * later
    c = tiny_pipe.config
    assert tiny_pipe.num_frames(1) == 1 + 4 * (c.first_segment_frames - 1)
    assert tiny_pipe.num_frames(3) == tiny_pipe.num_frames(1) + 2 * 4 * c.segment_frames
    ranges = tiny_pipe.segment_frame_ranges(3)
    assert ranges[0][0] == 0 and ranges[-1][1] == tiny_pipe.num_frames(3)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    # the same seed builds the same weights
    other = VideoPipeline.tiny_random(seed=0)
    a = dict(tiny_pipe.transformer.state_dict())
    assert all(torch.equal(a[k], v) for k, v in other.transformer.state_dict().items())


def test_two_segments_end_to_end(
    tiny_pipe: VideoPipeline, fast_params: GenerationParams, monkeypatch
) -> None:
    counter = CallCounter(tiny_pipe.transformer, monkeypatch)
    steps: list = []
    result = tiny_pipe.generate(storyboard_of(2), fast_params, callback=steps.append)
    h, w = tiny_pipe.default_size
    assert result.frames.shape == (tiny_pipe.num_frames(2), h, w, 3)
    assert result.frames.dtype == np.float32 and np.isfinite(result.frames).all()
    assert result.frames.min() >= 0 and result.frames.max() <= 1
    assert result.latents.shape == (
        1,
        tiny_pipe.config.latent_frames(2),
        tiny_pipe.config.in_channels,
        h // 4,
        w // 4,
    )
    # CFG as two forwards per step (dynamic scale > 1 on every step here)
    assert counter.calls == 2 * fast_params.steps
    # callback once per step with increasing step numbers and decreasing timesteps
    assert [s.step for s in steps] == [1, 2, 3] and all(s.total == 3 for s in steps)
    assert [s.timestep for s in steps] == sorted((s.timestep for s in steps), reverse=True)
    assert steps[0].timestep == 999
    assert all(s.preview is None for s in steps)  # preview_every=0


def test_same_seed_same_frames_different_seed_different(
    tiny_pipe: VideoPipeline, fast_params: GenerationParams
) -> None:
    sb = storyboard_of(2)
    a = tiny_pipe.sample(sb, fast_params)
    b = tiny_pipe.sample(sb, fast_params)
    c = tiny_pipe.sample(sb, dataclasses.replace(fast_params, seed=2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    d = tiny_pipe.sample(sb, dataclasses.replace(fast_params, sampler="ddim"))
    assert not torch.allclose(a, d)  # the sampler asked for is the one used
    fa, fb = tiny_pipe.decode(a), tiny_pipe.decode(b)
    assert np.array_equal(fa, fb)
    assert not np.array_equal(fa, tiny_pipe.decode(c))


def test_text_and_negative_prompts_steer_the_result(
    tiny_pipe: VideoPipeline, fast_params: GenerationParams
) -> None:
    base = tiny_pipe.sample(storyboard_of(2), fast_params)
    other_text = Storyboard.from_list([{"text": "A dog sleeps."}, {"text": "The dog wakes up."}])
    neg = Storyboard.from_list([{"text": s.text, "neg_text": "dark, noisy"} for s in storyboard_of(2)])
    assert not torch.allclose(base, tiny_pipe.sample(other_text, fast_params))
    assert not torch.allclose(base, tiny_pipe.sample(neg, fast_params))


def test_twenty_one_segments_63_seconds(tiny_pipe: VideoPipeline) -> None:
    params = GenerationParams(steps=2, seed=0, preview_every=1)
    steps: list = []
    sb = storyboard_of(21, transition_at=(7, 14))
    result = tiny_pipe.generate(sb, params, callback=steps.append)
    assert result.frames.shape[0] == tiny_pipe.num_frames(21)
    assert result.latents.shape[1] == tiny_pipe.config.latent_frames(21)
    assert np.isfinite(result.frames).all()
    # previews: uint8 RGB at latent resolution, one per latent frame
    assert steps[-1].preview.shape == (tiny_pipe.config.latent_frames(21), 8, 8, 3)
    assert steps[-1].preview.dtype == np.uint8


def test_bad_storyboards_give_clear_errors(tiny_pipe: VideoPipeline, fast_params: GenerationParams) -> None:
    with pytest.raises(StoryboardError, match="22 segments .* at most 21"):
        tiny_pipe.sample(storyboard_of(22), fast_params)
    with pytest.raises(StoryboardError, match="segment 1: field 'text' is empty"):
        tiny_pipe.sample([{"text": "ok"}, {"text": "  "}], fast_params)
    with pytest.raises(StoryboardError, match="expected a Storyboard"):
        tiny_pipe.sample("a cat", fast_params)
    with pytest.raises(StoryboardError, match="empty list"):
        tiny_pipe.sample([], fast_params)


def test_sizes_must_fit_the_vae_and_patch(tiny_pipe: VideoPipeline, fast_params: GenerationParams) -> None:
    with pytest.raises(PipelineError, match="height 30 must be a multiple of 8"):
        tiny_pipe.sample(storyboard_of(1), dataclasses.replace(fast_params, height=30, width=32))
    lat = tiny_pipe.sample(storyboard_of(1), dataclasses.replace(fast_params, height=16, width=48))
    assert lat.shape[-2:] == (4, 12)
    assert tiny_pipe.decode(lat).shape[1:3] == (16, 48)


def test_cancel_stops_within_one_step(tiny_pipe: VideoPipeline, monkeypatch) -> None:
    counter = CallCounter(tiny_pipe.transformer, monkeypatch)
    seen: list[int] = []
    params = GenerationParams(steps=5, preview_every=0)
    with pytest.raises(GenerationCancelled, match="before step 3/5"):
        tiny_pipe.sample(
            storyboard_of(1),
            params,
            callback=lambda s: seen.append(s.step),
            should_stop=lambda: len(seen) >= 2,
        )
    assert seen == [1, 2]
    assert counter.calls == 2 * 2  # no forward after the stop was asked
    with pytest.raises(GenerationCancelled, match="before step 1/5"):
        tiny_pipe.sample(storyboard_of(1), params, should_stop=lambda: True)


def test_decode_failure_is_retried_from_saved_latents(
    tiny_pipe: VideoPipeline, fast_params, tmp_path, monkeypatch
) -> None:
    counter = CallCounter(tiny_pipe.transformer, monkeypatch)
    real_decode = tiny_pipe.vae.decode
    decodes = {"n": 0}

    def flaky(z, *args, **kwargs):
        decodes["n"] += 1
        if decodes["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_decode(z, *args, **kwargs)

    monkeypatch.setattr(tiny_pipe.vae, "decode", flaky)
    path = tmp_path / "latents.safetensors"
    result = tiny_pipe.generate(storyboard_of(2), fast_params, latents_path=path)
    assert decodes["n"] == 2
    assert counter.calls == 2 * fast_params.steps  # sampled once, not again for the retry
    saved, meta = load_latents(path)
    assert torch.equal(saved, result.latents)
    assert meta["params"]["seed"] == fast_params.seed and len(meta["storyboard"]) == 2
    assert result.frames.shape[0] == tiny_pipe.num_frames(2)


def test_decode_that_keeps_failing_names_the_latents_then_decode_saved_works(
    tiny_pipe: VideoPipeline, fast_params, tmp_path, monkeypatch
) -> None:
    counter = CallCounter(tiny_pipe.transformer, monkeypatch)
    real_decode = tiny_pipe.vae.decode

    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded (injected)")

    monkeypatch.setattr(tiny_pipe.vae, "decode", broken)
    path = tmp_path / "job" / "latents.safetensors"
    with pytest.raises(DecodeError, match="decoder exploded") as info:
        tiny_pipe.generate(storyboard_of(2), fast_params, latents_path=path, decode_retries=1)
    assert info.value.latents_path == str(path) and str(path) in str(info.value)
    calls_after_sampling = counter.calls
    monkeypatch.setattr(tiny_pipe.vae, "decode", real_decode)
    frames = tiny_pipe.decode_saved(path)
    assert counter.calls == calls_after_sampling  # no re-sampling
    assert frames.shape[0] == tiny_pipe.num_frames(2)
    assert np.array_equal(frames, tiny_pipe.decode(tiny_pipe.sample(storyboard_of(2), fast_params)))


def test_decode_only_some_segments_matches_the_full_decode(
    tiny_pipe: VideoPipeline, fast_params, monkeypatch
) -> None:
    lat = tiny_pipe.sample(storyboard_of(3), fast_params)
    full = tiny_pipe.decode(lat)
    ranges = tiny_pipe.segment_frame_ranges(3)
    one = tiny_pipe.decode(lat, segments=[1])
    np.testing.assert_array_equal(one, full[ranges[1][0] : ranges[1][1]])
    two = tiny_pipe.decode(lat, segments=[2, 0])
    np.testing.assert_array_equal(two, np.concatenate([full[slice(*ranges[2])], full[slice(*ranges[0])]]))
    # iter_decode: one VAE pass, then the asked segments in ascending order
    counter = {"n": 0}
    real_decode = tiny_pipe.vae.decode

    def counted(*args, **kwargs):
        counter["n"] += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(tiny_pipe.vae, "decode", counted)
    pieces = list(tiny_pipe.iter_decode(lat, segments=[2, 1]))
    assert counter["n"] == 1
    assert [s for s, _ in pieces] == [1, 2]
    for s, frames in pieces:
        np.testing.assert_array_equal(frames, full[slice(*ranges[s])])
    with pytest.raises(PipelineError, match=r"distinct indices in \[0, 3\)"):
        tiny_pipe.iter_decode(lat, segments=[0, 0])
    with pytest.raises(PipelineError, match=r"distinct indices in \[0, 3\)"):
        tiny_pipe.decode(lat, segments=[3])
    with pytest.raises(PipelineError, match="not a whole number of segments"):
        tiny_pipe.decode(lat[:, :4])
    with pytest.raises(PipelineError, match="channels"):
        tiny_pipe.decode(lat[:, :, :2])


def test_bfloat16_sampling_with_the_offload_flag_on_cpu() -> None:
    """On a CPU device offloading is a no-op; this checks the bf16 path end to end (GPU test below)."""
    pipe = VideoPipeline.tiny_random(seed=1)
    params = GenerationParams(steps=2, dtype="bfloat16", cpu_offload=True, preview_every=0)
    lat = pipe.sample(storyboard_of(1), params)
    assert lat.dtype == torch.float32 and torch.isfinite(lat).all()
    assert next(pipe.transformer.parameters()).dtype == torch.bfloat16
    assert all(p.device.type == "cpu" for p in pipe.transformer.parameters())
    frames = pipe.decode(lat, dtype="bfloat16")
    assert frames.shape[0] == pipe.num_frames(1) and np.isfinite(frames).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to check device placement")
def test_cpu_offload_moves_components_only_while_used() -> None:
    pipe = VideoPipeline.tiny_random(seed=0, device="cuda")
    seen: list[str] = []
    original = pipe.transformer.forward

    def spy(*args, **kwargs):
        seen.append(next(pipe.transformer.parameters()).device.type)
        return original(*args, **kwargs)

    pipe.transformer.forward = spy
    params = GenerationParams(steps=2, cpu_offload=True, preview_every=0)
    lat = pipe.sample(storyboard_of(1), params)
    assert set(seen) == {"cuda"}
    assert next(pipe.transformer.parameters()).device.type == "cpu"
    assert next(pipe.vae.parameters()).device.type == "cpu"
    pipe.decode(lat, cpu_offload=True)
    assert next(pipe.vae.parameters()).device.type == "cpu"


@pytest.mark.parametrize("unguided", [1, 2])
def test_unguided_steps_run_one_forward_at_scale_one_then_guide(
    tiny_pipe: VideoPipeline, monkeypatch, unguided: int
) -> None:
    """The first `unguided` steps are the cond forward alone (CFG scale 1); the rest guided as before."""
    storyboard = storyboard_of(1)
    guided = GenerationParams(steps=3, seed=4, guidance_scale=5.0, cfg_schedule="constant", preview_every=0)
    counter = CallCounter(tiny_pipe.transformer, monkeypatch)
    partly = tiny_pipe.sample(storyboard, dataclasses.replace(guided, unguided_steps=unguided))
    assert counter.calls == 2 * 3 - unguided
    assert not torch.equal(partly, tiny_pipe.sample(storyboard, guided))

    # every step unguided is exactly guidance 1 (one forward per step), whatever the guidance asked
    unguided_all = tiny_pipe.sample(storyboard, dataclasses.replace(guided, unguided_steps=3))
    scale_one = tiny_pipe.sample(storyboard, dataclasses.replace(guided, guidance_scale=1.0))
    assert torch.equal(unguided_all, scale_one)
    # 0 (the default) guides every step: two forwards each
    counter.calls = 0
    tiny_pipe.sample(storyboard, guided)
    assert counter.calls == 2 * 3
