"""Training data: clip windows of S segments, their VAE latents (cached on disk), prompts, and the sampler.

Frames -> latents. A clip has exactly 3 s x fps frames per storyboard segment. The model's S segments
are 1 + t (F(S) - 1) pixel frames (t = VAE temporal ratio, F(S) = config.latent_frames(S); paper:
49 + 48 (S - 1)): a leading frame, then t x segment_frames frames per segment, exactly as the pipeline
cuts a decoded video (VideoPipeline.segment_frame_ranges). A window of S segments starting at clip
segment k is therefore

    [frame 48k - 1 (or frame 0 when k = 0)] + frames[48k : 48(k + S)]         (paper numbers)

which needs 3 x fps == t x segment_frames (the clip's segment length equals the model's); anything else
raises with the numbers. Every window of S consecutive segments of every clip long enough is one item.

Latents: the VAE posterior's mean and std per window, cached as safetensors under
run_dir/cache/latents/<vae fingerprint>/, so each window is encoded once per VAE (a retrained VAE gets
a new fingerprint). A training step samples z = mean + std * eps and scales it with the VAE's
scaling_factor (and shift_factor when set), as the pipeline expects.

Mattes: with a stage's matte_weight > 0 the loss is weighted per latent pixel by the clips' subject
mattes, pooled onto the latent grid (matte_to_latent_grid, DiTData.weights).

Sampler: a seeded permutation per epoch, read as one stream; each step takes batch x world_size
items, rank r its slice. Its position (epoch, offset) goes into the checkpoint. Each draw also has its
position in the stream (epoch x items + offset), the same whatever the world size: the trainer seeds
each sample's noise from it, so N ranks of batch B/N draw what one rank of batch B draws.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..pipeline.text import segment_prompts
from ..storyboard import SEGMENT_SECONDS, Storyboard, StoryboardError
from ..toonworld.dataset import STORYBOARD, ClipDataset, DatasetError
from .distributed import DistInfo, barrier

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The dataset does not fit the model or the stage (the message says how)."""


# ---- sampler --------------------------------------------------------------------------------------------


class SeededSampler:
    """Deterministic item order: epoch e visits randperm(n, seed=(seed, e)); a stream across epochs."""

    def __init__(self, num_items: int, seed: int, world_size: int = 1, rank: int = 0) -> None:
        if num_items < 1:
            raise DataError(f"sampler: no items to sample (num_items={num_items})")
        if not 0 <= rank < world_size:
            raise ValueError(f"sampler: rank {rank} outside world_size {world_size}")
        self.num_items, self.seed, self.world_size, self.rank = num_items, seed, world_size, rank
        self.epoch, self.offset = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=g).tolist()

    def _take(self, count: int) -> list[tuple[int, int]]:
        """The next `count` draws as (item, stream position)."""
        out = []
        for _ in range(count):
            if self.offset == self.num_items:
                self.epoch, self.offset = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            out.append((self._perm[self.offset], self.epoch * self.num_items + self.offset))
            self.offset += 1
        return out

    def next_draws(self, batch_size: int) -> tuple[list[int], list[int]]:
        """This rank's `batch_size` items of the next global batch (batch_size x world_size items) and
        their stream positions (global: independent of the world size)."""
        draws = self._take(batch_size * self.world_size)[
            self.rank * batch_size : (self.rank + 1) * batch_size
        ]
        return [i for i, _ in draws], [p for _, p in draws]

    def next_indices(self, batch_size: int) -> list[int]:
        """This rank's `batch_size` items of the next global batch (batch_size x world_size items)."""
        return self.next_draws(batch_size)[0]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset, "num_items": self.num_items, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("num_items", "seed"):
            if state.get(key) != getattr(self, key):
                raise DataError(
                    f"sampler state: {key} is {state.get(key)!r} in the checkpoint but {getattr(self, key)!r} now "
                    "(the dataset or seed changed; an exact resume needs the same ones)"
                )
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._perm = self._permutation(self.epoch)


