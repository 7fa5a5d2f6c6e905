"""Random LoRA adapter files for the server and plugin tests (tests/adapters/helpers.py makes the states)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.adapters.helpers import TARGETS, random_decoder_state, random_lora_state

DECODER_TARGETS = ("up_blocks.2.resnets.1.conv2.conv", "conv_out.conv")

BAD_KEY = "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"


def random_lora(
    transformer: Any,
    folder: Path,
    seed: int,
    rank: int = 2,
    in_extra: int = 0,
    vae: Any = None,
    decoder_only: bool = False,
) -> Path:
    """A random LoRA of `transformer`'s attention (B nonzero: it changes the output) saved with save_adapter
    into `folder`; in_extra > 0 widens BAD_KEY's input side so that it does not fit; with `vae`, also a
    decoder LoRA of DECODER_TARGETS (decoder_only: that alone). Returns the self-contained .safetensors
    file."""
    from ttt_engine.adapters import AdapterConfig, save_adapter

    state = {} if decoder_only else random_lora_state(transformer, rank=rank, seed=seed)
    if in_extra:
        state[BAD_KEY] = torch.randn(rank, transformer.config.dim + in_extra)
    if vae is not None:
        state.update(random_decoder_state(vae, DECODER_TARGETS, rank=rank, seed=seed))
    config = AdapterConfig(
        rank=rank,
        alpha=float(rank),
        target_modules=() if decoder_only else TARGETS,
        decoder_targets=DECODER_TARGETS if vae is not None else (),
        kind="style",
        trigger="toonish",
    )
    return save_adapter(state, folder, config).path
