"""Which parameters train, at which lr, with which weight decay: on the real VideoDiT's names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttt_engine.models import VideoDiT, VideoDiTConfig
from ttt_engine.pipeline.text import HashTextConfig, HashTextEncoder
from ttt_engine.train.param_groups import (
    build_param_groups,
    group_names,
    is_attention_qkvo,
    no_decay_names,
    set_trainable,
)


@pytest.fixture(scope="module")
def dit() -> VideoDiT:
    return VideoDiT(VideoDiTConfig.tiny())


def test_no_decay_on_biases_norms_inner_biases_and_gates(dit: VideoDiT) -> None:
    nd = no_decay_names(dit)
    names = dict(dit.named_parameters())
    for n in names:
        leaf = n.rsplit(".", 1)[-1]
        if leaf == "bias" or leaf in ("b1", "b2", "lr_bias") or leaf.startswith("gate_"):
            assert n in nd, n
    for n in (
        "blocks.0.ttt.layer.b1",
        "blocks.0.ttt.layer.b2",
        "blocks.0.ttt.layer.ttt_norm_weight",
        "blocks.0.ttt.layer.ttt_norm_bias",
        "blocks.0.ttt.layer.post_norm.weight",
        "blocks.0.attn.q_norm.weight",
        "blocks.0.norm1.norm.weight",
        "norm_final.weight",
        "blocks.1.ttt.gate_bwd_video",
    ):
        assert n in names and n in nd, n
    # matrices decay, including the adaLN linear that lives under a module named norm1
    for n in (
        "blocks.0.ttt.layer.w1",
        "blocks.0.ttt.layer.w2",
        "blocks.0.ttt.layer.wq.weight",
        "blocks.0.ttt.layer.lr_weight",
        "blocks.0.attn.to_q.weight",
        "blocks.0.norm1.linear.weight",
        "blocks.0.mlp.fc1.weight",
        "patch_embed.weight",
        "proj_out.weight",
    ):
        assert n in names and n not in nd, n


def test_ttt_attn_trains_exactly_ttt_gates_and_attention_qkvo(dit: VideoDiT) -> None:
    trained = set(set_trainable(dit, "ttt_attn"))
    try:
        for name, p in dit.named_parameters():
            expected = ".ttt." in name or any(
                f".attn.{x}." in name for x in ("to_q", "to_k", "to_v", "to_out")
            )
            assert (name in trained) == expected == p.requires_grad, name
        assert "blocks.0.attn.q_norm.weight" not in trained and "blocks.0.mlp.fc1.weight" not in trained
        assert is_attention_qkvo("blocks.3.attn.to_out.bias") and not is_attention_qkvo(
            "blocks.3.attn.k_norm.bias"
        )
    finally:
        set_trainable(dit, "all")
    assert all(p.requires_grad for p in dit.parameters())


def test_groups_split_lr_and_decay(dit: VideoDiT) -> None:
    text = HashTextEncoder(HashTextConfig(dim=32, max_length=8, vocab_size=64, num_layers=1))
    groups = build_param_groups(
        {"transformer": dit, "text_encoder": text}, lr=1e-5, lr_ttt=1e-4, weight_decay=1e-4
    )
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["ttt/decay", "ttt/no_decay", "other/decay", "other/no_decay"]
    assert by_name["ttt/decay"]["lr"] == 1e-4 and by_name["other/decay"]["lr"] == 1e-5
    assert by_name["ttt/no_decay"]["weight_decay"] == 0.0 and by_name["other/decay"]["weight_decay"] == 1e-4
    names = group_names(groups)
    assert "transformer.blocks.0.ttt.layer.w1" in names["ttt/decay"]
    assert "transformer.blocks.0.ttt.layer.b1" in names["ttt/no_decay"]
    assert "transformer.blocks.0.ttt.gate_fwd_text" in names["ttt/no_decay"]
    assert "text_encoder.encoder.layers.0.self_attn.in_proj_weight" in names["other/decay"]
    assert "text_encoder.encoder.layers.0.norm1.weight" in names["other/no_decay"]
    assert "text_encoder.norm.bias" in names["other/no_decay"]
    every = [n for ns in names.values() for n in ns]
    total = len(list(dit.parameters())) + len(list(text.parameters()))
    assert len(every) == len(set(every)) == total
    # an AdamW over the groups steps without error and keeps the decay where it was asked
    opt = torch.optim.AdamW(groups, lr=1e-5)
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in groups]


def test_frozen_parameters_are_left_out(dit: VideoDiT) -> None:
    set_trainable(dit, "ttt_attn")
    try:
        groups = build_param_groups({"transformer": dit}, lr=1e-5, lr_ttt=1e-5, weight_decay=1e-4)
        names = [n for g in groups for n in g["param_names"]]
        assert names and all(".ttt." in n or ".attn.to_" in n for n in names)
    finally:
        set_trainable(dit, "all")


def test_nothing_to_train_is_an_error() -> None:
    lin = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_param_groups({"other": lin}, lr=1e-3, lr_ttt=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="selects no parameter"):
        set_trainable(nn.Linear(2, 2), "ttt_attn")
    with pytest.raises(ValueError, match="trainable"):
        set_trainable(nn.Linear(2, 2), "most")
