"""DDP with 2 CPU processes on gloo (spawned with torch.multiprocessing): both ranks end identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ttt_engine.train.config import TrainConfig
from ttt_engine.train.distributed import DistInfo, free_port, launch, mean_across
from ttt_engine.train.trainer import StepReport, Trainer

from .conftest import tiny_config_dict


def _rank_main(info: DistInfo, config: dict[str, Any], out: str) -> None:
    """One rank: train, then dump this rank's weights, losses and the items it saw."""
    seen: list[list[int]] = []
    trainer = Trainer(TrainConfig.from_dict(config), info=info, progress=False)
    original = trainer._dit_batch

    def spy(indices: list[int], gens: list[torch.Generator], *rest: float) -> Any:
        seen.append(list(indices))
        return original(indices, gens, *rest)

    trainer._dit_batch = spy  # type: ignore[method-assign]
    reports: list[StepReport] = []
    trainer.callbacks.append(lambda _t, r: reports.append(r))
    trainer.run()
    torch.save(
        {
            "transformer": trainer.parts.transformer.state_dict(),
            "text": trainer.parts.text_encoder.state_dict(),
            "vae": trainer.parts.vae.state_dict(),
            "losses": [r.loss for r in reports],
            "seen": seen,
        },
        Path(out) / f"rank{info.rank}.pt",
    )
    import torch.distributed as dist

    dist.destroy_process_group()


@pytest.mark.slow  # 12-25 s on 2 cores: two processes each import torch + diffusers
def test_two_gloo_processes_train_to_identical_weights(tmp_path: Path, toon_dir: Path) -> None:
    stages = [
        {"name": "vae", "type": "vae", "steps": 1, "lr": 1e-3, "frames": 9},
        {
            "name": "3s",
            "type": "dit",
            "steps": 3,
            "batch_size": 1,
            "grad_accum": 2,
            "lr": 1e-3,
            "lr_ttt": 1e-3,
        },
    ]
    config = tiny_config_dict(tmp_path / "run", toon_dir, stages)
    launch(_rank_main, 2, config, str(tmp_path))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("transformer", "text", "vae"):
        assert r0[part].keys() == r1[part].keys()
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), f"{part}.{k} differs between ranks"
    # the loss shown is the all-reduced mean, the same on both ranks; each rank trained on its own items
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 4
    assert r0["seen"] != r1["seen"]
    # rank 0 wrote the model folder and the checkpoints
    assert (tmp_path / "run" / "model" / "transformer" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "01-3s-step0000003" / "COMPLETE").is_file()


def test_single_process_helpers_are_identities() -> None:
    info = DistInfo()
    assert not info.enabled and info.is_main
    value = torch.tensor(2.5)
    assert float(mean_across(value, info)) == 2.5
    assert 0 < free_port() < 65536
    with pytest.raises(ValueError, match="nproc"):
        launch(lambda _i: None, 0)
