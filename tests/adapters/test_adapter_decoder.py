"""A style adapter's VAE decoder LoRA: its keys in the one file, shape checks against the VAE, applying it
while decoding (scale 0 the base bit for bit, the LoRA maths, nothing left behind) and the decoder phase of
training."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ttt_engine.adapters import (
    AdapterConfig,
    AdapterError,
    AdapterTrainConfig,
    applied,
    check_adapter,
    load_adapter,
    make_adapter,
    save_adapter,
)
from ttt_engine.adapters.train import (
    _decoded_prefix,
    _encode_items,
    _item_pixels,
    decode_for_training,
    decoder_lora,
    focus_weights,
    train_adapter,
    train_decoder,
)
from ttt_engine.pipeline.video_pipeline import VideoPipeline

from .helpers import TARGETS, random_decoder_state, random_lora_state
from .test_adapter_train import folder, tiny_pipe  # noqa: F401 - the module fixture is used by name

DEC = ("up_blocks.2.resnets.1.conv2.conv", "up_blocks.1.upsamplers.0.conv", "conv_out.conv")


def _config(decoder: tuple[str, ...] = DEC, transformer: tuple[str, ...] = TARGETS) -> AdapterConfig:
    return AdapterConfig(
        rank=3, alpha=1.5, target_modules=transformer, decoder_targets=decoder, kind="style", trigger="dusk"
    )


def _adapter(pipe: VideoPipeline, name: str = "look", seed: int = 0, transformer: bool = True):
    state = random_decoder_state(pipe.vae, DEC, rank=3, seed=seed)
    if transformer:
        state.update(random_lora_state(pipe.transformer, rank=3, seed=seed))
    return make_adapter(state, _config(transformer=TARGETS if transformer else ()), name)


def _latents(pipe: VideoPipeline, seed: int = 7) -> torch.Tensor:
    c = pipe.transformer.config
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, c.latent_frames(1), c.in_channels, 8, 8, generator=gen)


def test_decoder_keys_round_trip_in_the_one_file(tmp_path) -> None:
    pipe = VideoPipeline.tiny_random(0)
    adapter = _adapter(pipe)
    assert set(adapter.decoder_modules()) == set(DEC) and len(adapter.modules()) == 2 * len(TARGETS)
    saved = save_adapter(adapter, tmp_path / "look")
    assert saved.sha256 == hashlib.sha256(saved.path.read_bytes()).hexdigest() == adapter.sha256
    back = load_adapter(saved.path)
    assert back.config == adapter.config and back.config.decoder_targets == DEC
    assert back.state.keys() == adapter.state.keys()
    assert all(torch.equal(back.state[k], v) for k, v in adapter.state.items())
    a, b = back.decoder_modules()["conv_out.conv"]
    assert a.shape == (3, 16, 3, 3, 3) and b.shape == (3, 3, 1, 1, 1)
    # the hash covers the decoder part: one changed decoder value is another file
    changed = dict(adapter.state)
    changed["vae.decoder.conv_out.conv.lora_B.weight"] = (
        changed["vae.decoder.conv_out.conv.lora_B.weight"] + 1
    )
    assert make_adapter(changed, adapter.config, "look").sha256 != adapter.sha256
    # a decoder-only adapter round trips; a file of one without our config gets decoder_targets from its keys
    alone = make_adapter(random_decoder_state(pipe.vae, DEC, rank=3), _config(transformer=()), "only")
    assert load_adapter(save_adapter(alone, tmp_path / "only").path).config == alone.config
    save_file(dict(alone.state), str(tmp_path / "bare.safetensors"))
    derived = load_adapter(tmp_path / "bare.safetensors").config
    assert set(derived.decoder_targets) == set(DEC) and derived.target_modules == ()


def test_decoder_shapes_and_names_are_checked_against_the_vae() -> None:
    pipe = VideoPipeline.tiny_random(0)
    state = {**random_lora_state(pipe.transformer, rank=3), **random_decoder_state(pipe.vae, DEC, rank=3)}
    state["vae.decoder.up_blocks.1.upsamplers.0.conv.lora_A.weight"] = torch.zeros(3, 32, 3, 1)
    state["vae.decoder.up_blocks.2.resnets.1.conv2.conv.lora_A.weight"] = torch.zeros(3, 17, 3, 3, 3)
    bad = make_adapter(state, _config(), "bad")
    check_adapter(bad, pipe.transformer)  # without the VAE the decoder part is not checked
    with pytest.raises(AdapterError) as err:
        check_adapter(bad, pipe.transformer, pipe.vae)
    text = str(err.value)  # the first bad key in module order, both shapes
    assert "vae.decoder.up_blocks.1.upsamplers.0.conv.lora_A.weight" in text and "up_blocks.2" not in text
    assert "(3, 32, 3, 1)" in text and "(3, 32, 3, 3)" in text
    state = random_decoder_state(pipe.vae, DEC, rank=3)
    state["vae.decoder.mid_block.nope.lora_A.weight"] = torch.zeros(3, 4)
    state["vae.decoder.mid_block.nope.lora_B.weight"] = torch.zeros(4, 3)
    with pytest.raises(AdapterError, match=r"vae\.decoder\.mid_block\.nope\.lora_A\.weight names no"):
        check_adapter(make_adapter(state, _config(transformer=()), "alien"), pipe.transformer, pipe.vae)
    conv_b_2d = random_decoder_state(pipe.vae, ("conv_out.conv",), rank=3)
    conv_b_2d["vae.decoder.conv_out.conv.lora_B.weight"] = torch.zeros(3, 3)
    with pytest.raises(AdapterError, match=r"conv_out\.conv\.lora_B\.weight: shape \(3, 3\)"):
        make_adapter(conv_b_2d, _config(("conv_out.conv",), ()), "flat")
    with pytest.raises(AdapterError, match="decoder_targets.*listed twice"):
        _config(("conv_out.conv", "conv_out.conv"))
    with pytest.raises(AdapterError, match="target_modules"):
        AdapterConfig(target_modules=(), decoder_targets=())


def test_decode_scale_zero_is_the_base_bit_for_bit_and_nothing_stays() -> None:
    pipe = VideoPipeline.tiny_random(0)
    z = _latents(pipe)
    base = pipe.decode(z)
    before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    look, other = _adapter(pipe, "look", seed=1), _adapter(pipe, "other", seed=2)
    with applied(pipe.transformer, [(look, 0.0)], vae=pipe.vae):
        assert np.array_equal(pipe.decode(z), base)
    with applied(pipe.transformer, [(look, 1.0)], vae=pipe.vae):
        with_look = pipe.decode(z)
    assert np.abs(with_look - base).mean() > 1e-3
    with applied(pipe.transformer, [(other, 0.5)], vae=pipe.vae):
        with_other = pipe.decode(z)
    assert np.array_equal(pipe.decode(z), base)
    with applied(pipe.transformer, [(look, 1.0)], vae=pipe.vae):  # the same job again: the same frames
        assert np.array_equal(pipe.decode(z), with_look)
    assert not np.array_equal(with_other, with_look)
    after = pipe.vae.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(m._forward_hooks for m in pipe.vae.modules())
    with pytest.raises(AdapterError, match="VAE decoder LoRA"):  # half an adapter is refused
        with applied(pipe.transformer, [(look, 1.0)]):
            pass
    with applied(pipe.transformer, [(look, 1.0)], vae=pipe.vae):
        with pytest.raises(RuntimeError, match="nest"):
            with applied(pipe.transformer, [(other, 1.0)], vae=pipe.vae):
                pass


def test_decoder_lora_equals_merged_conv_weights() -> None:
    """scale * alpha / rank * (B x A) added to a conv's weight gives the same decode (the conv LoRA maths)."""
    pipe, merged = VideoPipeline.tiny_random(0), VideoPipeline.tiny_random(0)
    adapter = _adapter(pipe, transformer=False)
    scale = 0.8
    layers = dict(merged.vae.decoder.named_modules())
    with torch.no_grad():
        for name, (a, b) in adapter.decoder_modules().items():
            delta = torch.einsum("or,ri...->oi...", b.flatten(1), a)  # [out, in, k...]
            layers[name].weight.add_(scale * 1.5 / 3 * delta)
    z = _latents(pipe)
    with applied(pipe.transformer, [(adapter, scale)], vae=pipe.vae):
        got = pipe.decode(z)
    np.testing.assert_allclose(got, merged.decode(z), rtol=1e-4, atol=2e-5)


