"""The adapter API: file round trips, foreign namings, shape checks, and applying without leaks."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from ttt_engine.adapters import (
    AdapterConfig,
    AdapterError,
    AdapterTrainConfig,
    applied,
    check_adapter,
    load_adapter,
    make_adapter,
    save_adapter,
)

from .helpers import forward, inputs, random_adapter, random_lora_state, tiny_model


def test_save_load_round_trip(tmp_path) -> None:
    model = tiny_model()
    adapter = random_adapter(model)
    train = AdapterTrainConfig(steps=7)
    saved = save_adapter(adapter, tmp_path / "grade", train=train)
    file = tmp_path / "grade" / "pytorch_lora_weights.safetensors"
    assert saved.path == file and saved.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    for path in (tmp_path / "grade", file):
        back = load_adapter(path)
        assert back.name == "grade" and back.config == adapter.config and back.train == train
        assert back.sha256 == saved.sha256 and back.state.keys() == adapter.state.keys()
        for k, v in adapter.state.items():
            assert torch.equal(back.state[k], v)
    side = json.loads((tmp_path / "grade" / "adapter_config.json").read_text())
    assert side["config"]["trigger"] == "grade" and side["train"]["steps"] == 7


def test_one_file_alone_is_self_contained(tmp_path) -> None:
    model = tiny_model()
    saved = save_adapter(random_adapter(model), tmp_path / "look")
    lone = tmp_path / "upload.safetensors"
    lone.write_bytes(saved.path.read_bytes())  # no adapter_config.json beside it
    back = load_adapter(lone)
    assert back.config == saved.config and back.sha256 == saved.sha256 and back.name == "upload"


def test_make_adapter_hash_is_the_saved_files(tmp_path) -> None:
    adapter = random_adapter(tiny_model())
    assert save_adapter(adapter, tmp_path / "x").sha256 == adapter.sha256


def test_down_up_naming_and_no_config(tmp_path) -> None:
    model = tiny_model()
    state = random_lora_state(model, rank=3)
    renamed = {
        k.replace(".lora_A.weight", ".lora.down.weight").replace(".lora_B.weight", ".lora.up.weight"): v
        for k, v in state.items()
    }
    save_file(renamed, tmp_path / "foreign.safetensors")
    back = load_adapter(tmp_path / "foreign.safetensors")
    assert back.config.rank == 3 and back.config.alpha == 3.0  # diffusers' assumption without metadata
    assert set(back.config.target_modules) == {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"}
    assert all(torch.equal(back.state[k], v) for k, v in state.items())


def test_alpha_from_diffusers_metadata(tmp_path) -> None:
    state = random_lora_state(tiny_model(), rank=4)
    meta = {
        "format": "pt",
        "lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 2}),
    }
    save_file(state, tmp_path / "d.safetensors", metadata=meta)
    back = load_adapter(tmp_path / "d.safetensors")
    assert back.config.alpha == 2.0 and back.config.scaling == 0.5


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a safetensors file", "cannot read safetensors"),
        (
            {"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 64)},
            "has A but not its pair",
        ),
        ({"transformer.transformer_blocks.0.attn1.to_q.weight": torch.zeros(2, 64)}, "is not a LoRA matrix"),
        ({"text_encoder.x.lora_A.weight": torch.zeros(2, 4)}, "only transformer LoRAs"),
    ],
    ids=["garbage", "half_pair", "not_lora", "text_encoder"],
)
def test_bad_files_are_refused(tmp_path, content, message) -> None:
    file = tmp_path / "bad.safetensors"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        save_file(content, file)
    with pytest.raises(AdapterError, match=message):
        load_adapter(file)


def test_missing_paths_are_refused(tmp_path) -> None:
    with pytest.raises(AdapterError, match="no such file"):
        load_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="no pytorch_lora_weights.safetensors"):
        load_adapter(tmp_path / "empty")


def test_bad_config_values_are_named() -> None:
    with pytest.raises(AdapterError, match="rank"):
        AdapterConfig(rank=0)
    with pytest.raises(AdapterError, match="trigger"):
        AdapterConfig(kind="subject")
    with pytest.raises(AdapterError, match="unknown keys"):
        AdapterConfig.from_dict({"rank": 4, "rnak": 3})
    with pytest.raises(AdapterError, match="learning_rate"):
        AdapterTrainConfig(learning_rate=-1.0)


def test_shape_mismatch_names_first_bad_key_and_both_shapes() -> None:
    model = tiny_model()
    state = random_lora_state(model)
    state["transformer.transformer_blocks.1.attn1.to_k.lora_B.weight"] = torch.zeros(63, 4)
    state["transformer.transformer_blocks.1.attn1.to_v.lora_B.weight"] = torch.zeros(65, 4)
    adapter = make_adapter(state, AdapterConfig(rank=4, alpha=4), "bad")
    with pytest.raises(AdapterError) as err:
        check_adapter(adapter, model)
    text = str(err.value)
    assert "transformer.transformer_blocks.1.attn1.to_k.lora_B.weight" in text
    assert "(63, 4)" in text and "(64, 4)" in text and "to_v" not in text


def test_unshared_modules_are_skipped_and_listed() -> None:
    model = tiny_model()
    state = random_lora_state(model, blocks=4)  # blocks 2 and 3 do not exist in the tiny model
    bound = check_adapter(make_adapter(state, AdapterConfig(rank=4, alpha=4), "deep"), model)
    assert (
        len(bound.modules) == 8 and bound.skipped[0] == "transformer_blocks.2.attn1.to_k"
    )  # block order, then name
    assert len(bound.skipped) == 8
    only_deep = {k: v for k, v in state.items() if ".blocks.2." in k or "_blocks.3." in k}
    with pytest.raises(AdapterError, match="shares no layer"):
        check_adapter(make_adapter(only_deep, AdapterConfig(rank=4, alpha=4), "alien"), model)


def test_scale_zero_and_no_adapter_are_the_base_bit_for_bit() -> None:
    model = tiny_model()
    x = inputs(model)
    base = forward(model, x)
    adapter = random_adapter(model)
    with applied(model, []):
        assert torch.equal(forward(model, x), base)
    with applied(model, [(adapter, 0.0)]):
        assert torch.equal(forward(model, x), base)
    with applied(model, [(adapter, 1.0)]):
        assert not torch.allclose(forward(model, x), base, atol=1e-3)


def test_two_adapters_then_none_is_the_base_and_weights_untouched() -> None:
    model = tiny_model()
    x = inputs(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = forward(model, x)
    a, b = random_adapter(model, "a", seed=1), random_adapter(model, "b", seed=2)
    with applied(model, [(a, 0.7), (b, -0.4)]):
        both = forward(model, x)
    with applied(model, [(a, 0.7)]):
        only_a = forward(model, x)
    assert torch.equal(forward(model, x), base)
    assert not torch.allclose(both, only_a, atol=1e-4)
    with applied(model, [(a, 0.7), (b, -0.4)]):  # the same job again gives the same output
        assert torch.equal(forward(model, x), both)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(m._forward_hooks for m in model.modules())


def test_applied_equals_merged_weights() -> None:
    """scale * alpha / rank * B @ A added to W gives the same layer (the LoRA maths, not just 'a change')."""
    model, merged = tiny_model(), tiny_model()
    x = inputs(model)
    adapter = random_adapter(model, alpha=2.0, rank=4)
    scale = 0.6
    with torch.no_grad():
        for i, block in enumerate(merged.blocks):
            for ours, theirs in (
                ("to_q", "to_q"),
                ("to_k", "to_k"),
                ("to_v", "to_v"),
                ("to_out", "to_out.0"),
            ):
                key = f"transformer.transformer_blocks.{i}.attn1.{theirs}"
                a, b = adapter.state[f"{key}.lora_A.weight"], adapter.state[f"{key}.lora_B.weight"]
                getattr(block.attn, ours).weight.add_(scale * 2.0 / 4 * b @ a)
    with applied(model, [(adapter, scale)]):
        got = forward(model, x)
    torch.testing.assert_close(got, forward(merged, x), rtol=1e-4, atol=1e-5)


def test_bad_scale_and_nesting_are_refused() -> None:
    model = tiny_model()
    adapter = random_adapter(model)
    with pytest.raises(AdapterError, match="scale"):
        with applied(model, [(adapter, math.nan)]):
            pass
    with applied(model, [(adapter, 1.0)]):
        with pytest.raises(RuntimeError, match="nest"):
            with applied(model, [(adapter, 1.0)]):
                pass
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_files_round_trip(tmp_path, dtype) -> None:
    state = {k: v.to(dtype) for k, v in random_lora_state(tiny_model(), rank=2).items()}
    back = load_adapter(save_adapter(state, tmp_path / "h", AdapterConfig(rank=2, alpha=2)).path)
    assert all(back.state[k].dtype == dtype and torch.equal(back.state[k], v) for k, v in state.items())
