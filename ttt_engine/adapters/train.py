"""Train a LoRA adapter with peft on a folder of stills and clips (`ttt-studio adapter train`).

    items (data.py) -> latents (the model's VAE, once)      captions -> text embeddings (once, frozen)
    [decoder_targets] the decoder phase: a LoRA on those VAE decoder layers (B = 0), AdamW for decoder_steps:
                    "reconstruct": decode(item latents) reproduces the items (L1 in the VAE's [-1, 1]
                    input space, each pixel weighted by the base decoder's own error there when
                    decoder_focus > 0); "colour": decode(the base's own sample of item i's caption) takes item
                    i's colours (colour_match_loss); it stays applied (frozen) for the rest, so previews
                    show the look
    [subject] prior samples: the base model's own latents for the captions without the trigger
    LoRA (peft inject_adapter_in_model, B = 0: the model starts as the base) on config.target_modules
    for each step:  z = a batch of item latents;  t, eps from one seeded generator
                    text -> the empty prompt's with p = text_dropout (what guidance samples as "unconditional")
                    loss = || DiT(x_t, text, t) - v ||^2  (the trainer's VelocityLoss, the model's schedule)
                           [+ prior_weight * the same loss on a batch of prior samples]
                    AdamW on the LoRA matrices only
    every checkpoint_every steps: ADAPTER_DIR/checkpoint/state.pt (LoRA, optimizer, sampler, RNG, priors)
    every preview_every steps: ADAPTER_DIR/previews/step_NNNNNN.png (a sample of the first caption)
    at the end: ADAPTER_DIR/pytorch_lora_weights.safetensors in diffusers' naming (format.py)

One rule: the base weights never train and are left as they were (the LoRA layers are taken out at the
end), so the pipeline can sample the base model again. N steps == N/2 steps + resume + N/2 steps. The
decoder phase checkpoints once, at its end (it is short): an interrupted decoder phase starts again.
An adapter with decoder_targets and no target_modules trains the decoder phase alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..storyboard import Segment, Storyboard
from ..train.checkpoint import ResumeError, capture_rng, restore_rng
from ..train.data import SeededSampler
from ..train.diffusion_loss import VelocityLoss, make_noise_scheduler
from .apply import check_decoder_targets, decoder_hook, decoder_lora_shapes, linear_module_map
from .config import AdapterConfig, AdapterError, AdapterTrainConfig
from .data import Item, collect_items, without_trigger
from .format import DECODER_PREFIX, PREFIX, Adapter, relative_module, save_adapter

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
STATE_FORMAT = "ttt-studio.adapter-train"
PREVIEW_DIR = "previews"
PREVIEW_SEED = 0
_ADAPTER = "default"  # peft's adapter name inside the model while training
# the decoder phase decodes this prefix of each item's latent frames (odd, so it decodes exactly to the first
# 1 + 4 (n - 1) frames of a full decode, pipeline._decode_prefix): the first frame's path and the temporally
# upsampled one, at a third of the cost of the shipped model's 7 latent frames
DECODER_LATENT_FRAMES = 3


@dataclass(frozen=True)
class TrainResult:
    """The saved adapter, the loss of every transformer step run in this call, the wall time of those
    steps, and the loss of every decoder-phase step run in this call."""

    adapter: Adapter
    losses: list[float]
    seconds: float
    decoder_losses: list[float] = dataclasses.field(default_factory=list)


def describe_base(pipe: Any) -> str:
    """The base_model fingerprint an adapter records: the pipeline's source and the transformer's shape."""
    c = pipe.transformer.config
    return (
        f"{pipe.source} (VideoDiT {c.num_layers} layers, dim {c.dim}, {c.num_heads} heads, text {c.text_dim}, "
        f"ttt {c.ttt_inner})"
    )


def target_names(transformer: nn.Module, config: AdapterConfig) -> dict[str, str]:
    """{our module name: diffusers module name} of every Linear the config targets; AdapterError for a
    target name the model does not have."""
    names = linear_module_map(transformer)
    chosen = {
        ours: theirs for theirs, ours in names.items() if relative_module(theirs) in config.target_modules
    }
    known = {relative_module(t) for t in names}
    unknown = [t for t in config.target_modules if t not in known]
    if unknown:
        raise AdapterError(
            f"target_modules {unknown} are not layers of this model (its block layers: {sorted(known)})"
        )
    return chosen


@contextlib.contextmanager
def peft_lora(
    transformer: nn.Module, config: AdapterConfig, train: AdapterTrainConfig, targets: list[str]
) -> Iterator[dict[str, nn.Module]]:
    """Inject peft LoRA layers on `targets` (our names); yield {our name: peft layer}; take them out on exit.

    The base parameters are frozen while inside and get their requires_grad back afterwards."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    grads = {n: p.requires_grad for n, p in transformer.named_parameters()}
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, target_modules=targets, lora_dropout=train.lora_dropout
    )
    with torch.random.fork_rng(devices=[]):  # peft draws A (kaiming) from the global RNG: seed it
        torch.manual_seed(train.seed)
        inject_adapter_in_model(lora, transformer, adapter_name=_ADAPTER)
    layers = {n: m for n, m in transformer.named_modules() if isinstance(m, LoraLayer) and n in targets}
    try:
        for p in transformer.parameters():
            p.requires_grad_(False)
        for layer in layers.values():
            for p in (*layer.lora_A[_ADAPTER].parameters(), *layer.lora_B[_ADAPTER].parameters()):
                p.requires_grad_(True)
        yield layers
    finally:
        for name, layer in layers.items():
            parent_name, _, child = name.rpartition(".")
            setattr(transformer.get_submodule(parent_name), child, layer.get_base_layer())
        if hasattr(transformer, "peft_config"):
            del transformer.peft_config
        for n, p in transformer.named_parameters():
            p.requires_grad_(grads[n])


