"""Tiny models, inputs and random adapters for the adapter tests."""

from __future__ import annotations

import torch

from ttt_engine.adapters import AdapterConfig, make_adapter
from ttt_engine.adapters.format import Adapter
from ttt_engine.models import VideoDiT, VideoDiTConfig

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")


def tiny_model(seed: int = 0) -> VideoDiT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VideoDiT(VideoDiTConfig.tiny()).eval()


def inputs(model: VideoDiT, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """(latents [1, F, C, 8, 8], text [1, 1, T, text_dim], mask, timestep) for one segment."""
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, c.latent_frames(1), c.in_channels, 8, 8, generator=gen)
    text = torch.randn(1, 1, c.max_text_len, c.text_dim, generator=gen)
    return latents, text, torch.ones(1, 1, c.max_text_len, dtype=torch.bool), torch.tensor([500])


def forward(model: VideoDiT, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(*x)


def random_lora_state(
    model: VideoDiT,
    rank: int = 4,
    seed: int = 0,
    targets: tuple[str, ...] = TARGETS,
    blocks: int | None = None,
) -> dict[str, torch.Tensor]:
    """Random A and B (B non-zero) for `targets` in every block, named as diffusers saves peft LoRAs."""
    gen = torch.Generator().manual_seed(seed)
    dim = model.config.dim
    state = {}
    for i in range(model.config.num_layers if blocks is None else blocks):
        for t in targets:
            state[f"transformer.transformer_blocks.{i}.{t}.lora_A.weight"] = 0.3 * torch.randn(
                rank, dim, generator=gen
            )
            state[f"transformer.transformer_blocks.{i}.{t}.lora_B.weight"] = 0.3 * torch.randn(
                dim, rank, generator=gen
            )
    return state


def random_decoder_state(
    vae: torch.nn.Module, targets: tuple[str, ...], rank: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random A and B (B non-zero) for the VAE decoder layers `targets`, in our `vae.decoder.` naming."""
    from ttt_engine.adapters.apply import check_decoder_targets, decoder_lora_shapes

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, layer in check_decoder_targets(vae, targets).items():
        shape_a, shape_b = decoder_lora_shapes(layer, rank)
        state[f"vae.decoder.{name}.lora_A.weight"] = 0.2 * torch.randn(shape_a, generator=gen)
        state[f"vae.decoder.{name}.lora_B.weight"] = 0.2 * torch.randn(shape_b, generator=gen)
    return state


def random_adapter(
    model: VideoDiT, name: str = "a", rank: int = 4, seed: int = 0, alpha: float = 2.0
) -> Adapter:
    config = AdapterConfig(rank=rank, alpha=alpha, kind="style", trigger="grade")
    return make_adapter(random_lora_state(model, rank, seed), config, name)
