"""Training configuration: frozen dataclasses read from YAML or JSON, every key checked.

    run_dir: runs/tiny            # checkpoints, latent cache, logs, train_config.yaml
    seed: 0
    dataset: {path: data/toon, generate: {n_clips: 8, ...}}   # generate: write the dataset if absent
    model: {init: null, transformer: {preset: tiny, ...}, text_encoder: {...}, vae: {...}, fps: 4}
    stages:                       # run in order; `ttt-studio train` trains them all
      - {name: vae, type: vae, steps: 200, lr: 1.0e-3, frames: 9}
      - {name: 3s, type: dit, segments: 1, steps: 5000, trainable: all, lr_ttt: 1.0e-4, lr: 1.0e-5}
      - {name: 9s, type: dit, segments: 3, steps: 5000, trainable: ttt_attn, lr_ttt: 1.0e-5, lr: 1.0e-5}

Unknown keys, wrong types and bad values raise `ConfigError` (a ValueError) naming the key as a path,
e.g. ``stages[1].lr_ttt: expected a number > 0, got -1``. YAML note: PyYAML reads ``1e-4`` (no dot) as a
string; our loader reads it as the float it looks like.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ttt_engine.pipeline.prompt_edit import PromptEdit
from ttt_engine.toonworld.memory import VARIANTS
from ttt_engine.toonworld.world import CHASE_SETUP_PROB

STAGE_TYPES = ("dit", "vae")
TRAINABLE = ("all", "ttt_attn")  # ttt_attn: TTT layers + gates + attention QKVO (the paper's 9-63 s stages)
# decoder: fine-tune the VAE decoder only; the encoder, so the latent space the DiT learned, stays fixed
VAE_TRAINABLE = ("all", "decoder")
LR_SCHEDULES = ("cosine", "constant")
RECON_LOSSES = ("l1", "l2", "l1+l2")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
SHARDINGS = ("ddp", "fsdp")  # DiT stages across ranks: replicated weights, or FSDP-sharded per block
TRANSFORMER_PRESETS = ("tiny", "cogvideox_5b")
# keys that only one stage type reads: setting them on the other type is an error, not a silent no-op
_DIT_ONLY = (
    "segments",
    "trainable",
    "lr_ttt",
    "lr_schedule_ttt",
    "text_dropout",
    "train_text_encoder",
    "matte_weight",
    "timestep_shift",
    "motion_weight",
    "contrast_swaps",
    "contrast_weight",
    "contrast_margin",
)
_VAE_ONLY = ("frames", "kl_weight", "recon_loss", "crop", "vae_trainable")


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the key (e.g. ``stages[0].steps``)."""


# ---- dataclasses --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateConfig:
    """Write a toon-world dataset at dataset.path when it has none yet (toonworld.write_dataset's arguments)."""

    n_clips: int = 8
    segments_range: tuple[int, int] = (2, 4)
    height: int = 64
    width: int = 64
    fps: int = 4
    seed: int = 0
    chase_setup_prob: float = CHASE_SETUP_PROB  # 0: the toon world as planned before chases were staged
    variant: str = "base"  # 'memory': a hat only the first segment states (toonworld/memory.py)


