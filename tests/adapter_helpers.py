"""Random LoRA adapters for tests: a nonzero B, so applying one changes a model's output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")
BAD_KEY = "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"


def random_lora(transformer: Any, folder: Path, seed: int, rank: int = 2, in_extra: int = 0) -> Path:
    """A random LoRA of `transformer`'s attention saved with save_adapter into `folder`; in_extra > 0
    widens BAD_KEY's input side so the adapter does not fit. Returns its self-contained .safetensors file."""
    from ttt_engine.adapters import AdapterConfig, linear_module_map, save_adapter

    gen = torch.Generator().manual_seed(seed)
    modules = dict(transformer.named_modules())
    state = {}
    for theirs, ours in linear_module_map(transformer).items():
        if not theirs.startswith("transformer_blocks.") or theirs.split(".", 2)[2] not in TARGETS:
            continue
        layer = modules[ours]
        key = f"transformer.{theirs}.lora_A.weight"
        extra = in_extra if key == BAD_KEY else 0
        state[key] = torch.randn(rank, layer.in_features + extra, generator=gen)
        state[f"transformer.{theirs}.lora_B.weight"] = 0.5 * torch.randn(
            layer.out_features, rank, generator=gen
        )
    config = AdapterConfig(
        rank=rank, alpha=float(rank), target_modules=TARGETS, kind="style", trigger="toonish"
    )
    return save_adapter(state, folder, config).path
