"""The adapter file: a LoRA in diffusers' CogVideoX naming, with its config inside.

One rule: an adapter is one safetensors file that says everything about itself. Its keys are named as
diffusers names CogVideoX LoRAs (`transformer.transformer_blocks.{i}.attn1.to_q.lora_A.weight` /
`.lora_B.weight`), its metadata holds diffusers' `lora_adapter_metadata` (so diffusers' `load_lora_weights`
reads its alpha) and our config (`ttt_studio.adapter`), so the server can take a single uploaded file.
`save_adapter` writes that file as `pytorch_lora_weights.safetensors` in a folder, with `adapter_config.json`
beside it for people to read.

An adapter may also hold a LoRA of the VAE decoder (config.decoder_targets), in the same file under
`vae.decoder.<module>.lora_A.weight` / `.lora_B.weight` (conv LoRAs as peft shapes them: A [rank, in, k...],
B [out, rank, 1...]). diffusers' CogVideoX `load_lora_weights` loads the `transformer.` keys and leaves
these alone (tests/adapters/test_adapter_diffusers.py); the sha256 covers both parts.

`load_adapter` also reads LoRAs made elsewhere: diffusers' `.lora.down` / `.lora.up` naming (what
`convert_state_dict_to_diffusers` writes), peft names with the adapter name left in (`lora_A.default.weight`)
and files without our config: rank from the shapes, alpha from diffusers' metadata, else alpha = rank
(what diffusers assumes). Config precedence: the file's own metadata, then `adapter_config.json` beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes

from .config import AdapterConfig, AdapterError, AdapterTrainConfig

FORMAT = "ttt-studio.adapter"
FORMAT_VERSION = 1
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
CONFIG_NAME = "adapter_config.json"
META_OURS = "ttt_studio.adapter"
META_DIFFUSERS = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
PREFIX = "transformer."
DECODER_PREFIX = "vae.decoder."
# accepted key endings -> "A" (down, [rank, in]) or "B" (up, [out, rank])
_SUFFIXES = (
    (re.compile(r"\.lora_A(?:\.[A-Za-z0-9_-]+)?\.weight$"), "A"),
    (re.compile(r"\.lora_B(?:\.[A-Za-z0-9_-]+)?\.weight$"), "B"),
    (re.compile(r"\.lora\.down\.weight$"), "A"),
    (re.compile(r"\.lora\.up\.weight$"), "B"),
)
_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Adapter:
    """A loaded LoRA adapter.

    state: {"transformer.<diffusers module>.lora_A.weight": [rank, in], "....lora_B.weight": [out, rank]}
    and {"vae.decoder.<module>.lora_A.weight": [rank, in, k...], "....lora_B.weight": [out, rank, 1...]}
    for a decoder LoRA (float tensors on the CPU). sha256: of the safetensors file's bytes (of the bytes `save_adapter` would
    write for an adapter not yet saved): the content hash jobs record. path: the file it came from.
    """

    name: str
    config: AdapterConfig
    state: dict[str, torch.Tensor]
    sha256: str
    path: Path | None = None
    train: AdapterTrainConfig | None = None

    def modules(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{diffusers module name (without 'transformer.'): (A [rank, in], B [out, rank])}."""
        return _pairs(self.state, PREFIX)

    def decoder_modules(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{module name inside the VAE decoder: (A [rank, in, k...], B [out, rank, 1...])}; {} for none."""
        return _pairs(self.state, DECODER_PREFIX)


def _pairs(state: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for key, a in state.items():
        if key.startswith(prefix) and key.endswith(".lora_A.weight"):
            module = key[len(prefix) : -len(".lora_A.weight")]
            out[module] = (a, state[f"{prefix}{module}.lora_B.weight"])
    return out


def module_sort_key(module: str) -> tuple:
    """Order modules by block index as a number (transformer_blocks.2 before transformer_blocks.10)."""
    return tuple(int(p) if p.isdigit() else p for p in module.split("."))


def relative_module(module: str) -> str:
    """'transformer_blocks.3.attn1.to_q' -> 'attn1.to_q' (names outside the blocks are returned as they are)."""
    match = _BLOCK.match(module)
    return match.group(2) if match else module


def normalise_state(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Any accepted LoRA naming -> ours (`transformer.<module>.lora_A.weight` / `.lora_B.weight`; decoder
    keys keep their `vae.decoder.` prefix).

    Checks that every module has both matrices, of one rank: 2-D for the transformer; for the decoder 2-D
    (a linear layer) or A [rank, in, k...] with B [out, rank, 1...] of as many dimensions (a convolution).
    Raises AdapterError naming the bad key.
    """
    if not state:
        raise AdapterError(f"{where}: no LoRA tensors in it")
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state, key=module_sort_key):
        tensor = state[key]
        decoder = key.startswith(DECODER_PREFIX)
        prefix = DECODER_PREFIX if decoder else PREFIX
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if name.split(".", 1)[0] in ("text_encoder", "text_encoder_2", "unet", "vae"):
            raise AdapterError(
                f"{where}: key {key!r} is for the {name.split('.', 1)[0]}; only transformer LoRAs and "
                f"VAE decoder LoRAs ({DECODER_PREFIX}...) are supported"
            )
        found = [(name[: m.start()], which) for pattern, which in _SUFFIXES if (m := pattern.search(name))]
        if not found:
            raise AdapterError(
                f"{where}: key {key!r} is not a LoRA matrix (expected names ending in .lora_A.weight, "
                ".lora_B.weight, .lora.down.weight or .lora.up.weight; DoRA, LoRA biases and kohya alphas "
                "are not supported)"
            )
        module, which = found[0]
        canon = f"{prefix}{module}.lora_{which}.weight"
        if canon in out:
            raise AdapterError(f"{where}: key {key!r} duplicates {canon!r} under another naming")
        dims_ok = isinstance(tensor, torch.Tensor) and (tensor.dim() >= 2 if decoder else tensor.dim() == 2)
        if not dims_ok or not tensor.is_floating_point():
            got = (tuple(tensor.shape), tensor.dtype) if isinstance(tensor, torch.Tensor) else type(tensor)
            want = "a float tensor of 2 or more dimensions" if decoder else "a 2-D float matrix"
            raise AdapterError(f"{where}: key {key!r}: expected {want}, got {got}")
        out[canon] = tensor
    ranks: Counter[int] = Counter()
    for canon in out:
        prefix = DECODER_PREFIX if canon.startswith(DECODER_PREFIX) else PREFIX
        module = canon[len(prefix) : -len(".lora_X.weight")]
        a, b = out.get(f"{prefix}{module}.lora_A.weight"), out.get(f"{prefix}{module}.lora_B.weight")
        if a is None or b is None:
            raise AdapterError(f"{where}: module {module!r} has {'B' if a is None else 'A'} but not its pair")
        if a.shape[0] != b.shape[1] or a.dim() != b.dim() or any(k != 1 for k in b.shape[2:]):
            raise AdapterError(
                f"{where}: key {prefix}{module}.lora_B.weight: shape {tuple(b.shape)} does not take the rank "
                f"{a.shape[0]} of lora_A {tuple(a.shape)}"
                + (" (a conv LoRA's B is [out, rank, 1...], as many dimensions as A)" if a.dim() > 2 else "")
            )
        ranks[a.shape[0]] += 1
    if len(ranks) > 1:
        raise AdapterError(
            f"{where}: modules of different ranks {sorted(ranks)}; one rank per adapter is supported"
        )
    return out


