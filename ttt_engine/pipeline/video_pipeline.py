"""VideoPipeline: storyboard -> latents -> frames, for any number of 3-second segments (1 to 21).

    texts  = per-segment prompts (+ scene markers), neg = per-segment negative prompts
    x_K    ~ N(0, I) from a CPU generator seeded with params.seed        [1, F, C, h, w]
    for k in 0..K-1:
        v   = neg_pred + g_k * (cond_pred - neg_pred)                     two separate forwards (CFG)
              (cond_pred alone, one forward, for the first params.unguided_steps steps)
        x   = scheduler.step(v, t_k, x)                                  DPM-Solver++ 2M or DDIM
        callback(StepInfo(k + 1, K, t_k, ...))                           progress + cheap preview
    frames = VAE.decode(x / scaling_factor)  -> [0, 1] in the model's colour space   [T, H, W, 3]

Frames in and out are in the model's own colour space (ModelSpec.colorspace, model_index.json; the
default model's is sRGB-encoded Rec.709, what it was trained on): the conform (ttt_engine.conform)
converts them to and from a delivery's working space with OpenColorIO.

With a plate (init_frames, model space [T, H, W, 3] -> VAE.encode, see plates.py):
    restyle:  x = noised(plate latents, noise, t_first) and only the last round(K x strength) steps run
    continue: before every step x[:, :L] = noised(plate latents, noise[:, :L], t_k); after the last,
              x[:, :L] = plate latents (the plate's frames kept, the rest generated)
    element:  as restyle, and with m the matte on the latent grid (element.py), before every step
              x = m x + (1 - m) noised(plate latents, noise, t_k); after the last, x = m x + (1 - m) plate
              latents (only the inside of the matte generated)

g_k is the dynamic CFG scale indexed by the step count (schedulers.dynamic_cfg_scale). Components come
from the field's libraries: diffusers' AutoencoderKLCogVideoX and schedulers, transformers' T5 (or our
HashTextEncoder for toy models), and our VideoDiT.

Model folders use the diffusers layout: transformer/, vae/, text_encoder/, scheduler/ (+ tokenizer/ for
T5) and model_index.json (our pipeline facts such as fps). A diffusers CogVideoX folder has the same
subfolders, so both load through `from_folder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..storyboard import Storyboard, StoryboardError
from .element import DEFAULT_MATTE_FEATHER, check_matte_array, latent_mask
from .latents_io import load_latents, save_latents
from .model_spec import PAPER_FPS, ModelSpec
from .params import (
    DTYPES,
    ComponentMissingError,
    DecodeError,
    GenerationCancelled,
    GenerationParams,
    PipelineError,
    StepInfo,
    check_sampling_defaults,
)
from .plates import check_init_array, latent_frames_for, noised, to_vae_input, valid_counts
from .preview import LatentRGBProjection, fit_latent_rgb_projection
from .schedulers import cfg_scales, load_scheduler_config, make_scheduler, save_scheduler_config
from .text import (
    HashTextConfig,
    HashTextEncoder,
    PackagedTextEncoder,
    T5TextEncoder,
    TextEncoder,
    load_text_encoder,
    segment_prompts,
)

log = logging.getLogger(__name__)

MAX_SEGMENTS = 21  # 63 s, the paper's longest video
PIPELINE_INDEX = "model_index.json"
PIPELINE_CLASS = "TTTVideoPipeline"
COMPONENTS = {
    "transformer": "the video DiT",
    "vae": "the AutoencoderKLCogVideoX",
    "text_encoder": "the text encoder",
    "scheduler": "the noise schedule",
}

Callback = Callable[[StepInfo], None]
ShouldStop = Callable[[], bool]


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """frames: float32 [T, H, W, 3] in the model's colour space (pipe.spec.colorspace); latents: [1, F, C, h, w] (CPU, float32)."""

    frames: np.ndarray
    latents: torch.Tensor
    latents_path: Path | None