@dataclass(frozen=True)
class DatasetConfig:
    """path: a toon-world dataset folder (clip folders). max_clips: use only the first N clips (0 = all)."""

    path: str
    generate: GenerateConfig | None = None
    max_clips: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Where the model comes from.

    init: a model folder (ours or a diffusers CogVideoX folder) to start from; None builds a new model
    from `transformer` (preset + VideoDiTConfig overrides), `text_encoder` (HashTextConfig fields; dim and
    max_length default to the transformer's text_dim / max_text_len) and `vae` (AutoencoderKLCogVideoX
    config; default: the pipeline's tiny VAE). With init, `transformer` may hold overrides only (no preset),
    e.g. {ttt_backend: reference, gradient_checkpointing: true}. fps: frames per second of the model's
    videos (written to model_index.json); None: the dataset's fps.
    """

    init: str | None = None
    transformer: dict[str, Any] = field(default_factory=dict)
    text_encoder: dict[str, Any] = field(default_factory=dict)
    vae: dict[str, Any] = field(default_factory=dict)
    fps: int | None = None


@dataclass(frozen=True)
class StageConfig:
    """One stage of the curriculum (ttt-mlp.md section 3).

    type 'dit': trains the video DiT on clips of `segments` 3-s segments. trainable 'all' fine-tunes
    everything; 'ttt_attn' trains only TTT parameters, gates and attention QKVO. lr_ttt applies to TTT
    parameters and gates, lr to the rest; each has its schedule (cosine decays to min_lr_ratio * lr after
    warmup_steps of linear warm-up). train_text_encoder None: trained iff trainable is 'all' and the text
    encoder is our HashTextEncoder (a T5 is never trained).
    type 'vae': trains the AutoencoderKLCogVideoX on `frames`-frame windows (recon_loss + kl_weight * KL),
    on random `crop` x `crop` pixel crops when crop > 0 (the VAE is convolutional: crops train the same
    weights at a fraction of the cost); at the stage's end its scaling_factor is set to 1 / std of the
    latents, so the DiT sees unit-variance latents (as Stable Diffusion's and CogVideoX's VAEs are scaled).
    vae_trainable 'decoder' fine-tunes the decoder of model.init's VAE only (as Stable Diffusion's ft-MSE
    decoder): the encoder and scaling_factor stay, so a DiT trained on its latents needs no retraining.
    batch_size is per process; the global batch is batch_size * grad_accum * processes.
    grad_clip 0 disables clipping. ema_decay > 0 keeps an exponential moving average of the trained
    weights (ema.py), which becomes the weights at the stage's end; 0 keeps the last step's weights.
    matte_weight > 0 (DiT stages) weights the loss by the clips' subject mattes: a latent pixel whose
    footprint holds a subject counts 1 + matte_weight times (data.py, matte_to_latent_grid); every clip then
    needs a matte. It gives small characters, a few latent pixels each, the gradient their size denies them.
    timestep_shift > 1 (DiT stages) trains on noisier timesteps more often (diffusion_loss.py,
    VelocityLoss.sample_timesteps); 1 samples them uniformly. motion_weight > 0 (DiT stages) adds that
    multiple of VelocityLoss.motion_loss, the error's change from frame to frame, so what moves weighs more.
    contrast_weight > 0 (DiT stages, with contrast_swaps such as ["left=right", "Tom=Jerry cat=mouse"])
    adds a hinge that makes the prompt's words matter. Each entry is one edit of the prompt (word swaps
    applied together; pipeline/prompt_edit.py, PromptEdit). Each sample is predicted again once per edit
    that changes its prompt (same latents, noise and timestep), and the true prompt's loss must undercut
    each edited one's by contrast_margin (trainer.py, DiTObjective). A model that ignores the words pays
    contrast_margin per edit.
    """

    name: str
    steps: int
    type: str = "dit"
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 0.1
    ema_decay: float = 0.0
    # dit
    segments: int = 1
    trainable: str = "all"
    lr_ttt: float | None = None
    lr_schedule_ttt: str = "cosine"
    text_dropout: float = 0.1
    train_text_encoder: bool | None = None
    matte_weight: float = 0.0
    timestep_shift: float = 1.0
    motion_weight: float = 0.0
    contrast_swaps: tuple[str, ...] = ()
    contrast_weight: float = 0.0
    contrast_margin: float = (
        0.005  # per-sample MSE; a word the probe sees used ("jumps") is worth ~0.003-0.007
    )
    # vae
    frames: int = 9
    kl_weight: float = 1e-6
    recon_loss: str = "l1"
    crop: int = 0
    vae_trainable: str = "all"

    @property
    def ttt_lr(self) -> float:
        return self.lr if self.lr_ttt is None else self.lr_ttt


@dataclass(frozen=True)
class TrainConfig:
    """The whole training run. output_dir None: run_dir/model. latent_cache: the folder of cached window
    latents (default run_dir/cache/latents); runs that share a dataset and a VAE (a base and its
    fine-tunes) can share it, since entries are keyed by VAE fingerprint, clip, window and clip stamp."""

    run_dir: str
    dataset: DatasetConfig
    stages: tuple[StageConfig, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    output_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    sharding: str = "ddp"
    log_every: int = 10
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    cache_latents: bool = True
    latent_cache: str | None = None

    @property
    def model_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.run_dir) / "model"

    # ---- (de)serialisation ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        config = _build(cls, data, "")
        _validate(config)
        return config

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a .yaml/.yml or .json file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML: {err}") from None
        elif path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: not valid JSON ({err})") from None
        else:
            raise ConfigError(f"{path}: expected a .yaml, .yml or .json file, got suffix {path.suffix!r}")
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data; each stage without the keys only the other stage type reads (from_dict rejects them)."""
        data = _plain(dataclasses.asdict(self))
        for stage in data["stages"]:
            for name in _VAE_ONLY if stage["type"] == "dit" else _DIT_ONLY:
                stage.pop(name, None)
        return data

    def save(self, path: str | Path) -> Path:
        """Write as YAML (or JSON for a .json suffix); load(save(c)) == c."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


# ---- YAML: floats such as 1e-4 -----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-4 / 5E3 (no dot) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


# ---- generic checked construction ----------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; returns it (tuples for tuple types, dataclasses built)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: expected a value, got null")
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, key)
        raise ConfigError(f"{key}: unsupported union type {tp}")  # pragma: no cover - not in our schema
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} items, got {len(value)}: {value!r}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{key}: mapping keys must be strings, got {bad!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")  # pragma: no cover - not in our schema


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping: unknown keys, missing required keys and wrong types raise."""
    where = prefix or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(
            f"{_key(prefix, unknown[0])}: unknown key (unknown: {unknown}); known keys of {where}: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = _key(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing required key")
            continue
        values[name] = _convert(hints[name], data[name], key)
    if cls is StageConfig:
        _check_stage_keys(data, prefix)
    return cls(**values)


