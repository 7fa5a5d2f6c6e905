"""Our checkpoint format (config.json + model.safetensors) and the errors of bad checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ttt_engine.models import CheckpointError, VideoDiT, load_video_dit, save_video_dit, tiny


@pytest.fixture
def saved_model(tmp_path):
    model = VideoDiT(tiny(ttt_gate_init=0.3)).eval()
    return model, save_video_dit(model, tmp_path / "ckpt")


def test_round_trip_is_exact(saved_model, make_inputs) -> None:
    model, folder = saved_model
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "ttt-studio.video-dit" and meta["config"]["ttt_gate_init"] == 0.3
    loaded = load_video_dit(folder)
    assert loaded.config == model.config and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    latents, text, mask, t = make_inputs(model.config, segments=2)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(latents, text, mask, t), model(latents, text, mask, t), rtol=0, atol=0
        )


def test_dtype_on_load(saved_model) -> None:
    _, folder = saved_model
    assert {p.dtype for p in load_video_dit(folder, dtype="bfloat16").parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_video_dit(folder, dtype=torch.float16).parameters()} == {torch.float16}
    assert {p.dtype for p in load_video_dit(folder).parameters()} == {torch.float32}  # as saved
    # a bf16 save keeps its dtype when none is asked for
    bf16 = save_video_dit(load_video_dit(folder, dtype="bfloat16"), folder.parent / "bf16")
    assert {p.dtype for p in load_video_dit(bf16).parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="dtype.*'int8'"):
        load_video_dit(folder, dtype="int8")


def test_partial_checkpoint_lists_missing_keys(saved_model) -> None:
    _, folder = saved_model
    state = load_file(folder / "model.safetensors")
    dropped = sorted(k for k in state if k.startswith("blocks.1.ttt."))
    assert dropped
    save_file({k: v for k, v in state.items() if k not in dropped}, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_video_dit(folder)
    assert err.value.missing == dropped
    assert err.value.unexpected == [] and err.value.mismatched == []
    assert "blocks.1.ttt.layer.w1" in str(err.value) and f"missing keys ({len(dropped)})" in str(err.value)


def test_unexpected_keys_and_shape_mismatches_are_listed(saved_model) -> None:
    _, folder = saved_model
    state = load_file(folder / "model.safetensors")
    state["blocks.0.attn.extra"] = torch.zeros(3)
    state["proj_out.weight"] = torch.zeros(5, 64)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_video_dit(folder)
    assert err.value.unexpected == ["blocks.0.attn.extra"]
    assert err.value.mismatched == [("proj_out.weight", (16, 64), (5, 64))]
    assert "proj_out.weight: (16, 64) -> (5, 64)" in str(err.value)


def test_config_that_does_not_match_the_weights(saved_model) -> None:
    _, folder = saved_model
    with pytest.raises(CheckpointError) as err:
        load_video_dit(folder, overrides={"ttt_inner": "linear"})  # no w2/b2, and W1 is 32 x 32
    assert "blocks.0.ttt.layer.w2" in err.value.unexpected
    assert ("blocks.0.ttt.layer.w1", (2, 32, 32), (2, 32, 128)) in err.value.mismatched


def test_bad_folders(tmp_path, saved_model) -> None:
    with pytest.raises(CheckpointError, match="got nothing"):
        load_video_dit(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_video_dit(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="neither our format"):
        load_video_dit(tmp_path)
    _, folder = saved_model
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weight files missing: \\['model.safetensors'\\]"):
        load_video_dit(folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_video_dit(folder)
    with pytest.raises(ValueError, match="expected a VideoDiT"):
        save_video_dit(torch.nn.Linear(2, 2), tmp_path / "x")


def test_ttt_is_added_to_a_base_saved_without_it(tmp_path) -> None:
    """The paper's step from a pretrained base (local attention only) to its TTT fine-tune."""
    base = VideoDiT(tiny(ttt_inner="none")).eval()
    folder = save_video_dit(base, tmp_path / "base")
    model = load_video_dit(folder, overrides={"ttt_inner": "mlp"})
    assert model.config.ttt_inner == "mlp"
    state = model.state_dict()
    for name, value in base.state_dict().items():  # every base weight carried over exactly
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
    gates = [v for k, v in state.items() if ".ttt.gate_" in k]
    assert gates and all(torch.allclose(g, torch.full_like(g, 0.1)) for g in gates)
    w1 = state["blocks.0.ttt.layer.w1"]
    assert torch.isfinite(w1).all() and w1.std() > 0
    # a checkpoint that has TTT still has to match exactly: dropping its TTT keys is an error
    with_ttt = save_video_dit(model, tmp_path / "with_ttt")
    weights = load_file(with_ttt / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".ttt." not in k}, with_ttt / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_video_dit(with_ttt)


def test_compile_step_is_a_runtime_switch_never_saved(tmp_path) -> None:
    model = VideoDiT(tiny(ttt_compile_step=True))
    assert model.config.ttt_config().compile_step
    folder = save_video_dit(model, tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["config"]["ttt_compile_step"] is False
