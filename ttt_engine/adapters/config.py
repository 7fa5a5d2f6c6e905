"""The adapter's typed configuration: what a LoRA is (AdapterConfig) and how one is trained (AdapterTrainConfig).

Both are frozen dataclasses; `from_dict` checks every key and value and raises AdapterError naming the bad
one. The training defaults are the recorded style run's (docs/benchmarks.md, "Adapters (issue 24)"): about
6.5 CPU-minutes on the shipped 3.1 M-parameter model; a real CogVideoX on a GPU wants a larger rank (the
diffusers CogVideoX LoRA script uses 64-128, alpha = rank).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

KINDS = ("style", "subject", "")
DECODER_OBJECTIVES = ("reconstruct", "colour")  # AdapterTrainConfig.decoder_objective
# diffusers-relative module names (inside transformer_blocks.{i}) the diffusers CogVideoX LoRA script targets
DEFAULT_TARGETS: tuple[str, ...] = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")
# module names inside the VAE decoder (AutoencoderKLCogVideoX.decoder) a decoder LoRA targets by default.
# A style's: the output convolution alone, with the "colour" objective: the look as a mapping of the colours
# the decoder draws, which keeps every shape (docs/benchmarks.md, "Adapters (issue 24)").
DECODER_STYLE_TARGETS: tuple[str, ...] = ("conv_out.conv",)
# A subject's: the last up block's convolutions and the output convolution, with the "reconstruct" objective:
# the shipped VAE's decoder cannot draw a colour its training never held (the zorp's violet comes back grey
# blue), so it learns to draw the subject's latents back to the subject
DECODER_SUBJECT_TARGETS: tuple[str, ...] = (
    "up_blocks.2.resnets.0.conv1.conv",
    "up_blocks.2.resnets.0.conv2.conv",
    "up_blocks.2.resnets.1.conv1.conv",
    "up_blocks.2.resnets.1.conv2.conv",
    "conv_out.conv",
)

# A subject's decoder phase weighs the pixels the base decoder draws wrong (the subject, a few percent of each
# frame) this much more (AdapterTrainConfig.decoder_focus): with it the decoder LoRA draws the zorp in 12 of 12 held-out renders,
# without it in 8 (docs/benchmarks.md, "Adapters (issue 24)")
SUBJECT_DECODER_FOCUS = 4.0


@dataclass(frozen=True)
class KindDefaults:
    """What `adapter train --kind K` trains unless told otherwise (the recorded runs' recipe per kind)."""

    target_modules: tuple[str, ...]
    decoder_targets: tuple[str, ...]
    decoder_objective: str
    decoder_focus: float = 0.0


KIND_DEFAULTS: dict[str, KindDefaults] = {
    # a look: the decoder's colours alone (a transformer LoRA trained on the stills' latents cost adherence)
    "style": KindDefaults((), DECODER_STYLE_TARGETS, "colour"),
    # new content: attention and MLP of the transformer, and a decoder that can draw it
    "subject": KindDefaults(
        (*DEFAULT_TARGETS, "ff.net.0.proj", "ff.net.2"),
        DECODER_SUBJECT_TARGETS,
        "reconstruct",
        decoder_focus=SUBJECT_DECODER_FOCUS,
    ),
}


class AdapterError(ValueError):
    """A bad adapter: unreadable file, missing or invalid config, keys or shapes that do not fit the model."""


def _check_fields(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AdapterError(f"{where}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AdapterError(f"{where}: unknown keys {unknown} (known: {sorted(names)})")
    return data


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdapterError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AdapterError(f"{name}: expected an integer >= 0, got {value!r}")
    return value


def _finite(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdapterError(f"{name}: expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise AdapterError(f"{name}: expected a number > 0, got {value!r}")
    if value < 0:
        raise AdapterError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class AdapterConfig:
    """What a LoRA adapter is.

    rank, alpha: the LoRA's rank r and alpha; a module's update is (alpha / r) * B @ A (peft's scaling).
    target_modules: diffusers-relative names inside each transformer block ("attn1.to_q", "ff.net.2", ...);
    may be empty when decoder_targets are set (an adapter of the VAE decoder alone).
    decoder_targets: module names inside the VAE decoder ("conv_out.conv", ...): convolutions or linear
    layers given a LoRA of the same rank and alpha, applied while decoding (a conv LoRA is a conv A of the
    layer's kernel, stride and padding [rank, in, k...], then a 1x1 conv B [out, rank, 1...], as peft's).
    kind: "style" (a look), "subject" (a character or object, called up by `trigger`), or "" (unknown: a
    LoRA trained elsewhere). trigger: the word a storyboard uses to call the subject or style up.
    base_model: a description of the model it was trained on (model folder name and transformer shape).
    """

    rank: int = 8
    alpha: float = 8.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    decoder_targets: tuple[str, ...] = ()
    kind: str = ""
    trigger: str = ""
    base_model: str = ""

    def __post_init__(self) -> None:
        _positive_int(self.rank, "rank")
        _finite(self.alpha, "alpha", positive=True)
        for name in ("target_modules", "decoder_targets"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
                value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(t, str) and t for t in value):
                raise AdapterError(f"{name}: expected a list of module names, got {value!r}")
            duplicated = sorted({t for t in value if value.count(t) > 1})
            if duplicated:
                raise AdapterError(f"{name}: {duplicated[0]!r} is listed twice")
        if not self.target_modules and not self.decoder_targets:
            raise AdapterError(
                "target_modules: expected a non-empty list of module names (or decoder_targets), got []"
            )
        if self.kind not in KINDS:
            raise AdapterError(f"kind: expected one of {list(KINDS)}, got {self.kind!r}")
        for name in ("trigger", "base_model"):
            if not isinstance(getattr(self, name), str):
                raise AdapterError(f"{name}: expected a string, got {getattr(self, name)!r}")
        if self.trigger and (self.trigger.strip() != self.trigger or " " in self.trigger):
            raise AdapterError(f"trigger: expected one word without spaces, got {self.trigger!r}")
        if self.kind == "subject" and not self.trigger:
            raise AdapterError("trigger: a subject adapter needs a trigger word, got ''")

    @property
    def scaling(self) -> float:
        """alpha / rank: the factor peft and diffusers apply to B @ A at scale 1."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        if self.decoder_targets:  # absent when empty: a transformer-only adapter's file (and hash) as before
            d["decoder_targets"] = list(self.decoder_targets)
        else:
            del d["decoder_targets"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "adapter config") -> AdapterConfig:
        data = dict(_check_fields(cls, data, where))
        try:
            return cls(**data)
        except AdapterError as err:
            raise AdapterError(f"{where}: {err}") from err
        except TypeError as err:
            raise AdapterError(f"{where}: {err}") from err


@dataclass(frozen=True)
class AdapterTrainConfig:
    """How an adapter is trained (`ttt-studio adapter train`).

    learning_rate, steps, batch: AdamW on the LoRA parameters only (the base stays frozen); items are
    resized (centre crop) to the model's own size. preview_every: a preview PNG every N steps (0: none);
    checkpoint_every: a resumable checkpoint every N steps (0: only at the end). prior_samples /
    prior_weight: subject adapters only: base-model samples captioned without the trigger (DreamBooth prior
    preservation) and the weight of their loss; prior_steps: the sampling steps of each prior sample (None:
    the model's own; each is a full guided sample, the costliest part of a short subject run on a CPU, so
    fewer steps make priors cheap). lora_dropout: peft's dropout on the LoRA input.
    text_dropout: the probability that an item's caption is replaced by the empty prompt, as the base
    trainer does: guided sampling runs the model on the empty prompt too, and without dropout the adapter
    never learns what to do there, so guidance amplifies the gap between its two branches. seed: data
    order, noise, timesteps and text dropout.
    decoder_steps, decoder_learning_rate, decoder_batch: the decoder phase, run first when the adapter has
    decoder_targets (AdamW on the decoder LoRA); without decoder targets these are unused.
    decoder_objective: what the decoder phase teaches. "reconstruct": the VAE decodes the items' own
    encoder latents back to the items (L1 in the VAE's input space). "colour": the VAE decodes the base
    model's own samples of the items' captions (trigger taken out) to the colours of their items (sliced
    Wasserstein-1 between the two pixel sets, `colour_match_loss`): the look learnt as a mapping of the
    shots the base generates, which keep their content, where "reconstruct" learns to draw the encoder's
    latents of the look, which the base never generates (docs/benchmarks.md, "Adapters (issue 24)").
    decoder_focus: "reconstruct" only: how much more a pixel weighs where the base decoder's own
    reconstruction errs (`train.focus_weights`; 0: plain L1). A subject's new colours are a few percent
    of each frame, and plain L1 spends the phase on the background the base already draws.
    decoder_samples: base samples for "colour" (0: one per item, seeds 0..; each a full guided sample, so
    on a CPU the costliest part of the phase), decoder_sample_steps their sampling steps (None: the model's;
    10, the recorded run's: colours settle long before details do).
    """

    learning_rate: float = 4e-3
    steps: int = 150
    batch: int = 2
    preview_every: int = 50
    checkpoint_every: int = 50
    prior_samples: int = 16
    prior_weight: float = 1.0
    prior_steps: int | None = None
    lora_dropout: float = 0.0
    text_dropout: float = 0.0
    seed: int = 0
    decoder_steps: int = 150
    decoder_learning_rate: float = 1e-2
    decoder_batch: int = 2
    decoder_objective: str = "reconstruct"
    decoder_focus: float = 0.0
    decoder_samples: int = 0
    decoder_sample_steps: int | None = 10

    def __post_init__(self) -> None:
        _finite(self.learning_rate, "learning_rate", positive=True)
        _finite(self.decoder_learning_rate, "decoder_learning_rate", positive=True)
        for name in ("steps", "batch", "decoder_batch"):
            _positive_int(getattr(self, name), name)
        for name in (
            "preview_every",
            "checkpoint_every",
            "prior_samples",
            "seed",
            "decoder_steps",
            "decoder_samples",
        ):
            _nonneg_int(getattr(self, name), name)
        if self.decoder_objective not in DECODER_OBJECTIVES:
            raise AdapterError(
                f"decoder_objective: expected one of {list(DECODER_OBJECTIVES)}, got {self.decoder_objective!r}"
            )
        if _finite(self.decoder_focus, "decoder_focus") and self.decoder_objective != "reconstruct":
            raise AdapterError(
                f"decoder_focus weighs the 'reconstruct' objective's pixels; decoder_objective "
                f"{self.decoder_objective!r} takes none (set decoder_focus to 0)"
            )
        _finite(self.prior_weight, "prior_weight")
        for name in ("prior_steps", "decoder_sample_steps"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        for name in ("lora_dropout", "text_dropout"):
            if not 0.0 <= _finite(getattr(self, name), name) < 1.0:
                raise AdapterError(f"{name}: expected a number in [0, 1), got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "train config") -> AdapterTrainConfig:
        data = dict(_check_fields(cls, data, where))
        try:
            return cls(**data)
        except (AdapterError, TypeError) as err:
            raise AdapterError(f"{where}: {err}") from err
