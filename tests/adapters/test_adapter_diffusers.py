"""Adapters against diffusers: a LoRA saved by CogVideoXPipeline.save_lora_weights loads as our adapter
and gives the transformer outputs diffusers gives with it; ours load in diffusers and give ours.

The base models are the tiny CogVideoX of tests/models/test_vdit_diffusers.py, read by our loader (TTT
off); its bit-for-bit base test allows a relative error of 1e-5, so these do too.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from tests.models.test_vdit_diffusers import (
    FRAMES,
    SAMPLE_H,
    SAMPLE_W,
    TEXT_LEN,
    reference_forward,
    tiny_cogvideox,
)
from ttt_engine.adapters import AdapterConfig, applied, load_adapter, make_adapter, save_adapter
from ttt_engine.models import load_video_dit

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TOLERANCE = 1e-5  # the base comparison's (tests/models/test_vdit_diffusers.py)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    ref = tiny_cogvideox(rotary=True)
    folder = tmp_path_factory.mktemp("cogvideox")
    ref.save_pretrained(folder / "transformer")
    return folder


def _inputs():
    gen = torch.Generator().manual_seed(5)
    latents = torch.randn(1, FRAMES, 4, SAMPLE_H, SAMPLE_W, generator=gen)
    return latents, torch.randn(1, TEXT_LEN, 24, generator=gen), torch.tensor([400])


def _ours(model, latents, text, timestep):
    with torch.no_grad():
        return model(latents, text[:, None], None, timestep)


@pytest.mark.parametrize("with_metadata", [True, False], ids=["alpha_in_metadata", "no_metadata"])
def test_diffusers_lora_loads_as_our_adapter(base, tmp_path, with_metadata: bool) -> None:
    ref = CogVideoXTransformer3DModel.from_pretrained(base / "transformer").eval()
    alpha = 2 if with_metadata else 4  # without metadata diffusers itself assumes alpha = rank
    ref.add_adapter(LoraConfig(r=4, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False))
    lora = get_peft_model_state_dict(ref)
    assert "transformer_blocks.0.attn1.to_q.lora_A.weight" in lora
    meta = ref.peft_config["default"].to_dict() if with_metadata else None
    CogVideoXPipeline.save_lora_weights(
        tmp_path, transformer_lora_layers=lora, transformer_lora_adapter_metadata=meta
    )
    adapter = load_adapter(tmp_path)
    assert adapter.config.rank == 4 and adapter.config.alpha == alpha
    ours = load_video_dit(base, overrides={"ttt_inner": "none"})
    latents, text, timestep = _inputs()
    want = reference_forward(ref, latents, text, timestep)  # the peft-injected diffusers model
    base_out = _ours(ours, latents, text, timestep)
    assert _rel(base_out, want) > 1e-3  # the LoRA really changes the output
    with applied(ours, [(adapter, 1.0)]):
        assert _rel(_ours(ours, latents, text, timestep), want) < TOLERANCE

    # diffusers' own loader and scaling: set_adapters weight 0.5
    fresh = CogVideoXTransformer3DModel.from_pretrained(base / "transformer").eval()
    fresh.load_lora_adapter(str(tmp_path), weight_name="pytorch_lora_weights.safetensors", adapter_name="x")
    fresh.set_adapters(["x"], weights=[0.5])
    with applied(ours, [(adapter, 0.5)]):
        got = _ours(ours, latents, text, timestep)
    assert _rel(got, reference_forward(fresh, latents, text, timestep)) < TOLERANCE


@pytest.mark.parametrize("decoder", [False, True], ids=["transformer", "with_decoder_lora"])
def test_our_adapter_loads_in_diffusers(base, tmp_path, decoder: bool) -> None:
    """Ours load in diffusers, by the model's loader and by the pipeline's; a style adapter's VAE decoder
    keys (`vae.decoder.`) are left alone there and the transformer part is the same."""
    ours = load_video_dit(base, overrides={"ttt_inner": "none"})
    gen = torch.Generator().manual_seed(3)
    state = {}
    for i in range(ours.config.num_layers):
        for t in TARGETS:
            layer = f"transformer.transformer_blocks.{i}.attn1.{t}"
            state[f"{layer}.lora_A.weight"] = 0.2 * torch.randn(3, 32, generator=gen)
            state[f"{layer}.lora_B.weight"] = 0.2 * torch.randn(32, 3, generator=gen)
    decoder_targets = ("conv_out.conv",) if decoder else ()
    if decoder:
        state["vae.decoder.conv_out.conv.lora_A.weight"] = torch.randn(3, 16, 3, 3, 3, generator=gen)
        state["vae.decoder.conv_out.conv.lora_B.weight"] = torch.randn(3, 3, 1, 1, 1, generator=gen)
    config = AdapterConfig(rank=3, alpha=1.5, kind="style", decoder_targets=decoder_targets)
    adapter = save_adapter(state, tmp_path / "ours", config)
    theirs = CogVideoXTransformer3DModel.from_pretrained(base / "transformer").eval()
    theirs.load_lora_adapter(str(tmp_path / "ours"), weight_name="pytorch_lora_weights.safetensors")
    assert theirs.peft_config["default_0"].lora_alpha == 1.5  # read from our file's diffusers metadata
    latents, text, timestep = _inputs()
    if decoder:  # its transformer part (the whole adapter applies only together with the VAE)
        part = {k: v for k, v in state.items() if k.startswith("transformer.")}
        adapter = make_adapter(part, AdapterConfig(rank=3, alpha=1.5, kind="style"), "ours")
    with applied(ours, [(adapter, 1.0)]):
        got = _ours(ours, latents, text, timestep)
    assert _rel(got, reference_forward(theirs, latents, text, timestep)) < TOLERANCE
    # the pipeline's loader (load_lora_weights' steps: read, check the names say "lora", load)
    lora, meta = CogVideoXPipeline.lora_state_dict(
        str(tmp_path / "ours"), weight_name="pytorch_lora_weights.safetensors", return_lora_metadata=True
    )
    assert all("lora" in key for key in lora) and any(k.startswith("vae.decoder.") for k in lora) == decoder
    piped = CogVideoXTransformer3DModel.from_pretrained(base / "transformer").eval()
    CogVideoXPipeline.load_lora_into_transformer(lora, transformer=piped, metadata=meta)
    assert _rel(got, reference_forward(piped, latents, text, timestep)) < TOLERANCE
