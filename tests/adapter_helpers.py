"""Random LoRA adapter files for the server and plugin tests (tests/adapters/helpers.py makes the states)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.adapters.helpers import TARGETS, random_lora_state

BAD_KEY = "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"


def random_lora(transformer: Any, folder: Path, seed: int, rank: int = 2, in_extra: int = 0) -> Path:
    """A random LoRA of `transformer`'s attention (B nonzero: it changes the output) saved with save_adapter
    into `folder`; in_extra > 0 widens BAD_KEY's input side so that it does not fit. Returns the
    self-contained .safetensors file."""
    from ttt_engine.adapters import AdapterConfig, save_adapter

    state = random_lora_state(transformer, rank=rank, seed=seed)
    if in_extra:
        state[BAD_KEY] = torch.randn(rank, transformer.config.dim + in_extra)
    config = AdapterConfig(
        rank=rank, alpha=float(rank), target_modules=TARGETS, kind="style", trigger="toonish"
    )
    return save_adapter(state, folder, config).path
