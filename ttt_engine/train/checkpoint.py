"""Training checkpoints (everything an exact resume needs, one folder each) and the model folder I/O.

    run_dir/checkpoints/<NN>-<stage>-step<SSSSSSS>/
        transformer/        config.json + model.safetensors      (models.save_video_dit)
        text_encoder/       HashTextEncoder weights               (when it is ours or was trained)
        vae/                diffusers save_pretrained             (vae stages)
        training_state.pt   stage, step, optimizer, LR scheduler, RNG states of every rank, sampler position
        train_config.yaml   the TrainConfig that made it
        COMPLETE            written last: a folder without it is an interrupted write and is ignored

The folder is written under a temporary name and renamed, so a crash never leaves a half checkpoint
with the final name. training_state.pt holds tensors and plain Python values only (torch.load with
weights_only=True reads it). Parts not in a checkpoint (a frozen T5, the VAE of a DiT stage) are read
back from the folders recorded in the state's "sources".

Model folders (what `VideoPipeline.from_folder` reads): `new_model_parts` builds a new toy model from the
config, `load_model_parts` reads a model folder (ours or diffusers CogVideoX) to start from, and
`export_model_folder` writes transformer/, vae/, text_encoder/ (+ tokenizer/), scheduler/ and
model_index.json.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ConfigError, ModelConfig, TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
CONFIG_FILE = "train_config.yaml"
COMPLETE_MARK = "COMPLETE"
STATE_FORMAT = "ttt-studio.train-state"
STATE_VERSION = 1
CHECKPOINTS = "checkpoints"
DEFAULT_MAX_SEGMENTS = 21  # the pipeline's MAX_SEGMENTS (63 s)
_NAME_RE = re.compile(r"^(\d+)-(.+)-step(\d+)$")


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed from (the message says which file and why)."""


# ---- RNG states ----------------------------------------------------------------------------------------


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states, plus a training generator's, as plain data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of capture_rng."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        if "generator" not in state:
            raise ResumeError("training state has no generator RNG state")
        generator.set_state(state["generator"])


# ---- folders --------------------------------------------------------------------------------------------


