"""Text-to-video pipeline: storyboard -> latents -> scene-linear frames -> EXR (see video_pipeline.py).

Names are imported lazily (PEP 562) so `import ttt_engine.pipeline.params` does not pull in diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GenerationParams": "params",
    "StepInfo": "params",
    "GenerationCancelled": "params",
    "PipelineError": "params",
    "ComponentMissingError": "params",
    "DecodeError": "params",
    "PLATE_MODES": "params",
    "VideoPipeline": "video_pipeline",
    "GenerationResult": "video_pipeline",
    "save_latents": "latents_io",
    "load_latents": "latents_io",
    "make_scheduler": "schedulers",
    "dynamic_cfg_scale": "schedulers",
    "cfg_scales": "schedulers",
    "TextEncoder": "text",
    "HashTextEncoder": "text",
    "HashTextConfig": "text",
    "T5TextEncoder": "text",
    "write_exr_sequence": "exr_out",
    "write_gif": "exr_out",
    "srgb_to_linear": "exr_out",
    "linear_to_srgb": "exr_out",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
