"""What one generation asks for (GenerationParams), what each step reports (StepInfo), and the typed errors.

GenerationParams checks what it can know alone (types, ranges, names); the pipeline checks what depends
on the model (height and width divisible by the VAE factor times the patch size).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

SAMPLERS = ("dpmpp_2m", "ddim")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
CFG_SCHEDULES = ("dynamic", "constant")
PLATE_MODES = ("restyle", "continue", "element")
MAX_STEPS = 1000  # the DDPM training schedule has 1000 timesteps
# what a model folder may set as its own sampling defaults (model_index.json "sampling"): the settings
# tuned for it, used wherever a request leaves them unset (generate, compare, the server)
SAMPLING_KEYS = ("steps", "guidance_scale", "cfg_schedule", "sampler")


class PipelineError(ValueError):
    """A pipeline input or component is not usable as given (the message says which and why)."""


class ComponentMissingError(PipelineError):
    """A model folder lacks a component the pipeline needs (the message names it and the path)."""


class DecodeError(RuntimeError):
    """The VAE decode failed after sampling; the latents are kept so decoding can be retried."""

    def __init__(self, message: str, latents_path: str | None = None) -> None:
        super().__init__(message)
        self.latents_path = latents_path


class GenerationCancelled(Exception):
    """should_stop() returned True: sampling stopped before the next step."""


@dataclass(frozen=True)
class StepInfo:
    """Reported to the callback after every denoising step.

    step: 1-based number of steps done; total: steps asked for; timestep: the DDPM timestep just denoised;
    elapsed_s: seconds since sampling started; preview: uint8 RGB [F, h, w, 3] low-res frames or None.
    """

    step: int
    total: int
    timestep: int
    elapsed_s: float
    preview: np.ndarray | None = None

    @property
    def progress(self) -> float:
        """Fraction of sampling done, 0..1."""
        return self.step / self.total


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(f"GenerationParams.{name}: expected a positive int, got {value!r}")


@dataclass(frozen=True)
class GenerationParams:
    """One generation request.

    height, width: output pixels (None: the model's native size). steps: denoising steps (K).
    guidance_scale: s. With cfg_schedule "dynamic" the CFG scale at step k rises from 1 to 1 + s
    (paper section 4); with "constant" it is s at every step (the usual diffusers convention).
    sampler: "dpmpp_2m" (DPM-Solver++ 2M) or "ddim". seed: fixes the initial noise (CPU generator, so the
    same seed gives the same video on any device). dtype: compute dtype of the transformer and text
    encoder. cpu_offload: keep components on the CPU and move each to the device only while it runs.
    preview_every: make a cheap preview every N steps (0: never).
    unguided_steps: the first N steps run (of a restyle, the first N of its denoise_steps) are unguided:
    CFG scale 1, one transformer forward instead of two. 0 (the default) guides every step. A server's
    draft sets it so its first preview comes after one forward; frames record it (SAMPLING_ATTRIBUTES).
    strength, plate_mode: how init frames (a plate, passed to VideoPipeline.sample) are used; without
    init frames they must stay at their defaults. plate_mode "restyle" (SDEdit): the plate is encoded,
    noised to the timestep where the last round(steps x strength) steps start, and denoised for those
    steps; strength 1.0 starts from the seed's noise alone (see VideoPipeline.sample). plate_mode
    "continue": the plate's frames are kept (re-injected at every step at its noise level) and the rest
    of the video is generated from noise over all steps; strength must be 1.0 there. plate_mode
    "element": as restyle, with a matte (VideoPipeline.sample's `matte`): the plate's latents are
    re-imposed outside it at every step, so only the inside is generated (element.py).
    """

    height: int | None = None
    width: int | None = None
    steps: int = 50
    guidance_scale: float = 6.0
    sampler: str = "dpmpp_2m"
    seed: int = 0
    dtype: str = "float32"
    cpu_offload: bool = False
    preview_every: int = 1
    cfg_schedule: str = "dynamic"
    strength: float = 1.0
    plate_mode: str = "restyle"
    unguided_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        _positive_int("steps", self.steps)
        if self.steps > MAX_STEPS:
            raise PipelineError(f"GenerationParams.steps: expected at most {MAX_STEPS}, got {self.steps}")
        g = self.guidance_scale
        if isinstance(g, bool) or not isinstance(g, int | float) or not np.isfinite(g) or g < 0:
            raise PipelineError(f"GenerationParams.guidance_scale: expected a finite number >= 0, got {g!r}")
        if self.sampler not in SAMPLERS:
            raise PipelineError(f"GenerationParams.sampler: expected one of {SAMPLERS}, got {self.sampler!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise PipelineError(f"GenerationParams.seed: expected an int in [0, 2**63), got {self.seed!r}")
        if self.dtype not in DTYPES:
            raise PipelineError(
                f"GenerationParams.dtype: expected one of {tuple(DTYPES)}, got {self.dtype!r}"
            )
        if not isinstance(self.cpu_offload, bool):
            raise PipelineError(f"GenerationParams.cpu_offload: expected a bool, got {self.cpu_offload!r}")
        pe = self.preview_every
        if isinstance(pe, bool) or not isinstance(pe, int) or pe < 0:
            raise PipelineError(f"GenerationParams.preview_every: expected an int >= 0, got {pe!r}")
        ug = self.unguided_steps
        if isinstance(ug, bool) or not isinstance(ug, int) or not 0 <= ug <= self.steps:
            raise PipelineError(
                f"GenerationParams.unguided_steps: expected an int in [0, steps={self.steps}], got {ug!r}"
            )
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise PipelineError(
                f"GenerationParams.cfg_schedule: expected one of {CFG_SCHEDULES}, got {self.cfg_schedule!r}"
            )
        st = self.strength
        if isinstance(st, bool) or not isinstance(st, int | float) or not np.isfinite(st) or not 0 < st <= 1:
            raise PipelineError(f"GenerationParams.strength: expected a number in (0, 1], got {st!r}")
        if self.plate_mode not in PLATE_MODES:
            raise PipelineError(
                f"GenerationParams.plate_mode: expected one of {PLATE_MODES}, got {self.plate_mode!r}"
            )
        if self.plate_mode == "continue" and st != 1:
            raise PipelineError(
                f"GenerationParams.strength: plate_mode 'continue' keeps the plate's frames and generates the "
                f"rest from noise over all steps, so strength must be 1.0; got {st!r} (use plate_mode "
                "'restyle' to repaint a plate partially)"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def denoise_steps(self) -> int:
        """Steps actually run: all of them, or for a restyled plate (or an element's) the last
        round(steps x strength) (>= 1)."""
        if self.plate_mode == "continue" or self.strength == 1:
            return self.steps
        return max(1, min(self.steps, math.floor(self.steps * self.strength + 0.5)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise PipelineError(
                f"GenerationParams: unknown fields {sorted(unknown)}; expected a subset of "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)


# EXR attributes that record how frames were sampled, written by `ttt-studio generate` and the server and
# read back by `ttt-studio eval --random-init` to sample a random-init copy alike: attribute -> (field, type)
SAMPLING_ATTRIBUTES: dict[str, tuple[str, type]] = {
    "ttt_studio/steps": ("steps", int),
    "ttt_studio/seed": ("seed", int),
    "ttt_studio/sampler": ("sampler", str),
    "ttt_studio/guidance": ("guidance_scale", float),
    "ttt_studio/cfg_schedule": ("cfg_schedule", str),
    "ttt_studio/unguided_steps": ("unguided_steps", int),
}


def sampling_attributes(params: GenerationParams) -> dict[str, str]:
    """The SAMPLING_ATTRIBUTES of frames sampled with `params`, as EXR string attributes."""
    return {attribute: str(getattr(params, field)) for attribute, (field, _) in SAMPLING_ATTRIBUTES.items()}


def sampling_from_attributes(header: dict[str, Any], source: str) -> dict[str, Any]:
    """The GenerationParams values an EXR header records (those of its SAMPLING_ATTRIBUTES present);
    ValueError naming `source` and the attribute when one does not parse."""
    out: dict[str, Any] = {}
    for attribute, (field, kind) in SAMPLING_ATTRIBUTES.items():
        if attribute in header:
            try:
                out[field] = kind(header[attribute])
            except ValueError:
                raise ValueError(
                    f"{source}: attribute {attribute} = {header[attribute]!r} is not a {kind.__name__}"
                ) from None
    return out


def check_sampling_defaults(sampling: Any, where: str) -> dict[str, Any]:
    """A model's sampling defaults ({"steps": 25, "guidance_scale": 4.0, ...}, keys from SAMPLING_KEYS),
    checked as GenerationParams would check them; PipelineError names `where` and the bad entry."""
    if not isinstance(sampling, dict):
        raise PipelineError(
            f'{where}: sampling must be a JSON object such as {{"steps": 25}}, got {sampling!r}'
        )
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise PipelineError(
            f"{where}: sampling has unknown keys {unknown}; expected a subset of {list(SAMPLING_KEYS)}"
        )
    try:
        GenerationParams(**sampling)
    except PipelineError as exc:
        raise PipelineError(f"{where}: sampling: {exc}") from None
    return dict(sampling)