def checkpoint_name(stage_index: int, stage_name: str, step: int) -> str:
    return f"{stage_index:02d}-{stage_name}-step{step:07d}"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (by stage index, then step)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_dir() and (p / COMPLETE_MARK).is_file():
            found.append(((int(m.group(1)), int(m.group(3))), p))
    return [p for _, p in sorted(found)]


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its latest complete checkpoint)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        if not (path / COMPLETE_MARK).is_file():
            raise ResumeError(
                f"{path}: checkpoint is incomplete (no {COMPLETE_MARK} marker); pick an earlier one"
            )
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1]
    raise ResumeError(
        f"--resume {path}: neither a checkpoint folder (with {STATE_FILE}) nor a run folder with complete "
        f"checkpoints under {CHECKPOINTS}/"
    )


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    state: dict[str, Any],
    config: TrainConfig,
    write_weights: Callable[[Path], None],
    keep: int,
) -> Path:
    """Write one checkpoint folder atomically and prune to the newest `keep`; returns its path.

    write_weights(folder) writes the model parts (transformer/, text_encoder/, vae/) into `folder`.
    """
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_weights(tmp)
    torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **state}, tmp / STATE_FILE)
    config.save(tmp / CONFIG_FILE)
    (tmp / COMPLETE_MARK).write_text("ok\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _prune(run_dir, keep)
    log.info("checkpoint written: %s", final)
    return final


def _prune(run_dir: str | Path, keep: int) -> None:
    found = list_checkpoints(run_dir)
    for old in found[: max(0, len(found) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def load_state(folder: str | Path) -> dict[str, Any]:
    """training_state.pt of a checkpoint folder, checked for format and version."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"{folder}: no {STATE_FILE}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ResumeError(f"{path}: cannot read ({err})") from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: not a ttt-studio training state (format {state.get('format')!r})")
    if state.get("version") != STATE_VERSION:
        raise ResumeError(f"{path}: version {state.get('version')!r}, this code reads {STATE_VERSION}")
    return state


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted keys whose values differ between two configs (for the resume warning)."""

    def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for k, v in obj.items():
                out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
            return out
        if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
            out = {}
            for i, v in enumerate(obj):
                out.update(flat(v, f"{prefix}[{i}]"))
            return out
        return {prefix: obj}

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


# ---- model parts: build, load, write ---------------------------------------------------------------------


@dataclass
class ModelParts:
    """The model being trained. sources: where parts not written into every checkpoint come from
    ('vae', 'text_encoder', 'tokenizer': folders or None) plus 'scheduler_config' and 'max_segments'."""

    transformer: nn.Module
    text_encoder: Any
    vae: nn.Module
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def text_is_ours(self) -> bool:
        from ..pipeline.text import HashTextEncoder

        return isinstance(self.text_encoder, HashTextEncoder)


def new_model_parts(model: ModelConfig, seed: int) -> ModelParts:
    """A new tiny-world model from the config: VideoDiT preset + overrides, HashTextEncoder, CogVideoX VAE.

    Built under torch.random.fork_rng with manual_seed(seed), so every process builds the same weights.
    """
    from ..models import VideoDiT, VideoDiTConfig
    from ..pipeline.text import HashTextConfig, HashTextEncoder
    from .vae_train import build_vae, default_vae_config

    overrides = dict(model.transformer)
    preset = overrides.pop("preset", "tiny")
    try:
        dit_config = getattr(VideoDiTConfig, preset)(**overrides)
    except TypeError as err:
        raise ConfigError(f"model.transformer: {err} (keys must be VideoDiTConfig fields)") from None
    except ValueError as err:
        raise ConfigError(f"model.transformer: {err}") from None
    text_kwargs = {"dim": dit_config.text_dim, "max_length": dit_config.max_text_len, **model.text_encoder}
    try:
        text_config = HashTextConfig(**text_kwargs)
    except TypeError as err:
        raise ConfigError(f"model.text_encoder: {err} (keys must be HashTextConfig fields)") from None
    except ValueError as err:
        raise ConfigError(f"model.text_encoder: {err}") from None
    if text_config.dim != dit_config.text_dim or text_config.max_length != dit_config.max_text_len:
        raise ConfigError(
            f"model.text_encoder: dim/max_length {text_config.dim}/{text_config.max_length} must equal the "
            f"transformer's text_dim/max_text_len {dit_config.text_dim}/{dit_config.max_text_len}"
        )
    vae_config = {**default_vae_config(dit_config.in_channels), **model.vae}
    if vae_config.get("latent_channels") != dit_config.in_channels:
        raise ConfigError(
            f"model.vae.latent_channels: {vae_config.get('latent_channels')} must equal the transformer's "
            f"in_channels {dit_config.in_channels}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = VideoDiT(dit_config)
        text = HashTextEncoder(text_config)
        vae = build_vae(vae_config)
    return ModelParts(
        transformer, text, vae, {"scheduler_config": None, "max_segments": DEFAULT_MAX_SEGMENTS}
    )


def load_model_parts(folder: str | Path, transformer_overrides: dict[str, Any] | None = None) -> ModelParts:
    """A model folder (ours, or a diffusers CogVideoX folder whose transformer/ load_video_dit reads)."""
    from ..models.loading import load_video_dit
    from ..pipeline.schedulers import load_scheduler_config
    from ..pipeline.text import load_text_encoder
    from .vae_train import load_vae

    folder = Path(folder)
    for part in ("transformer", "vae", "text_encoder"):
        if not (folder / part).is_dir():
            raise ConfigError(f"model.init: {folder} has no {part}/ folder (expected a model folder)")
    transformer = load_video_dit(
        folder / "transformer", dtype="float32", overrides=transformer_overrides or None
    )
    tokenizer = folder / "tokenizer"
    text = load_text_encoder(
        folder / "text_encoder", tokenizer if tokenizer.is_dir() else None, transformer.config.max_text_len
    )
    vae = load_vae(folder / "vae").float()
    sched = load_scheduler_config(folder / "scheduler") if (folder / "scheduler").is_dir() else None
    index = read_model_index(folder)
    sources = {
        "vae": str(folder / "vae"),
        "text_encoder": str(folder / "text_encoder"),
        "tokenizer": str(tokenizer) if tokenizer.is_dir() else None,
        "scheduler_config": sched,
        "max_segments": int(index.get("max_segments", DEFAULT_MAX_SEGMENTS)),
        # the init's tuned sampling settings carry over (re-tune them for the new model: MODEL_CARD.md)
        "sampling": index.get("sampling"),
    }
    return ModelParts(transformer, text, vae, sources)


def require_new_folder(folder: str | Path) -> Path:
    """`folder` as a Path; ValueError when it exists and is not empty (a derived model never overwrites one)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder}: the destination exists and is not empty; name a new folder")
    return folder


def model_folder_fps(folder: str | Path) -> int:
    """The frame rate our model folder's model_index.json gives; ValueError when it gives none."""
    fps = read_model_index(Path(folder)).get("fps")
    if not fps:
        raise ValueError(f"{folder}: model_index.json gives no fps (expected one of our model folders)")
    return int(fps)


def read_model_index(folder: Path) -> dict[str, Any]:
    """model_index.json of a model folder ({} when it has none); ConfigError when it is not JSON."""
    from ..pipeline.video_pipeline import PIPELINE_INDEX

    path = folder / PIPELINE_INDEX
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def write_text_encoder(parts: ModelParts, folder: Path) -> None:
    """text_encoder/ (+ tokenizer/ for a T5) in the layout load_text_encoder reads."""
    from ..pipeline.text import PackagedTextEncoder, T5TextEncoder

    if parts.text_is_ours or isinstance(parts.text_encoder, PackagedTextEncoder):
        parts.text_encoder.save(folder / "text_encoder")
    elif isinstance(parts.text_encoder, T5TextEncoder):
        parts.text_encoder.model.save_pretrained(str(folder / "text_encoder"))
        parts.text_encoder.tokenizer.save_pretrained(str(folder / "tokenizer"))
    else:  # pragma: no cover - load_text_encoder returns one of the three
        raise ConfigError(f"cannot save a {type(parts.text_encoder).__name__} text encoder")


def export_model_folder(parts: ModelParts, folder: str | Path, fps: int) -> Path:
    """The model folder VideoPipeline.from_folder reads: transformer/, vae/, text_encoder/ (+ tokenizer/),
    scheduler/ and model_index.json (fps, max_segments, and the init's sampling defaults when it had some)."""
    from ..models.loading import save_video_dit
    from ..pipeline.schedulers import save_scheduler_config
    from ..pipeline.video_pipeline import PIPELINE_INDEX, model_index, model_spec
    from .vae_train import save_vae

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_video_dit(parts.transformer, folder / "transformer")
    save_vae(parts.vae, folder / "vae")
    write_text_encoder(parts, folder)
    save_scheduler_config(folder / "scheduler", parts.sources.get("scheduler_config"))
    max_segments = int(parts.sources.get("max_segments") or DEFAULT_MAX_SEGMENTS)
    # a trained model declares its rate; its sizes and colour space are those its shapes and data give
    spec = model_spec(parts.transformer.config, parts.vae.config, {"fps": fps}, str(folder))
    index = model_index(spec, max_segments, parts.sources.get("sampling"))
    (folder / PIPELINE_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return folder


def load_checkpoint_parts(ckpt: Path, state: dict[str, Any]) -> ModelParts:
    """The model as a checkpoint left it: transformer (and text encoder / VAE when written there),
    the other parts from the sources recorded in the state."""
    from ..models.loading import load_video_dit
    from ..pipeline.text import load_text_encoder
    from .vae_train import load_vae

    sources = dict(state["sources"])
    transformer = load_video_dit(ckpt / "transformer", dtype="float32")
    if (ckpt / "text_encoder").is_dir():
        text_dir, tok = ckpt / "text_encoder", ckpt / "tokenizer"
    elif sources.get("text_encoder"):
        text_dir = Path(sources["text_encoder"])
        tok = Path(sources["tokenizer"]) if sources.get("tokenizer") else None
    else:
        raise ResumeError(f"{ckpt}: no text_encoder/ and no text encoder source recorded")
    text = load_text_encoder(
        text_dir, tok if tok is not None and tok.is_dir() else None, transformer.config.max_text_len
    )
    vae_dir = ckpt / "vae" if (ckpt / "vae").is_dir() else Path(sources["vae"])
    if not vae_dir.is_dir():
        raise ResumeError(f"{ckpt}: the VAE folder {vae_dir} recorded in the training state is gone")
    return ModelParts(transformer, text, load_vae(vae_dir).float(), sources)
