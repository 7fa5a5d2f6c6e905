"""Elements inside a matte (plate_mode "element"): generation changes only the inside of a matte.

The rule a reader must keep: outside the matte the latents ARE the plate's. The plates are encoded by
the VAE and, as for "restyle", noised to the first step run (strength); then, with m the latent mask,

    before every step k:  x = m x + (1 - m) noised(plate latents, noise, t_k)      (1, L, C, h, w)
    after the last step:  x = m x + (1 - m) plate latents

the usual "re-impose the known region" inpainting of diffusion models. Outside the mask's soft edge the
final latents are the plate's exactly, so the decode there is the plate's VAE round trip (up to how far
the VAE decoder spreads the inside: its convolutions and group norms see the whole frame).

The latent mask (`latent_mask`): the matte's frames grouped as the causal VAE groups them (latent frame
0 is frame 0, latent frame l >= 1 is frames t(l - 1) + 1 .. t l, t the temporal factor), the maximum over
each group and over each s x s pixel cell (s the spatial factor), so a cell holding any of the element is
generated whole and the element is never clipped. The soft edge, only outward (the inside stays fully
generated): a linear ramp from 1 on every cell the element touches down to exactly 0 at 2 feather / s + 1
cells from it (two sigmas of the alpha's Gaussian), so beyond it the plate is kept exactly.

The output (`element_frame`): RGBA whose alpha is the matte blurred by a Gaussian of sigma `feather`
output pixels, and whose RGB is the generated frame premultiplied by that alpha (the convention of EXR
and of Nuke's Merge over): Merge(over) of it onto the plate shows the element inside the matte and the
plate outside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .params import PipelineError

DEFAULT_MATTE_FEATHER = 2.0
"""The soft edge's Gaussian sigma in output pixels when a request names none."""


def check_matte_array(matte: object, frames: int, height: int, width: int) -> np.ndarray:
    """The matte as float32 [T, H, W] in 0..1 matching a plate of `frames` frames of width x height;
    PipelineError naming what is wrong (type, shape, non-finite or out-of-range values)."""
    if not isinstance(matte, np.ndarray) or not np.issubdtype(matte.dtype, np.floating):
        got = matte.dtype if isinstance(matte, np.ndarray) else type(matte).__name__
        raise PipelineError(f"matte: expected a float numpy array [T, H, W] of coverage 0..1, got {got}")
    if matte.shape != (frames, height, width):
        raise PipelineError(
            f"matte: expected shape {(frames, height, width)} (one matte frame per plate frame at the "
            f"generation size), got {matte.shape}"
        )
    if not np.isfinite(matte).all():
        raise PipelineError(f"matte: {int((~np.isfinite(matte)).sum())} NaN/inf values; expected 0..1")
    low, high = float(matte.min()), float(matte.max())
    if low < 0 or high > 1:
        raise PipelineError(f"matte: values span {low:.4g}..{high:.4g}; expected coverage in 0..1")
    return matte.astype(np.float32, copy=False)


def _check_feather(feather: float) -> float:
    if isinstance(feather, bool) or not isinstance(feather, int | float) or not 0 <= feather < np.inf:
        raise PipelineError(f"matte_feather: expected a finite number of pixels >= 0, got {feather!r}")
    return float(feather)


