"""The decoder phase's "colour" objective: the sliced Wasserstein colour loss, the phase that fits the decoder
LoRA so that the base's own samples decode to their items' colours, and its settings."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from ttt_engine.adapters import AdapterConfig, AdapterError, AdapterTrainConfig
from ttt_engine.adapters import cli as adapter_cli
from ttt_engine.adapters import train as train_module
from ttt_engine.adapters.config import DECODER_STYLE_TARGETS, DECODER_SUBJECT_TARGETS, KIND_DEFAULTS
from ttt_engine.adapters.train import (
    _item_pixels,
    colour_match_loss,
    decoder_lora,
    train_adapter,
    train_decoder_colour,
)

from .test_adapter_train import folder, tiny_pipe  # noqa: F401 - the module fixture is used by name


def _directions(count: int = 16, seed: int = 0) -> torch.Tensor:
    d = torch.randn(count, 3, generator=torch.Generator().manual_seed(seed))
    return d / d.norm(dim=1, keepdim=True)


def _pixels(seed: int = 1, frames: int = 2) -> torch.Tensor:
    return torch.rand(1, 3, frames, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_colour_loss_is_zero_for_the_same_colours_in_any_arrangement_and_count() -> None:
    target = _pixels()
    flat = target.reshape(1, 3, -1)
    shuffled = flat[:, :, torch.randperm(flat.shape[-1], generator=torch.Generator().manual_seed(2))]
    d = _directions()
    assert colour_match_loss(shuffled.reshape(target.shape), target, d) == 0
    tiled = target.repeat(1, 1, 9, 1, 1)  # nine times the pixels, the same colour distribution
    assert colour_match_loss(tiled, target, d) == 0
    assert colour_match_loss(_pixels(seed=3), target, d) > 0.01


def test_colour_loss_of_a_colour_offset_is_its_mean_projection() -> None:
    target = _pixels()
    offset = torch.tensor([0.2, -0.1, 0.05])
    d = _directions()
    got = colour_match_loss(target + offset[:, None, None, None], target, d)
    torch.testing.assert_close(got, (d @ offset).abs().mean(), rtol=1e-5, atol=1e-6)


def test_colour_loss_is_the_mean_over_pairs_and_reaches_the_pixels() -> None:
    a, b = _pixels(1), _pixels(2)
    d = _directions()
    out = torch.cat([a, b]).requires_grad_(True)
    target = torch.cat([b, b])
    loss = colour_match_loss(out, target, d)
    torch.testing.assert_close(loss, colour_match_loss(a, b, d) / 2)
    loss.backward()
    assert out.grad[0].abs().sum() > 0 and out.grad[1].abs().sum() == 0  # the matched pair pulls nothing


def test_colour_settings_are_checked() -> None:
    with pytest.raises(AdapterError, match="decoder_objective.*'grade'"):
        AdapterTrainConfig(decoder_objective="grade")
    with pytest.raises(AdapterError, match="decoder_samples.*-1"):
        AdapterTrainConfig(decoder_samples=-1)
    with pytest.raises(AdapterError, match="decoder_sample_steps.*0"):
        AdapterTrainConfig(decoder_sample_steps=0)
    back = AdapterTrainConfig.from_dict(AdapterTrainConfig(decoder_objective="colour").to_dict())
    assert back.decoder_objective == "colour"


def test_colour_phase_moves_a_sample_towards_its_items_colours(folder) -> None:  # noqa: F811
    pipe = tiny_pipe()
    from ttt_engine.adapters.data import collect_items

    items = collect_items(folder, "style", "dusk", pipe.num_frames(1), pipe.default_size)[3:4]  # a still
    pixels = _item_pixels(pipe, items)
    c = pipe.transformer.config
    sample = torch.randn(
        1, c.latent_frames(1), c.in_channels, 4, 4, generator=torch.Generator().manual_seed(5)
    )
    config = AdapterConfig(
        rank=3, alpha=3.0, decoder_targets=("conv_out.conv",), target_modules=(), kind="style"
    )
    train = AdapterTrainConfig(decoder_steps=12, decoder_learning_rate=5e-2, decoder_batch=1)
    before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    with decoder_lora(pipe.vae, config, train) as params:
        losses = train_decoder_colour(pipe, params, sample, pixels, train, progress=False)
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    after = pipe.vae.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(m._forward_hooks for m in pipe.vae.modules())


def test_train_with_the_colour_objective_samples_the_base_without_the_trigger(
    folder,  # noqa: F811
    tmp_path,
    monkeypatch,
) -> None:
    asked: list[tuple[list[str], int, int | None]] = []
    real = train_module._prior_latents

    def spy(pipe, captions, count, steps):
        asked.append((list(captions), count, steps))
        return real(pipe, captions, count, steps)

    monkeypatch.setattr(train_module, "_prior_latents", spy)
    config = AdapterConfig(
        rank=2, alpha=2.0, decoder_targets=("conv_out.conv",), target_modules=(), kind="style", trigger="dusk"
    )
    train = AdapterTrainConfig(
        decoder_steps=2,
        decoder_batch=1,
        decoder_objective="colour",
        decoder_samples=3,
        decoder_sample_steps=2,
        preview_every=0,
    )
    result = train_adapter(folder, tmp_path / "look", tiny_pipe(), config, train, progress=False)
    ((captions, count, steps),) = asked
    assert count == 3 and steps == 2
    assert "A shot in the look." in captions and not any("dusk" in c for c in captions)
    assert len(result.decoder_losses) == 2 and result.losses == []
    assert result.adapter.decoder_modules()["conv_out.conv"][1].abs().sum() > 0  # B moved off zero
    assert result.adapter.train.decoder_objective == "colour"


def test_the_colour_objective_with_a_transformer_lora_is_refused(folder, tmp_path) -> None:  # noqa: F811
    config = AdapterConfig(
        decoder_targets=("conv_out.conv",), target_modules=("attn1.to_q",), kind="style", trigger="dusk"
    )
    with pytest.raises(AdapterError, match="decoder_objective 'colour'.*1 target_modules"):
        train_adapter(
            folder, tmp_path / "x", tiny_pipe(), config, AdapterTrainConfig(decoder_objective="colour")
        )
    assert not (tmp_path / "x").exists()  # refused before anything is written


def _train_args(*options: str):
    parser = argparse.ArgumentParser(prog="ttt-studio")
    adapter_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["adapter", "train", "in", "-o", "out", "--trigger", "w", *options])


def test_each_kind_trains_its_recorded_recipe_unless_told_otherwise() -> None:
    config, train = adapter_cli.train_configs(_train_args("--kind", "style"))
    assert config.target_modules == () and config.decoder_targets == DECODER_STYLE_TARGETS
    assert train.decoder_objective == "colour" and train.decoder_sample_steps == 10
    config, train = adapter_cli.train_configs(_train_args("--kind", "subject"))
    assert config.target_modules == KIND_DEFAULTS["subject"].target_modules
    assert "ff.net.2" in config.target_modules
    assert config.decoder_targets == DECODER_SUBJECT_TARGETS and train.decoder_objective == "reconstruct"
    assert train.decoder_focus == KIND_DEFAULTS["subject"].decoder_focus > 0
    _, train = adapter_cli.train_configs(_train_args("--kind", "subject", "--decoder-focus", "0"))
    assert train.decoder_focus == 0
    _, train = adapter_cli.train_configs(_train_args("--kind", "subject", "--decoder-objective", "colour"))
    assert train.decoder_focus == 0  # the subject's focus weighs its own objective's pixels only
    config, train = adapter_cli.train_configs(
        _train_args(
            "--kind",
            "style",
            "--targets",
            "attn1.to_q",
            "--decoder-targets",
            "--decoder-objective",
            "reconstruct",
        )
    )
    assert config.target_modules == ("attn1.to_q",) and config.decoder_targets == ()
    assert train.decoder_objective == "reconstruct" and train.decoder_focus == 0
    with pytest.raises(AdapterError, match="decoder_focus"):
        adapter_cli.train_configs(_train_args("--kind", "style", "--decoder-focus", "2"))
    with pytest.raises(AdapterError, match="decoder_samples"):
        adapter_cli.train_configs(_train_args("--kind", "style", "--decoder-samples", "-2"))
