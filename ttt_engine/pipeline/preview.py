"""Cheap previews straight from latents, without the VAE decoder.

A latent pixel maps to roughly the mean colour of its 8x8 patch through a linear function, so we fit
that function once per VAE: encode a few smooth synthetic colour images, then least-squares fit
rgb ~ latent @ W + b (latents in the pipeline's scaled space). Applying it is one small matmul per
step, cheap enough to run after every denoising step. Without a fit, `first3` normalises the first three
latent channels per frame, which shows motion and layout but not colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .params import PipelineError

# encode_fn(images [N, 3, 1, H, W] in [-1, 1]) -> scaled latents [N, C, 1, H / s, W / s]
EncodeFn = Callable[[torch.Tensor], torch.Tensor]


def _smooth_colour_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n images [n, 3, size, size] in [-1, 1]: random low-frequency colour fields plus flat colours."""
    coarse = torch.rand(n, 3, 4, 4, generator=generator) * 2 - 1
    images = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    flat = torch.rand(n // 4 + 1, 3, 1, 1, generator=generator) * 2 - 1
    images[: len(flat)] = flat.expand(-1, -1, size, size)[:n]
    return images


@dataclass(frozen=True)
class LatentRGBProjection:
    """rgb = latent @ weight + bias, with rgb in [0, 1] display values. weight [C, 3], bias [3]."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """latents [1, F, C, h, w] (or [F, C, h, w]) -> uint8 RGB [F, h, w, 3]."""
        x = latents[0] if latents.dim() == 5 else latents
        if x.dim() != 4 or x.shape[1] != self.weight.shape[0]:
            raise PipelineError(
                f"preview: expected latents [F, {self.weight.shape[0]}, h, w], got {tuple(latents.shape)}"
            )
        x = x.detach().float().cpu().permute(0, 2, 3, 1)  # (F, h, w, C)
        rgb = x @ self.weight + self.bias
        return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def fit_latent_rgb_projection(
    encode_fn: EncodeFn, spatial_factor: int, samples: int = 16, size: int | None = None, seed: int = 0
) -> LatentRGBProjection:
    """Fit the linear latent -> RGB map of a VAE from `samples` synthetic single-frame images.

    Targets are the images average-pooled to latent resolution, mapped to [0, 1].
    """
    size = size or 8 * spatial_factor
    if size % spatial_factor:
        raise PipelineError(f"preview fit: size {size} must be a multiple of the VAE factor {spatial_factor}")
    generator = torch.Generator().manual_seed(seed)
    images = _smooth_colour_images(samples, size, generator)  # (N, 3, H, W)
    with torch.no_grad():
        latents = encode_fn(images[:, :, None]).float().cpu()  # (N, C, 1, h, w)
    target = F.avg_pool2d(images, spatial_factor)  # (N, 3, h, w)
    if latents.shape[-2:] != target.shape[-2:] or latents.shape[2] != 1:
        raise PipelineError(
            f"preview fit: encoder returned latents {tuple(latents.shape)}, expected [N, C, 1, "
            f"{target.shape[-2]}, {target.shape[-1]}]"
        )
    x = latents[:, :, 0].permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (N*h*w, C)
    y = ((target + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3)  # (N*h*w, 3)
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    solution = torch.linalg.lstsq(x1, y.double()).solution.float()  # (C + 1, 3)
    return LatentRGBProjection(weight=solution[:-1].contiguous(), bias=solution[-1].contiguous())


def first3_preview(latents: torch.Tensor) -> np.ndarray:
    """latents [1, F, C, h, w] -> uint8 [F, h, w, 3] from channels 0-2, min-max normalised per frame."""
    x = latents[0] if latents.dim() == 5 else latents
    if x.dim() != 4 or x.shape[1] < 3:
        raise PipelineError(f"preview: expected latents [F, C >= 3, h, w], got {tuple(latents.shape)}")
    x = x[:, :3].detach().float().cpu().permute(0, 2, 3, 1)  # (F, h, w, 3)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-6)
    return (x * 255).round().to(torch.uint8).numpy()