def _check_stage_keys(data: dict[str, Any], prefix: str) -> None:
    stype = data.get("type", "dit")
    other = _VAE_ONLY if stype == "dit" else _DIT_ONLY if stype == "vae" else ()
    for name in other:
        if name in data:
            raise ConfigError(f"{_key(prefix, name)}: not used by a {stype!r} stage; remove it")


# ---- value checks ---------------------------------------------------------------------------------------


def _require(cond: bool, key: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, key, f"one of {list(allowed)}", value)


def _validate_stage(s: StageConfig, key: str) -> None:
    _require(
        bool(s.name.strip()) and "/" not in s.name, f"{key}.name", "a non-empty name without '/'", s.name
    )
    _one_of(f"{key}.type", s.type, STAGE_TYPES)
    for name in ("steps", "batch_size", "grad_accum", "segments", "frames"):
        _require(getattr(s, name) >= 1, f"{key}.{name}", "an integer >= 1", getattr(s, name))
    _require(s.warmup_steps >= 0, f"{key}.warmup_steps", "an integer >= 0", s.warmup_steps)
    _require(s.lr > 0, f"{key}.lr", "a number > 0", s.lr)
    _require(s.lr_ttt is None or s.lr_ttt > 0, f"{key}.lr_ttt", "null or a number > 0", s.lr_ttt)
    _one_of(f"{key}.lr_schedule", s.lr_schedule, LR_SCHEDULES)
    _one_of(f"{key}.lr_schedule_ttt", s.lr_schedule_ttt, LR_SCHEDULES)
    _require(0 <= s.min_lr_ratio <= 1, f"{key}.min_lr_ratio", "a number in [0, 1]", s.min_lr_ratio)
    _require(s.weight_decay >= 0, f"{key}.weight_decay", "a number >= 0", s.weight_decay)
    _require(all(0 <= b < 1 for b in s.betas), f"{key}.betas", "two numbers in [0, 1)", list(s.betas))
    _require(s.eps > 0, f"{key}.eps", "a number > 0", s.eps)
    _require(s.grad_clip >= 0, f"{key}.grad_clip", "a number >= 0 (0 disables clipping)", s.grad_clip)
    _require(0 <= s.ema_decay < 1, f"{key}.ema_decay", "a number in [0, 1) (0 = no average)", s.ema_decay)
    _one_of(f"{key}.trainable", s.trainable, TRAINABLE)
    _require(
        s.matte_weight >= 0, f"{key}.matte_weight", "a number >= 0 (0 = unweighted loss)", s.matte_weight
    )
    _require(s.motion_weight >= 0, f"{key}.motion_weight", "a number >= 0 (0 = off)", s.motion_weight)
    _require(s.contrast_weight >= 0, f"{key}.contrast_weight", "a number >= 0 (0 = off)", s.contrast_weight)
    _require(s.contrast_margin >= 0, f"{key}.contrast_margin", "a number >= 0", s.contrast_margin)
    for i, spec in enumerate(s.contrast_swaps):
        try:
            PromptEdit.parse(spec)
        except ValueError as err:
            raise ConfigError(f"{key}.contrast_swaps[{i}]: {err}") from None
    if bool(s.contrast_swaps) != (s.contrast_weight > 0):
        raise ConfigError(
            f"{key}: contrast_swaps {list(s.contrast_swaps)!r} with contrast_weight {s.contrast_weight!r}: "
            "set both (e.g. contrast_swaps: [left=right], contrast_weight: 0.5) or neither"
        )
    _require(s.timestep_shift > 0, f"{key}.timestep_shift", "a number > 0 (1 = uniform)", s.timestep_shift)
    _require(0 <= s.text_dropout < 1, f"{key}.text_dropout", "a probability in [0, 1)", s.text_dropout)
    _require(s.crop >= 0, f"{key}.crop", "an integer >= 0 (0 = whole frames)", s.crop)
    _require(s.kl_weight >= 0, f"{key}.kl_weight", "a number >= 0", s.kl_weight)
    _one_of(f"{key}.recon_loss", s.recon_loss, RECON_LOSSES)
    _one_of(f"{key}.vae_trainable", s.vae_trainable, VAE_TRAINABLE)
    if s.type == "dit" and s.trainable != "all" and s.train_text_encoder:
        raise ConfigError(
            f"{key}.train_text_encoder: true needs trainable 'all'; a '{s.trainable}' stage freezes the "
            "text encoder"
        )