def tiny_vae_config(latent_channels: int) -> dict[str, Any]:
    """A small AutoencoderKLCogVideoX (4x spatial, 4x temporal) for toy models and tests."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["CogVideoXDownBlock3D"] * 3,
        "up_block_types": ["CogVideoXUpBlock3D"] * 3,
        "block_out_channels": [16, 32, 32],
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "norm_num_groups": 8,
        "temporal_compression_ratio": 4,
        # the native frame size; diffusers tiles frames above half of it (tiles of 128 x 128 here)
        "sample_height": 256,
        "sample_width": 256,
        "scaling_factor": 1.0,
    }


class VideoPipeline:
    """Text-to-video for storyboards of 1..max_segments segments. See the module docstring."""

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: TextEncoder,
        scheduler_config: dict[str, Any] | None = None,
        *,
        fps: float = PAPER_FPS,
        device: str | torch.device | None = None,
        max_segments: int = MAX_SEGMENTS,
        vae_tiling: bool = True,
        source: str = "memory",
        sampling: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder.eval() if isinstance(text_encoder, nn.Module) else text_encoder
        self.scheduler_config = dict(scheduler_config or {})
        make_scheduler("ddim", self.scheduler_config)  # validate the schedule now
        self.config = transformer.config
        self.device = torch.device(device) if device is not None else _default_device()
        self.max_segments = int(max_segments)
        self.source = source
        # the sampling settings tuned for this model (model_index.json "sampling"); GenerationParams'
        # own defaults (the paper's) for whatever it leaves unset
        self.sampling = check_sampling_defaults(
            {} if sampling is None else sampling, f"{PIPELINE_INDEX} of {source}"
        )
        vc = vae.config
        self.spatial_factor = 2 ** (len(vc.block_out_channels) - 1)
        self.temporal_factor = int(vc.temporal_compression_ratio)
        self.scaling_factor = float(vc.scaling_factor)
        self.shift_factor = float(getattr(vc, "shift_factor", None) or 0.0)
        # what the model generates (model_index.json's fps, sizes, size_constraints, colorspace)
        self.spec = model_spec(
            transformer.config, vc, {**(spec or {}), "fps": fps}, f"{PIPELINE_INDEX} of {source}"
        )
        self._check_components()
        if vae_tiling:  # no-ops below the tile size; saves memory on big frames
            self.vae.enable_tiling()
            self.vae.enable_slicing()
        self._projection: LatentRGBProjection | None = None

    # ---- construction ----------------------------------------------------------------------------------

    def _check_components(self) -> None:
        c = self.config
        if self.text_encoder.dim != c.text_dim:
            raise PipelineError(
                f"text encoder width {self.text_encoder.dim} does not match the transformer's text_dim {c.text_dim}"
            )
        if self.text_encoder.max_length != c.max_text_len:
            raise PipelineError(
                f"text encoder length {self.text_encoder.max_length} does not match the transformer's "
                f"max_text_len {c.max_text_len}"
            )
        latent = int(self.vae.config.latent_channels)
        if latent != c.in_channels or latent != c.out_channels:
            raise PipelineError(
                f"VAE latent_channels {latent} does not match the transformer's in/out channels "
                f"{c.in_channels}/{c.out_channels}"
            )
        if not 1 <= self.max_segments:
            raise PipelineError(f"max_segments: expected >= 1, got {self.max_segments}")
        if not self.fps > 0:
            raise PipelineError(f"fps: expected > 0, got {self.fps}")

    @classmethod
    def tiny_random(
        cls, seed: int = 0, device: str | torch.device | None = "cpu", fps: float = PAPER_FPS, **config: Any
    ) -> VideoPipeline:
        """A complete tiny random pipeline built in memory (no files): tiny VideoDiT, tiny CogVideoX VAE,
        HashTextEncoder, the paper's schedule, at `fps`. config overrides VideoDiTConfig.tiny() fields."""
        from diffusers import AutoencoderKLCogVideoX

        from ..models import VideoDiT, VideoDiTConfig

        dit_config = VideoDiTConfig.tiny(**config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transformer = VideoDiT(dit_config)
            vae = AutoencoderKLCogVideoX(**tiny_vae_config(dit_config.in_channels))
            text = HashTextEncoder(
                HashTextConfig(dim=dit_config.text_dim, max_length=dit_config.max_text_len)
            )
        return cls(transformer, vae, text, None, fps=fps, device=device, source=f"tiny_random(seed={seed})")

    @classmethod
    def from_folder(
        cls, path: str | Path, device: str | torch.device | None = None, vae_tiling: bool = True
    ) -> VideoPipeline:
        """Load a model folder offline: ours (save_folder) or a diffusers CogVideoX folder (its
        transformer/ may be a CogVideoXTransformer3DModel: load_video_dit maps it and initialises TTT).
        A missing component raises ComponentMissingError naming it."""
        from diffusers import AutoencoderKLCogVideoX

        from ..models.loading import load_video_dit

        path = Path(path)
        if not path.is_dir():
            raise PipelineError(f"model folder {path} does not exist or is not a folder")
        for name, what in COMPONENTS.items():
            if not (path / name).is_dir():
                raise ComponentMissingError(
                    f"model folder {path} lacks the '{name}/' component ({what}); expected subfolders "
                    f"{', '.join(n + '/' for n in COMPONENTS)} (+ tokenizer/ for a T5 text encoder)"
                )
        index = _read_index(path)
        transformer = _aligned(load_video_dit(path / "transformer"))
        vae = AutoencoderKLCogVideoX.from_pretrained(
            str(path / "vae"), local_files_only=True, low_cpu_mem_usage=False
        )
        tokenizer = path / "tokenizer"
        text = load_text_encoder(
            path / "text_encoder", tokenizer if tokenizer.is_dir() else None, transformer.config.max_text_len
        )
        scheduler_config = load_scheduler_config(path / "scheduler")
        spec = {k: index[k] for k in ("_class_name", "sizes", "size_constraints", "colorspace") if k in index}
        fps = index.get("fps")
        if fps is None:
            fps = ModelSpec.from_index(spec, (1, 1), 1, str(path)).fps
            log.info("%s has no fps in %s; using the documented default %s fps", path, PIPELINE_INDEX, fps)
        return cls(
            transformer,
            vae,
            text,
            scheduler_config,
            fps=fps,
            device=device,
            max_segments=int(index.get("max_segments", MAX_SEGMENTS)),
            vae_tiling=vae_tiling,
            source=str(path),
            sampling=index.get("sampling"),
            spec=spec,
        )

    def save_folder(self, path: str | Path) -> Path:
        """Write every component in the diffusers layout that from_folder reads."""
        from ..models.loading import save_video_dit

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_video_dit(self.transformer, path / "transformer")
        self.vae.save_pretrained(str(path / "vae"), safe_serialization=True)
        if isinstance(self.text_encoder, HashTextEncoder | PackagedTextEncoder):
            self.text_encoder.save(path / "text_encoder")
        elif isinstance(self.text_encoder, T5TextEncoder):
            self.text_encoder.model.save_pretrained(str(path / "text_encoder"))
            self.text_encoder.tokenizer.save_pretrained(str(path / "tokenizer"))
        else:
            raise PipelineError(f"save_folder: cannot save a {type(self.text_encoder).__name__} text encoder")
        save_scheduler_config(path / "scheduler", self.scheduler_config)
        index = model_index(self.spec, self.max_segments, self.sampling)
        (path / PIPELINE_INDEX).write_text(json.dumps(index, indent=2))
        return path

    def generation_params(self, **values: Any) -> GenerationParams:
        """GenerationParams from `values`, where a value left out or None takes this model's sampling
        default (self.sampling), then GenerationParams' own."""
        given = {k: v for k, v in values.items() if v is not None}
        return GenerationParams.from_dict({**self.sampling, **given})

    # ---- sizes ---------------------------------------------------------------------------------------

    @property
    def fps(self) -> float:
        """The native frame rate (model_index.json "fps"; `spec.fps` holds it exactly)."""
        return float(self.spec.fps)

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels the transformer was trained at."""
        return self.config.sample_height * self.spatial_factor, self.config.sample_width * self.spatial_factor

    def _pixels(self, latent_frames: int) -> int:
        """Frames the causal VAE decodes from `latent_frames` latents: the first alone, then t per latent."""
        return 1 + self.temporal_factor * (latent_frames - 1)

    @property
    def first_segment_frames(self) -> int:
        """Pixel frames of segment 0 (paper: 49)."""
        return self._pixels(self.config.first_segment_frames)

    @property
    def frames_per_segment(self) -> int:
        """Pixel frames of every later segment (paper: 48); segment 0 has first_segment_frames."""
        return self.temporal_factor * self.config.segment_frames

    def num_frames(self, n_segments: int) -> int:
        """Pixel frames of a video of n_segments segments (paper: 49 + 48 (S - 1))."""
        return self._pixels(self.config.latent_frames(n_segments))

    def segment_frame_ranges(self, n_segments: int) -> list[tuple[int, int]]:
        """[start, end) pixel frame indices of every segment."""
        bounds = [0] + [self._pixels(self.config.latent_frames(i + 1)) for i in range(n_segments)]
        return list(zip(bounds[:-1], bounds[1:]))

    def check_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) for a pixel size; raises if it is not a multiple of VAE factor * patch size."""
        step = self.spatial_factor * self.config.patch_size
        for name, value in (("height", height), ("width", width)):
            if value % step:
                raise PipelineError(
                    f"{name} {value} must be a multiple of {step} (VAE factor {self.spatial_factor} x patch "
                    f"size {self.config.patch_size}); e.g. {max(step, value // step * step)}"
                )
        return height // self.spatial_factor, width // self.spatial_factor

    def model_info(self) -> dict[str, Any]:
        h, w = self.default_size
        return {
            "source": self.source,
            "transformer": self.config.to_dict(),
            "text_encoder": type(self.text_encoder).__name__,
            "latent_channels": self.config.in_channels,
            "spatial_factor": self.spatial_factor,
            "temporal_factor": self.temporal_factor,
            "fps": self.fps,
            "max_segments": self.max_segments,
            "sampling": dict(self.sampling),
            "first_segment_frames": self.first_segment_frames,
            "frames_per_segment": self.frames_per_segment,
            "default_height": h,
            "default_width": w,
            **{k: v for k, v in self.spec.to_index().items() if k != "fps"},
        }

    # ---- device and dtype placement ------------------------------------------------------------------

    @contextlib.contextmanager
    def _using(self, module: Any, offload: bool) -> Iterator[None]:
        """Module on the compute device while the block runs; back to the CPU afterwards when offloading."""
        module.to(self.device)
        try:
            yield
        finally:
            if offload and self.device.type != "cpu":
                module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def _place(self, offload: bool) -> None:
        """Offloading: everything parked on the CPU. Otherwise everything stays on the device."""
        target = "cpu" if offload else self.device
        for m in (self.transformer, self.vae, self.text_encoder):
            m.to(target)

    @staticmethod
    def _cast(module: nn.Module, dtype: torch.dtype, what: str) -> None:
        current = next(module.parameters()).dtype
        if current == dtype:
            return
        if current.itemsize < dtype.itemsize:
            log.warning(
                "%s weights are %s; computing in %s uses the rounded weights (reload the model for full precision)",
                what,
                current,
                dtype,
            )
        module.to(dtype)

    # ---- text ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompts(
        self, storyboard: Storyboard, params: GenerationParams
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text [1, S, T, d], mask [1, S, T], neg_text [1, S, T, d], neg_mask [1, S, T]) on the device."""
        texts, negs = segment_prompts(list(storyboard.segments))
        if isinstance(self.text_encoder, T5TextEncoder):
            self._cast(self.text_encoder.model, params.torch_dtype, "text encoder")
        with self._using(self.text_encoder, params.cpu_offload):
            emb, mask = self.text_encoder.encode(texts + negs)  # (2S, T, d), (2S, T)
        if not torch.isfinite(emb).all():
            raise PipelineError(
                f"the text encoder produced non-finite values in {params.dtype}; use bfloat16 or float32"
            )
        s = len(texts)
        emb = emb.to(self.device, params.torch_dtype)
        mask = mask.to(self.device)
        return emb[None, :s], mask[None, :s], emb[None, s:], mask[None, s:]

    # ---- sampling ------------------------------------------------------------------------------------

    def _storyboard(self, storyboard: Storyboard | list[dict[str, Any]]) -> Storyboard:
        if isinstance(storyboard, list):
            storyboard = Storyboard.from_list(storyboard)
        if not isinstance(storyboard, Storyboard):
            raise StoryboardError(f"expected a Storyboard or its list form, got {type(storyboard).__name__}")
        storyboard.validate(max_segments=self.max_segments)
        return storyboard

    def _params(self, params: GenerationParams | None) -> GenerationParams:
        params = params or GenerationParams()
        if not isinstance(params, GenerationParams):
            raise PipelineError(f"params: expected GenerationParams, got {type(params).__name__}")
        if params.height is None or params.width is None:
            h, w = self.default_size
            params = dataclasses.replace(params, height=params.height or h, width=params.width or w)
        self.check_size(params.height, params.width)
        return params

    def latent_shape(self, n_segments: int, params: GenerationParams) -> tuple[int, int, int, int, int]:
        """[1, F, C, h, w] of the latents for n_segments segments."""
        params = self._params(params)
        h, w = self.check_size(params.height, params.width)
        return 1, self.config.latent_frames(n_segments), self.config.in_channels, h, w

    # ---- init frames (plates) ------------------------------------------------------------------------

    def check_plate(
        self, n_segments: int, params: GenerationParams | None, count: int, height: int, width: int
    ) -> int:
        """Check that a plate of `count` frames of width x height fits a request; returns the latent frames
        it covers. PipelineError names the value and what is expected: plates are never resized or trimmed.

        restyle, element: exactly num_frames(n_segments) frames. continue: 1 + t k frames (t: the VAE's temporal
        factor) fewer than the video's, e.g. whole segments num_frames(1), num_frames(2), ... or a
        single start frame.
        """
        params = self._params(params)
        if (height, width) != (params.height, params.width):
            raise PipelineError(
                f"init_frames: frames are {width}x{height} (width x height); expected {params.width}x"
                f"{params.height}, the generation size (plates are not resized)"
            )
        total = self.config.latent_frames(n_segments)
        counts = valid_counts(params.plate_mode, total, self.temporal_factor)
        if count not in counts:
            if params.plate_mode != "continue":
                expected = f"exactly {counts[0]}, one per output frame of the {n_segments}-segment storyboard"
            else:
                shown = ", ".join(map(str, counts[:4])) + (f", ..., {counts[-1]}" if len(counts) > 4 else "")
                whole = [self.num_frames(k) for k in range(1, n_segments)]
                expected = (
                    f"1 + {self.temporal_factor}k frames fewer than the video's {self.num_frames(n_segments)} "
                    f"({shown})" + (f"; whole segments: {whole}" if whole else "")
                )
            raise PipelineError(
                f"init_frames: got {count} frames for plate_mode {params.plate_mode!r}; expected {expected}"
            )
        return latent_frames_for(count, self.temporal_factor)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray, cpu_offload: bool = False) -> torch.Tensor:
        """Model-space float32 frames [T, H, W, 3] (T = 1 + t (L - 1)) -> scaled latents [1, L, C, h, w]
        (float32, on the device): sRGB display encoding, then the VAE encoder's mode (deterministic)."""
        frames = check_init_array(frames)
        count = frames.shape[0]
        if (count - 1) % self.temporal_factor:
            raise PipelineError(
                f"init_frames: got {count} frames; the VAE encodes 1 + {self.temporal_factor}k frames "
                f"(e.g. {count - (count - 1) % self.temporal_factor})"
            )
        video = to_vae_input(frames)  # (1, 3, T, H, W) in [-1, 1]
        with self._using(self.vae, cpu_offload):
            p = next(self.vae.parameters())
            z = self.vae.encode(video.to(p.device, p.dtype)).latent_dist.mode()  # (1, C, L, h, w)
        z = ((z.float() - self.shift_factor) * self.scaling_factor).permute(0, 2, 1, 3, 4)  # (1, L, C, h, w)
        expected = latent_frames_for(count, self.temporal_factor)
        if z.shape[1] != expected:
            raise PipelineError(
                f"VAE encoded {count} frames to {z.shape[1]} latent frames, expected {expected}"
            )
        return z.to(self.device)

    def _check_init(
        self,
        init_frames: np.ndarray | None,
        n_segments: int,
        params: GenerationParams,
        matte: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """The checked plate, or None for text-to-video (then strength and plate_mode must be defaults).
        A matte goes with plate_mode "element" and only with it."""
        if (matte is None) == (params.plate_mode == "element"):
            raise PipelineError(
                "plate_mode 'element' needs a matte (one frame per plate) and a matte needs plate_mode "
                f"'element'; got plate_mode={params.plate_mode!r} with "
                + ("no matte" if matte is None else "a matte")
            )
        if init_frames is None:
            if params.strength != 1 or params.plate_mode != "restyle":
                raise PipelineError(
                    f"strength={params.strength} / plate_mode={params.plate_mode!r} need init_frames (a plate); "
                    "without one leave strength at 1.0 and plate_mode at 'restyle'"
                )
            return None
        frames = check_init_array(init_frames)
        t, h, w, _ = frames.shape
        self.check_plate(n_segments, params, t, h, w)
        return frames

    # ---- sampling (continued) --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        storyboard: Storyboard | list[dict[str, Any]],
        params: GenerationParams | None = None,
        callback: Callback | None = None,
        should_stop: ShouldStop | None = None,
        init_frames: np.ndarray | None = None,
        matte: np.ndarray | None = None,
        matte_feather: float = DEFAULT_MATTE_FEATHER,
    ) -> torch.Tensor:
        """Denoise from seeded noise; returns latents [1, F, C, h, w] (CPU, float32, VAE-scaled).

        callback(StepInfo) runs after every step; should_stop() is checked before every step and raises
        GenerationCancelled when it returns True. The first params.unguided_steps steps run (of a restyle,
        the first of its last denoise_steps) are unguided: one forward at CFG scale 1.

        init_frames: an optional plate, float32 [T, H, W, 3] in the model's colour space (0..1; the
            conform's conform_in puts a plate there) at the generation size, used as
        params.plate_mode says (see plates.py and check_plate for the frame counts):
        - "restyle": the plate's latents are noised to the first timestep of the last
          params.denoise_steps steps and denoised from there (the CFG scale of step k is the one the full
          schedule has at k). Small strength stays close to the plate. strength 1.0 starts at t = 999,
          where zero terminal SNR leaves the plate a weight of sqrt(alphas_cumprod[999]): 0 for ddim (the
          start latents are exactly the seed's noise, so the video is the text-to-video one for the same
          seed) and 2**-12 for dpmpp_2m (the same up to that residue). Only the noise matters there;
          the plate does not.
        - "continue": the plate covers the first L latent frames; before every step they are replaced by
          the plate's latents noised to that step's timestep (with the seed's noise), and after the
          last step by the plate's latents, so the plate's frames are kept and the rest is generated.
        - "element": as restyle, with `matte` (float32 [T, H, W], the plate's coverage 0..1 at the
          generation size): outside it the plate's latents, noised to each step's timestep, are
          re-imposed before every step and the plate's latents themselves after the last, so only the
          inside is generated; matte_feather (the generation's pixels) softens the edge (element.py).
        The noise is drawn first, from the seed, exactly as for text-to-video.
        """
        storyboard = self._storyboard(storyboard)
        params = self._params(params)
        shape = self.latent_shape(len(storyboard), params)
        frames = self._check_init(init_frames, len(storyboard), params, matte)
        region = None  # element: the matte on the latent grid, (1, F, 1, h, w)
        if frames is not None and matte is not None:
            checked = check_matte_array(matte, *frames.shape[:3])
            region = latent_mask(checked, self.temporal_factor, self.spatial_factor, matte_feather)
            region = region.to(self.device)
        self._place(params.cpu_offload)
        plate = None if frames is None else self.encode_frames(frames, params.cpu_offload)  # (1, L, C, h, w)
        text_start = time.perf_counter()
        text, mask, neg, neg_mask = self.encode_prompts(storyboard, params)
        text_s = time.perf_counter() - text_start  # logged below: a stage of the first preview's time

        generator = torch.Generator("cpu").manual_seed(params.seed)
        scheduler = make_scheduler(params.sampler, self.scheduler_config)
        scheduler.set_timesteps(params.steps, device=self.device)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        acp = scheduler.alphas_cumprod.to(self.device, torch.float32)
        timesteps = scheduler.timesteps
        first = 0  # index in the full schedule of the first step run
        keep = None  # continue: the plate's latents, re-injected at every step
        if plate is None:
            x = noise * scheduler.init_noise_sigma
        elif params.plate_mode in ("restyle", "element"):
            first = params.steps - params.denoise_steps
            timesteps = timesteps[first:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(first)
            x = noised(plate, noise, acp, timesteps[0])
        else:
            keep = plate
            x = noise * scheduler.init_noise_sigma
        run = len(timesteps)
        scales = cfg_scales(params.steps, params.guidance_scale, params.cfg_schedule)
        self._cast(self.transformer, params.torch_dtype, "transformer")
        log.info(
            "sampling %d segment(s): latents %s, %d of %d %s steps (%d unguided), seed %d%s",
            len(storyboard),
            list(shape),
            run,
            params.steps,
            params.sampler,
            min(params.unguided_steps, run),
            params.seed,
            "" if plate is None else f", plate of {plate.shape[1]} latent frames ({params.plate_mode})",
            extra={"text_s": text_s},
        )
        start = time.perf_counter()
        with self._using(self.transformer, params.cpu_offload):
            for k, t in enumerate(timesteps):
                if should_stop is not None and should_stop():
                    raise GenerationCancelled(f"cancelled before step {k + 1}/{run}")
                if keep is not None:
                    n = keep.shape[1]
                    x = torch.cat([noised(keep, noise[:, :n], acp, t), x[:, n:]], dim=1)  # (1, F, C, h, w)
                if region is not None:
                    x = region * x + (1 - region) * noised(plate, noise, acp, t)  # (1, F, C, h, w)
                x_in = scheduler.scale_model_input(x, t)
                scale = 1.0 if k < params.unguided_steps else scales[first + k]  # 1.0: one forward
                v = self._guided(x_in, t, text, mask, neg, neg_mask, scale, params.torch_dtype)
                x = scheduler.step(v, t, x, return_dict=False)[0]
                if callback is not None:
                    preview = None
                    if params.preview_every and ((k + 1) % params.preview_every == 0 or k + 1 == run):
                        x0 = acp[t].sqrt() * x_in - (1 - acp[t]).sqrt() * v  # v-prediction -> clean estimate
                        preview = self.preview(x0)
                    callback(StepInfo(k + 1, run, int(t), time.perf_counter() - start, preview))
        if keep is not None:
            x = torch.cat([keep, x[:, keep.shape[1] :]], dim=1)
        if region is not None:
            x = region * x + (1 - region) * plate
        if not torch.isfinite(x).all():
            raise PipelineError(
                f"sampling produced non-finite latents in {params.dtype}; try float32 or bfloat16"
            )
        return x.float().cpu()

    def _guided(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        mask: torch.Tensor,
        neg: torch.Tensor,
        neg_mask: torch.Tensor,
        scale: float,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """CFG as two separate forwards (as the paper): neg + scale * (cond - neg). One forward at scale 1."""
        timestep = t.reshape(1).to(self.device)
        xd = x.to(dtype)
        cond = self.transformer(xd, text, mask, timestep).float()
        if scale == 1.0:
            return cond
        uncond = self.transformer(xd, neg, neg_mask, timestep).float()
        return uncond + scale * (cond - uncond)

    # ---- previews ------------------------------------------------------------------------------------

    def preview(self, latents: torch.Tensor) -> np.ndarray:
        """Cheap low-res uint8 RGB frames [F, h, w, 3] from latents [1, F, C, h, w], no VAE decode.

        The latent -> RGB projection is fitted once for this VAE (preview.fit_latent_rgb_projection).
        """
        if self._projection is None:
            self._projection = fit_latent_rgb_projection(self._encode_images, self.spatial_factor)
        return self._projection(latents)

    @torch.no_grad()
    def _encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, 1, H, W] in [-1, 1] -> scaled latents [N, C, 1, h, w] (the VAE stays where it is)."""
        p = next(self.vae.parameters())
        tiling, self.vae.use_tiling = self.vae.use_tiling, False  # small images: tiles would only add seams
        try:
            z = self.vae.encode(images.to(p.device, p.dtype)).latent_dist.mode()
        finally:
            self.vae.use_tiling = tiling
        return ((z - self.shift_factor) * self.scaling_factor).float()

    # ---- decoding ------------------------------------------------------------------------------------

    def _segments_of(self, latents: torch.Tensor) -> int:
        c = self.config
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5 or latents.shape[0] != 1:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise PipelineError(f"latents: expected [1, F, C, h, w], got {got}")
        if latents.shape[2] != c.in_channels:
            raise PipelineError(
                f"latents: expected {c.in_channels} channels, got shape {tuple(latents.shape)}"
            )
        try:
            return c.num_segments(latents.shape[1])
        except ValueError as exc:
            raise PipelineError(
                f"latents: {latents.shape[1]} latent frames is not a whole number of segments ({exc})"
            ) from exc

    def _wanted(self, n: int, segments: Sequence[int] | None) -> list[int]:
        if segments is None:
            return list(range(n))
        wanted = list(segments)
        bad = [s for s in wanted if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < n]
        if bad or not wanted or len(set(wanted)) != len(wanted):
            raise PipelineError(
                f"segments: expected distinct indices in [0, {n}) for {n} segment(s), got {list(segments)}"
            )
        return wanted

    @torch.no_grad()
    def _decode_prefix(
        self, latents: torch.Tensor, last_segment: int, dtype: str | None, cpu_offload: bool
    ) -> np.ndarray:
        """Frames [T', H, W, 3] of segments 0..last_segment in the model's colour space (0..1), from one
        VAE pass.

        The VAE is causal in time, so a prefix decodes to exactly the first frames of a full decode as long
        as diffusers cuts it into the same chunks: it decodes latent frames in pairs with the odd one in the
        first chunk, so the prefix keeps the full length's parity (one extra latent frame when needed).
        """
        end = self.config.latent_frames(last_segment + 1)
        if (latents.shape[1] - end) % 2:
            end += 1
        z = latents[:, :end].permute(0, 2, 1, 3, 4)  # (1, C, F', h, w)
        if dtype is not None:
            if dtype not in DTYPES:
                raise PipelineError(f"decode dtype: expected one of {tuple(DTYPES)}, got {dtype!r}")
            self._cast(self.vae, DTYPES[dtype], "VAE")
        with self._using(self.vae, cpu_offload):
            p = next(self.vae.parameters())
            z = z.to(p.device, p.dtype) / self.scaling_factor + self.shift_factor
            video = self.vae.decode(z).sample  # (1, 3, T', H, W) in [-1, 1]
        expected = self._pixels(end)
        if video.shape[2] != expected:
            raise PipelineError(
                f"VAE decoded {video.shape[2]} frames from {end} latent frames, expected {expected} "
                "(diffusers' CogVideoX VAE is frame-exact for odd latent frame counts only)"
            )
        # the VAE's [-1, 1] is the model's colour space (self.spec.colorspace) mapped to [0, 1]
        return ((video[0].float() + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0).cpu().numpy()  # (T', H, W, 3)

    def decode(
        self,
        latents: torch.Tensor,
        segments: Sequence[int] | None = None,
        dtype: str | None = None,
        cpu_offload: bool = False,
    ) -> np.ndarray:
        """Latents [1, F, C, h, w] -> float32 frames [T, H, W, 3] in the model's colour space (0..1).

        segments: decode only the frames of these segment indices (in the order given). One VAE pass over
        the prefix up to the last asked segment: the frames are identical to those of a full decode and the
        tail is never decoded. To get several segments one by one, use iter_decode (one pass for all of
        them) rather than calling decode per segment (one pass each).
        dtype: VAE compute dtype ("float32", "bfloat16", "float16"); None keeps the VAE's.
        """
        n = self._segments_of(latents)
        wanted = self._wanted(n, segments)
        ranges = self.segment_frame_ranges(n)
        frames = self._decode_prefix(latents, max(wanted), dtype, cpu_offload)
        return np.concatenate([frames[ranges[s][0] : ranges[s][1]] for s in wanted], axis=0)

    def iter_decode(
        self,
        latents: torch.Tensor,
        segments: Sequence[int] | None = None,
        dtype: str | None = None,
        cpu_offload: bool = False,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(segment index, model-space frames [T_seg, H, W, 3]) for each asked segment, in ascending order,
        all from ONE VAE pass (for writing a resumed job's missing segments one at a time). The pass runs
        when iter_decode is called, so bad input and decode failures raise here, not at the first next()."""
        n = self._segments_of(latents)
        wanted = sorted(self._wanted(n, segments))
        ranges = self.segment_frame_ranges(n)
        frames = self._decode_prefix(latents, wanted[-1], dtype, cpu_offload)
        return iter([(s, frames[ranges[s][0] : ranges[s][1]]) for s in wanted])

    # ---- the whole job -------------------------------------------------------------------------------

    def latents_meta(self, storyboard: Storyboard, params: GenerationParams) -> dict[str, Any]:
        params = self._params(params)
        return {
            "storyboard": storyboard.to_list(),
            "params": params.to_dict(),
            "model": self.model_info(),
            "num_frames": self.num_frames(len(storyboard)),
            "fps": self.fps,
        }

    def generate(
        self,
        storyboard: Storyboard | list[dict[str, Any]],
        params: GenerationParams | None = None,
        *,
        latents_path: str | Path | None = None,
        callback: Callback | None = None,
        should_stop: ShouldStop | None = None,
        decode_retries: int = 1,
        init_frames: np.ndarray | None = None,
        extra_meta: dict[str, Any] | None = None,
        matte: np.ndarray | None = None,
        matte_feather: float = DEFAULT_MATTE_FEATHER,
    ) -> GenerationResult:
        """sample -> save latents (when latents_path) -> decode, retrying a failed decode from the file.

        A decode failure (e.g. out of memory) is retried up to decode_retries times with VAE tiling and
        slicing on and the latents re-read from latents_path; sampling never runs twice. When every try
        fails, DecodeError names the latents file for `decode_saved`. init_frames, matte, matte_feather:
        a plate and an element's matte (see sample); the frames stay RGB (element.element_frame gives
        them the matte's alpha). extra_meta: more entries for the latents file's metadata (e.g. the
        adapters that shaped the sample).
        """
        storyboard = self._storyboard(storyboard)
        params = self._params(params)
        latents = self.sample(
            storyboard,
            params,
            callback=callback,
            should_stop=should_stop,
            init_frames=init_frames,
            matte=matte,
            matte_feather=matte_feather,
        )
        path = None
        if latents_path is not None:
            meta = {**self.latents_meta(storyboard, params), **(extra_meta or {})}
            path = save_latents(latents_path, latents, meta)
            log.info("latents saved to %s", path)
        frames = self._decode_with_retries(latents, path, params, decode_retries)
        return GenerationResult(frames=frames, latents=latents, latents_path=path)

    def _decode_with_retries(
        self, latents: torch.Tensor, path: Path | None, params: GenerationParams, retries: int
    ) -> np.ndarray:
        last: Exception | None = None
        for attempt in range(retries + 1):
            if attempt:
                log.warning(
                    "VAE decode failed (%s); retry %d/%d from %s", last, attempt, retries, path or "memory"
                )
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.vae.enable_tiling()
                self.vae.enable_slicing()
                if path is not None:
                    latents, _ = load_latents(path)
            try:
                return self.decode(latents, dtype=params.dtype, cpu_offload=params.cpu_offload)
            except Exception as exc:  # noqa: BLE001 - any decode failure (OOM, driver) is retried then reported
                last = exc
        where = (
            f"the latents are saved at {path}: retry with VideoPipeline.decode_saved({str(path)!r}) "
            "or `ttt-studio generate ... --from-latents`"
            if path is not None
            else "the latents were not saved (pass latents_path to keep them)"
        )
        raise DecodeError(
            f"VAE decode failed after {retries + 1} attempt(s): {last}; {where}", str(path)
        ) from last

    def decode_saved(
        self, latents_path: str | Path, segments: Sequence[int] | None = None, dtype: str | None = None
    ) -> np.ndarray:
        """Decode latents saved by generate() (no re-sampling). Checks they fit this model's VAE."""
        latents, meta = load_latents(latents_path)
        saved = meta.get("model", {})
        for key in ("latent_channels", "spatial_factor", "temporal_factor"):
            if key in saved and saved[key] != self.model_info()[key]:
                raise PipelineError(
                    f"{latents_path} was sampled with {key}={saved[key]}, this model has "
                    f"{self.model_info()[key]}: load the model that made them"
                )
        if dtype is None:
            dtype = meta.get("params", {}).get("dtype")
        return self.decode(latents, segments=segments, dtype=dtype)


def _aligned(module: nn.Module, alignment: int = 64) -> nn.Module:
    """Copy CPU tensors that sit at unaligned addresses (memory-mapped safetensors) into fresh storage.

    CPU kernels take different SIMD paths for unaligned data, so a model loaded that way computes
    slightly different numbers (~1e-7) than the model that was saved; aligned, a round trip is exact.
    """
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type == "cpu" and tensor.data_ptr() % alignment:
            tensor.data = tensor.data.clone()
    return module


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_spec(transformer_config: Any, vae_config: Any, index: dict[str, Any], where: str) -> ModelSpec:
    """What a transformer + VAE pair generates: model_index.json's declarations (`index`) over the defaults
    their shapes give (the trained size; sides in multiples of the VAE's spatial factor times the patch)."""
    factor = 2 ** (len(vae_config.block_out_channels) - 1)
    trained = (transformer_config.sample_width * factor, transformer_config.sample_height * factor)
    return ModelSpec.from_index(index, trained, factor * transformer_config.patch_size, where)


def model_index(spec: ModelSpec, max_segments: int, sampling: dict[str, Any] | None) -> dict[str, Any]:
    """model_index.json's contents, as from_folder reads them back (sampling only when the model has
    tuned settings)."""
    index: dict[str, Any] = {"_class_name": PIPELINE_CLASS, **spec.to_index(), "max_segments": max_segments}
    if sampling:
        index["sampling"] = dict(sampling)
    return index


def _read_index(path: Path) -> dict[str, Any]:
    index_path = path / PIPELINE_INDEX
    if not index_path.is_file():
        return {}
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{index_path} is not valid JSON ({exc})") from exc
    if not isinstance(index, dict):
        raise PipelineError(f"{index_path} must hold a JSON object")
    fps = index.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float) or fps <= 0):
        raise PipelineError(f"{index_path}: fps must be a positive number, got {fps!r}")
    segments = index.get("max_segments")
    if segments is not None and (isinstance(segments, bool) or not isinstance(segments, int) or segments < 1):
        raise PipelineError(f"{index_path}: max_segments must be a positive int, got {segments!r}")
    return index