def lora_state(layers: dict[str, nn.Module], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """The LoRA matrices in diffusers' naming (names: our module name -> diffusers')."""
    out = {}
    for ours, layer in layers.items():
        key = f"{PREFIX}{names[ours]}"
        out[f"{key}.lora_A.weight"] = layer.lora_A[_ADAPTER].weight.detach().float().cpu().clone()
        out[f"{key}.lora_B.weight"] = layer.lora_B[_ADAPTER].weight.detach().float().cpu().clone()
    return out


def _encode_texts(pipe: Any, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 1, T, d] embeddings and [N, 1, T] masks (one-segment prompts), frozen encoder."""
    with torch.no_grad():
        emb, mask = pipe.text_encoder.encode(captions)
    return emb.float().cpu()[:, None], mask.cpu()[:, None]


def drop_captions(
    emb: torch.Tensor,
    mask: torch.Tensor,
    empty: tuple[torch.Tensor, torch.Tensor],
    p: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of emb [B, 1, T, d] / mask [B, 1, T] replaced by the empty prompt's (empty: [1, 1, T, d],
    [1, 1, T]) with probability p, drawn from gen (one draw per row)."""
    drop = torch.rand(emb.shape[0], generator=gen) < p  # [B]
    return (
        torch.where(drop[:, None, None, None], empty[0], emb),
        torch.where(drop[:, None, None], empty[1], mask),
    )


@contextlib.contextmanager
def decoder_lora(
    vae: nn.Module, config: AdapterConfig, train: AdapterTrainConfig
) -> Iterator[dict[str, tuple[nn.Parameter, nn.Parameter]]]:
    """A trainable LoRA on config.decoder_targets of the VAE decoder, hooked as `applied` hooks it (the same
    decoder_hook, scaling alpha / rank); yields {module: (A, B)}; the hooks come off on exit.

    A is drawn as peft draws it (kaiming uniform, a = sqrt(5); from a generator seeded with train.seed), B
    is zero, so the decoder starts as the base's. The base parameters are frozen while inside."""
    layers = check_decoder_targets(vae, config.decoder_targets)
    gen = torch.Generator().manual_seed(train.seed)
    params: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
    for name, layer in layers.items():
        shape_a, shape_b = decoder_lora_shapes(layer, config.rank)
        fan_in = math.prod(shape_a[1:])
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)): sqrt(6 / ((1 + 5) fan_in))
        a = (torch.rand(shape_a, generator=gen) * 2 - 1) * bound
        p = layer.weight
        params[name] = (
            nn.Parameter(a.to(p.device, p.dtype)),
            nn.Parameter(torch.zeros(shape_b, device=p.device, dtype=p.dtype)),
        )
    scaling = config.alpha / config.rank
    grads = {n: p.requires_grad for n, p in vae.named_parameters()}
    handles = [
        layers[n].register_forward_hook(decoder_hook([(a, b, scaling)])) for n, (a, b) in params.items()
    ]
    try:
        for p in vae.parameters():
            p.requires_grad_(False)
        yield params
    finally:
        for handle in handles:
            handle.remove()
        for n, p in vae.named_parameters():
            p.requires_grad_(grads[n])


