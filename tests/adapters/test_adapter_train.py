"""`adapter train`: stills, clips and EXRs from a folder; exact resume; the base left as it was."""

from __future__ import annotations

import argparse
import json

import numpy as np
import OpenEXR
import pytest
import torch
from PIL import Image

from ttt_engine.adapters import AdapterConfig, AdapterError, AdapterTrainConfig, applied, load_adapter
from ttt_engine.adapters import cli as adapter_cli
from ttt_engine.adapters.config import DECODER_STYLE_TARGETS
from ttt_engine.adapters.data import collect_items, without_trigger
from ttt_engine.adapters.train import CHECKPOINT_DIR, PREVIEW_DIR, drop_captions, train_adapter
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.storyboard import Segment, Storyboard
from ttt_engine.toonworld.dataset import load_frames, write_dataset

# a tiny model whose 3-s segment is a whole number of frames (8 fps x 3 s = 6 latent frames x 4), as shipped
TINY = {"fps": 8, "first_segment_frames": 7, "segment_frames": 6}


def tiny_pipe() -> VideoPipeline:
    pipe = VideoPipeline.tiny_random(0, **TINY)
    pipe.sampling = {"steps": 3}  # previews and prior samples: a few steps are enough here
    return pipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("material")
    rng = np.random.default_rng(0)
    for i in range(2):
        img = np.zeros((40, 48, 3), np.uint8)
        img[..., i] = 200
        img[10:30, 12:30] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(root / f"still{i}.png")
    (root / "still0.txt").write_text("A red room.\n")
    exr = np.full((32, 32, 3), 0.18, np.float32)
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, {"RGB": exr}).write(str(root / "grey.exr"))
    write_dataset(root / "clips", 1, (2, 2), 32, 32, fps=8, seed=1)
    (root / "clips" / "dataset.json").unlink()  # the clip folder itself is what the trainer reads
    (root / "clips" / "clip_000000").rename(root / "clip_a")
    (root / "clips").rmdir()
    return root


def test_items_from_stills_exr_and_clip(folder) -> None:
    pipe = tiny_pipe()
    items = collect_items(folder, "style", "dusk", pipe.num_frames(1), pipe.default_size)
    assert [i.source for i in items] == [
        "clip_a[segment 0]",
        "clip_a[segment 1]",
        "grey.exr",
        "still0.png",
        "still1.png",
    ]
    assert all(i.frames.shape == (25, 32, 32, 3) for i in items)
    assert items[3].caption == "A red room." and items[4].caption == "A shot in the dusk look."
    assert items[0].caption != items[1].caption  # each clip segment keeps its storyboard text
    clip = load_frames(folder / "clip_a").astype(np.float32) / 255.0  # uint8 on disk, display values here
    assert np.array_equal(items[0].frames[1:], clip[:24]) and np.array_equal(items[1].frames, clip[23:48])
    assert np.array_equal(items[4].frames[0], items[4].frames[-1])  # a still is a held shot
    grey = items[2].frames[0]
    assert 0.4 < float(grey.mean()) < 0.5  # linear 0.18 shown on the sRGB display (about 0.46)


@pytest.mark.slow
def test_train_resume_is_exact_and_base_untouched(folder, tmp_path) -> None:
    config = AdapterConfig(rank=2, alpha=2.0, kind="style", trigger="dusk")
    train = AdapterTrainConfig(
        steps=4, batch=2, checkpoint_every=2, preview_every=4, learning_rate=1e-2, text_dropout=0.5
    )
    pipe = tiny_pipe()
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    full = train_adapter(folder, tmp_path / "full", pipe, config, train, progress=False)
    assert len(full.losses) == 4 and all(np.isfinite(full.losses))
    assert sorted(p.name for p in (tmp_path / "full" / PREVIEW_DIR).iterdir()) == ["step_000004.png"]
    after = pipe.transformer.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert not any("lora" in type(m).__name__.lower() for m in pipe.transformer.modules())

    pipe2 = tiny_pipe()
    assert train_adapter(folder, tmp_path / "cut", pipe2, config, train, progress=False, stop_at=2) is None
    assert (tmp_path / "cut" / CHECKPOINT_DIR / "state.pt").is_file()
    resumed = train_adapter(folder, tmp_path / "cut", tiny_pipe(), config, train, progress=False)
    assert resumed.losses == full.losses[2:]
    for k, v in full.adapter.state.items():
        assert torch.equal(resumed.adapter.state[k], v), k
    assert resumed.adapter.config.base_model.startswith("tiny_random")

    saved = load_adapter(tmp_path / "full")
    assert saved.config.trigger == "dusk" and saved.train == train
    gen = torch.Generator().manual_seed(0)
    c = pipe.transformer.config
    x = (
        torch.randn(1, c.latent_frames(1), c.in_channels, 8, 8, generator=gen),
        torch.randn(1, 1, c.max_text_len, c.text_dim, generator=gen),
        None,
        torch.tensor([500]),
    )
    with torch.no_grad():
        base = pipe.transformer(*x)
        with applied(pipe.transformer, [(saved, 1.0)]):
            assert not torch.allclose(pipe.transformer(*x), base, atol=1e-6)


