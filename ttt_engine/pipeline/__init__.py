"""Text-to-video pipeline: storyboard -> latents -> frames in the model's colour space -> the conform
(deliver.py: the edit's rate, format and colour) -> EXR (see video_pipeline.py).

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
    "delivered_writer": "exr_out",
    "write_gif": "exr_out",
    "DeliveryPlan": "deliver",
    "FrameDeliverer": "deliver",
    "plan_delivery": "deliver",
    "ModelSpec": "model_spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
