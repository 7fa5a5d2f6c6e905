"""Apply LoRA adapters to our VideoDiT for one job, and take them off again.

One rule: the base weights are never written. `applied(transformer, [(adapter, scale), ...])` registers a
forward hook on each targeted nn.Linear that adds `scale * alpha / rank * B(A(x))` to the layer's output,
and removes the hooks on exit. Why hooks and not peft's layers or merged weights:
- scale 0 and an empty list register nothing, so the forward is the base model's, bit for bit (a merged
  weight W + 0 * BA, or peft's extra `+ 0 * ...`, can differ in the last bit through -0.0 and rounding);
- switching adapters between jobs costs only hook registration: nothing reloads, nothing to unmerge, and
  no adapter state outlives its job (the hooks hold the adapter's matrices, the model holds nothing);
- the sum is computed as peft computes it (`result = result + lora_B(lora_A(x)) * scaling`, adapters in
  order, scaling = scale * alpha / rank), so outputs match diffusers applying the same LoRA.
Training uses peft itself (`ttt_engine/adapters/train.py`); its state is exported in diffusers naming.

Module names: adapters name modules as diffusers does (`transformer_blocks.{i}.attn1.to_q`); the mapping to
ours (`blocks.{i}.attn.to_q`) is the one `ttt_engine.models.loading` loads diffusers checkpoints with.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.loading import diffusers_key_map
from ..models.video_dit import VideoDiT
from .config import AdapterError
from .format import PREFIX, Adapter, module_sort_key

log = logging.getLogger(__name__)

_ACTIVE_ATTR = "_ttt_adapters_active"


def linear_module_map(transformer: VideoDiT) -> dict[str, str]:
    """{diffusers module name: our module name} for every nn.Linear of the model that CogVideoX also has."""
    modules = dict(transformer.named_modules())
    out = {}
    for theirs, ours in diffusers_key_map(transformer).items():
        if not ours.endswith(".weight"):
            continue
        ours_module = ours[: -len(".weight")]
        if isinstance(modules.get(ours_module), nn.Linear):
            out[theirs[: -len(".weight")]] = ours_module
    return out


@dataclass(frozen=True)
class BoundAdapter:
    """An adapter checked against one model: {our module name: (A, B)} and what it skipped.

    skipped: diffusers module names the adapter has and this model lacks (e.g. blocks beyond ours).
    """

    adapter: Adapter
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    skipped: tuple[str, ...]


def check_adapter(adapter: Adapter, transformer: VideoDiT) -> BoundAdapter:
    """Check an adapter against the model; return it bound to our module names.

    Modules the model does not have are skipped and listed (a CogVideoX LoRA loads as an adapter for the
    layers we share); an adapter that shares no module with the model, and any shape mismatch, raise
    AdapterError; the message names the first bad key (in block order) and both shapes.
    """
    if not isinstance(adapter, Adapter):
        raise AdapterError(f"expected an Adapter, got {type(adapter).__name__}")
    if not isinstance(transformer, VideoDiT):
        raise AdapterError(f"expected our VideoDiT transformer, got {type(transformer).__name__}")
    names = linear_module_map(transformer)
    layers = dict(transformer.named_modules())
    bound: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    skipped = []
    for module, (a, b) in sorted(adapter.modules().items(), key=lambda kv: module_sort_key(kv[0])):
        ours = names.get(module)
        if ours is None:
            skipped.append(module)
            continue
        layer: nn.Linear = layers[ours]
        rank = a.shape[0]
        for key, want, got in (
            (f"{PREFIX}{module}.lora_A.weight", (rank, layer.in_features), tuple(a.shape)),
            (f"{PREFIX}{module}.lora_B.weight", (layer.out_features, rank), tuple(b.shape)),
        ):
            if want != got:
                raise AdapterError(
                    f"adapter {adapter.name!r} does not fit this model: {key} has shape {got}, the model's "
                    f"{ours} ({layer.in_features} -> {layer.out_features}) needs {want}"
                )
        bound[ours] = (a, b)
    if not bound:
        raise AdapterError(
            f"adapter {adapter.name!r} shares no layer with this model (its modules: {skipped[:4]}...; "
            f"the model's: {sorted(names, key=module_sort_key)[:4]}...)"
        )
    if skipped:
        log.warning(
            "adapter %r: %d modules this model lacks are skipped (first: %s)",
            adapter.name,
            len(skipped),
            skipped[0],
        )
    return BoundAdapter(adapter, bound, tuple(skipped))


def _check_scale(scale: object, name: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise AdapterError(f"adapter {name!r}: scale must be a finite number, got {scale!r}")
    return float(scale)


def _lora_hook(terms: list[tuple[torch.Tensor, torch.Tensor, float]]):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        for a, b, scaling in terms:  # as peft's lora.Linear.forward, adapter by adapter
            a, b = a.to(x.device, x.dtype), b.to(x.device, x.dtype)  # no-ops unless the model was moved
            output = output + F.linear(F.linear(x, a), b) * scaling
        return output

    return hook


@contextlib.contextmanager
def applied(transformer: VideoDiT, adapters: Sequence[tuple[Adapter, float]]) -> Iterator[list[BoundAdapter]]:
    """Apply `adapters` (each with its scale) inside the block; the base model is untouched and unchanged.

    Yields the adapters bound to the model (their `skipped` lists). Adapters at scale 0 are left out
    entirely (bit-exact base output). Nesting on one model is refused: one job, one set of adapters.
    """
    if getattr(transformer, _ACTIVE_ATTR, False):
        raise RuntimeError("adapters are already applied to this transformer (applied() does not nest)")
    terms: dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
    bound_all = []
    layers = dict(transformer.named_modules())
    for item in adapters:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise AdapterError(f"adapters: expected (Adapter, scale) pairs, got {item!r}")
        adapter, scale = item
        bound = check_adapter(adapter, transformer)
        scale = _check_scale(scale, adapter.name)
        bound_all.append(bound)
        if scale == 0.0:
            continue
        scaling = scale * adapter.config.alpha / adapter.config.rank  # peft: set_scale's order of operations
        for ours, (a, b) in bound.modules.items():
            weight = layers[ours].weight
            terms.setdefault(ours, []).append(
                (a.to(weight.device, weight.dtype), b.to(weight.device, weight.dtype), scaling)
            )
    handles = [layers[name].register_forward_hook(_lora_hook(t)) for name, t in terms.items()]
    setattr(transformer, _ACTIVE_ATTR, True)
    try:
        yield bound_all
    finally:
        for handle in handles:
            handle.remove()
        setattr(transformer, _ACTIVE_ATTR, False)
