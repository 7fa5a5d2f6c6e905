"""Load and save VideoDiT weights.

Two folder formats are read by `load_video_dit(path)`:
- ours: `config.json` ({"format": "ttt-studio.video-dit", "config": {...}}) + `model.safetensors` beside it,
  every parameter present (written by `save_video_dit`). One exception: a checkpoint saved without TTT
  (ttt_inner 'none') loaded with overrides that add TTT gets fresh TTT layers and gates, initialised as
  for a diffusers folder (the paper's step from a pretrained base to its TTT fine-tune).
- diffusers CogVideoX: a pipeline folder with `transformer/`, or the transformer folder itself
  (`config.json` with "_class_name": "CogVideoXTransformer3DModel" + `diffusion_pytorch_model.safetensors`,
  or shards listed by `diffusion_pytorch_model.safetensors.index.json`). Its weights map 1:1 onto ours
  (DIFFUSERS_RENAMES); TTT layers and gates, which CogVideoX lacks, are initialised as the paper does.

Anything missing, unexpected or of the wrong shape raises CheckpointError listing each key. The model is
built on the meta device and the checkpoint tensors are assigned in place, so a 5B model never exists
twice in memory.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import VideoDiTConfig
from .video_dit import VideoDiT

log = logging.getLogger(__name__)

FORMAT = "ttt-studio.video-dit"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_CLASS = "CogVideoXTransformer3DModel"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LIST_LIMIT = 40

# our parameter-name prefix -> diffusers' (block prefixes: blocks.{i}. <-> transformer_blocks.{i}.)
DIFFUSERS_RENAMES: tuple[tuple[str, str], ...] = (
    ("patch_embed.", "patch_embed.proj."),
    ("text_proj.", "patch_embed.text_proj."),
    ("time_embed.", "time_embedding."),
    ("norm_final.", "norm_final."),
    ("norm_out.", "norm_out."),
    ("proj_out.", "proj_out."),
)
DIFFUSERS_BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
    ("attn.to_q.", "attn1.to_q."),
    ("attn.to_k.", "attn1.to_k."),
    ("attn.to_v.", "attn1.to_v."),
    ("attn.to_out.", "attn1.to_out.0."),
    ("attn.q_norm.", "attn1.norm_q."),
    ("attn.k_norm.", "attn1.norm_k."),
    ("mlp.fc1.", "ff.net.0.proj."),
    ("mlp.fc2.", "ff.net.2."),
)
# diffusers CogVideoXTransformer3DModel.__init__ defaults (used for keys a config.json leaves out)
DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "num_attention_heads": 30,
    "attention_head_dim": 64,
    "in_channels": 16,
    "out_channels": 16,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "time_embed_dim": 512,
    "ofs_embed_dim": None,
    "text_embed_dim": 4096,
    "num_layers": 30,
    "attention_bias": True,
    "sample_width": 90,
    "sample_height": 60,
    "sample_frames": 49,
    "patch_size": 2,
    "patch_size_t": None,
    "temporal_compression_ratio": 4,
    "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu",
    "norm_elementwise_affine": True,
    "norm_eps": 1e-5,
    "spatial_interpolation_scale": 1.875,
    "temporal_interpolation_scale": 1.0,
    "use_rotary_positional_embeddings": False,
    "use_learned_positional_embeddings": False,
    "patch_bias": True,
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.*)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; `missing`, `unexpected` and `mismatched` list the keys.

    mismatched: (name, expected shape, got shape) triples.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ) -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        lines = [message]
        for label, items in (
            ("missing keys", self.missing),
            ("unexpected keys", self.unexpected),
            (
                "shape mismatches (name: expected -> got)",
                [f"{n}: {tuple(e)} -> {tuple(g)}" for n, e, g in self.mismatched],
            ),
        ):
            if items:
                shown = ", ".join(items[:_LIST_LIMIT])
                more = f" ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
                lines.append(f"  {label} ({len(items)}): {shown}{more}")
        super().__init__("\n".join(lines))


# ---- names -----------------------------------------------------------------------------------------


def is_ttt_key(name: str) -> bool:
    """True for parameters CogVideoX does not have (TTT layers and their gates)."""
    return ".ttt." in name


def to_diffusers_name(name: str) -> str:
    """Our parameter name -> diffusers CogVideoXTransformer3DModel's. Raises for TTT parameters."""
    if is_ttt_key(name):
        raise ValueError(f"{name!r} is a TTT parameter; CogVideoX has no counterpart")
    match = _BLOCK_KEY.match(name)
    if match:
        index, rest = match.groups()
        for ours, theirs in DIFFUSERS_BLOCK_RENAMES:
            if rest.startswith(ours):
                return f"transformer_blocks.{index}.{theirs}{rest[len(ours) :]}"
    else:
        for ours, theirs in DIFFUSERS_RENAMES:
            if name.startswith(ours):
                return theirs + name[len(ours) :]
    raise ValueError(f"no diffusers name known for parameter {name!r}")