# ---- frames ---------------------------------------------------------------------------------------------


def frames_to_vae_input(frames: np.ndarray) -> torch.Tensor:
    """float [T, H, W, 3] display values in [0, 1] -> [1, 3, T, H, W] in [-1, 1] (float32)."""
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    return (x * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, T, H, W)


@dataclass(frozen=True)
class FrameLayout:
    """Pixel frames of the model's segments: a leading frame, then frames_per_segment per segment."""

    frames_per_segment: int

    def window(self, frames: np.ndarray, start: int, segments: int) -> np.ndarray:
        """[1 + segments * frames_per_segment, H, W, 3] for segments start..start+segments-1 of a clip."""
        per = self.frames_per_segment
        lo, hi = start * per, (start + segments) * per
        if hi > frames.shape[0]:
            raise DataError(
                f"window of segments {start}..{start + segments - 1} needs frame {hi - 1}, clip has {frames.shape[0]}"
            )
        lead = frames[lo - 1 : lo] if start > 0 else frames[:1]
        return np.concatenate([lead, frames[lo:hi]], axis=0)


def frame_layout(fps: int, first_segment_frames: int, segment_frames: int, temporal: int) -> FrameLayout:
    """Check that a clip's 3-s segment is the model's segment; raises DataError with the numbers."""
    clip_per = SEGMENT_SECONDS * fps
    model_per = temporal * segment_frames
    if clip_per != model_per:
        raise DataError(
            f"dataset fps {fps} gives {clip_per} frames per 3-s segment, but the model's segment is "
            f"segment_frames {segment_frames} x VAE temporal ratio {temporal} = {model_per} frames "
            f"(needs fps {model_per / SEGMENT_SECONDS:g}); change the dataset fps or the transformer's segment_frames"
        )
    if first_segment_frames != segment_frames + 1:
        raise DataError(
            f"the model's first segment has {first_segment_frames} latent frames; training cuts 3-s clips "
            f"as 1 + segment_frames ({segment_frames + 1}) latent frames (CogVideoX: 13 = 1 + 12)"
        )
    return FrameLayout(model_per)


# ---- windows --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Segments start..start+segments-1 of clip `clip` (index into the ClipDataset, folder name)."""

    clip: int
    name: str
    start: int
    segments: int

    @property
    def key(self) -> str:
        return f"{self.name}-k{self.start}-s{self.segments}"


def clip_segment_counts(dataset: ClipDataset, max_clips: int = 0) -> list[int]:
    """Storyboard lengths of the clips (reads storyboard.json only, not the frames)."""
    names = dataset.names[:max_clips] if max_clips else dataset.names
    counts = []
    for name in names:
        try:
            counts.append(len(Storyboard.load(dataset.root / name / STORYBOARD)))
        except StoryboardError as err:
            raise DatasetError(str(err)) from None
    return counts


def make_windows(dataset: ClipDataset, segments: int, max_clips: int = 0) -> list[Window]:
    """Every window of `segments` consecutive segments of every clip that has that many."""
    counts = clip_segment_counts(dataset, max_clips)
    windows = [
        Window(i, dataset.names[i], start, segments)
        for i, n in enumerate(counts)
        for start in range(0, n - segments + 1)
    ]
    if not windows:
        raise DataError(
            f"dataset {dataset.root}: no clip has {segments} segments (longest has {max(counts)}); "
            "write longer clips or lower the stage's segments"
        )
    short = sum(1 for n in counts if n < segments)
    if short:
        log.info("%d of %d clips are shorter than %d segments and are not used", short, len(counts), segments)
    return windows


# ---- latents --------------------------------------------------------------------------------------------


ENCODER_PREFIXES = ("encoder.", "quant_conv.")  # the VAE weights that make latents


