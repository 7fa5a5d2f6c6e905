"""Init frames (a plate) for video-to-video: checks, the colour conversion into the VAE, noising.

A plate is float32 [T, H, W, 3] in the model's colour space (values 0..1; ttt_engine.conform.conform_in
converts EXR plates there with OpenColorIO). The VAE reads that space mapped to [-1, 1]; values outside
0..1 are clipped, and the number clipped is logged. The causal VAE turns T = 1 + t (L - 1) frames into L latent frames (t is
its temporal factor), so those are the plate lengths that map onto whole latent frames.

Two uses (GenerationParams.plate_mode):
- "restyle" (SDEdit): T equals the output's frame count; the plate's latents are noised to the first
  timestep of the last round(steps x strength) steps and denoised from there.
- "continue" (inpainting in time): the plate covers the first L latent frames (L smaller than the
  video's); at every step those frames are replaced by the plate's latents noised to the current
  timestep, and after the last step by the plate's latents themselves.
- "element": as restyle, with a matte; outside it the plate's latents are re-imposed at every step
  (element.py).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .params import PipelineError

log = logging.getLogger(__name__)


def check_init_array(frames: object) -> np.ndarray:
    """The plate as float32 [T, H, W, 3]; PipelineError naming what is wrong (type, shape, non-finite)."""
    if not isinstance(frames, np.ndarray):
        raise PipelineError(
            f"init_frames: expected a numpy float32 array [T, H, W, 3] (model colour space), got {type(frames).__name__}"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise PipelineError(f"init_frames: expected shape [T, H, W, 3] with T >= 1, got {frames.shape}")
    if not np.issubdtype(frames.dtype, np.floating):
        raise PipelineError(
            f"init_frames: expected float values in the model's colour space, got dtype {frames.dtype}"
        )
    if not np.isfinite(frames).all():
        bad = int((~np.isfinite(frames)).sum())
        first = int(np.argwhere(~np.isfinite(frames))[0][0])
        raise PipelineError(
            f"init_frames: {bad} NaN/inf values (first in frame {first}); expected finite values"
        )
    return frames


def valid_counts(mode: str, total_latent_frames: int, temporal_factor: int) -> list[int]:
    """Plate frame counts a video of total_latent_frames accepts in `mode`.

    restyle, element: exactly the output's frame count. continue: 1 + t (L - 1) for L = 1 .. total - 1.
    """

    def pixels(latent: int) -> int:
        return 1 + temporal_factor * (latent - 1)

    if mode != "continue":
        return [pixels(total_latent_frames)]
    return [pixels(latent) for latent in range(1, total_latent_frames)]


def latent_frames_for(count: int, temporal_factor: int) -> int:
    """Latent frames the causal VAE makes of `count` frames (count = 1 + t (L - 1))."""
    return 1 + (count - 1) // temporal_factor


def to_vae_input(frames: np.ndarray) -> torch.Tensor:
    """Model-space [T, H, W, 3] in 0..1 -> [-1, 1] as (1, 3, T, H, W) float32, frame by frame (no
    whole-video temporaries: a long 480p plate is gigabytes)."""
    t, h, w, _ = frames.shape
    out = torch.empty(1, 3, t, h, w, dtype=torch.float32)
    clipped = 0
    for i, frame in enumerate(frames):
        clipped += int(np.count_nonzero((frame < 0) | (frame > 1)))
        display = torch.from_numpy(np.clip(frame, 0.0, 1.0).astype(np.float32))  # (H, W, 3) in [0, 1]
        out[0, :, i] = display.permute(2, 0, 1) * 2 - 1
    if clipped:
        log.info(
            "init_frames: %d of %d values outside the model space's [0, 1] clipped",
            clipped,
            frames.size,
        )
    return out


def noised(
    clean: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The forward process at DDPM timestep t: sqrt(a_t) clean + sqrt(1 - a_t) noise.

    With zero terminal SNR, a_999 is 0 (DDIM) or 2**-24 (DPM-Solver clamps it), so t = 999 is (almost)
    pure noise.
    """
    a = alphas_cumprod[int(t)]
    return a.sqrt() * clean + (1 - a).sqrt() * noise