_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
_ALIGN = 8


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors format written deterministically (the library orders metadata by a hash map, so the
    same adapter could get two content hashes): header JSON with sorted keys, tensors in name order."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        if t.dtype not in _DTYPES:
            raise AdapterError(f"key {key!r}: dtype {t.dtype} is not one of {sorted(map(str, _DTYPES))}")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[key] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % _ALIGN)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _serialise(
    state: dict[str, torch.Tensor], config: AdapterConfig, train: AdapterTrainConfig | None
) -> bytes:
    peft_meta = {"r": config.rank, "lora_alpha": config.alpha, "target_modules": list(config.target_modules)}
    ours: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_dict()}
    if train is not None:
        ours["train"] = train.to_dict()
    metadata = {
        "format": "pt",
        META_DIFFUSERS: json.dumps({f"{PREFIX}{k}": v for k, v in peft_meta.items()}, sort_keys=True),
        META_OURS: json.dumps(ours, sort_keys=True),
    }
    return _safetensors_bytes(state, metadata)


def make_adapter(
    state: dict[str, torch.Tensor],
    config: AdapterConfig,
    name: str,
    train: AdapterTrainConfig | None = None,
) -> Adapter:
    """An in-memory Adapter (state in any accepted naming); sha256 is that of the file save_adapter writes."""
    canon = normalise_state(state, f"adapter {name!r}")
    rank = next(iter(canon.values())).shape[0] if canon else config.rank
    if rank != config.rank:
        raise AdapterError(f"adapter {name!r}: config rank {config.rank} but the matrices have rank {rank}")
    data = _serialise(canon, config, train)
    return Adapter(name, config, canon, hashlib.sha256(data).hexdigest(), None, train)


def save_adapter(
    adapter_or_state: Adapter | dict[str, torch.Tensor],
    folder: str | os.PathLike[str],
    config: AdapterConfig | None = None,
    train: AdapterTrainConfig | None = None,
) -> Adapter:
    """Write `pytorch_lora_weights.safetensors` (+ `adapter_config.json`) into `folder`; return the Adapter
    as saved (path and sha256 of the file). A state needs `config`; an Adapter's own config is used unless
    one is given. The weights file is written atomically."""
    folder = Path(folder)
    if isinstance(adapter_or_state, Adapter):
        state = adapter_or_state.state
        config = config or adapter_or_state.config
        train = train or adapter_or_state.train
    elif isinstance(adapter_or_state, dict):
        if config is None:
            raise AdapterError("save_adapter: a state dict needs its AdapterConfig (config=...)")
        state = adapter_or_state
    else:
        raise AdapterError(
            f"save_adapter: expected an Adapter or a state dict, got {type(adapter_or_state).__name__}"
        )
    if folder.exists() and not folder.is_dir():
        raise AdapterError(f"{folder}: expected a folder, got an existing file")
    adapter = make_adapter(state, config, folder.name, train)
    folder.mkdir(parents=True, exist_ok=True)
    data = _serialise(adapter.state, adapter.config, adapter.train)
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, folder / WEIGHTS_NAME)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": adapter.config.to_dict()}
    if adapter.train is not None:
        meta["train"] = adapter.train.to_dict()
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Adapter(
        adapter.name, adapter.config, adapter.state, adapter.sha256, folder / WEIGHTS_NAME, adapter.train
    )