def test_decoder_phase_lowers_its_reconstruction_loss(folder) -> None:  # noqa: F811
    pipe = tiny_pipe()
    from ttt_engine.adapters.data import collect_items

    items = collect_items(folder, "style", "dusk", pipe.num_frames(1), pipe.default_size)[3:4]  # a still
    latents, pixels = _encode_items(pipe, items), _item_pixels(pipe, items)
    config = _config(("up_blocks.2.resnets.1.conv2.conv", "conv_out.conv"), ())
    train = AdapterTrainConfig(decoder_steps=8, decoder_learning_rate=3e-2, decoder_batch=1)
    before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    with decoder_lora(pipe.vae, config, train) as params:
        losses = train_decoder(pipe, params, latents, pixels, train, progress=False)
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses  # one item: the same batch every step
    after = pipe.vae.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(m._forward_hooks for m in pipe.vae.modules())


@pytest.mark.slow
def test_train_with_decoder_targets_saves_both_parts_and_resumes(folder, tmp_path) -> None:  # noqa: F811
    config = _config(("conv_out.conv",), ("attn1.to_q",))
    train = AdapterTrainConfig(
        steps=2, batch=1, preview_every=0, decoder_steps=3, decoder_batch=1, decoder_learning_rate=1e-2
    )
    full = train_adapter(folder, tmp_path / "full", tiny_pipe(), config, train, progress=False)
    assert len(full.decoder_losses) == 3 and len(full.losses) == 2
    assert set(full.adapter.decoder_modules()) == {"conv_out.conv"}
    assert full.adapter.decoder_modules()["conv_out.conv"][1].abs().sum() > 0  # B moved off zero
    assert (
        train_adapter(folder, tmp_path / "cut", tiny_pipe(), config, train, progress=False, stop_at=1) is None
    )
    resumed = train_adapter(folder, tmp_path / "cut", tiny_pipe(), config, train, progress=False)
    assert resumed.decoder_losses == [] and resumed.losses == full.losses[1:]
    assert all(torch.equal(resumed.adapter.state[k], v) for k, v in full.adapter.state.items())
    only = train_adapter(
        folder, tmp_path / "only", tiny_pipe(), _config(("conv_out.conv",), ()), train, progress=False
    )
    assert only.losses == [] and set(only.adapter.state) == {
        "vae.decoder.conv_out.conv.lora_A.weight",
        "vae.decoder.conv_out.conv.lora_B.weight",
    }


