"""Which parameters train in a stage, at which learning rate, with or without weight decay.

Names are the VideoDiT's (ttt_engine/models): TTT layers and their four gates live under
``blocks.{i}.ttt.`` (``.ttt.layer.{wq,wk,wv,wo,w1,b1,w2,b2,lr_weight,lr_bias,ttt_norm_*,post_norm}``,
``.ttt.gate_{fwd,bwd}_{text,video}``); the segment attention's projections are
``blocks.{i}.attn.to_{q,k,v,out}``. Paper recipe (ttt-mlp.md section 3):

- trainable 'all': everything (3-s stage); 'ttt_attn': TTT + gates + attention QKVO (9-63 s stages).
- lr: TTT parameters and gates ('ttt' groups) at lr_ttt, everything else ('other' groups) at lr.
- AdamW weight decay on matrices only: no decay on biases, norm weights (LayerNorm/GroupNorm modules and
  the TTT inner LN), the inner-state biases b1/b2, the gates, and any other 0-/1-D parameter (lr_bias).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn

from ..models.loading import is_ttt_key

ATTENTION_QKVO = ("attn.to_q.", "attn.to_k.", "attn.to_v.", "attn.to_out.")
_NORM_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.RMSNorm)
_NO_DECAY_LEAVES = ("b1", "b2")


def is_ttt_param(name: str) -> bool:
    """A TTT layer parameter or gate of the VideoDiT (trained at lr_ttt)."""
    return is_ttt_key(name)


def is_attention_qkvo(name: str) -> bool:
    """The segment attention's Q, K, V and output projections (weights and biases), not its QK-norms."""
    return any(f".{part}" in f".{name}" for part in ATTENTION_QKVO)


def is_trainable(name: str, mode: str) -> bool:
    """Whether the VideoDiT parameter `name` trains in a stage with `trainable=mode`."""
    if mode == "all":
        return True
    if mode == "ttt_attn":
        return is_ttt_param(name) or is_attention_qkvo(name)
    raise ValueError(f"trainable: expected 'all' or 'ttt_attn', got {mode!r}")


def set_trainable(model: nn.Module, mode: str) -> list[str]:
    """Set requires_grad on every parameter of the VideoDiT for this stage; returns the trained names.

    Raises ValueError when the mode selects nothing (e.g. 'ttt_attn' on a model without TTT or attention).
    """
    trained = []
    for name, param in model.named_parameters():
        flag = is_trainable(name, mode)
        param.requires_grad_(flag)
        if flag:
            trained.append(name)
    if not trained:
        raise ValueError(f"trainable={mode!r} selects no parameter of this model")
    return trained


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameter names that get no weight decay (see the module docstring)."""
    names = set()
    for mod_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_MODULES)
        for leaf, param in module.named_parameters(recurse=False):
            name = f"{mod_name}.{leaf}" if mod_name else leaf
            if (
                is_norm
                or param.ndim <= 1
                or leaf.endswith("bias")
                or leaf in _NO_DECAY_LEAVES
                or "norm" in leaf  # TTT inner LN: ttt_norm_weight / ttt_norm_bias [H, D]
                or leaf.startswith("gate")
            ):
                names.add(name)
    return names


@dataclass(frozen=True)
class GroupSpec:
    """One optimizer group: kind 'ttt' | 'other' (which lr and schedule), decay or not."""

    kind: str
    decay: bool

    @property
    def label(self) -> str:
        return f"{self.kind}/{'decay' if self.decay else 'no_decay'}"


def build_param_groups(
    modules: Mapping[str, nn.Module],
    *,
    lr: float,
    lr_ttt: float,
    weight_decay: float,
) -> list[dict]:
    """AdamW param groups over the trainable parameters of several modules.

    modules: {prefix: module}, e.g. {"transformer": dit, "text_encoder": encoder}; only the
    "transformer" module's TTT parameters count as 'ttt'. Groups come in a fixed order (ttt/decay,
    ttt/no_decay, other/decay, other/no_decay; empty ones left out), parameters in name order, so a
    resumed run rebuilds the same groups. Each group carries 'name', 'kind' and 'param_names'.
    """
    buckets: dict[GroupSpec, list[tuple[str, nn.Parameter]]] = {}
    for prefix, module in modules.items():
        no_decay = no_decay_names(module)
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            kind = "ttt" if prefix == "transformer" and is_ttt_param(name) else "other"
            spec = GroupSpec(kind, name not in no_decay)
            buckets.setdefault(spec, []).append((f"{prefix}.{name}", param))
    groups = []
    for spec in (
        GroupSpec("ttt", True),
        GroupSpec("ttt", False),
        GroupSpec("other", True),
        GroupSpec("other", False),
    ):
        items = sorted(buckets.get(spec, []), key=lambda kv: kv[0])
        if not items:
            continue
        groups.append(
            {
                "params": [p for _, p in items],
                "param_names": [n for n, _ in items],
                "name": spec.label,
                "kind": spec.kind,
                "lr": lr_ttt if spec.kind == "ttt" else lr,
                "weight_decay": weight_decay if spec.decay else 0.0,
            }
        )
    if not groups:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    return groups


def group_names(groups: Iterable[dict]) -> dict[str, list[str]]:
    """{group label: parameter names} (for logs and tests)."""
    return {g["name"]: list(g["param_names"]) for g in groups}
