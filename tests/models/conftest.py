"""Fixtures for the video-DiT tests: tiny configs and random inputs of the right shapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from ttt_engine.models import VideoDiTConfig

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def random_inputs(
    config: VideoDiTConfig,
    segments: int = 2,
    batch: int = 1,
    text_len: int | None = None,
    size: tuple[int, int] = (8, 8),
    seed: int = 0,
) -> Inputs:
    """(latents [B, F, C, h, w], text [B, S, T, text_dim], mask [B, S, T] all True, timestep [B])."""
    gen = torch.Generator().manual_seed(seed)
    t = config.max_text_len if text_len is None else text_len
    frames = config.latent_frames(segments)
    latents = torch.randn(batch, frames, config.in_channels, *size, generator=gen)
    text = torch.randn(batch, segments, t, config.text_dim, generator=gen)
    mask = torch.ones(batch, segments, t, dtype=torch.bool)
    timestep = torch.randint(0, 1000, (batch,), generator=gen)
    return latents, text, mask, timestep


@pytest.fixture
def make_inputs() -> Callable[..., Inputs]:
    return random_inputs
