"""3D positions for video tokens: rotary embedding (CogVideoX-5B, and every TTT layer) and the absolute
sin-cos table (CogVideoX-2B style configs).

RoPE split of one head (CogVideoX): time head_dim/4, height 3/8, width 3/8 (64 -> 16, 24, 24). Each part
rotates adjacent pairs (x[2i], x[2i+1]) by angle pos * theta^(-2i/part). For other head dims the same
proportions are kept; every part must hold whole pairs, so head_dim must be a multiple of 16 (32 -> 8, 12,
12). Spatial positions follow CogVideoX's pipeline: a latent grid different from the training grid
(sample_height x sample_width) is fitted into it (resize + centre crop) and positions are spread over
that region, so at the training size they are 0, 1, 2, ...

All tables are computed in float32; apply_rope works in float32 and returns the input dtype.
"""

from __future__ import annotations

import torch


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """(time, height, width) channels of a head: (head_dim/4, 3 head_dim/8, 3 head_dim/8)."""
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 16 or head_dim % 16:
        raise ValueError(f"head_dim: 3D RoPE needs a positive multiple of 16, got {head_dim!r}")
    return head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3


def rope_1d(dim: int, positions: torch.Tensor, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [M, dim] for positions [M]: angle_i = pos * theta^(-2i/dim), each repeated for its pair."""
    if dim % 2:
        raise ValueError(f"dim: expected an even number of channels, got {dim}")
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim))
    angles = torch.outer(positions.to(torch.float32), freqs)  # (M, dim/2)
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


def resize_crop_region(
    grid_h: int, grid_w: int, base_h: int, base_w: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, left), (bottom, right)) of a grid_h x grid_w grid fitted into base_h x base_w (CogVideoX)."""
    if grid_h / grid_w > base_h / base_w:
        height, width = base_h, int(round(base_h / grid_h * grid_w))
    else:
        width, height = base_w, int(round(base_w / grid_w * grid_h))
    top = int(round((base_h - height) / 2.0))
    left = int(round((base_w - width) / 2.0))
    return (top, left), (top + height, left + width)


def spatial_positions(
    grid_h: int, grid_w: int, base_h: int, base_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row positions [grid_h] and column positions [grid_w] (float32) of a token grid."""
    (top, left), (bottom, right) = resize_crop_region(grid_h, grid_w, base_h, base_w)
    rows = torch.linspace(top, bottom * (grid_h - 1) / grid_h, grid_h, dtype=torch.float32)
    cols = torch.linspace(left, right * (grid_w - 1) / grid_w, grid_w, dtype=torch.float32)
    return rows, cols


def rope_3d(
    head_dim: int,
    t_pos: torch.Tensor,
    h_pos: torch.Tensor,
    w_pos: torch.Tensor,
    theta: float = 10000.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T * H * W, head_dim] for the grid t_pos x h_pos x w_pos (frame-major, then row-major)."""
    dt, dh, dw = rope_axis_dims(head_dim)
    nt, nh, nw = t_pos.numel(), h_pos.numel(), w_pos.numel()
    parts = []
    for tables in zip(rope_1d(dt, t_pos, theta), rope_1d(dh, h_pos, theta), rope_1d(dw, w_pos, theta)):
        t_tab, h_tab, w_tab = tables
        grid = torch.cat(
            [
                t_tab[:, None, None, :].expand(nt, nh, nw, dt),
                h_tab[None, :, None, :].expand(nt, nh, nw, dh),
                w_tab[None, None, :, :].expand(nt, nh, nw, dw),
            ],
            dim=-1,
        )  # (T, H, W, head_dim)
        parts.append(grid.reshape(nt * nh * nw, head_dim))
    return parts[0], parts[1]


def video_rope(
    head_dim: int,
    frame_positions: torch.Tensor,
    grid_h: int,
    grid_w: int,
    base_h: int,
    base_w: int,
    theta: float = 10000.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [F * grid_h * grid_w, head_dim] for frames at `frame_positions` on a grid_h x grid_w token grid.

    base_h x base_w is the token grid of the training size (sample size / patch size).
    """
    rows, cols = spatial_positions(grid_h, grid_w, base_h, base_w)
    return rope_3d(head_dim, frame_positions.to(torch.float32).cpu(), rows, cols, theta)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [..., L, D] by the angles in cos/sin [L, D] (float32 math)."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., L, D/2, 2)
    real, imag = pairs.unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)  # (..., L, D)
    return (x.float() * cos + rotated * sin).to(x.dtype)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[M, dim] float64: [sin(pos * w_i), cos(pos * w_i)] with w_i = 10000^(-i / (dim/2))."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = torch.outer(positions.to(torch.float64).reshape(-1), omega)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d(
    dim: int,
    frame_positions: torch.Tensor,
    grid_h: int,
    grid_w: int,
    spatial_interpolation_scale: float = 1.875,
    temporal_interpolation_scale: float = 1.0,
) -> torch.Tensor:
    """Absolute position table [F * grid_h * grid_w, dim] (float32) as CogVideoX-2B adds to video tokens.

    Channels: dim/4 time, then 3 dim/8 from the column index and 3 dim/8 from the row index.
    """
    if dim % 16:
        raise ValueError(f"dim: the 3D sin-cos table needs a multiple of 16, got {dim}")
    spatial, temporal = 3 * dim // 4, dim // 4
    rows = torch.arange(grid_h, dtype=torch.float32) / spatial_interpolation_scale
    cols = torch.arange(grid_w, dtype=torch.float32) / spatial_interpolation_scale
    col_grid = cols[None, :].expand(grid_h, grid_w).reshape(-1)  # (H*W,) row-major
    row_grid = rows[:, None].expand(grid_h, grid_w).reshape(-1)
    space = torch.cat(
        [sincos_1d(spatial // 2, col_grid), sincos_1d(spatial // 2, row_grid)], dim=1
    )  # (H*W, 3D/4)
    times = frame_positions.to(torch.float32).cpu() / temporal_interpolation_scale
    time = sincos_1d(temporal, times)  # (F, D/4)
    nf, ns = time.shape[0], space.shape[0]
    table = torch.cat(
        [time[:, None, :].expand(nf, ns, temporal), space[None].expand(nf, ns, spatial)], dim=-1
    )
    return table.reshape(nf * ns, dim).to(torch.float32)