def diffusers_key_map(model: VideoDiT) -> dict[str, str]:
    """{diffusers name: our name} for every non-TTT parameter of the model."""
    return {to_diffusers_name(n): n for n, _ in model.named_parameters() if not is_ttt_key(n)}


# ---- configs ---------------------------------------------------------------------------------------


def config_from_diffusers(data: Mapping[str, Any], **overrides: Any) -> VideoDiTConfig:
    """VideoDiTConfig from a diffusers CogVideoXTransformer3DModel config.json (dict).

    Segments: the first segment has CogVideoX's native latent frames ((sample_frames - 1) / 4 + 1 = 13),
    later ones one frame fewer (12), as in the paper. Unsupported variants (CogVideoX 1.5, image-to-video
    with learned positions or ofs embeddings) raise CheckpointError.
    """
    cls_name = data.get("_class_name", DIFFUSERS_CLASS)
    if cls_name != DIFFUSERS_CLASS:
        raise CheckpointError(f"expected a {DIFFUSERS_CLASS} config, got _class_name={cls_name!r}")
    d = {**DIFFUSERS_DEFAULTS, **data}
    unsupported = {
        "patch_size_t": (d["patch_size_t"] is not None, "CogVideoX 1.5 (3D patches) is not supported"),
        "ofs_embed_dim": (bool(d["ofs_embed_dim"]), "ofs embeddings (CogVideoX 1.5 I2V) are not supported"),
        "use_learned_positional_embeddings": (
            bool(d["use_learned_positional_embeddings"]),
            "learned positional embeddings (CogVideoX-5b-I2V) are not supported",
        ),
        "activation_fn": (d["activation_fn"] != "gelu-approximate", "only 'gelu-approximate' is supported"),
        "timestep_activation_fn": (d["timestep_activation_fn"] != "silu", "only 'silu' is supported"),
    }
    for key, (bad, why) in unsupported.items():
        if bad:
            raise CheckpointError(f"diffusers config: {key}={d[key]!r}: {why}")
    first = (d["sample_frames"] - 1) // d["temporal_compression_ratio"] + 1
    values = {
        "dim": d["num_attention_heads"] * d["attention_head_dim"],
        "num_layers": d["num_layers"],
        "num_heads": d["num_attention_heads"],
        "head_dim": d["attention_head_dim"],
        "in_channels": d["in_channels"],
        "out_channels": d["out_channels"] if d["out_channels"] is not None else d["in_channels"],
        "patch_size": d["patch_size"],
        "text_dim": d["text_embed_dim"],
        "max_text_len": d["max_text_seq_length"],
        "time_embed_dim": d["time_embed_dim"],
        "sample_height": d["sample_height"],
        "sample_width": d["sample_width"],
        "first_segment_frames": first,
        "segment_frames": max(1, first - 1),
        "use_rotary": bool(d["use_rotary_positional_embeddings"]),
        "spatial_interpolation_scale": float(d["spatial_interpolation_scale"]),
        "temporal_interpolation_scale": float(d["temporal_interpolation_scale"]),
        "flip_sin_to_cos": bool(d["flip_sin_to_cos"]),
        "freq_shift": float(d["freq_shift"]),
        "norm_eps": float(d["norm_eps"]),
        "norm_elementwise_affine": bool(d["norm_elementwise_affine"]),
        "attention_bias": bool(d["attention_bias"]),
        "patch_bias": bool(d["patch_bias"]),
    }
    values.update(overrides)
    try:
        return VideoDiTConfig(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"diffusers config does not give a valid VideoDiTConfig: {err}") from err


