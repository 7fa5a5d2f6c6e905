"""`strip-ttt`: a TTT model folder back to its base (no TTT layers or gates), every other weight kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttt_engine.cli import main
from ttt_engine.models.loading import is_ttt_key, load_video_dit
from ttt_engine.pipeline.params import GenerationParams
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.train.ttt_strip import strip_ttt

STORYBOARD = [{"text": "Tom the cat runs left."}]


def _folder(root: Path, name: str, gate: float | None) -> Path:
    """A tiny TTT-MLP model folder; gate: every TTT gate set to this value (None: the paper's init)."""
    pipe = VideoPipeline.tiny_random(
        0, fps=8, first_segment_frames=7, segment_frames=6, ttt_backend="reference"
    )
    if gate is not None:
        with torch.no_grad():
            for name, p in pipe.transformer.named_parameters():
                if is_ttt_key(name) and ".gate_" in name:
                    p.fill_(gate)
    return pipe.save_folder(root / name)


def _sample(folder: Path) -> torch.Tensor:
    pipe = VideoPipeline.from_folder(folder, device="cpu")
    return pipe.sample(STORYBOARD, GenerationParams(steps=2, seed=0, preview_every=0))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("strip")
    closed, opened = _folder(root, "closed", 0.0), _folder(root, "open", None)
    return {
        "closed": closed,
        "closed_base": strip_ttt(closed, root / "closed_base"),
        "open": opened,
        "open_base": strip_ttt(opened, root / "open_base"),
    }


def test_strip_keeps_every_weight_but_the_ttt_ones(folders: dict[str, Path]) -> None:
    before = load_video_dit(folders["open"] / "transformer").state_dict()
    base = load_video_dit(folders["open_base"] / "transformer")
    assert base.config.ttt_inner == "none"
    after = base.state_dict()
    assert any(is_ttt_key(k) for k in before) and not any(is_ttt_key(k) for k in after)
    assert after.keys() == {k for k in before if not is_ttt_key(k)}
    for name, value in after.items():
        assert torch.equal(value, before[name]), name


def test_with_closed_gates_the_base_computes_what_the_ttt_model_did(folders: dict[str, Path]) -> None:
    torch.testing.assert_close(_sample(folders["closed_base"]), _sample(folders["closed"]), rtol=0, atol=0)
    # with the paper's open gates (tanh 0.1) the TTT branch contributes, so stripping changes the output
    assert not torch.allclose(_sample(folders["open_base"]), _sample(folders["open"]))


def test_strip_refuses_a_base_and_a_used_destination_and_the_cli_reports_it(
    folders: dict[str, Path], tmp_path: Path, capsys
) -> None:
    with pytest.raises(ValueError, match="no TTT layers"):
        strip_ttt(folders["open_base"], tmp_path / "again")
    with pytest.raises(ValueError, match="not empty"):
        strip_ttt(folders["open"], folders["open_base"])
    assert main(["strip-ttt", str(folders["open"]), str(folders["open_base"])]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["strip-ttt", str(folders["open"]), str(tmp_path / "new")]) == 0
    assert "model folder:" in capsys.readouterr().out
