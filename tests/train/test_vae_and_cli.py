"""The VAE stage and `ttt-studio train`: a YAML config trains the autoencoder, then the DiT, and writes a
model folder; --resume on the finished run folder picks its latest checkpoint; bad input exits 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ttt_engine.train import cli
from ttt_engine.train.checkpoint import ResumeError, list_checkpoints, resolve_resume
from ttt_engine.train.config import ConfigError
from ttt_engine.train.vae_train import (
    VAEObjective,
    build_vae,
    check_train_frames,
    default_vae_config,
    load_vae,
)

from .conftest import TINY_VAE, tiny_config_dict


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttt-studio")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_trains_vae_then_dit_and_resumes_a_finished_run(tmp_path: Path, toon_dir: Path, capsys) -> None:
    stages = [
        {
            "name": "vae",
            "type": "vae",
            "steps": 3,
            "lr": 3e-3,
            "batch_size": 2,
            "frames": 9,
            "recon_loss": "l1+l2",
        },
        {"name": "3s", "type": "dit", "steps": 1, "batch_size": 1, "lr": 1e-3},
    ]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "run", toon_dir, stages)))
    args = _parser().parse_args(["train", str(path), "--no-progress"])
    assert args.func(args) == 0
    model = tmp_path / "run" / "model"
    assert f"model folder: {model}" in capsys.readouterr().out

    # the trained VAE, in diffusers layout, differs from the initial one and is the one in the checkpoint
    torch.manual_seed(0)
    initial = build_vae({**default_vae_config(4), **TINY_VAE})
    trained = load_vae(model / "vae")
    diffs = [
        not torch.equal(a, b) for a, b in zip(initial.state_dict().values(), trained.state_dict().values())
    ]
    assert sum(diffs) > len(diffs) // 2
    ckpts = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert ckpts == ["00-vae-step0000003", "01-3s-step0000001"]
    vae_ckpt = load_vae(tmp_path / "run" / "checkpoints" / ckpts[0] / "vae")
    assert all(
        torch.equal(a, b) for a, b in zip(vae_ckpt.state_dict().values(), trained.state_dict().values())
    )
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 4 and '"recon"' in log[0] and '"kl"' in log[0]

    # resuming the finished run trains nothing and rewrites the same model folder
    assert resolve_resume(tmp_path / "run").name == "01-3s-step0000001"
    before = load_file(model / "transformer" / "model.safetensors")
    args = _parser().parse_args(["train", str(path), "--resume", str(tmp_path / "run"), "--no-progress"])
    assert args.func(args) == 0
    after = load_file(model / "transformer" / "model.safetensors")
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_cli_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("run_dir: r\ndataset: {path: d}\nstages: [{name: a, steps: 1, trainable: some}]\n")
    args = _parser().parse_args(["train", str(path)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "stages[0].trainable" in err and "'some'" in err
    args = _parser().parse_args(["train", str(path).replace("bad", "absent")])
    assert args.func(args) == 2


def test_resume_errors(tmp_path: Path) -> None:
    with pytest.raises(ResumeError, match="neither a checkpoint folder"):
        resolve_resume(tmp_path)


def test_vae_objective_and_frame_rule() -> None:
    torch.manual_seed(0)
    vae = build_vae({**default_vae_config(4), **TINY_VAE})
    check_train_frames(9, vae)
    check_train_frames(17, vae)
    for bad in (5, 8, 13):
        with pytest.raises(ConfigError, match=r"frames: expected 1 \+ k \* 8"):
            check_train_frames(bad, vae)
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    loss, recon, kl = VAEObjective(vae, "l1", 0.5)(x, torch.Generator().manual_seed(0))
    assert torch.isclose(loss, recon + 0.5 * kl) and float(kl) >= 0
    loss.backward()
    assert all(p.grad is not None for p in vae.encoder.parameters() if p.requires_grad)