def _ours_from_json(data: Any, where: str) -> tuple[AdapterConfig, AdapterTrainConfig | None]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise AdapterError(f"{where}: expected format {FORMAT!r}, got {got!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise AdapterError(f"{where}: format_version {data.get('format_version')!r} is not {FORMAT_VERSION}")
    config = AdapterConfig.from_dict(data.get("config"), f"{where}: config")
    train = data.get("train")
    return config, AdapterTrainConfig.from_dict(train, f"{where}: train") if train is not None else None


def _derived_config(state: dict[str, torch.Tensor], metadata: dict[str, str], where: str) -> AdapterConfig:
    """Config of a LoRA without ours: rank from shapes, alpha from diffusers' metadata or = rank."""
    rank = next(iter(state.values())).shape[0]
    alpha: float = float(rank)
    raw = metadata.get(META_DIFFUSERS)
    if raw:
        try:
            peft_meta = json.loads(raw)
        except json.JSONDecodeError as err:
            raise AdapterError(f"{where}: metadata {META_DIFFUSERS!r} is not JSON ({err})") from err
        if not isinstance(peft_meta, dict):
            raise AdapterError(f"{where}: metadata {META_DIFFUSERS!r}: expected a JSON object")
        for key in ("rank_pattern", "alpha_pattern"):
            if peft_meta.get(f"{PREFIX}{key}"):
                raise AdapterError(f"{where}: per-module {key} in {META_DIFFUSERS!r} is not supported")
        if peft_meta.get(f"{PREFIX}r", rank) != rank:
            raise AdapterError(
                f"{where}: metadata says r={peft_meta[f'{PREFIX}r']!r}, the matrices have rank {rank}"
            )
        alpha = peft_meta.get(f"{PREFIX}lora_alpha", alpha)
    modules = sorted(
        {relative_module(k[len(PREFIX) : -len(".lora_A.weight")]) for k in state if k.startswith(PREFIX)}
    )
    decoder = sorted(
        {k[len(DECODER_PREFIX) : -len(".lora_A.weight")] for k in state if k.startswith(DECODER_PREFIX)},
        key=module_sort_key,
    )
    return AdapterConfig(
        rank=rank, alpha=alpha, target_modules=tuple(modules), decoder_targets=tuple(decoder)
    )


def load_adapter(path: str | os.PathLike[str]) -> Adapter:
    """Read an adapter: a folder holding `pytorch_lora_weights.safetensors` (+ `adapter_config.json`), or
    a .safetensors file alone. Raises AdapterError for anything unreadable or not a LoRA."""
    path = Path(path)
    if path.is_dir():
        file = path / WEIGHTS_NAME
        if not file.is_file():
            present = sorted(p.name for p in path.iterdir())
            raise AdapterError(f"{path}: no {WEIGHTS_NAME} in this folder (it holds {present})")
        name, side = path.name, path / CONFIG_NAME
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise AdapterError(f"{path}: expected a .safetensors file or a folder holding {WEIGHTS_NAME}")
        file, side = path, path.parent / CONFIG_NAME
        name = path.parent.name if path.name == WEIGHTS_NAME else path.stem
    else:
        raise AdapterError(f"{path}: no such file or folder")
    try:
        data = file.read_bytes()
        with safe_open(str(file), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        raw_state = load_safetensors_bytes(data)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise AdapterError(f"{file}: cannot read safetensors ({err})") from err
    state = normalise_state(raw_state, str(file))
    train = None
    if META_OURS in metadata:
        try:
            ours = json.loads(metadata[META_OURS])
        except json.JSONDecodeError as err:
            raise AdapterError(f"{file}: metadata {META_OURS!r} is not JSON ({err})") from err
        config, train = _ours_from_json(ours, f"{file} metadata {META_OURS!r}")
    elif file.name == WEIGHTS_NAME and side.is_file():
        try:
            side_data = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise AdapterError(f"{side}: cannot read JSON ({err})") from err
        config, train = _ours_from_json(side_data, str(side))
    else:
        config = _derived_config(state, metadata, str(file))
    rank = next(iter(state.values())).shape[0]
    if rank != config.rank:
        raise AdapterError(f"{file}: config rank {config.rank} but the matrices have rank {rank}")
    return Adapter(name, config, state, hashlib.sha256(data).hexdigest(), file, train)
