"""`ttt-studio strip-ttt SRC DST`: a TTT model folder without its TTT layers and gates (a base again).

The transformer keeps every other weight exactly and gets ttt_inner 'none'; the text encoder, VAE,
schedule, frame rate and sampling settings are copied. Train DST as a base (`model.init: DST`, no TTT
overrides) and a later config that adds TTT gives it fresh TTT layers (the paper's base -> TTT step).
Why: a base step costs a fraction of a TTT step (no sequential inner loop), so continuing a shipped model's
base on new data, then redoing the TTT fine-tune, sees several times more clips for the same time.
With every gate at 0 the TTT model and its stripped base compute the same function (tanh(0) = 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .checkpoint import (
    ModelParts,
    export_model_folder,
    load_model_parts,
    model_folder_fps,
    require_new_folder,
)


def strip_ttt(src: str | Path, dst: str | Path) -> Path:
    """Write DST: SRC's model folder with the transformer's TTT layers and gates removed."""
    from ..models import VideoDiT
    from ..models.loading import is_ttt_key

    dst = require_new_folder(dst)
    parts = load_model_parts(src)
    old = parts.transformer
    if old.config.ttt_inner == "none":
        raise ValueError(f"{src}: the transformer has no TTT layers (ttt_inner 'none'); nothing to strip")
    fps = model_folder_fps(src)
    transformer = VideoDiT(dataclasses.replace(old.config, ttt_inner="none"))
    transformer.load_state_dict({k: v for k, v in old.state_dict().items() if not is_ttt_key(k)}, strict=True)
    return export_model_folder(
        ModelParts(transformer, parts.text_encoder, parts.vae, parts.sources), dst, fps
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "strip-ttt",
        help="copy a model folder without its TTT layers and gates, to train further as a base",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="model folder with TTT layers")
    p.add_argument("dst", help="new model folder to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.params import PipelineError
    from .config import ConfigError

    try:
        out = strip_ttt(args.src, args.dst)
    except (ValueError, PipelineError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model folder: {out}")
    return 0