# ---- files -----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _resolve(path: Path) -> tuple[str, Path, dict[str, Any]]:
    """('ours' | 'diffusers', folder, config dict) for a checkpoint folder."""
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: expected a checkpoint folder, got {'a file' if path.exists() else 'nothing'}"
        )
    for folder in (path, path / "transformer"):
        cfg_path = folder / CONFIG_NAME
        if not cfg_path.is_file():
            continue
        data = _read_json(cfg_path)
        if data.get("format") == FORMAT:
            return "ours", folder, data
        if data.get("_class_name") == DIFFUSERS_CLASS:
            return "diffusers", folder, data
        if folder == path and (path / "transformer").is_dir():
            continue  # a pipeline folder's own config.json (model_index-like): look in transformer/
        raise CheckpointError(
            f"{cfg_path}: neither our format (format={FORMAT!r}) nor a diffusers {DIFFUSERS_CLASS} config "
            f"(got format={data.get('format')!r}, _class_name={data.get('_class_name')!r})"
        )
    raise CheckpointError(f"{path}: no {CONFIG_NAME} here or in {path / 'transformer'}")


def _weight_files(kind: str, folder: Path) -> list[Path]:
    if kind == "ours":
        files = [folder / WEIGHTS_NAME]
    elif (folder / DIFFUSERS_INDEX).is_file():
        index = _read_json(folder / DIFFUSERS_INDEX)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{folder / DIFFUSERS_INDEX}: expected a non-empty 'weight_map' object")
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        files = [folder / DIFFUSERS_WEIGHTS]
    absent = [f for f in files if not f.is_file()]
    if absent:
        present = sorted(p.name for p in folder.iterdir())
        raise CheckpointError(
            f"{folder}: weight files missing: {[f.name for f in absent]} (only safetensors are read; "
            f"folder holds {present})"
        )
    return files


def _read_tensors(files: list[Path], device: torch.device) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if key in tensors:
                        raise CheckpointError(f"{file}: key {key!r} appears in more than one shard")
                    tensors[key] = f.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{file}: cannot read safetensors ({err})") from err
    return tensors


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(
        f"dtype: expected None, one of {sorted(DTYPES)} or the matching torch dtype, got {dtype!r}"
    )


