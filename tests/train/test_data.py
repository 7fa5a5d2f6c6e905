"""Training data: the seeded sampler, clip windows, the frame layout and the latent cache."""

from __future__ import annotations

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
    SeededSampler,
    frame_layout,
    frames_to_vae_input,
    make_windows,
)
from ttt_engine.train.distributed import DistInfo
from ttt_engine.train.vae_train import build_vae, default_vae_config

from .conftest import TINY_VAE


def test_sampler_visits_every_item_once_per_epoch() -> None:
    s = SeededSampler(7, seed=3)
    first = [s.next_indices(1)[0] for _ in range(7)]
    second = [s.next_indices(1)[0] for _ in range(7)]
    assert sorted(first) == sorted(second) == list(range(7))
    assert first != second  # a new permutation each epoch
    assert [SeededSampler(7, seed=3).next_indices(1)[0] for _ in range(1)] == first[:1]


def test_sampler_state_round_trip_continues_the_same_stream() -> None:
    a = SeededSampler(5, seed=1)
    for _ in range(3):
        a.next_indices(3)
    b = SeededSampler(5, seed=1)
    b.load_state_dict(a.state_dict())
    assert [a.next_indices(2) for _ in range(6)] == [b.next_indices(2) for _ in range(6)]
    with pytest.raises(DataError, match="num_items"):
        SeededSampler(6, seed=1).load_state_dict(a.state_dict())


def test_ranks_take_disjoint_slices_of_one_global_batch() -> None:
    one = SeededSampler(10, seed=0)
    r0, r1 = SeededSampler(10, seed=0, world_size=2, rank=0), SeededSampler(10, seed=0, world_size=2, rank=1)
    for _ in range(4):
        global_batch = one.next_indices(4)
        assert r0.next_indices(2) + r1.next_indices(2) == global_batch


def test_frame_layout_leading_frame_and_segments() -> None:
    frames = np.arange(3 * 4).reshape(12, 1, 1, 1).repeat(3, axis=3).astype(np.float32)  # 3 segments of 4
    lay = FrameLayout(4)
    assert lay.window(frames, 0, 1)[:, 0, 0, 0].tolist() == [0, 0, 1, 2, 3]
    assert lay.window(frames, 1, 2)[:, 0, 0, 0].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    with pytest.raises(DataError, match="needs frame"):
        lay.window(frames, 2, 2)


def test_frame_layout_must_match_the_model_segment() -> None:
    assert frame_layout(16, 13, 12, 4).frames_per_segment == 48  # the paper: 3 s at 16 fps
    with pytest.raises(DataError, match=r"fps 8 gives 24 frames .*\(needs fps 16\)"):
        frame_layout(8, 13, 12, 4)
    with pytest.raises(DataError, match="first segment"):
        frame_layout(8, 6, 6, 4)


def test_frames_to_vae_input_range_and_layout() -> None:
    frames = np.zeros((5, 4, 6, 3), np.float32)
    frames[2, 1, 3] = [1.0, 0.5, 0.0]
    x = frames_to_vae_input(frames)
    assert x.shape == (1, 3, 5, 4, 6)
    assert x[0, :, 2, 1, 3].tolist() == [1.0, 0.0, -1.0] and float(x.min()) == -1.0


def test_windows_cover_every_long_enough_clip(toon_dir: Path) -> None:
    ds = ClipDataset(toon_dir)
    counts = [len(c.storyboard) for c in ds]
    one = make_windows(ds, 1)
    assert len(one) == sum(counts)
    two = make_windows(ds, 2)
    assert len(two) == sum(max(0, n - 1) for n in counts) and all(w.segments == 2 for w in two)
    with pytest.raises(DataError, match="no clip has 5 segments"):
        make_windows(ds, 5)


def test_latent_cache_encodes_once_and_samples_scaled_latents(toon_dir: Path, tmp_path: Path) -> None:
    ds = ClipDataset(toon_dir)
    torch.manual_seed(0)
    vae = build_vae({**default_vae_config(4), **TINY_VAE, "scaling_factor": 0.5}).eval()
    store = LatentStore(ds, FrameLayout(24), vae, torch.device("cpu"), tmp_path / "cache")
    windows = make_windows(ds, 1)[:2]
    calls = []
    real = store.encode
    store.encode = lambda w: calls.append(w) or real(w)  # type: ignore[method-assign]
    store.prepare(windows, DistInfo(), progress=False)
    assert len(calls) == 2 and len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2
    store.prepare(windows, DistInfo(), progress=False)
    mean, std = store.get(windows[0])
    assert len(calls) == 2  # read back from disk
    assert mean.shape == (7, 4, 8, 8) and bool((std > 0).all())  # 25 frames -> 7 latent frames
    fresh_mean, _ = real(windows[0])
    assert torch.equal(mean, fresh_mean)

    data = DiTData(windows, store, scaling_factor=0.5, shift_factor=0.0)
    z = data.latents([0, 1], torch.Generator().manual_seed(0))
    assert z.shape == (2, 7, 4, 8, 8)
    eps = torch.randn((2, 7, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    m1, s1 = store.get(windows[1])
    assert torch.allclose(z[1], (m1 + s1 * eps[1]) * 0.5)
    prompts = data.prompts(0)
    assert len(prompts) == 1 and prompts[0] == ds[windows[0].clip].storyboard[0].text

    # a changed VAE gets its own cache folder
    with torch.no_grad():
        next(vae.parameters()).add_(1.0)
    other = LatentStore(ds, FrameLayout(24), vae, torch.device("cpu"), tmp_path / "cache")
    assert other.root != store.root