def decoder_state(params: dict[str, tuple[nn.Parameter, nn.Parameter]]) -> dict[str, torch.Tensor]:
    """The decoder LoRA in our naming (`vae.decoder.<module>.lora_A.weight` / `.lora_B.weight`)."""
    out = {}
    for name, (a, b) in params.items():
        out[f"{DECODER_PREFIX}{name}.lora_A.weight"] = a.detach().float().cpu().clone()
        out[f"{DECODER_PREFIX}{name}.lora_B.weight"] = b.detach().float().cpu().clone()
    return out


def _item_pixels(pipe: Any, items: list[Item]) -> torch.Tensor:
    """[N, 3, T, H, W] the items as the VAE reads them ([-1, 1], the model's colour space), CPU float32."""
    from ..conform import convert
    from ..pipeline.model_spec import SRGB_ENCODED
    from ..pipeline.plates import to_vae_input

    space = pipe.spec.colorspace
    return torch.cat([to_vae_input(convert(item.frames, SRGB_ENCODED, space)) for item in items])


def decode_for_training(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents [N, F, C, h, w] -> the VAE's output [N, 3, T, H, W] in [-1, 1] (unclamped), with
    gradients, as the pipeline decodes them."""
    p = next(pipe.vae.parameters())
    z = latents.permute(0, 2, 1, 3, 4).to(p.device, p.dtype) / pipe.scaling_factor + pipe.shift_factor
    return pipe.vae.decode(z).sample


def _decoded_prefix(latents: torch.Tensor) -> int:
    """How many leading latent frames the decoder phase decodes: DECODER_LATENT_FRAMES, or fewer, odd."""
    return min(DECODER_LATENT_FRAMES, latents.shape[1] - (latents.shape[1] + 1) % 2)


def _fit_decoder(
    pipe: Any,
    params: dict[str, tuple[nn.Parameter, nn.Parameter]],
    latents: torch.Tensor,
    train: AdapterTrainConfig,
    batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    desc: str,
    progress: bool,
) -> list[float]:
    """The decoder phase's loop, one per objective: AdamW on `params` for train.decoder_steps steps over
    batches of train.decoder_batch latents (seeded order), each decoded (its _decoded_prefix) with gradients
    and scored by batch_loss(decoded, batch indices). Returns the loss of every step."""
    from tqdm.auto import tqdm

    flat = [p for ab in params.values() for p in ab]
    for p in flat:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(flat, lr=train.decoder_learning_rate, weight_decay=0.0)
    sampler = SeededSampler(len(latents), train.seed + 2)
    latents = latents[:, : _decoded_prefix(latents)]
    losses = []
    for _ in tqdm(range(train.decoder_steps), desc=desc, disable=not progress):
        idx = sampler.next_indices(train.decoder_batch)
        loss = batch_loss(decode_for_training(pipe, latents[idx]), idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    for p in flat:
        p.requires_grad_(False)
    return losses


def focus_weights(
    pipe: Any, latents: torch.Tensor, pixels: torch.Tensor, train: AdapterTrainConfig
) -> torch.Tensor:
    """Per-pixel weights [N, 1, T, H, W] of the "reconstruct" loss, mean 1: 1 + decoder_focus * e / mean(e),
    normalised, where e is the base decoder's own L1 error at that pixel (channels averaged). A subject the
    base decoder cannot draw is a few percent of the frame; weighting by the base's error puts the phase's
    gradient there instead of on the background the base already draws."""
    prefix = _decoded_prefix(latents)
    with torch.no_grad():
        base = torch.cat(
            [
                decode_for_training(pipe, latents[i : i + train.decoder_batch, :prefix]).float().cpu()
                for i in range(0, len(latents), train.decoder_batch)
            ]
        )
    err = (base - pixels).abs().mean(dim=1, keepdim=True)
    weights = 1.0 + train.decoder_focus * err / err.mean().clamp_min(1e-8)
    return weights / weights.mean()


def train_decoder(
    pipe: Any,
    params: dict[str, tuple[nn.Parameter, nn.Parameter]],
    latents: torch.Tensor,
    pixels: torch.Tensor,
    train: AdapterTrainConfig,
    progress: bool = True,
) -> list[float]:
    """The decoder phase's "reconstruct" objective: L1(decode(z), pixels), z an item's first latent frames
    (_decoded_prefix) and pixels the frames they decode to (_fit_decoder's loop), each pixel weighted by
    focus_weights (train.decoder_focus). Returns every step's loss."""
    pixels = pixels[:, :, : 1 + pipe.temporal_factor * (_decoded_prefix(latents) - 1)]
    weights = focus_weights(pipe, latents, pixels, train) if train.decoder_focus else None

    def l1(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        err = (out.float() - pixels[idx].to(out.device)).abs()
        return err.mean() if weights is None else (err * weights[idx].to(out.device)).mean()

    return _fit_decoder(pipe, params, latents, train, l1, "decoder LoRA", progress)


COLOUR_DIRECTIONS = 32  # random directions of RGB per step of the colour objective's sliced Wasserstein
COLOUR_QUANTILES = 256  # quantiles compared along each direction


def colour_match_loss(out: torch.Tensor, target: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein-1 between the colours of out [B, 3, ...] and target [B, 3, ...], pair by pair.

    Each pair's pixels (any arrangement, any count) are projected on directions [P, 3]; per direction the
    distance of the two 1-D distributions is the mean absolute difference of their COLOUR_QUANTILES
    quantiles (sorted values picked at the quantiles' ranks, so gradients reach the picked pixels). Mean
    over directions and pairs: 0 exactly when the two pixel sets have the same colours in any arrangement.
    """
    q = (torch.arange(COLOUR_QUANTILES, dtype=torch.float64) + 0.5) / COLOUR_QUANTILES
    total = out.new_zeros(())
    for a, b in zip(out, target, strict=True):
        pa = a.reshape(3, -1).T.float() @ directions.T  # [N, P]
        pb = b.reshape(3, -1).T.float().to(pa.device) @ directions.T
        sa = pa.sort(dim=0).values[(q * pa.shape[0]).long()]
        sb = pb.sort(dim=0).values[(q * pb.shape[0]).long()]
        total = total + (sa - sb).abs().mean()
    return total / len(out)


def train_decoder_colour(
    pipe: Any,
    params: dict[str, tuple[nn.Parameter, nn.Parameter]],
    samples: torch.Tensor,
    pixels: torch.Tensor,
    train: AdapterTrainConfig,
    progress: bool = True,
) -> list[float]:
    """The decoder phase's "colour" objective: colour_match_loss(decode(sample i), item i's frames), fresh
    seeded directions every step (_fit_decoder's loop). samples [N, F, C, h, w]: the base's latents of the
    items' captions; pixels [N, 3, T, H, W]: the items, VAE space. Returns every step's loss."""
    gen = torch.Generator().manual_seed(train.seed + 3)

    def colours(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        directions = torch.randn(COLOUR_DIRECTIONS, 3, generator=gen)
        directions = (directions / directions.norm(dim=1, keepdim=True)).to(out.device)
        return colour_match_loss(out, pixels[idx], directions)

    return _fit_decoder(pipe, params, samples, train, colours, "decoder LoRA (colour)", progress)


def _encode_items(pipe: Any, items: list[Item]) -> torch.Tensor:
    """[N, F, C, h, w] scaled latents (the VAE's mode, as the pipeline encodes plates), CPU float32."""
    from ..conform import convert
    from ..pipeline.model_spec import SRGB_ENCODED

    space = pipe.spec.colorspace  # items are sRGB display values; the VAE reads its model's space
    with torch.no_grad():
        return torch.cat(
            [pipe.encode_frames(convert(item.frames, SRGB_ENCODED, space)).float().cpu() for item in items]
        )


def _prior_latents(
    pipe: Any, captions: list[str], count: int, steps: int | None
) -> tuple[torch.Tensor, list[str]]:
    """`count` base-model samples (latents) of the captions without the trigger, in turn; seeds 0..count-1;
    `steps` sampling steps each (None: the model's own)."""
    chosen = [captions[i % len(captions)] for i in range(count)]
    latents = []
    from tqdm.auto import tqdm

    for i, text in enumerate(tqdm(chosen, desc="prior samples", leave=False)):
        params = pipe.generation_params(seed=i, preview_every=0, steps=steps)
        latents.append(pipe.sample(Storyboard((Segment(text),)), params).float().cpu())
    return torch.cat(latents), chosen


def _write_preview(pipe: Any, caption: str, path: Path) -> Path:
    """First, middle and last frame of a sample of `caption` side by side, as a PNG."""
    from PIL import Image

    from ..toonworld.render import to_uint8

    params = pipe.generation_params(seed=PREVIEW_SEED, preview_every=0)
    with torch.no_grad():
        frames = pipe.decode(pipe.sample(Storyboard((Segment(caption),)), params))
    picks = [frames[0], frames[len(frames) // 2], frames[-1]]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(np.concatenate(picks, axis=1))).save(path)
    return path


def _identity(config: AdapterConfig, train: AdapterTrainConfig, items: list[Item]) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (the adapter, its training settings, the items)."""
    return {
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "train": json.dumps(train.to_dict(), sort_keys=True),
        "items": json.dumps([(i.source, i.caption) for i in items]),
    }


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.{os.getpid()}.tmp"
    torch.save({"format": STATE_FORMAT, **state}, tmp)
    os.replace(tmp, folder / STATE_FILE)


def _load_state(folder: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ResumeError(f"{path}: cannot read ({err}); delete it to start again") from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: not an adapter training state; delete it to start again")
    differs = [k for k, v in identity.items() if state.get(k) != v]
    if differs:
        raise ResumeError(
            f"{path}: written for a different {' and '.join(differs)}; train into a new folder or delete "
            f"{folder} to start again"
        )
    return state


def train_adapter(
    folder: str | Path,
    out_dir: str | Path,
    pipe: Any,
    config: AdapterConfig,
    train: AdapterTrainConfig,
    *,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult | None:
    """Train an adapter on `folder` for `pipe`'s transformer and save it in `out_dir` (see module docstring).

    Resumes from `out_dir`'s checkpoint when there is one (same config, settings and items; otherwise
    ResumeError). config.base_model is filled in from the pipeline when empty. stop_at: stop after that
    step with a checkpoint and no adapter (returns None), as an interrupted run would.
    """
    if config.kind not in ("style", "subject"):
        raise AdapterError(f"kind: training needs 'style' or 'subject', got {config.kind!r}")
    if not config.base_model:
        config = AdapterConfig(**{**config.to_dict(), "base_model": describe_base(pipe)})
    if config.decoder_targets and config.target_modules and train.decoder_objective == "colour":
        raise AdapterError(
            "decoder_objective 'colour' learns the look in the decoder alone, and a transformer LoRA "
            f"({len(config.target_modules)} target_modules) would learn it again from the items' latents, so "
            "shots would take it twice: train the decoder alone (no target_modules) or use the "
            "'reconstruct' objective"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AdapterError(f"{out_dir}: expected a folder for the adapter, got a file")
    names = target_names(pipe.transformer, config) if config.target_modules else {}
    items = collect_items(folder, config.kind, config.trigger, pipe.num_frames(1), pipe.default_size)
    log.info("%d training items from %s", len(items), folder)
    identity = _identity(config, train, items)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    state = _load_state(ckpt_dir, identity)

    latents = _encode_items(pipe, items)
    with contextlib.ExitStack() as stack:
        decoder_params = (
            stack.enter_context(decoder_lora(pipe.vae, config, train)) if config.decoder_targets else {}
        )
        decoder_losses: list[float] = []
        if decoder_params and state is not None:
            with torch.no_grad():
                for name, (a, b) in decoder_params.items():
                    a.copy_(state["decoder_lora"][f"{DECODER_PREFIX}{name}.lora_A.weight"])
                    b.copy_(state["decoder_lora"][f"{DECODER_PREFIX}{name}.lora_B.weight"])
        elif decoder_params:
            t_dec = time.perf_counter()
            pixels = _item_pixels(pipe, items)
            if train.decoder_objective == "colour":
                captions = [without_trigger(i.caption, config.trigger) for i in items]
                samples, _ = _prior_latents(
                    pipe, captions, train.decoder_samples or len(items), train.decoder_sample_steps
                )
                pixels = pixels[torch.arange(len(samples)) % len(items)]  # sample i is of item i % N
                decoder_losses = train_decoder_colour(pipe, decoder_params, samples, pixels, train, progress)
            else:
                decoder_losses = train_decoder(pipe, decoder_params, latents, pixels, train, progress)
            log.info(
                "decoder LoRA (%s): %d steps in %.1f s, loss %.4f -> %.4f",
                train.decoder_objective,
                train.decoder_steps,
                time.perf_counter() - t_dec,
                decoder_losses[0] if decoder_losses else float("nan"),
                decoder_losses[-1] if decoder_losses else float("nan"),
            )
        decoder_final = decoder_state(decoder_params)
        if names:
            dit = _train_dit(
                pipe, config, train, names, items, latents, state, out_dir, decoder_final, progress, stop_at
            )
            if dit is None:
                return None
            final, losses, seconds = dit
        else:
            final, losses, seconds = {}, [], 0.0
            if state is None:
                _save_state(ckpt_dir, {**identity, "step": 0, "decoder_lora": decoder_final})
    adapter = save_adapter({**final, **decoder_final}, out_dir, config, train)
    log.info("adapter written: %s (sha256 %s)", adapter.path, adapter.sha256)
    return TrainResult(adapter, losses, seconds, decoder_losses)


def _train_dit(
    pipe: Any,
    config: AdapterConfig,
    train: AdapterTrainConfig,
    names: dict[str, str],
    items: list[Item],
    latents: torch.Tensor,
    state: dict[str, Any] | None,
    out_dir: Path,
    decoder_final: dict[str, torch.Tensor],
    progress: bool,
    stop_at: int | None,
) -> tuple[dict[str, torch.Tensor], list[float], float] | None:
    """The transformer phase (module docstring): (its LoRA state, the losses of this call's steps, seconds);
    None when stopped at `stop_at`. Checkpoints carry the finished decoder LoRA."""
    from tqdm.auto import tqdm

    transformer = pipe.transformer
    identity = _identity(config, train, items)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    emb, mask = _encode_texts(pipe, [i.caption for i in items])
    empty = _encode_texts(pipe, [""])  # the prompt a dropped caption becomes
    priors = None
    if config.kind == "subject" and train.prior_samples and train.prior_weight:
        if state is not None:
            prior_latents, prior_captions = state["prior_latents"], json.loads(state["prior_captions"])
        else:
            captions = [without_trigger(i.caption, config.trigger) for i in items]
            prior_latents, prior_captions = _prior_latents(
                pipe, captions, train.prior_samples, train.prior_steps
            )
        priors = (prior_latents, *_encode_texts(pipe, prior_captions), prior_captions)

    velocity = VelocityLoss(make_noise_scheduler(pipe.scheduler_config))
    device = pipe.device
    gen = torch.Generator().manual_seed(train.seed)
    sampler = SeededSampler(len(items), train.seed)
    prior_sampler = SeededSampler(train.prior_samples or 1, train.seed + 1)
    start = 0
    losses: list[float] = []
    with peft_lora(transformer, config, train, list(names)) as layers:
        params = [p for layer in layers.values() for p in layer.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=0.0)
        if state is not None:
            start = int(state["step"])
            for ours, layer in layers.items():
                key = f"{PREFIX}{names[ours]}"
                with torch.no_grad():
                    layer.lora_A[_ADAPTER].weight.copy_(state["lora"][f"{key}.lora_A.weight"])
                    layer.lora_B[_ADAPTER].weight.copy_(state["lora"][f"{key}.lora_B.weight"])
            opt.load_state_dict(state["optimizer"])
            sampler.load_state_dict(state["sampler"])
            prior_sampler.load_state_dict(state["prior_sampler"])
            restore_rng(state["rng"], gen)
            log.info("resuming %s at step %d of %d", out_dir, start, train.steps)

        def checkpoint(step: int) -> None:
            extra = {}
            if priors is not None:
                extra = {"prior_latents": priors[0], "prior_captions": json.dumps(priors[3])}
            _save_state(
                ckpt_dir,
                {
                    **identity,
                    **extra,
                    "step": step,
                    "lora": lora_state(layers, names),
                    "optimizer": opt.state_dict(),
                    "sampler": sampler.state_dict(),
                    "prior_sampler": prior_sampler.state_dict(),
                    "rng": capture_rng(gen),
                    "decoder_lora": decoder_final,
                },
            )

        def batch_loss(z: torch.Tensor, e: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            t = velocity.sample_timesteps(z.shape[0], gen)
            noise = torch.randn(z.shape, generator=gen)
            if train.text_dropout:
                e, m = drop_captions(e, m, empty, train.text_dropout, gen)
            noisy, target = velocity.noisy_and_target(z, noise, t)
            pred = transformer(noisy.to(device), e.to(device), m.to(device), t.to(device))
            return VelocityLoss.loss(pred, target.to(device))

        if state is None and decoder_final:
            checkpoint(0)  # the decoder phase is done: a resume starts at the transformer phase
        transformer.train()
        t0 = time.perf_counter()
        bar = tqdm(total=train.steps, initial=start, desc=f"adapter ({config.kind})", disable=not progress)
        for step in range(start, train.steps):
            idx = sampler.next_indices(train.batch)
            loss = batch_loss(latents[idx], emb[idx], mask[idx])
            if priors is not None:
                pidx = prior_sampler.next_indices(train.batch)
                loss = loss + train.prior_weight * batch_loss(
                    priors[0][pidx], priors[1][pidx], priors[2][pidx]
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            done = step + 1
            if done == stop_at:
                checkpoint(done)
                bar.close()
                return None
            if train.checkpoint_every and done % train.checkpoint_every == 0 and done < train.steps:
                checkpoint(done)
            if train.preview_every and done % train.preview_every == 0:
                transformer.eval()
                _write_preview(pipe, items[0].caption, out_dir / PREVIEW_DIR / f"step_{done:06d}.png")
                transformer.train()
        bar.close()
        seconds = time.perf_counter() - t0
        transformer.eval()
        final = lora_state(layers, names)
        if start < train.steps:
            checkpoint(train.steps)
    return final, losses, seconds