def _patched_base(pipe: VideoPipeline, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """The base decoder's own output of latents' decoded prefix, with a violet patch it never drew."""
    with torch.no_grad():
        pixels = decode_for_training(pipe, latents[:, : _decoded_prefix(latents)]).float()
    patch = (slice(None), slice(None), slice(None), slice(2, 8), slice(3, 9))
    pixels[patch] = torch.tensor([0.6, -0.8, 0.9])[None, :, None, None, None]
    return pixels, patch


def test_focus_weights_weigh_where_the_base_decoder_errs() -> None:
    pipe = tiny_pipe()
    latents = _latents(pipe)
    pixels, patch = _patched_base(pipe, latents)
    weights = focus_weights(pipe, latents, pixels, AdapterTrainConfig(decoder_focus=4.0, decoder_batch=1))
    assert weights.shape == (1, 1, *pixels.shape[2:])
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))
    inside = torch.zeros_like(weights, dtype=torch.bool)
    inside[patch] = True
    assert weights[~inside].max() < 1e-3 + weights[~inside].min()  # the base draws it all: one weight
    assert weights[inside].min() > 5 * weights[~inside].max()


def test_focus_makes_the_decoder_phase_fit_what_the_base_cannot_draw() -> None:
    pipe = tiny_pipe()
    latents = _latents(pipe)
    pixels, patch = _patched_base(pipe, latents)
    config = _config(("up_blocks.2.resnets.1.conv2.conv", "conv_out.conv"), ())
    patch_error = {}
    for focus in (0.0, 8.0):
        train = AdapterTrainConfig(
            decoder_steps=10, decoder_learning_rate=1e-2, decoder_batch=1, decoder_focus=focus
        )
        with decoder_lora(pipe.vae, config, train) as params:
            losses = train_decoder(pipe, params, latents, pixels, train, progress=False)
            with torch.no_grad():
                out = decode_for_training(pipe, latents[:, : _decoded_prefix(latents)]).float()
        patch_error[focus] = float((out - pixels)[patch].abs().mean())
    assert losses[-1] < losses[0], losses  # the focused loss itself falls
    assert patch_error[8.0] < 0.5 * patch_error[0.0], patch_error


def test_focus_settings_are_checked() -> None:
    with pytest.raises(AdapterError, match="decoder_focus.*-1"):
        AdapterTrainConfig(decoder_focus=-1.0)
    with pytest.raises(AdapterError, match="decoder_focus.*'colour'"):
        AdapterTrainConfig(decoder_focus=2.0, decoder_objective="colour")
    assert AdapterTrainConfig.from_dict(AdapterTrainConfig(decoder_focus=2.0).to_dict()).decoder_focus == 2.0
