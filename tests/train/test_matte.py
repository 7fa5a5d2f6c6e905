"""Matte-weighted training: subject mattes pooled onto the latent grid weight the v-prediction loss."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ttt_engine.toonworld import ClipDataset
from ttt_engine.train.data import (
    DataError,
    DiTData,
    FrameLayout,
    LatentStore,
    make_windows,
    matte_to_latent_grid,
)
from ttt_engine.train.diffusion_loss import VelocityLoss
from ttt_engine.train.trainer import Trainer

from .conftest import tiny_config


def test_matte_pools_to_the_latent_grid_by_footprint_maximum() -> None:
    # 9 frames of 8 x 8 -> 3 latent frames (frame 0; frames 1-4; frames 5-8) of 2 x 2 (4 x 4 blocks)
    matte = np.zeros((9, 8, 8), np.uint8)
    matte[0, 0, 0] = 255  # latent frame 0, block (0, 0)
    matte[6, 5, 1] = 255  # latent frame 2, block (1, 0): one pixel fills its whole footprint
    matte[3, 2, 7] = 51  # latent frame 1, block (0, 1), a soft matte value
    grid = matte_to_latent_grid(matte, 3, 2, 2)
    expected = torch.zeros(3, 1, 2, 2)
    expected[0, 0, 0, 0] = 1.0
    expected[2, 0, 1, 0] = 1.0
    expected[1, 0, 0, 1] = 0.2
    assert grid.shape == (3, 1, 2, 2) and torch.allclose(grid, expected)
    with pytest.raises(DataError, match="does not tile a latent grid of 4 frames"):
        matte_to_latent_grid(matte, 4, 2, 2)
    with pytest.raises(DataError, match="does not tile a latent grid of 3 frames of 3x3"):
        matte_to_latent_grid(matte, 3, 3, 3)


def test_weighted_loss_is_the_weighted_mean() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 4, 2, 2, generator=gen), torch.randn(2, 3, 4, 2, 2, generator=gen)
    weight = 1.0 + 4.0 * (torch.rand(2, 3, 1, 2, 2, generator=gen) > 0.5).float()
    err = (pred - target) ** 2
    expected = (weight * err).sum() / (weight.sum() * 4)  # the weight is shared by the 4 channels
    assert torch.allclose(VelocityLoss.loss(pred, target, weight), expected)
    assert torch.allclose(
        VelocityLoss.loss(pred, target, torch.ones(2, 3, 1, 2, 2)), VelocityLoss.loss(pred, target)
    )


def test_stage_weights_are_one_plus_matte_weight_times_coverage(toon_dir: Path) -> None:
    ds = ClipDataset(toon_dir)
    windows = make_windows(ds, 1)
    store = LatentStore(ds, FrameLayout(24), vae=None, device=torch.device("cpu"), root=None)  # type: ignore[arg-type]
    data = DiTData(windows, store, 1.0, 0.0, matte_weight=3.0)
    data.check_mattes()
    w = data.weights([0, 1], torch.Size((2, 7, 4, 8, 8)))  # 32 x 32 frames, 4x VAE: 8 x 8 latents
    assert w is not None and w.shape == (2, 7, 1, 8, 8)
    for b, i in enumerate((0, 1)):
        win = windows[i]
        cover = matte_to_latent_grid(FrameLayout(24).window(ds.matte(win.clip), win.start, 1), 7, 8, 8)
        assert torch.equal(w[b], 1.0 + 3.0 * cover)
        assert 0 < float((cover > 0).float().mean()) < 1  # characters cover some latent pixels, not all
    assert DiTData(windows, store, 1.0, 0.0).weights([0], torch.Size((1, 7, 4, 8, 8))) is None


def test_matte_weight_needs_a_matte_in_every_clip(tmp_path: Path, toon_dir: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(toon_dir, data_dir)
    (data_dir / "clip_000001" / "matte.npy").unlink()
    stage = {"name": "3s", "type": "dit", "segments": 1, "steps": 1, "batch_size": 1, "matte_weight": 2.0}
    trainer = Trainer(tiny_config(tmp_path / "run", data_dir, [stage]), progress=False)
    with pytest.raises(DataError, match=r"1 of 3 have none, e.g. \['clip_000001'\]"):
        trainer.run()


def test_matte_weighted_stage_trains_and_resumes_exactly(tmp_path: Path, toon_dir: Path) -> None:
    def stage(weight: float) -> dict:
        return {
            "name": "3s",
            "type": "dit",
            "segments": 1,
            "steps": 4,
            "batch_size": 2,
            "lr": 2e-3,
            "lr_ttt": 2e-3,
            "matte_weight": weight,
        }

    plain = Trainer(tiny_config(tmp_path / "plain", toon_dir, [stage(0.0)]), progress=False)
    plain.run()
    config = tiny_config(tmp_path / "run", toon_dir, [stage(4.0)], checkpoint_every=2, keep_checkpoints=5)
    full = Trainer(config, progress=False)
    full.run()
    # same items, noise and weights at step 1: only the loss weighting differs
    assert full.losses[0] != pytest.approx(plain.losses[0], rel=1e-3)
    half = tmp_path / "half"
    shutil.copytree(tmp_path / "run" / "checkpoints" / "00-3s-step0000002", half)
    resumed = Trainer(config, resume=half, progress=False)
    resumed.run()
    assert resumed.losses == pytest.approx(full.losses[2:], abs=1e-6, rel=0)
    full_weights = full.parts.transformer.state_dict()
    for k, v in resumed.parts.transformer.state_dict().items():
        assert torch.allclose(v, full_weights[k], atol=1e-6, rtol=0), k