def test_resume_with_other_settings_is_refused(folder, tmp_path) -> None:
    config = AdapterConfig(rank=2, alpha=2.0, kind="style", trigger="dusk")
    train = AdapterTrainConfig(steps=2, batch=1, preview_every=0)
    assert (
        train_adapter(folder, tmp_path / "a", tiny_pipe(), config, train, progress=False, stop_at=1) is None
    )
    from ttt_engine.train.checkpoint import ResumeError

    with pytest.raises(ResumeError, match="different config"):
        train_adapter(
            folder,
            tmp_path / "a",
            tiny_pipe(),
            AdapterConfig(rank=3, alpha=3.0, kind="style", trigger="dusk"),
            train,
            progress=False,
        )


@pytest.mark.slow
def test_subject_trains_with_prior_samples(folder, tmp_path) -> None:
    config = AdapterConfig(rank=2, alpha=2.0, kind="subject", trigger="zorp")
    train = AdapterTrainConfig(steps=2, batch=1, preview_every=0, prior_samples=2, prior_steps=2)
    pipe = tiny_pipe()
    result = train_adapter(folder, tmp_path / "s", pipe, config, train, progress=False)
    assert len(result.losses) == 2
    state = torch.load(tmp_path / "s" / CHECKPOINT_DIR / "state.pt", weights_only=True)
    assert state["prior_latents"].shape[0] == 2
    captions = json.loads(state["prior_captions"])
    assert all("zorp" not in c for c in captions)
    # the first prior is the base's 2-step sample of its caption (the model's own default is 3 steps)
    board = Storyboard((Segment(captions[0]),))
    with torch.no_grad():
        two = pipe.sample(board, pipe.generation_params(seed=0, preview_every=0, steps=2)).float().cpu()
        three = pipe.sample(board, pipe.generation_params(seed=0, preview_every=0)).float().cpu()
    assert torch.equal(state["prior_latents"][:1], two) and not torch.equal(two, three)
    with pytest.raises(AdapterError, match="prior_steps"):
        AdapterTrainConfig(prior_steps=0)


def test_without_trigger() -> None:
    assert without_trigger("Zorp the robot waves. zorp!", "zorp") == "Zorp the robot waves.!"
    assert without_trigger("zorp is here.", "zorp") == "is here."


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ttt-studio")
    adapter_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_cli_train_and_info(folder, tmp_path, capsys) -> None:
    model = tiny_pipe().save_folder(tmp_path / "model")
    out = tmp_path / "look"
    argv = ["adapter", "train", str(folder), "-o", str(out), "--kind", "style", "--trigger", "dusk"]
    options = [
        "--steps",
        "2",
        "--rank",
        "2",
        "--preview-every",
        "0",
        "--text-dropout",
        "0.25",
        "--prior-steps",
        "2",
        "--decoder-steps",
        "2",
        "--decoder-batch",
        "1",
        "--decoder-samples",
        "2",
        "--decoder-sample-steps",
        "2",
    ]
    assert _run([*argv, "--model", str(model), *options]) == 0
    printed = capsys.readouterr().out
    sha = load_adapter(out).sha256
    trained = load_adapter(out).train
    assert sha in printed and trained.text_dropout == 0.25 and trained.prior_steps == 2
    # a style adapter is a LoRA of the VAE decoder alone by default, trained on the colour objective
    assert trained.decoder_steps == 2 and trained.decoder_batch == 1
    assert trained.decoder_objective == "colour" and trained.decoder_samples == 2
    assert set(load_adapter(out).decoder_modules()) == set(DECODER_STYLE_TARGETS)
    assert load_adapter(out).modules() == {}
    assert (
        _run(["adapter", "info", str(out / "pytorch_lora_weights.safetensors"), "--model", str(model)]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["sha256"] == sha and info["config"]["rank"] == 2 and info["fits_model"]["skipped"] == []
    assert info["fits_model"]["decoder_layers"] == len(DECODER_STYLE_TARGETS)
    (tmp_path / "empty").mkdir()
    assert (
        _run(
            [
                "adapter",
                "train",
                str(tmp_path / "empty"),
                "-o",
                str(tmp_path / "x"),
                "--kind",
                "style",
                "--trigger",
                "dusk",
                "--model",
                str(model),
            ]
        )
        == 2
    )
    assert "nothing to train on" in capsys.readouterr().err


def test_text_dropout_swaps_whole_captions_for_the_empty_prompt() -> None:
    gen = torch.Generator().manual_seed(0)
    emb, mask = torch.randn(64, 1, 5, 3), torch.ones(64, 1, 5, dtype=torch.bool)
    empty = (torch.randn(1, 1, 5, 3), torch.zeros(1, 1, 5, dtype=torch.bool))
    e, m = drop_captions(emb, mask, empty, 0.5, gen)
    dropped = [i for i in range(64) if torch.equal(e[i], empty[0][0])]
    kept = [i for i in range(64) if torch.equal(e[i], emb[i])]
    assert sorted(dropped + kept) == list(range(64)) and 16 < len(dropped) < 48
    assert not m[dropped].any() and m[kept].all()
    e, m = drop_captions(emb, mask, empty, 0.0, gen)
    assert torch.equal(e, emb) and torch.equal(m, mask)
    with pytest.raises(AdapterError, match="text_dropout"):
        AdapterTrainConfig(text_dropout=1.0)