def _majority_dtype(tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
    counts = Counter(t.dtype for t in tensors.values() if t.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


# ---- load / save -----------------------------------------------------------------------------------


def load_video_dit(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> VideoDiT:
    """Load a VideoDiT from our folder or a diffusers CogVideoX folder (see module docstring).

    dtype: 'float32' | 'bfloat16' | 'float16' (or the torch dtype); None keeps the checkpoint's dtype.
    device: where the weights go (default CPU). overrides: VideoDiTConfig fields to change, e.g.
    {"ttt_inner": "none"} or {"ttt_gate_init": 0.0} for a diffusers folder, {"ttt_backend": "reference"}.
    seed: seeds the paper initialisation of TTT parameters a diffusers checkpoint lacks (deterministic).
    The model comes back in eval mode.
    """
    root = Path(path)
    target_dtype = _parse_dtype(dtype)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    kind, folder, raw = _resolve(root)
    overrides = dict(overrides or {})
    if kind == "ours":
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{folder / CONFIG_NAME}: format_version {version!r} is not {FORMAT_VERSION}"
            )
        if not isinstance(raw.get("config"), dict):
            raise CheckpointError(
                f"{folder / CONFIG_NAME}: expected a 'config' object, got {raw.get('config')!r}"
            )
        try:
            config = VideoDiTConfig.from_dict({**raw["config"], **overrides})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{folder / CONFIG_NAME}: invalid config: {err}") from err
    else:
        config = config_from_diffusers(raw, **overrides)

    with torch.device("meta"):
        model = VideoDiT(config)
    tensors = _read_tensors(_weight_files(kind, folder), dev)
    if target_dtype is None:
        target_dtype = _majority_dtype(tensors)

    # ours without TTT + a TTT override: TTT keys come from the paper initialisation, not the file
    adds_ttt = kind == "ours" and raw["config"].get("ttt_inner") == "none" and config.ttt_inner != "none"
    expected = dict(model.named_parameters())
    # file name -> our name for every key the model wants (diffusers names differ, ours are the same)
    rename = diffusers_key_map(model) if kind == "diffusers" else {k: k for k in expected}
    unexpected = [k for k in tensors if k not in rename]
    # named as the file should have them
    missing = [k for k in rename if k not in tensors and not (adds_ttt and is_ttt_key(k))]
    mismatched = [
        (rename[k], tuple(expected[rename[k]].shape), tuple(v.shape))
        for k, v in tensors.items()
        if k in rename and v.shape != expected[rename[k]].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{folder}: checkpoint does not match a VideoDiT of this config ({kind} format)",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )

    # copy each tensor out of the file buffer (owned, aligned storage: numerics then match a model built
    # in memory bit for bit), dropping the file's tensor at once so peak memory stays near one model
    state = {}
    for key in list(tensors):
        v = tensors.pop(key)
        state[rename[key]] = v.to(
            device=dev, dtype=target_dtype if v.is_floating_point() else v.dtype, copy=True
        )
    model.load_state_dict(state, strict=False, assign=True)
    if kind == "diffusers" or adds_ttt:
        _init_ttt(model, dev, target_dtype, seed)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:  # a bug in the mapping, not in the file
        raise CheckpointError(f"{folder}: parameters left uninitialised after loading", missing=left)
    model.eval()
    log.info(
        "loaded VideoDiT (%s format, %d layers, dim %d, ttt=%s) from %s as %s on %s",
        kind,
        config.num_layers,
        config.dim,
        config.ttt_inner,
        folder,
        target_dtype,
        dev,
    )
    return model


def _init_ttt(model: VideoDiT, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Paper initialisation of TTT layers and gates, block by block (fp32 on CPU, then cast and moved)."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.default_generator.manual_seed(seed)  # CPU only: no CUDA RNG side effect
        for block in model.blocks:
            if block.ttt is None:
                continue
            block.ttt.to_empty(device="cpu")
            block.ttt.float()
            block.ttt.reset_parameters()
            block.ttt.to(device=device, dtype=dtype)
    finally:
        torch.random.set_rng_state(gen_state)


def save_video_dit(model: VideoDiT, path: str | os.PathLike[str]) -> Path:
    """Write `config.json` + `model.safetensors` into folder `path` (created if needed); returns the folder.

    Tensors are saved in the model's current dtype; the weights file is written atomically.
    """
    if not isinstance(model, VideoDiT):
        raise ValueError(f"model: expected a VideoDiT, got {type(model).__name__}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path: expected a folder, got an existing file {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "model": FORMAT})
    os.replace(tmp, folder / WEIGHTS_NAME)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "VideoDiT",
        "config": model.config.replace(ttt_compile_step=False).to_dict(),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder
