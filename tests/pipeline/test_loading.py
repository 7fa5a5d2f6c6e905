"""Model folders: ours (save_folder) and a diffusers CogVideoX layout written here with save_pretrained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

from ttt_engine.models import VideoDiT
from ttt_engine.pipeline.params import ComponentMissingError, GenerationParams, PipelineError
from ttt_engine.pipeline.text import HashTextEncoder, T5TextEncoder
from ttt_engine.pipeline.video_pipeline import VideoPipeline, tiny_vae_config

from .conftest import storyboard_of, write_tiny_t5

PARAMS = GenerationParams(steps=2, seed=5, preview_every=0)


@pytest.fixture(autouse=True)
def _offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_our_folder_round_trip_gives_identical_video(tiny_pipe: VideoPipeline, tmp_path) -> None:
    folder = tiny_pipe.save_folder(tmp_path / "model")
    assert {p.name for p in folder.iterdir()} >= {
        "transformer",
        "vae",
        "text_encoder",
        "scheduler",
        "model_index.json",
    }
    loaded = VideoPipeline.from_folder(folder, device="cpu")
    assert isinstance(loaded.text_encoder, HashTextEncoder)
    assert loaded.fps == tiny_pipe.fps and loaded.num_frames(2) == tiny_pipe.num_frames(2)
    sb = storyboard_of(2)
    a = tiny_pipe.sample(sb, PARAMS)
    b = loaded.sample(sb, PARAMS)
    assert torch.equal(a, b)
    np.testing.assert_array_equal(tiny_pipe.decode(a), loaded.decode(b))


def write_diffusers_cogvideox_folder(root) -> None:
    """A tiny CogVideoX pipeline folder exactly as diffusers/transformers write one."""
    torch.manual_seed(0)
    CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=4,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=32,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=9,  # 3 latent frames in the first segment, then 2
        patch_size=2,
        max_text_seq_length=12,
        use_rotary_positional_embeddings=True,
    ).save_pretrained(str(root / "transformer"))
    AutoencoderKLCogVideoX(**tiny_vae_config(4)).save_pretrained(str(root / "vae"))
    CogVideoXDDIMScheduler(
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        snr_shift_scale=1.0,
        clip_sample=False,
    ).save_pretrained(str(root / "scheduler"))
    write_tiny_t5(root, d_model=32)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))


def test_diffusers_cogvideox_folder_loads_offline_and_generates(tmp_path) -> None:
    root = tmp_path / "cogvideox-tiny"
    write_diffusers_cogvideox_folder(root)
    pipe = VideoPipeline.from_folder(root, device="cpu")
    assert isinstance(pipe.transformer, VideoDiT)
    assert isinstance(pipe.text_encoder, T5TextEncoder)
    # the folder names no fps, sizes or colour space: CogVideoX 1.0's documented 8 fps, its transformer's
    # sample size, sRGB-encoded frames
    assert pipe.fps == 8 and pipe.spec.sizes == (pipe.default_size[::-1],)
    assert pipe.spec.colorspace == "srgb_rec709_scene"
    assert pipe.config.first_segment_frames == 3 and pipe.config.segment_frames == 2
    result = pipe.generate(storyboard_of(2, transition_at=(1,)), PARAMS)
    assert result.frames.shape == (pipe.num_frames(2), 32, 32, 3)
    assert np.isfinite(result.frames).all()


@pytest.mark.parametrize("component", ["transformer", "vae", "text_encoder", "scheduler"])
def test_missing_component_is_named(tiny_pipe: VideoPipeline, tmp_path, component: str) -> None:
    folder = tiny_pipe.save_folder(tmp_path / "model")
    shutil.rmtree(folder / component)
    with pytest.raises(ComponentMissingError, match=f"lacks the '{component}/' component"):
        VideoPipeline.from_folder(folder)


def test_missing_tokenizer_and_bad_folders(tmp_path) -> None:
    root = tmp_path / "cogvideox-tiny"
    write_diffusers_cogvideox_folder(root)
    shutil.rmtree(root / "tokenizer")
    with pytest.raises(ComponentMissingError, match="tokenizer"):
        VideoPipeline.from_folder(root)
    with pytest.raises(PipelineError, match="does not exist"):
        VideoPipeline.from_folder(tmp_path / "nowhere")


def test_components_that_do_not_fit_together(tmp_path) -> None:
    root = tmp_path / "m"
    write_diffusers_cogvideox_folder(root)
    shutil.rmtree(root / "vae")
    AutoencoderKLCogVideoX(**{**tiny_vae_config(8)}).save_pretrained(str(root / "vae"))
    with pytest.raises(
        PipelineError, match="latent_channels 8 does not match the transformer's in/out channels 4/4"
    ):
        VideoPipeline.from_folder(root)


def test_bad_model_index_is_refused(tiny_pipe: VideoPipeline, tmp_path) -> None:
    folder = tiny_pipe.save_folder(tmp_path / "model")
    (folder / "model_index.json").write_text(json.dumps({"fps": "fast"}))
    with pytest.raises(PipelineError, match="fps must be a positive number, got 'fast'"):
        VideoPipeline.from_folder(folder)


def test_a_model_folder_carries_its_sampling_defaults(tiny_pipe: VideoPipeline, tmp_path) -> None:
    tuned = {"steps": 3, "guidance_scale": 4.0, "cfg_schedule": "constant"}
    pipe = VideoPipeline(
        tiny_pipe.transformer,
        tiny_pipe.vae,
        tiny_pipe.text_encoder,
        tiny_pipe.scheduler_config,
        sampling=tuned,
    )
    loaded = VideoPipeline.from_folder(pipe.save_folder(tmp_path / "model"), device="cpu")
    assert loaded.sampling == tuned
    # unset (or None) values take the model's defaults, then GenerationParams'; given ones win
    params = loaded.generation_params(seed=7, guidance_scale=None)
    assert (params.steps, params.guidance_scale, params.cfg_schedule, params.seed) == (3, 4.0, "constant", 7)
    assert params.sampler == GenerationParams().sampler
    assert loaded.generation_params(steps=9, cfg_schedule="dynamic").steps == 9
    # a folder without them: GenerationParams' (the paper's) defaults
    assert tiny_pipe.sampling == {} and tiny_pipe.generation_params() == GenerationParams()


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"steps": 0}, r"model_index.json of .*: sampling: GenerationParams.steps: expected a positive int"),
        ({"eta": 0.5}, r"sampling has unknown keys \['eta'\]"),
        ({"cfg_schedule": "cosine"}, "GenerationParams.cfg_schedule: expected one of"),
        ([25], "sampling must be a JSON object"),
    ],
)
def test_bad_sampling_defaults_are_refused(tiny_pipe: VideoPipeline, tmp_path, sampling, message) -> None:
    folder = tiny_pipe.save_folder(tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "sampling": sampling}))
    with pytest.raises(PipelineError, match=message):
        VideoPipeline.from_folder(folder)