def _validate(c: TrainConfig) -> None:
    _require(bool(c.run_dir.strip()), "run_dir", "a non-empty path", c.run_dir)
    _require(bool(c.dataset.path.strip()), "dataset.path", "a non-empty path", c.dataset.path)
    _require(c.dataset.max_clips >= 0, "dataset.max_clips", "an integer >= 0 (0 = all)", c.dataset.max_clips)
    g = c.dataset.generate
    if g is not None:
        for name in ("n_clips", "fps"):
            _require(getattr(g, name) >= 1, f"dataset.generate.{name}", "an integer >= 1", getattr(g, name))
        lo, hi = g.segments_range
        _require(
            1 <= lo <= hi, "dataset.generate.segments_range", "[min, max] with 1 <= min <= max", [lo, hi]
        )
        for name in ("height", "width"):
            _require(getattr(g, name) >= 16, f"dataset.generate.{name}", "an integer >= 16", getattr(g, name))
        _require(g.seed >= 0, "dataset.generate.seed", "an integer >= 0", g.seed)
        _require(
            0.0 <= g.chase_setup_prob <= 1.0,
            "dataset.generate.chase_setup_prob",
            "a probability in [0, 1]",
            g.chase_setup_prob,
        )
        _one_of("dataset.generate.variant", g.variant, VARIANTS)
    _require(c.seed >= 0, "seed", "an integer >= 0", c.seed)
    _one_of("device", c.device, DEVICES)
    _one_of("precision", c.precision, PRECISIONS)
    _one_of("sharding", c.sharding, SHARDINGS)
    if c.sharding == "fsdp":
        ema = [s.name for s in c.stages if s.type == "dit" and s.ema_decay > 0]
        _require(
            not ema,
            "sharding",
            f"'ddp' for stages with ema_decay > 0 ({ema}): FSDP keeps no weight average",
            c.sharding,
        )
    _require(c.log_every >= 1, "log_every", "an integer >= 1", c.log_every)
    _require(
        c.checkpoint_every >= 0,
        "checkpoint_every",
        "an integer >= 0 (0 = at stage ends only)",
        c.checkpoint_every,
    )
    _require(c.keep_checkpoints >= 1, "keep_checkpoints", "an integer >= 1", c.keep_checkpoints)
    m = c.model
    _require(m.fps is None or m.fps >= 1, "model.fps", "null or an integer >= 1", m.fps)
    if m.init is None:
        preset = m.transformer.get("preset", "tiny")
        _one_of("model.transformer.preset", preset, TRANSFORMER_PRESETS)
    else:
        _require(bool(m.init.strip()), "model.init", "a model folder path or null", m.init)
        if "preset" in m.transformer:
            raise ConfigError(
                "model.transformer.preset: not used with model.init (the folder's config is the base); "
                "keep only overrides"
            )
        for name in ("text_encoder", "vae"):
            if getattr(m, name):
                raise ConfigError(
                    f"model.{name}: only for a new model; with model.init the folder's {name} is used"
                )
    _require(len(c.stages) >= 1, "stages", "at least one stage", list(c.stages))
    names = [s.name for s in c.stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    _require(not dup, "stages", "unique stage names", dup)
    for i, stage in enumerate(c.stages):
        _validate_stage(stage, f"stages[{i}]")
        if stage.type == "vae" and stage.vae_trainable == "decoder" and m.init is None:
            if not any(s.type == "vae" and s.vae_trainable == "all" for s in c.stages[:i]):
                raise ConfigError(
                    f"stages[{i}].vae_trainable: 'decoder' keeps the encoder as it is, but this VAE is new "
                    "(model.init is null and no earlier stage trains the whole VAE); set model.init or "
                    "use 'all'"
                )
