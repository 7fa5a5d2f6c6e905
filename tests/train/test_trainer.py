"""End-to-end training on a tiny toon world: the loss falls, stage 2 freezes what it must, the model folder
loads in the pipeline, and a resumed run is step-for-step the same run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ttt_engine.models.loading import load_video_dit
from ttt_engine.pipeline.text import HashTextEncoder
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.train.checkpoint import list_checkpoints, load_state
from ttt_engine.train.param_groups import is_trainable
from ttt_engine.train.trainer import StepReport, Trainer

from .conftest import tiny_config


def _stage(name: str, **kw: object) -> dict:
    base = {
        "name": name,
        "type": "dit",
        "segments": 1,
        "batch_size": 2,
        "lr": 2e-3,
        "lr_ttt": 2e-3,
        "grad_clip": 1.0,
    }
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory, toon_dir: Path) -> dict:
    """One 'all' stage of 16 steps; records the fixed-batch loss (no text dropout) after every step."""
    run = tmp_path_factory.mktemp("stage1")
    config = tiny_config(run, toon_dir, [_stage("3s", steps=16, lr_schedule_ttt="constant")])
    evals: list[float] = []
    reports: list[StepReport] = []

    def record(trainer: Trainer, report: StepReport) -> None:
        reports.append(report)
        evals.append(trainer.eval_loss(indices=(0, 1, 2), seed=123))

    trainer = Trainer(config, callbacks=[record], progress=False)
    out = trainer.run()
    return {"out": out, "evals": evals, "reports": reports, "trainer": trainer, "run": run}


def test_tiny_run_lowers_the_fixed_batch_loss(stage1: dict) -> None:
    evals = stage1["evals"]
    assert len(evals) == 16
    first, last = sum(evals[:4]) / 4, sum(evals[-4:]) / 4
    assert last < 0.9 * first, f"fixed-batch loss did not fall: first {first:.4f}, last {last:.4f} ({evals})"
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in stage1["reports"])


def test_stage1_trains_everything_including_the_text_encoder(stage1: dict) -> None:
    r = stage1["reports"][0]
    assert set(r.lr) == {"ttt/decay", "ttt/no_decay", "other/decay", "other/no_decay"}
    trainer = stage1["trainer"]
    assert all(p.requires_grad for p in trainer.parts.transformer.parameters())
    assert trainer.text_trained
    assert (stage1["out"] / "text_encoder" / "model.safetensors").is_file()


def test_model_folder_loads_in_the_pipeline_and_samples(stage1: dict) -> None:
    pipe = VideoPipeline.from_folder(stage1["out"], device="cpu")
    assert pipe.fps == 8
    assert pipe.frames_per_segment == 24 and pipe.first_segment_frames == 25
    assert isinstance(pipe.text_encoder, HashTextEncoder)
    trained = stage1["trainer"].parts.transformer.state_dict()
    for name, value in pipe.transformer.state_dict().items():
        assert torch.equal(value, trained[name].cpu()), name
    from ttt_engine.pipeline.params import GenerationParams

    latents = pipe.sample(
        [{"text": "Tom the cat runs left."}], GenerationParams(steps=2, seed=0, preview_every=0)
    )
    assert latents.shape == (1, 7, 4, 8, 8) and torch.isfinite(latents).all()


def test_stage2_freezes_all_but_ttt_gates_and_attention(stage1: dict, tmp_path: Path, toon_dir: Path) -> None:
    init = stage1["out"]
    before = load_video_dit(init / "transformer").state_dict()
    text_before = HashTextEncoder.load(init / "text_encoder").state_dict()
    config = tiny_config(
        tmp_path / "run",
        toon_dir,
        [_stage("6s", segments=2, steps=3, batch_size=1, trainable="ttt_attn", lr=1e-3, lr_ttt=1e-3)],
        model={"init": str(init), "transformer": {"ttt_backend": "reference"}},
    )
    out = Trainer(config, progress=False).run()
    after = load_video_dit(out / "transformer").state_dict()
    frozen = [n for n in before if not is_trainable(n, "ttt_attn")]
    trained = [n for n in before if is_trainable(n, "ttt_attn")]
    assert any(".ttt.gate_" in n for n in trained) and any(".attn.to_out." in n for n in trained)
    assert any("norm1" in n for n in frozen) and any(".mlp." in n for n in frozen)
    for n in frozen:
        assert torch.equal(before[n], after[n]), f"frozen parameter {n} changed"
    unchanged = {n for n in trained if torch.equal(before[n], after[n])}
    # every trained parameter moves except the last block's backward text gate: the last block's text
    # stream is dropped, so that gate never reaches the loss (no gradient, and gates have no weight decay)
    last = max(int(n.split(".")[1]) for n in trained if n.startswith("blocks."))
    assert unchanged <= {f"blocks.{last}.ttt.gate_bwd_text"}, sorted(unchanged)
    text_after = HashTextEncoder.load(out / "text_encoder").state_dict()
    assert all(torch.equal(text_before[k], text_after[k]) for k in text_before), (
        "text encoder must stay frozen"
    )


def test_a_model_trained_on_carries_its_inits_sampling_defaults(
    stage1: dict, tmp_path: Path, toon_dir: Path
) -> None:
    init = shutil.copytree(stage1["out"], tmp_path / "init")
    index = json.loads((init / "model_index.json").read_text())
    assert "sampling" not in index  # a model trained from scratch has none: the paper's settings apply
    tuned = {"steps": 12, "guidance_scale": 4.0, "cfg_schedule": "constant"}
    (init / "model_index.json").write_text(json.dumps({**index, "sampling": tuned}))
    config = tiny_config(
        tmp_path / "run",
        toon_dir,
        [_stage("3s", segments=1, steps=1, batch_size=1)],
        model={"init": str(init), "transformer": {"ttt_backend": "reference"}},
    )
    out = Trainer(config, progress=False).run()
    assert VideoPipeline.from_folder(out, device="cpu").sampling == tuned


def test_exact_resume_matches_an_uninterrupted_run(tmp_path: Path, toon_dir: Path) -> None:
    stages = [_stage("3s", steps=4, text_dropout=0.5, grad_accum=2, batch_size=1, warmup_steps=1)]
    config = tiny_config(tmp_path / "run", toon_dir, stages, checkpoint_every=2, keep_checkpoints=5)
    full = Trainer(config, progress=False)
    full.run()
    full_weights = {k: v.clone() for k, v in full.parts.transformer.state_dict().items()}
    full_text = {k: v.clone() for k, v in full.parts.text_encoder.state_dict().items()}
    half = [c for c in list_checkpoints(tmp_path / "run") if c.name.endswith("step0000002")]
    assert len(half) == 1
    state = load_state(half[0])
    assert state["step"] == 2 and set(state["sampler"]) >= {"epoch", "offset"}
    saved = tmp_path / "half"
    shutil.copytree(half[0], saved)

    resumed = Trainer(config, resume=saved, progress=False)
    resumed.run()
    assert len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(full.losses[2:], abs=1e-6, rel=0)
    for k, v in resumed.parts.transformer.state_dict().items():
        assert torch.allclose(v, full_weights[k], atol=1e-6, rtol=0), k
    for k, v in resumed.parts.text_encoder.state_dict().items():
        assert torch.allclose(v, full_text[k], atol=1e-6, rtol=0), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast path)")
def test_cuda_run_uses_bf16_autocast_with_fp32_weights(tmp_path: Path, toon_dir: Path) -> None:
    stages = [_stage("3s", steps=3), _stage("6s", segments=2, steps=2, batch_size=1, trainable="ttt_attn")]
    config = tiny_config(tmp_path / "run", toon_dir, stages, device="cuda")
    trainer = Trainer(config, progress=False)
    out = trainer.run()
    assert trainer.autocast_dtype == torch.bfloat16 and trainer.device.type == "cuda"
    assert all(p.dtype == torch.float32 for p in trainer.parts.transformer.parameters())
    assert len(trainer.losses) == 5 and all(torch.isfinite(torch.tensor(trainer.losses)))
    pipe = VideoPipeline.from_folder(out, device="cuda")
    assert pipe.transformer.config.first_segment_frames == 7
