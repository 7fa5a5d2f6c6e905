"""The autoencoder stage: train a small diffusers AutoencoderKLCogVideoX on the dataset's frames.

    x        = frames in [-1, 1]                       [B, 3, T, H, W]   (T = 1 + k * 2 * temporal ratio)
    q(z | x) = encoder(x)                               diagonal Gaussian [B, C, t, h, w]
    z        ~ q(z | x)                                 (the trainer's generator)
    loss     = recon(decoder(z), x) + kl_weight * KL(q || N(0, I))      recon: l1 | l2 | l1+l2 (means)

The KL is the mean over latent elements (diffusers' DiagonalGaussianDistribution.kl sums over dims 1-3
only, which is wrong for 5-D video latents). The result is saved with save_pretrained under the model
folder's vae/, the diffusers layout that VideoPipeline.from_folder reads.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError
from .data import ENCODER_PREFIXES


def default_vae_config(latent_channels: int) -> dict[str, Any]:
    """The pipeline's tiny CogVideoX VAE (4x spatial, 4x temporal, channels 16/32/32)."""
    from ..pipeline.video_pipeline import tiny_vae_config

    return tiny_vae_config(latent_channels)


def build_vae(config: dict[str, Any]) -> nn.Module:
    """A fresh AutoencoderKLCogVideoX; unknown keys raise ConfigError naming model.vae.<key>."""
    from diffusers import AutoencoderKLCogVideoX

    known = set(inspect.signature(AutoencoderKLCogVideoX.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(
            f"model.vae.{unknown[0]}: unknown AutoencoderKLCogVideoX key (unknown: {unknown}); known: {sorted(known)}"
        )
    try:
        return AutoencoderKLCogVideoX(**config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.vae: not a valid AutoencoderKLCogVideoX config: {err}") from err


def spatial_factor(vae: nn.Module) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def temporal_factor(vae: nn.Module) -> int:
    return int(vae.config.temporal_compression_ratio)


def check_train_frames(frames: int, vae: nn.Module, key: str = "frames") -> None:
    """The CogVideoX VAE round-trips 1 + k * 2t frames exactly (t = temporal ratio; an odd latent count)."""
    t = temporal_factor(vae)
    if frames < 1 + 2 * t or (frames - 1) % (2 * t):
        raise ConfigError(
            f"{key}: expected 1 + k * {2 * t} frames (k >= 1) so the VAE decodes as many frames as it "
            f"encodes, got {frames}"
        )


def set_vae_trainable(vae: nn.Module, part: str) -> list[str]:
    """requires_grad for a VAE stage: 'all', or 'decoder' (all but the encoder and quant_conv, which
    define the latent space). Returns the names of the trained parameters."""
    if part not in ("all", "decoder"):
        raise ValueError(f"VAE trainable part: expected 'all' or 'decoder', got {part!r}")
    trained = []
    for name, param in vae.named_parameters():
        flag = part == "all" or not name.startswith(ENCODER_PREFIXES)
        param.requires_grad_(flag)
        if flag:
            trained.append(name)
    return trained


class VAEObjective(nn.Module):
    """forward(x [B, 3, T, H, W] in [-1, 1], generator) -> (loss, recon, kl) scalars (fp32).

    train_encoder False: the posterior is computed without gradients (a decoder-only stage)."""

    def __init__(self, vae: nn.Module, recon_loss: str, kl_weight: float, train_encoder: bool = True) -> None:
        super().__init__()
        self.vae = vae
        self.recon_loss = recon_loss
        self.kl_weight = float(kl_weight)
        self.train_encoder = train_encoder

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=generator)
        rec = self.vae.decode(z).sample
        if rec.shape != x.shape:
            raise ValueError(f"VAE decoded shape {tuple(rec.shape)} from input {tuple(x.shape)}")
        rec, ref = rec.float(), x.float()
        terms = []
        if "l1" in self.recon_loss:
            terms.append((rec - ref).abs().mean())
        if "l2" in self.recon_loss:
            terms.append(F.mse_loss(rec, ref))
        recon = torch.stack(terms).sum()
        mean, logvar = posterior.mean.float(), posterior.logvar.float()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        return recon + self.kl_weight * kl, recon.detach(), kl.detach()


def random_crop(x: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One random crop x crop window per sample of x [B, C, T, H, W] (the same window over time)."""
    height, width = x.shape[-2:]
    if crop > min(height, width):
        raise ConfigError(f"crop: {crop} pixels is larger than the frames ({height} x {width})")
    out = []
    for sample in x:
        top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
        out.append(sample[..., top : top + crop, left : left + crop])
    return torch.stack(out)


@torch.no_grad()
def calibrate_scaling(vae: nn.Module, batches: list[torch.Tensor]) -> float:
    """Set vae.config.scaling_factor to 1 / std of the posterior means of `batches` and return it.

    The DiT's noise schedule assumes unit-variance latents; a VAE trained with a tiny KL weight has
    latents of arbitrary scale (Stable Diffusion's 0.18215 and CogVideoX's 0.7 come from this measure).
    """
    if not batches:
        raise ValueError("calibrate_scaling: no batches")
    device = next(vae.parameters()).device
    means = [vae.encode(x.to(device)).latent_dist.mean.float().flatten() for x in batches]
    std = float(torch.cat(means).std())
    if not std > 0:
        raise ValueError(f"calibrate_scaling: latent std is {std}; the VAE collapsed")
    vae.register_to_config(scaling_factor=1.0 / std)
    return 1.0 / std


def save_vae(vae: nn.Module, folder: str | Path) -> Path:
    """diffusers layout (config.json + diffusion_pytorch_model.safetensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(str(folder), safe_serialization=True)
    return folder


def load_vae(folder: str | Path) -> nn.Module:
    from diffusers import AutoencoderKLCogVideoX

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"VAE folder {folder}: no config.json (expected a diffusers save_pretrained folder)"
        )
    return AutoencoderKLCogVideoX.from_pretrained(str(folder), local_files_only=True)
