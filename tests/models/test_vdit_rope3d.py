"""3D positions (ttt_engine/models/rope3d.py) against diffusers' CogVideoX functions."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb, get_3d_rotary_pos_embed, get_3d_sincos_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

from ttt_engine.models import rope3d


def test_axis_split() -> None:
    assert rope3d.rope_axis_dims(64) == (16, 24, 24)  # the paper's t 16, h 24, w 24
    assert rope3d.rope_axis_dims(32) == (8, 12, 12)
    assert rope3d.rope_axis_dims(128) == (32, 48, 48)
    with pytest.raises(ValueError, match="multiple of 16, got 40"):
        rope3d.rope_axis_dims(40)


@pytest.mark.parametrize("grid", [(30, 45), (3, 4), (4, 4), (6, 3), (16, 24)], ids=str)
def test_crop_region_matches_cogvideox(grid: tuple[int, int]) -> None:
    base_h, base_w = (30, 45) if grid[0] >= 6 else (3, 4)
    assert rope3d.resize_crop_region(*grid, base_h, base_w) == get_resize_crop_region_for_grid(
        grid, base_w, base_h
    )


@pytest.mark.parametrize(
    "head_dim,frames,grid,base",
    [(64, 13, (30, 45), (30, 45)), (32, 3, (4, 4), (3, 4)), (16, 2, (2, 5), (3, 4))],
)
def test_video_rope_matches_diffusers(head_dim, frames, grid, base) -> None:
    cos, sin = rope3d.video_rope(head_dim, torch.arange(frames), *grid, *base, theta=10000.0)
    crops = get_resize_crop_region_for_grid(grid, base[1], base[0])
    ref_cos, ref_sin = get_3d_rotary_pos_embed(head_dim, crops, grid_size=grid, temporal_size=frames)
    assert cos.shape == (frames * grid[0] * grid[1], head_dim)
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)


def test_apply_rope_matches_diffusers_and_preserves_pair_norms() -> None:
    cos, sin = rope3d.video_rope(32, torch.arange(3), 4, 4, 4, 4)
    x = torch.randn(2, 2, 48, 32)
    out = rope3d.apply_rope(x, cos, sin)
    torch.testing.assert_close(out, apply_rotary_emb(x, (cos, sin)), rtol=0, atol=1e-6)
    pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x))
    # position 0 (frame 0, row 0, col 0) rotates by nothing
    torch.testing.assert_close(out[..., 0, :], x[..., 0, :])
    assert rope3d.apply_rope(x.bfloat16(), cos, sin).dtype == torch.bfloat16


@pytest.mark.parametrize("frames,grid", [(3, (3, 4)), (13, (30, 45))])
def test_sincos_table_matches_diffusers(frames: int, grid: tuple[int, int]) -> None:
    dim = 64
    table = rope3d.sincos_3d(dim, torch.arange(frames), *grid, 1.875, 1.0)
    ref = get_3d_sincos_pos_embed(dim, (grid[1], grid[0]), frames, 1.875, 1.0, output_type="pt")
    torch.testing.assert_close(table, ref.reshape(-1, dim).float(), rtol=0, atol=1e-6)
