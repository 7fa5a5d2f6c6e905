"""The TTT gate readout the memory experiment reports (eval/memory_probe.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttt_engine.eval.memory_probe import GATE_KINDS, ProbeConfig, gate_openings, gate_trajectory, main
from ttt_engine.pipeline.video_pipeline import VideoPipeline


def test_gate_openings_read_every_block(tmp_path) -> None:
    pipe = VideoPipeline.tiny_random()
    init = float(np.tanh(pipe.transformer.config.ttt_gate_init))
    with torch.no_grad():
        gates = [m for n, m in pipe.transformer.named_parameters() if n.endswith("gate_fwd_video")]
        gates[0].fill_(1.0)  # one block's forward video gate opened to tanh(1)
    run = tmp_path / "run"
    pipe.save_folder(run / "checkpoints" / "00-9s-step0000020")
    openings = gate_trajectory(run)["00-9s-step0000020"]
    assert set(openings) == {*GATE_KINDS, "max_move"}
    assert openings["fwd_text"] == pytest.approx(init)
    expected = (np.tanh(1.0) + (len(gates) - 1) * init) / len(gates)
    assert openings["fwd_video"] == pytest.approx(expected, rel=1e-5)
    assert openings["max_move"] == pytest.approx(np.tanh(1.0) - init, rel=1e-5)


def test_a_model_without_ttt_has_no_gates(tmp_path) -> None:
    VideoPipeline.tiny_random(ttt_inner="none").save_folder(tmp_path / "m")
    assert gate_openings(tmp_path / "m" / "transformer") == {}


def test_bad_requests_are_named(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="no checkpoints"):
        gate_trajectory(tmp_path)
    assert main(["--gates", str(tmp_path)]) == 2
    assert main([]) == 2 and "NAME=MODEL_DIR" in capsys.readouterr().err
    assert main(["nameless"]) == 2
    with pytest.raises(ValueError, match="storyboards"):
        ProbeConfig(storyboards=1)
