"""Fixtures for the training tests: a tiny toon-world dataset and tiny training configs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ttt_engine.toonworld import write_dataset
from ttt_engine.train.config import TrainConfig

# 8 fps: a 3-s segment is 24 frames = 6 latent frames (VAE 4x in time), +1 leading frame for segment 0
TINY_TRANSFORMER = {
    "preset": "tiny",
    "first_segment_frames": 7,
    "segment_frames": 6,
    "ttt_backend": "reference",
}
TINY_VAE = {"block_out_channels": [4, 8, 8], "norm_num_groups": 4}


@pytest.fixture(scope="session")
def toon_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 clips of 1-2 segments, 32 x 32 at 8 fps (written once per session)."""
    root = tmp_path_factory.mktemp("toon") / "data"
    return write_dataset(root, n_clips=3, segments_range=(1, 2), height=32, width=32, fps=8, seed=0)


def tiny_config_dict(
    run_dir: Path, data_dir: Path, stages: list[dict[str, Any]], **top: Any
) -> dict[str, Any]:
    """A tiny-model training config as the YAML would give it."""
    cfg = {
        "run_dir": str(run_dir),
        "seed": 0,
        "device": "cpu",
        "log_every": 1,
        "dataset": {"path": str(data_dir)},
        "model": {
            "transformer": copy.deepcopy(TINY_TRANSFORMER),
            "text_encoder": {"vocab_size": 512, "num_layers": 1},
            "vae": copy.deepcopy(TINY_VAE),
        },
        "stages": stages,
    }
    cfg.update(top)
    return cfg


def tiny_config(run_dir: Path, data_dir: Path, stages: list[dict[str, Any]], **top: Any) -> TrainConfig:
    return TrainConfig.from_dict(tiny_config_dict(run_dir, data_dir, stages, **top))
