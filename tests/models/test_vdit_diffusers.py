"""Our transformer against diffusers' CogVideoXTransformer3DModel on the same weights.

A tiny random CogVideoX is saved with save_pretrained and read back through OUR loader. With one segment
and TTT contributing nothing (gates 0, ttt 'none', or TTT switched off) the outputs must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

from ttt_engine.models import CheckpointError, VideoDiT, load_video_dit
from ttt_engine.models.loading import config_from_diffusers, diffusers_key_map

TEXT_LEN = 7
SAMPLE_H, SAMPLE_W = 6, 8  # latent training grid of the tiny model
FRAMES = 3  # sample_frames 9 -> (9 - 1) / 4 + 1 latent frames


def tiny_cogvideox(rotary: bool, seed: int = 0) -> CogVideoXTransformer3DModel:
    torch.manual_seed(seed)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=16,
        text_embed_dim=24,
        num_layers=2,
        sample_width=SAMPLE_W,
        sample_height=SAMPLE_H,
        sample_frames=9,
        patch_size=2,
        max_text_seq_length=TEXT_LEN,
        use_rotary_positional_embeddings=rotary,
    ).eval()
    with torch.no_grad():  # move norms and biases off their 1/0 initial values so every weight matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[bool, tuple[CogVideoXTransformer3DModel, Path]]:
    out = {}
    for rotary in (True, False):
        ref = tiny_cogvideox(rotary)
        folder = tmp_path_factory.mktemp(f"cogvideox_rotary_{rotary}")
        ref.save_pretrained(folder / "transformer")  # the layout of a diffusers pipeline folder
        out[rotary] = (ref, folder)
    return out


def reference_forward(ref, latents, text, timestep) -> torch.Tensor:
    """diffusers' transformer with RoPE prepared as CogVideoXPipeline does."""
    rotary = None
    if ref.config.use_rotary_positional_embeddings:
        grid = (latents.shape[3] // 2, latents.shape[4] // 2)
        crops = get_resize_crop_region_for_grid(grid, SAMPLE_W // 2, SAMPLE_H // 2)
        rotary = get_3d_rotary_pos_embed(16, crops, grid_size=grid, temporal_size=latents.shape[1])
    with torch.no_grad():
        return ref(latents, text, timestep, image_rotary_emb=rotary, return_dict=False)[0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("rotary", [True, False], ids=["rope", "sincos"])
@pytest.mark.parametrize("size", [(SAMPLE_H, SAMPLE_W), (8, 8)], ids=["train_size", "other_size"])
@pytest.mark.parametrize("mode", ["gates_zero", "ttt_none", "ttt_off"])
def test_matches_cogvideox_with_ttt_silent(saved, rotary: bool, size: tuple[int, int], mode: str) -> None:
    ref, folder = saved[rotary]
    overrides = {"ttt_gate_init": 0.0} if mode == "gates_zero" else {}
    if mode == "ttt_none":
        overrides["ttt_inner"] = "none"
    ours = load_video_dit(folder, overrides=overrides)
    if mode == "ttt_off":
        ours.ttt_enabled = False
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, FRAMES, 4, *size, generator=gen)
    text = torch.randn(2, TEXT_LEN, 24, generator=gen)
    for timestep in (torch.tensor([999, 3]), torch.tensor([500.5, 10.25])):
        want = reference_forward(ref, latents, text, timestep)
        with torch.no_grad():
            got = ours(latents, text[:, None], torch.ones(2, 1, TEXT_LEN, dtype=torch.bool), timestep)
        assert got.shape == want.shape
        assert _rel(got, want) < 1e-5


def test_ttt_on_changes_the_cogvideox_output(saved) -> None:
    ref, folder = saved[True]
    ours = load_video_dit(folder)  # paper init: gates 0.1
    gen = torch.Generator().manual_seed(2)
    latents, text = torch.randn(1, FRAMES, 4, SAMPLE_H, SAMPLE_W, generator=gen), torch.randn(1, TEXT_LEN, 24)
    want = reference_forward(ref, latents, text, torch.tensor([400]))
    with torch.no_grad():
        got = ours(latents, text[:, None], None, torch.tensor([400]))
    assert _rel(got, want) > 1e-4


def test_sharded_checkpoint_and_transformer_folder(saved, tmp_path) -> None:
    ref, _ = saved[True]
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    ours = load_video_dit(tmp_path, overrides={"ttt_inner": "none"})  # the transformer folder itself
    latents, text = torch.randn(1, FRAMES, 4, SAMPLE_H, SAMPLE_W), torch.randn(1, TEXT_LEN, 24)
    want = reference_forward(ref, latents, text, torch.tensor([10]))
    with torch.no_grad():
        got = ours(latents, text[:, None], None, torch.tensor([10]))
    assert _rel(got, want) < 1e-5


def test_ttt_parameters_get_the_paper_initialisation(saved) -> None:
    _, folder = saved[True]
    rng = torch.random.get_rng_state()
    a = load_video_dit(folder, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's random stream is untouched
    b = load_video_dit(folder, seed=3)
    for (name, pa), (_, pb) in zip(a.ttt_named_parameters(), b.ttt_named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=f"{name} not deterministic for a seed")
    ttt = a.blocks[0].ttt
    for gate in (ttt.gate_fwd_text, ttt.gate_fwd_video, ttt.gate_bwd_text, ttt.gate_bwd_video):
        assert torch.all(gate == 0.1)
    layer = ttt.layer
    assert torch.all(layer.b1 == 0) and torch.all(layer.b2 == 0) and torch.all(layer.lr_bias == 0)
    assert torch.all(layer.ttt_norm_weight == 1) and torch.all(layer.ttt_norm_bias == 0)
    assert abs(layer.wq.weight.std().item() - 0.02) < 0.004
    assert abs(layer.w1.std().item() - 0.02) < 0.004


def test_load_in_bfloat16(saved) -> None:
    _, folder = saved[True]
    model = load_video_dit(folder, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(torch.randn(1, FRAMES, 4, SAMPLE_H, SAMPLE_W), torch.randn(1, 1, TEXT_LEN, 24), None, 5)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert {p.dtype for p in load_video_dit(folder, dtype=torch.float16).parameters()} == {torch.float16}


def test_missing_and_unexpected_diffusers_keys_are_listed(saved, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    _, folder = saved[True]
    dst = tmp_path / "transformer"
    dst.mkdir()
    (dst / "config.json").write_text((folder / "transformer" / "config.json").read_text())
    state = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    del state["transformer_blocks.1.attn1.to_k.weight"]
    state["transformer_blocks.1.extra.weight"] = torch.zeros(2)
    save_file(state, dst / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_video_dit(tmp_path)
    assert err.value.missing == ["transformer_blocks.1.attn1.to_k.weight"]
    assert err.value.unexpected == ["transformer_blocks.1.extra.weight"]
    assert "transformer_blocks.1.attn1.to_k.weight" in str(err.value)


def test_unsupported_cogvideox_variants_are_refused() -> None:
    with pytest.raises(CheckpointError, match="patch_size_t=2"):
        config_from_diffusers({"_class_name": "CogVideoXTransformer3DModel", "patch_size_t": 2})
    with pytest.raises(CheckpointError, match="learned positional"):
        config_from_diffusers(
            {"use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": True}
        )
    five_b = config_from_diffusers(
        {"num_attention_heads": 48, "num_layers": 42, "use_rotary_positional_embeddings": True}
    )
    assert (five_b.dim, five_b.first_segment_frames, five_b.segment_frames, five_b.text_dim) == (
        3072,
        13,
        12,
        4096,
    )


def test_5b_names_and_shapes_map_one_to_one() -> None:
    """CogVideoX-5B's transformer config, both models built on the meta device (no memory, no weights)."""
    cfg = {
        "num_attention_heads": 48,
        "attention_head_dim": 64,
        "num_layers": 42,
        "text_embed_dim": 4096,
        "time_embed_dim": 512,
        "use_rotary_positional_embeddings": True,
    }
    with torch.device("meta"):
        ref = CogVideoXTransformer3DModel(**cfg)
        ours = VideoDiT(config_from_diffusers(cfg))
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    name_map = diffusers_key_map(ours)
    assert set(name_map) == set(theirs)
    mine = dict(ours.named_parameters())
    assert {k: tuple(mine[name_map[k]].shape) for k in theirs} == theirs
    ttt = sum(p.numel() for _, p in ours.ttt_named_parameters())
    assert sum(v.numel() for v in ref.state_dict().values()) + ttt == sum(
        p.numel() for p in ours.parameters()
    )
