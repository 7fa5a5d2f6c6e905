"""Where the shipped default model lives: `ttt_engine/default_model/` (a model folder, see its MODEL_CARD.md).

It was trained by `ttt-studio train` on the toon world with the configs of `configs/default/` (parts 1-9,
`base.yaml` to `ttt_mlp_mix.yaml`; the commands are in its MODEL_CARD.md); `ttt-studio generate` and
`ttt-studio compare default` use it when no --model is given.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
MODEL_CARD = "MODEL_CARD.md"


class DefaultModelMissing(FileNotFoundError):
    """The package was installed without the default model's files."""


def default_model_dir() -> Path:
    """The shipped model folder; raises DefaultModelMissing (saying what to do) when it is absent."""
    if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        raise DefaultModelMissing(
            f"the default model is not installed at {DEFAULT_MODEL_DIR} (no model_index.json); reinstall "
            "ttt-studio from a full checkout, or pass --model PATH to a model folder"
        )
    return DEFAULT_MODEL_DIR
