"""LoRA adapters: a look or a subject trained from a folder of stills and clips, applied per job.

    load_adapter(path) -> Adapter        a folder or one .safetensors file (diffusers CogVideoX LoRA naming)
    save_adapter(adapter_or_state, folder, config) -> Adapter
    check_adapter(adapter, transformer)  shapes against our VideoDiT (AdapterError names the first bad key)
    with applied(transformer, [(adapter, scale), ...]): ...   base restored exactly on exit

Config in one typed place: AdapterConfig (what a LoRA is), AdapterTrainConfig (how it is trained).
"""

from .apply import BoundAdapter, applied, check_adapter, linear_module_map
from .config import DEFAULT_TARGETS, AdapterConfig, AdapterError, AdapterTrainConfig
from .format import Adapter, load_adapter, make_adapter, save_adapter
from .record import ATTRIBUTE, adapter_attributes, adapter_records, parse_adapter_arg, records_from_attributes

__all__ = [
    "ATTRIBUTE",
    "adapter_attributes",
    "adapter_records",
    "parse_adapter_arg",
    "records_from_attributes",
    "DEFAULT_TARGETS",
    "Adapter",
    "AdapterConfig",
    "AdapterError",
    "AdapterTrainConfig",
    "BoundAdapter",
    "applied",
    "check_adapter",
    "linear_module_map",
    "load_adapter",
    "make_adapter",
    "save_adapter",
]
