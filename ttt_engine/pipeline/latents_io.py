"""Latents on disk: one safetensors file, tensor "latents" [1, F, C, h, w], JSON meta in its header.

Written right after sampling and before the VAE decode, so a decode that fails (out of memory after an
hour of sampling is the classic case) can be retried from the file without sampling again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .params import PipelineError

LATENTS_KEY = "latents"
META_KEY = "ttt_studio_meta"


def save_latents(path: str | Path, latents: torch.Tensor, meta: dict[str, Any] | None = None) -> Path:
    """Write latents [1, F, C, h, w] and a JSON-serialisable meta dict; atomic (temp file + rename)."""
    if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise PipelineError(f"save_latents: expected a tensor [1, F, C, h, w], got {got}")
    try:
        meta_text = json.dumps(meta or {}, sort_keys=True)
    except TypeError as exc:
        raise PipelineError(f"save_latents: meta must be JSON-serialisable ({exc})") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({LATENTS_KEY: latents.detach().contiguous().cpu()}, str(tmp), metadata={META_KEY: meta_text})
    os.replace(tmp, path)
    return path


def load_latents(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read (latents [1, F, C, h, w] on CPU, meta dict) written by save_latents."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"load_latents: no file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            if LATENTS_KEY not in f.keys():
                raise PipelineError(
                    f"load_latents: {path} has no {LATENTS_KEY!r} tensor (found {sorted(f.keys())})"
                )
            latents = f.get_tensor(LATENTS_KEY)
            header = f.metadata() or {}
    except SafetensorError as exc:
        raise PipelineError(f"load_latents: {path} is not a readable safetensors file ({exc})") from exc
    try:
        meta = json.loads(header.get(META_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"load_latents: {path} has corrupt meta ({exc})") from exc
    if latents.dim() != 5:
        raise PipelineError(
            f"load_latents: {path} holds latents of shape {tuple(latents.shape)}, expected 5-D"
        )
    return latents, meta
