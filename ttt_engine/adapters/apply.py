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

A decoder LoRA (an adapter's `vae.decoder.` keys) is applied the same way to the VAE decoder's layers:
`applied(transformer, adapters, vae=pipe.vae)` hooks both, at the same scale, for the block; a conv layer's
term is `conv_B(conv_A(x))` with conv_A taking the layer's kernel, stride, padding and dilation (the hook
sees the layer's input after any causal padding) and conv_B a 1x1 conv. Pass the VAE wherever the block
decodes; an adapter with a decoder LoRA applied without one is refused, so a caller cannot drop half of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from .format import DECODER_PREFIX, PREFIX, Adapter, module_sort_key

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


_LORA_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def decoder_layers(vae: nn.Module) -> dict[str, nn.Module]:
    """{module name inside vae.decoder: layer} of every layer a decoder LoRA can target (linear, or a conv
    of one group)."""
    decoder = getattr(vae, "decoder", None)
    if not isinstance(decoder, nn.Module):
        raise AdapterError(f"expected a VAE with a .decoder module, got {type(vae).__name__}")
    return {
        n: m
        for n, m in decoder.named_modules()
        if isinstance(m, _LORA_LAYERS) and getattr(m, "groups", 1) == 1
    }


def decoder_lora_shapes(layer: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (A, B) shapes a rank-`rank` LoRA of `layer` has: linear [rank, in], [out, rank]; conv
    [rank, in, k...], [out, rank, 1...]."""
    if isinstance(layer, nn.Linear):
        return (rank, layer.in_features), (layer.out_features, rank)
    kernel = tuple(layer.weight.shape[2:])
    return (rank, layer.in_channels, *kernel), (layer.out_channels, rank, *(1,) * len(kernel))


def check_decoder_targets(vae: nn.Module, targets: Sequence[str]) -> dict[str, nn.Module]:
    """{target: layer} for decoder_targets; AdapterError naming the first name that is not such a layer."""
    layers = decoder_layers(vae)
    for target in targets:
        if target not in layers:
            raise AdapterError(
                f"decoder_targets: {target!r} is not a linear or conv layer of the VAE decoder (its layers: "
                f"{sorted(layers, key=module_sort_key)[:6]}...)"
            )
    return {t: layers[t] for t in targets}


@dataclass(frozen=True)
class BoundAdapter:
    """An adapter checked against one model: {our module name: (A, B)} and what it skipped.

    skipped: diffusers module names the adapter has and this model lacks (e.g. blocks beyond ours).
    decoder: {module name inside the VAE decoder: (A, B)}, checked against the VAE when one was given.
    """

    adapter: Adapter
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    skipped: tuple[str, ...]
    decoder: dict[str, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=dict)


def check_adapter(adapter: Adapter, transformer: VideoDiT, vae: nn.Module | None = None) -> BoundAdapter:
    """Check an adapter against the model; return it bound to our module names.

    Modules the model does not have are skipped and listed (a CogVideoX LoRA loads as an adapter for the
    layers we share); an adapter that shares no module with the model, and any shape mismatch, raise
    AdapterError; the message names the first bad key (in block order) and both shapes. A decoder LoRA is
    checked against `vae` when given (every module must exist there, no skipping: a look drawn by half a
    decoder LoRA is not the look); without a VAE its decoder part is left unchecked and unbound.
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
    decoder = _check_decoder(adapter, vae) if vae is not None else {}
    if not bound and (adapter.modules() or not adapter.decoder_modules()):
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
    return BoundAdapter(adapter, bound, tuple(skipped), decoder)


def _check_decoder(adapter: Adapter, vae: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    layers = decoder_layers(vae)
    bound = {}
    for module, (a, b) in sorted(adapter.decoder_modules().items(), key=lambda kv: module_sort_key(kv[0])):
        layer = layers.get(module)
        key = f"{DECODER_PREFIX}{module}.lora_A.weight"
        if layer is None:
            raise AdapterError(
                f"adapter {adapter.name!r} does not fit this model's VAE: {key} names no linear or conv layer "
                f"of its decoder (its layers: {sorted(layers, key=module_sort_key)[:4]}...)"
            )
        want_a, want_b = decoder_lora_shapes(layer, a.shape[0])
        for which, want, got in (("A", want_a, tuple(a.shape)), ("B", want_b, tuple(b.shape))):
            if want != got:
                raise AdapterError(
                    f"adapter {adapter.name!r} does not fit this model's VAE: "
                    f"{DECODER_PREFIX}{module}.lora_{which}.weight has shape {got}, the decoder's {module} "
                    f"({type(layer).__name__} {tuple(layer.weight.shape)}) needs {want}"
                )
        bound[module] = (a, b)
    return bound


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


def lora_delta(layer: nn.Module, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """B(A(x)) for a linear or conv `layer` (its input x): conv A with the layer's stride, padding and
    dilation, then the 1x1 conv B, as peft's conv LoRA."""
    if isinstance(layer, nn.Linear):
        return F.linear(F.linear(x, a), b)
    conv = (F.conv1d, F.conv2d, F.conv3d)[a.dim() - 3]
    return conv(layer._conv_forward(x, a, None), b)


def decoder_hook(terms: list[tuple[torch.Tensor, torch.Tensor, float]]):
    """A forward hook adding each (A, B, scaling) term's lora_delta to a decoder layer's output (trainable A
    and B keep their gradients: the cast is differentiable)."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        for a, b, scaling in terms:
            a, b = a.to(x.device, x.dtype), b.to(x.device, x.dtype)
            output = output + lora_delta(module, x, a, b) * scaling
        return output

    return hook


@contextlib.contextmanager
def applied(
    transformer: VideoDiT, adapters: Sequence[tuple[Adapter, float]], vae: nn.Module | None = None
) -> Iterator[list[BoundAdapter]]:
    """Apply `adapters` (each with its scale) inside the block; the base model is untouched and unchanged.

    Yields the adapters bound to the model (their `skipped` lists). Adapters at scale 0 are left out
    entirely (bit-exact base output). Nesting on one model is refused: one job, one set of adapters.
    vae: the pipeline's VAE, whose decoder takes the adapters' decoder LoRAs at the same scale; needed
    when an applied adapter has one (AdapterError otherwise).
    """
    models = [m for m in (transformer, vae) if m is not None]
    if any(getattr(m, _ACTIVE_ATTR, False) for m in models):
        raise RuntimeError("adapters are already applied to this model (applied() does not nest)")
    terms: dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
    decoder_terms: dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
    bound_all = []
    layers = dict(transformer.named_modules())
    dec_layers = decoder_layers(vae) if vae is not None else {}
    for item in adapters:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise AdapterError(f"adapters: expected (Adapter, scale) pairs, got {item!r}")
        adapter, scale = item
        bound = check_adapter(adapter, transformer, vae)
        scale = _check_scale(scale, adapter.name)
        bound_all.append(bound)
        if scale == 0.0:
            continue
        if vae is None and adapter.decoder_modules():
            raise AdapterError(
                f"adapter {adapter.name!r} holds a VAE decoder LoRA: apply it with the VAE "
                "(applied(transformer, adapters, vae=pipe.vae)) around the decode"
            )
        scaling = scale * adapter.config.alpha / adapter.config.rank  # peft: set_scale's order of operations
        for group, named, chosen in (
            (terms, layers, bound.modules),
            (decoder_terms, dec_layers, bound.decoder),
        ):
            for name, (a, b) in chosen.items():
                weight = named[name].weight
                group.setdefault(name, []).append(
                    (a.to(weight.device, weight.dtype), b.to(weight.device, weight.dtype), scaling)
                )
    handles = [layers[name].register_forward_hook(_lora_hook(t)) for name, t in terms.items()]
    handles += [dec_layers[name].register_forward_hook(decoder_hook(t)) for name, t in decoder_terms.items()]
    for m in models:
        setattr(m, _ACTIVE_ATTR, True)
    try:
        yield bound_all
    finally:
        for handle in handles:
            handle.remove()
        for m in models:
            setattr(m, _ACTIVE_ATTR, False)
