"""Exponential moving average (EMA) of the trained weights over a stage's optimizer steps.

Diffusion models sample better from an average of their recent weights than from the last step's
(DDPM, Ho et al. 2020, decay 0.9999; small models and short runs use ~0.999). The average replaces the
weights at the stage's end, so the next stage and the exported model folder get it; the training state
of every checkpoint carries it, so a resumed run averages exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .checkpoint import ResumeError

# the average's decay at step t is min(decay, (1 + t) / (WARMUP_OFFSET + t)): the first steps' weights,
# far from where training goes, fade quickly instead of weighing on the average for ~1 / (1 - decay) steps
WARMUP_OFFSET = 10


def trained_parameters(modules: Mapping[str, nn.Module]) -> dict[str, nn.Parameter]:
    """{'module.param': parameter} of every parameter that requires grad."""
    return {
        f"{m}.{n}": p
        for m, module in modules.items()
        for n, p in module.named_parameters()
        if p.requires_grad
    }


class WeightAverage:
    """EMA of `params` (float32 shadow copies on the parameters' devices)."""

    def __init__(self, params: Mapping[str, nn.Parameter], decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage: decay must be in (0, 1), got {decay!r}")
        self.params = dict(params)
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimizer step `step` (1-based)."""
        return min(self.decay, (1 + step) / (WARMUP_OFFSET + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = self.decay_at(step)
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach().float(), 1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Make the average the weights (at the stage's end)."""
        for n, p in self.params.items():
            p.copy_(self.shadow[n].to(p.dtype))

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "shadow": {n: t.cpu() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        shadow = state["shadow"]
        assert isinstance(shadow, Mapping)
        if set(shadow) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(shadow))[:3]
            extra = sorted(set(shadow) - set(self.shadow))[:3]
            raise ResumeError(
                f"the checkpoint's weight average covers other parameters (missing {missing}, extra {extra}): "
                "resume with the config that wrote it"
            )
        if state["decay"] != self.decay:
            raise ResumeError(
                f"the checkpoint's weight average has decay {state['decay']}, the config {self.decay}: "
                "resume with the config that wrote it"
            )
        for n, t in shadow.items():
            self.shadow[n].copy_(t)