def vae_fingerprint(vae: nn.Module) -> str:
    """sha256 of the VAE config and encoder weights (16 hex digits): names the latent cache.

    Latents depend on the encoder side only (encoder, quant_conv), so a decoder fine-tune
    (`vae_trainable: decoder`) keeps its model's cache. diffusers' bookkeeping keys (`_name_or_path`,
    `_diffusers_version`, ...) are left out, so a VAE gives the same fingerprint in memory and after
    save_pretrained / from_pretrained."""
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        if not name.startswith(ENCODER_PREFIXES):
            continue
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _clip_stamp(clip_dir: Path) -> str:
    """Changes when the clip's frames are rewritten (size and mtime of frames.npy or frames/)."""
    for p in (clip_dir / "frames.npy", clip_dir / "frames"):
        if p.exists():
            st = p.stat()
            return f"{st.st_size}-{st.st_mtime_ns}"
    return "none"


class LatentStore:
    """Posterior mean/std [F, C, h, w] (fp32, CPU) per window; on disk under `root` when given."""

    def __init__(
        self,
        dataset: ClipDataset,
        layout: FrameLayout,
        vae: nn.Module,
        device: torch.device,
        root: Path | None,
    ) -> None:
        self.dataset, self.layout, self.vae, self.device = dataset, layout, vae, device
        self.root = root / vae_fingerprint(vae) if root is not None else None

    def _path(self, w: Window) -> Path:
        assert self.root is not None
        return self.root / f"{w.key}.safetensors"

    @torch.no_grad()
    def encode(self, w: Window) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.dataset[w.clip]
        frames = self.layout.window(clip.frames, w.start, w.segments)
        p = next(self.vae.parameters())
        x = frames_to_vae_input(frames).to(p.device, p.dtype)
        dist = self.vae.encode(x).latent_dist
        mean = dist.mean[0].permute(1, 0, 2, 3).float().cpu().contiguous()  # (F, C, h, w)
        std = dist.std[0].permute(1, 0, 2, 3).float().cpu().contiguous()
        return mean, std

    def get(self, w: Window) -> tuple[torch.Tensor, torch.Tensor]:
        if self.root is None:
            return self.encode(w)
        path = self._path(w)
        stamp = _clip_stamp(self.dataset.root / w.name)
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("stamp") == stamp:
                    return f.get_tensor("mean"), f.get_tensor("std")
        mean, std = self.encode(w)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"mean": mean, "std": std}, str(tmp), metadata={"stamp": stamp})
        os.replace(tmp, path)
        return mean, std

    def prepare(self, windows: list[Window], info: DistInfo, progress: bool = True) -> None:
        """Encode every window not cached yet, each rank a share; all ranks wait for the others."""
        if self.root is None:
            return
        from tqdm.auto import tqdm

        mine = windows[info.rank :: info.world_size]
        todo = [w for w in mine if not self._cached(w)]
        if todo:
            log.info("encoding %d window(s) to latents (rank %d)", len(todo), info.rank)
            for w in tqdm(todo, desc="latents", disable=not (progress and info.is_main), leave=False):
                self.get(w)
        barrier(info)

    def _cached(self, w: Window) -> bool:
        path = self._path(w)
        if not path.is_file():
            return False
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("stamp") == _clip_stamp(self.dataset.root / w.name)


