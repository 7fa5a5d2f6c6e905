"""Training at scale on CPU: two gloo processes (DDP or FSDP) of batch 1 train exactly as one process of
batch 2 on the same global batch: the same loss every step and the same weights after the steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.tensor import DTensor

from ttt_engine.models.loading import load_video_dit
from ttt_engine.train.checkpoint import list_checkpoints
from ttt_engine.train.config import ConfigError, TrainConfig
from ttt_engine.train.distributed import DistInfo, launch
from ttt_engine.train.trainer import StepReport, Trainer

from .conftest import tiny_config_dict

STEPS = 3
GLOBAL_BATCH = 2
LOSS_TOL = 1e-5
WEIGHT_TOL = 1e-5


def _stage(batch_size: int) -> dict[str, Any]:
    # text dropout and a trained text encoder: every random draw and every trained module takes part
    return {
        "name": "3s",
        "type": "dit",
        "steps": STEPS,
        "batch_size": batch_size,
        "lr": 1e-3,
        "lr_ttt": 1e-3,
        "text_dropout": 0.5,
        "grad_clip": 1.0,
    }


def _rank_main(info: DistInfo, config: dict[str, Any], out: str, resume: str | None) -> None:
    """One rank: train, then (rank 0) save the losses, the trained weights and whether they were sharded."""
    torch.set_num_threads(1)
    reports: list[StepReport] = []
    sharded: list[bool] = []

    def record(trainer: Trainer, report: StepReport) -> None:
        reports.append(report)
        assert trainer._objective is not None
        sharded.append(all(isinstance(p, DTensor) for p in trainer._objective.parameters()))

    trainer = Trainer(TrainConfig.from_dict(config), info=info, resume=resume, progress=False)
    trainer.callbacks.append(record)
    try:
        trainer.run()
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if info.is_main:
        assert trainer.parts is not None
        torch.save(
            {
                "losses": [r.loss for r in reports],
                "sharded": sharded,
                "transformer": trainer.parts.transformer.state_dict(),
                "text": trainer.parts.text_encoder.state_dict(),
            },
            Path(out) / f"{'resumed' if resume else 'world'}{info.world_size}.pt",
        )


def _config(out: Path, toon_dir: Path, nproc: int, sharding: str) -> dict[str, Any]:
    return tiny_config_dict(
        out / "run",
        toon_dir,
        [_stage(GLOBAL_BATCH // nproc)],
        sharding=sharding,
        cache_latents=False,
        checkpoint_every=2,
        keep_checkpoints=2,
    )


def _train(tmp_path: Path, toon_dir: Path, nproc: int, sharding: str) -> dict[str, Any]:
    out = tmp_path / f"{sharding}{nproc}"
    out.mkdir()
    launch(_rank_main, nproc, _config(out, toon_dir, nproc, sharding), str(out), None)
    return torch.load(out / f"world{nproc}.pt", weights_only=True)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, toon_dir: Path) -> dict[str, Any]:
    return _train(tmp_path_factory.mktemp("one"), toon_dir, 1, "ddp")


def _assert_same_run(two: dict[str, Any], one: dict[str, Any]) -> None:
    assert len(two["losses"]) == len(one["losses"]) == STEPS
    assert two["losses"] == pytest.approx(one["losses"], abs=LOSS_TOL, rel=0)
    for part in ("transformer", "text"):
        assert two[part].keys() == one[part].keys()
        for k, v in one[part].items():
            assert torch.allclose(two[part][k], v, atol=WEIGHT_TOL, rtol=0), f"{part}.{k} differs"
    # the steps moved the weights (a run that trained nothing would pass the comparison trivially)
    assert len(set(one["losses"])) == STEPS


@pytest.mark.slow  # two spawned processes each import torch + diffusers: ~20-40 s on 2 cores
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(
    tmp_path: Path, toon_dir: Path, one_process: dict[str, Any], sharding: str
) -> None:
    two = _train(tmp_path, toon_dir, 2, sharding)
    assert two["sharded"] == [sharding == "fsdp"] * STEPS
    _assert_same_run(two, one_process)
    # rank 0 wrote the full (gathered) weights into the model folder
    run = tmp_path / f"{sharding}2" / "run"
    exported = load_video_dit(run / "model" / "transformer").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in two["transformer"].items())


@pytest.mark.slow  # three spawned pairs of processes: ~60 s on 2 cores
def test_fsdp_run_resumes_from_its_gathered_checkpoint(
    tmp_path: Path, toon_dir: Path, one_process: dict[str, Any]
) -> None:
    """The step-2 checkpoint of a 2-process FSDP run (full weights and optimizer state, gathered on rank 0)
    resumes in 2 FSDP processes, and in 1 process of the same global batch, to the same last step as the
    uninterrupted one-process run."""
    _train(tmp_path, toon_dir, 2, "fsdp")
    out = tmp_path / "fsdp2"
    half = [c for c in list_checkpoints(out / "run") if c.name.endswith("step0000002")]
    assert len(half) == 1
    for nproc in (2, 1):
        launch(_rank_main, nproc, _config(out, toon_dir, nproc, "fsdp"), str(out), str(half[0]))
        resumed = torch.load(out / f"resumed{nproc}.pt", weights_only=True)
        assert resumed["losses"] == pytest.approx(one_process["losses"][2:], abs=LOSS_TOL, rel=0)
        for k, v in one_process["transformer"].items():
            assert torch.allclose(resumed["transformer"][k], v, atol=WEIGHT_TOL, rtol=0), (nproc, k)


def test_sharding_is_checked(tmp_path: Path, toon_dir: Path) -> None:
    with pytest.raises(ConfigError, match="sharding"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path, toon_dir, [_stage(1)], sharding="zero3"))
    ema = {**_stage(1), "ema_decay": 0.99}
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path, toon_dir, [ema], sharding="fsdp"))
