"""VAE stage extras: random crops (cheaper steps on the same convolutional weights) and the latent
scaling factor set at the stage's end so that the DiT sees unit-variance latents."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import yaml

from ttt_engine.train import cli
from ttt_engine.train.checkpoint import list_checkpoints
from ttt_engine.train.config import ConfigError, TrainConfig
from ttt_engine.train.data import ENCODER_PREFIXES, vae_fingerprint
from ttt_engine.train.trainer import train
from ttt_engine.train.vae_train import (
    build_vae,
    calibrate_scaling,
    default_vae_config,
    load_vae,
    random_crop,
    save_vae,
)

from .conftest import TINY_VAE, tiny_config_dict


def test_random_crop_keeps_one_window_over_time_and_checks_the_size() -> None:
    x = torch.arange(2 * 3 * 5 * 8 * 8, dtype=torch.float32).reshape(2, 3, 5, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, 4, gen)
    assert out.shape == (2, 3, 5, 4, 4)
    for b in range(2):  # every frame of a sample is cut at the same place
        corner = out[b, 0, 0, 0, 0]
        pos = (x[b, 0, 0] == corner).nonzero()[0]
        top, left = int(pos[0]), int(pos[1])
        assert torch.equal(out[b], x[b, :, :, top : top + 4, left : left + 4])
    with pytest.raises(ConfigError, match="crop: 9 pixels is larger than the frames"):
        random_crop(x, 9, gen)


def test_calibrate_scaling_gives_unit_variance_latents() -> None:
    torch.manual_seed(0)
    vae = build_vae({**default_vae_config(4), **TINY_VAE}).eval()
    batches = [torch.rand(1, 3, 9, 16, 16) * 2 - 1 for _ in range(3)]
    scale = calibrate_scaling(vae, batches)
    assert vae.config.scaling_factor == pytest.approx(scale)
    with torch.no_grad():
        z = torch.cat([vae.encode(x).latent_dist.mean.flatten() for x in batches])
    assert float((z * scale).std()) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="no batches"):
        calibrate_scaling(vae, [])


def _vae_stage(crop: int) -> list[dict]:
    return [
        {"name": "vae", "type": "vae", "steps": 2, "batch_size": 2, "frames": 9, "crop": crop, "lr": 1e-3}
    ]


def test_vae_stage_trains_on_crops_and_saves_the_scaling_factor(tmp_path: Path, toon_dir: Path) -> None:
    config = TrainConfig.from_dict(tiny_config_dict(tmp_path / "run", toon_dir, _vae_stage(16)))
    model = train(config)
    vae = load_vae(model / "vae")
    assert vae.config.scaling_factor != 1.0 and 0 < vae.config.scaling_factor < 1e3
    # the stage's final checkpoint has the factor too, so a run resumed from it keeps its latents
    (last,) = list_checkpoints(tmp_path / "run")
    assert load_vae(last / "vae").config.scaling_factor == vae.config.scaling_factor
    # the factor is 1 / std of whole-frame latents, so whole 32 x 32 frames must still encode
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 9, 32, 32)).latent_dist.mean
    assert z.shape[-2:] == (8, 8)


def test_vae_fingerprint_survives_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = build_vae({**default_vae_config(4), **TINY_VAE})
    loaded = load_vae(save_vae(vae, tmp_path / "vae"))
    assert vae_fingerprint(loaded) == vae_fingerprint(vae)
    loaded.register_to_config(scaling_factor=0.5)
    assert vae_fingerprint(loaded) != vae_fingerprint(vae)
    # latents come from the encoder side: a new decoder keeps the cache, a new encoder does not
    with torch.no_grad():
        next(vae.decoder.parameters()).add_(1.0)
    assert vae_fingerprint(vae) == vae_fingerprint(load_vae(tmp_path / "vae"))
    with torch.no_grad():
        next(vae.encoder.parameters()).add_(1.0)
    assert vae_fingerprint(vae) != vae_fingerprint(load_vae(tmp_path / "vae"))


def test_bad_crops_are_named(tmp_path: Path, toon_dir: Path, capsys) -> None:
    with pytest.raises(ConfigError, match=r"stages\[0\]\.crop: expected an integer >= 0"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path / "run", toon_dir, _vae_stage(-4)))
    dit = [{"name": "3s", "type": "dit", "steps": 1, "crop": 16}]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.crop"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path / "run", toon_dir, dit))
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "run", toon_dir, _vae_stage(6))))
    parser = argparse.ArgumentParser(prog="ttt-studio")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", str(path), "--no-progress"])
    assert args.func(args) == 2
    assert "stages[0].crop: 6 is not a multiple of the VAE factor 4" in capsys.readouterr().err


def test_decoder_only_stage_keeps_the_encoder_and_the_latent_scale(tmp_path: Path, toon_dir: Path) -> None:
    """vae_trainable 'decoder' (Stable Diffusion's ft-MSE recipe): the decoder learns, while the encoder and
    scaling_factor, i.e. the latent space a DiT was trained on, stay bit for bit."""
    first = train(TrainConfig.from_dict(tiny_config_dict(tmp_path / "a", toon_dir, _vae_stage(16))))
    stage = {**_vae_stage(16)[0], "name": "decoder", "vae_trainable": "decoder", "steps": 3}
    cfg = tiny_config_dict(tmp_path / "b", toon_dir, [stage])
    cfg["model"] = {"init": str(first)}
    second = train(TrainConfig.from_dict(cfg))
    before, after = load_vae(first / "vae"), load_vae(second / "vae")
    assert after.config.scaling_factor == before.config.scaling_factor
    old, new = before.state_dict(), after.state_dict()
    for name in old:
        same = torch.equal(old[name], new[name])
        if name.startswith(ENCODER_PREFIXES):
            assert same, f"{name} changed in a decoder-only stage"
    assert any(
        not torch.equal(old[n], new[n])
        for n in old
        if n.startswith("decoder.") and old[n].is_floating_point()
    )
    # the DiT and the text encoder are carried over unchanged
    from safetensors.torch import load_file

    for part in ("transformer", "text_encoder"):
        for f in (first / part).glob("*.safetensors"):
            a, b = load_file(str(f)), load_file(str(second / part / f.name))
            assert all(torch.equal(a[k], b[k]) for k in a), f"{part} changed in a VAE decoder stage"


def test_decoder_only_stage_needs_a_trained_encoder(tmp_path: Path, toon_dir: Path) -> None:
    stage = {**_vae_stage(16)[0], "vae_trainable": "decoder"}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.vae_trainable: 'decoder' keeps the encoder"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path / "run", toon_dir, [stage]))
    with pytest.raises(
        ConfigError, match=r"stages\[0\]\.vae_trainable: expected one of \['all', 'decoder'\]"
    ):
        TrainConfig.from_dict(
            tiny_config_dict(tmp_path / "run", toon_dir, [{**stage, "vae_trainable": "enc"}])
        )
    dit = {"name": "s", "type": "dit", "steps": 1, "vae_trainable": "decoder"}
    with pytest.raises(ConfigError, match="vae_trainable: not used by a 'dit' stage"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path / "run", toon_dir, [dit]))