def matte_to_latent_grid(matte: np.ndarray, latent_frames: int, height: int, width: int) -> torch.Tensor:
    """uint8 [T, H, W] window matte -> float32 [F, 1, h, w] in [0, 1], the latent grid's subject coverage.

    Each latent pixel takes the largest matte value of its footprint: the VAE's latent frame 0 is pixel
    frame 0 and latent frame k >= 1 covers pixel frames t(k-1)+1 .. tk (t = (T-1)/(F-1)); spatially an
    (H/h) x (W/w) block. The maximum, not the mean, so a subject smaller than a footprint still counts fully.
    """
    t_frames, h_px, w_px = matte.shape
    if (t_frames - 1) % max(latent_frames - 1, 1) or h_px % height or w_px % width:
        raise DataError(
            f"matte of {t_frames} frames of {w_px}x{h_px} does not tile a latent grid of {latent_frames} frames "
            f"of {width}x{height}"
        )
    m = torch.from_numpy(np.ascontiguousarray(matte, dtype=np.float32) / 255.0)
    first = m[:1]
    if latent_frames > 1:
        rest = m[1:].view(latent_frames - 1, -1, h_px, w_px).amax(dim=1)
        m = torch.cat([first, rest])
    else:
        m = first
    m = torch.nn.functional.max_pool2d(m.unsqueeze(1), (h_px // height, w_px // width))
    return m  # (F, 1, h, w)


class DiTData:
    """The items of one DiT stage: latent distributions and per-segment prompts of every window, and
    with matte_weight > 0 each window's loss weights (1 + matte_weight x subject coverage)."""

    def __init__(
        self,
        windows: list[Window],
        store: LatentStore,
        scaling_factor: float,
        shift_factor: float,
        matte_weight: float = 0.0,
    ) -> None:
        self.windows, self.store = windows, store
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor)
        self.matte_weight = float(matte_weight)
        self._prompts: dict[int, list[str]] = {}
        self._boards: dict[int, Storyboard] = {}
        self._weights: dict[int, torch.Tensor] = {}

    def check_mattes(self) -> None:
        """With matte_weight > 0 every clip of the stage needs a matte; raises DataError naming the ones without."""
        if self.matte_weight == 0:
            return
        clips = sorted({(w.clip, w.name) for w in self.windows})
        missing = [name for i, name in clips if self.store.dataset.matte(i) is None]
        if missing:
            raise DataError(
                f"matte_weight {self.matte_weight:g} needs a subject matte (matte.npy or matte/0000.png...) in every "
                f"clip; {len(missing)} of {len(clips)} have none, e.g. {missing[:5]}. Add mattes or set matte_weight 0"
            )

    def weights(self, indices: list[int], latent_shape: torch.Size) -> torch.Tensor | None:
        """Loss weights [B, F, 1, h, w] for latents of shape [B, F, C, h, w]; None when matte_weight is 0."""
        if self.matte_weight == 0:
            return None
        _, frames, _, h, w = latent_shape
        out = []
        for i in indices:
            if i not in self._weights:
                win = self.windows[i]
                matte = self.store.dataset.matte(win.clip)
                if matte is None:
                    raise DataError(f"clip {win.name}: no matte, but matte_weight is {self.matte_weight:g}")
                cover = matte_to_latent_grid(
                    self.store.layout.window(matte, win.start, win.segments), frames, h, w
                )
                self._weights[i] = 1.0 + self.matte_weight * cover
            out.append(self._weights[i])
        return torch.stack(out)

    def __len__(self) -> int:
        return len(self.windows)

    def prompts(self, i: int) -> list[str]:
        """The window's per-segment prompts with the pipeline's scene markers (segment_prompts)."""
        if i not in self._prompts:
            w = self.windows[i]
            if w.clip not in self._boards:
                self._boards[w.clip] = Storyboard.load(self.store.dataset.root / w.name / STORYBOARD)
            segs = list(self._boards[w.clip].segments[w.start : w.start + w.segments])
            self._prompts[i] = segment_prompts(segs)[0]
        return self._prompts[i]

    def latents(self, indices: list[int], generator: torch.Generator) -> torch.Tensor:
        """Scaled latent samples [B, F, C, h, w] (fp32, CPU): (mean + std * eps - shift) * scale."""
        means, stds = zip(*(self.store.get(self.windows[i]) for i in indices))
        shapes = {tuple(m.shape) for m in means}
        if len(shapes) != 1:
            names = [self.windows[i].name for i in indices]
            raise DataError(
                f"clips {names} give latents of different shapes {sorted(shapes)}; use one frame size"
            )
        mean, std = torch.stack(means), torch.stack(stds)
        eps = torch.randn(mean.shape, generator=generator)
        return (mean + std * eps - self.shift_factor) * self.scaling_factor