def latent_mask(
    matte: np.ndarray, temporal_factor: int, spatial_factor: int, feather_px: float
) -> torch.Tensor:
    """Matte [T, H, W] (T = 1 + t (L - 1), H and W multiples of s) -> mask [1, L, 1, h, w] float32 in
    0..1 on the latent grid (see the module docstring); feather_px in the matte's pixels."""
    feather = _check_feather(feather_px)
    t = temporal_factor
    frames, height, width = matte.shape
    if (frames - 1) % t or height % spatial_factor or width % spatial_factor:
        raise PipelineError(
            f"matte: {frames} frames of {width}x{height} do not map onto whole latent cells (1 + {t}k "
            f"frames, sides multiples of {spatial_factor})"
        )
    m = torch.from_numpy(np.ascontiguousarray(matte, np.float32))[None, None]  # (1, 1, T, H, W)
    first = m[:, :, :1]  # latent frame 0 holds frame 0 alone
    groups = [first] if frames == 1 else [first, m[:, :, 1:].unflatten(2, (-1, t)).amax(dim=3)]
    per_latent_frame = torch.cat(groups, dim=2)  # (1, 1, L, H, W)
    s = spatial_factor
    hard = torch.nn.functional.max_pool3d(per_latent_frame, (1, s, s))  # (1, 1, L, h, w)
    mask = hard
    width = 2 * feather / s  # the edge's width in latent cells: two sigmas of the alpha's Gaussian
    if width > 0:
        import cv2

        # distance (in cells) of every cell to the nearest one the element touches; the ramp falls from
        # 1 there to exactly 0 at width + 1 cells, so the outside beyond it keeps the plate exactly
        touched = (hard[0, 0] > 0).numpy()
        distance = np.stack(
            [
                cv2.distanceTransform((~f).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                for f in touched
            ]
        )
        ramp = torch.from_numpy(np.clip(1 - distance / (width + 1), 0, 1).astype(np.float32))
        mask = torch.maximum(hard, ramp[None, None])
    return mask.permute(0, 2, 1, 3, 4).contiguous()  # (1, L, 1, h, w)


def feathered(matte: np.ndarray, feather_px: float) -> np.ndarray:
    """One matte frame (H, W) blurred by a Gaussian of sigma feather_px pixels, in 0..1 (float32)."""
    import cv2

    feather = _check_feather(feather_px)
    out = np.ascontiguousarray(matte, np.float32)
    if feather > 0:
        out = cv2.GaussianBlur(out, (0, 0), feather, borderType=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0)


def element_frame(rgba: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A delivered frame (H, W, 4) with `alpha` (H, W) as its A and its RGB premultiplied by it."""
    if rgba.shape[:2] != alpha.shape or rgba.shape[2] != 4:
        raise PipelineError(f"element_frame: frame {rgba.shape} and alpha {alpha.shape} do not match")
    out = np.array(rgba, dtype=np.float32, copy=True)
    out[..., :3] *= alpha[..., None]
    out[..., 3] = alpha
    return out


def _to_generation(matte: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    """One matte frame (H, W) placed on the generation frame (width, height) as conform_in places a
    plate (same fit), with linear / area filtering, never colour-converted."""
    from ttt_engine.conform.scale import Format, resize, scale_to

    width, height = size
    image = np.asarray(matte, np.float32)[:, :, None]
    if fit == "distort":
        return resize(image, width, height, "linear")[:, :, 0]
    return scale_to(image, Format(width, height), fit, "linear")[0][:, :, 0]


def conform_mattes(plan: Any, mattes: Sequence[np.ndarray]) -> np.ndarray:
    """Mattes (one (H, W) per plate, in the plates' frame order) -> [native_count, h, w] float32 in 0..1
    at the generation size, as conform_plates turns the plates into the model's frames: a native plan's
    mattes are the native frames already; a delivery's are edit frames, retimed linearly (a blend, no
    flow) to the native rate (held past their end, as restyle plates are) and placed with the delivery's
    fit."""
    from ttt_engine.conform import native_frames_needed, retime_plan

    if plan.delivery is None:
        return np.clip(np.stack([np.asarray(m, np.float32) for m in mattes]), 0.0, 1.0)
    delivery = plan.delivery
    frames = list(mattes)
    needed = native_frames_needed(plan.native_count, plan.native_fps, delivery.rate)
    frames += [frames[-1]] * max(0, needed - len(frames))
    placed: dict[int, np.ndarray] = {}

    def matte(i: int) -> np.ndarray:
        if i not in placed:
            placed[i] = _to_generation(frames[i], plan.generation_size, delivery.fit)
        return placed[i]

    width, height = plan.generation_size
    out = np.empty((plan.native_count, height, width), np.float32)
    for sample in retime_plan(plan.native_count, plan.native_fps, delivery.rate, len(frames)):
        out[sample.index] = (1 - sample.weight) * matte(sample.lo) + sample.weight * matte(sample.hi)
    return np.clip(out, 0.0, 1.0)


def output_scale(plan: Any) -> float:
    """Output pixels per generated pixel (the mean of the two axes' scales; 1 for a native plan or a
    delivery without a format): converts a feather in output pixels to generated pixels."""
    from ttt_engine.conform.scale import Format, placement

    d = plan.delivery
    if d is None or not d.has_format:
        return 1.0
    width, height = plan.generation_size
    place = placement(width, height, Format(int(d.width), int(d.height), float(d.pixel_aspect)), d.fit)
    return (place.scale_x + place.scale_y) / 2


def output_alpha(plan: Any, matte: np.ndarray, feather_px: float) -> np.ndarray:
    """The alpha (output height, output width) of the delivered frame whose edit frame has `matte`
    (H, W): the matte carried through the picture's own geometry, then feathered by feather_px output
    pixels. The matte keeps its full resolution when it maps onto the output frame directly (its size
    is the output's, square pixels, and the generation frame has its aspect); otherwise it goes, as the
    picture does, onto the generation frame (the plates' fit) and from there onto the output (the
    delivery's fit)."""
    from ttt_engine.conform.scale import Format, scale_to

    matte = np.asarray(matte, np.float32)
    out_w, out_h = plan.output_size
    d = plan.delivery
    gen_w, gen_h = plan.generation_size
    direct = d is None or (
        matte.shape == (out_h, out_w)
        and float(d.pixel_aspect) == 1
        and matte.shape[1] * gen_h == matte.shape[0] * gen_w
    )
    if not direct:
        on_generation = _to_generation(matte, plan.generation_size, d.fit)
        target = Format(out_w, out_h, float(d.pixel_aspect))
        matte = scale_to(on_generation[:, :, None], target, d.fit, "linear")[0][:, :, 0]
    if matte.shape != (out_h, out_w):
        raise PipelineError(f"matte is {matte.shape[1]}x{matte.shape[0]}; the output is {out_w}x{out_h}")
    return feathered(matte, feather_px)
