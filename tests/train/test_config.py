"""TrainConfig: the shipped configs load, round trips hold, and every bad config names its key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from ttt_engine.train.checkpoint import new_model_parts
from ttt_engine.train.config import ConfigError, ModelConfig, TrainConfig
from ttt_engine.train.vae_train import build_vae

from .conftest import tiny_config_dict

ROOT = Path(__file__).resolve().parents[2]


def _base(**stage: Any) -> dict[str, Any]:
    s = {"name": "3s", "steps": 10, **stage}
    return {"run_dir": "runs/r", "dataset": {"path": "data/d"}, "stages": [s]}


@pytest.mark.parametrize("name", ["matte_weight", "motion_weight", "contrast_weight"])
def test_dit_loss_weights_are_non_negative_and_not_for_vae_stages(
    tmp_path: Path, toon_dir: Path, name: str
) -> None:
    stage = {"name": "3s", "type": "dit", "segments": 1, "steps": 1, name: -0.5}
    with pytest.raises(ConfigError, match=rf"stages\[0\].{name}: expected a number >= 0"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path, toon_dir, [stage]))
    vae_stage = {"name": "vae", "type": "vae", "steps": 1, name: 1.0}
    with pytest.raises(ConfigError, match=f"{name}: not used by a 'vae' stage"):
        TrainConfig.from_dict(tiny_config_dict(tmp_path, toon_dir, [vae_stage]))


SHIPPED = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str) -> None:
    config = TrainConfig.load(ROOT / "configs" / name)
    assert config.stages and {s.type for s in config.stages} <= {"vae", "dit"}


def test_default_model_recipe_follows_the_paper_curriculum() -> None:
    base = TrainConfig.load(ROOT / "configs" / "default" / "base.yaml")
    assert [s.type for s in base.stages] == ["vae", "dit"] and base.model.transformer["ttt_inner"] == "none"
    more = TrainConfig.load(ROOT / "configs" / "default" / "base_more.yaml")
    assert more.model.init == str(base.model_dir) and [s.trainable for s in more.stages] == ["all"]
    assert more.latent_cache == str(Path(base.run_dir) / "cache" / "latents") and more.stages[0].ema_decay > 0
    shift = TrainConfig.load(ROOT / "configs" / "default" / "base_shift.yaml")
    assert shift.model.init == str(more.model_dir) and shift.stages[0].timestep_shift > 1
    # base_minilm starts from swap-text-encoder's copy of the shifted base, the command in its header
    minilm_path = ROOT / "configs" / "default" / "base_minilm.yaml"
    minilm = TrainConfig.load(minilm_path)
    swap = f"ttt-studio swap-text-encoder {shift.model_dir} {minilm.model.init}"
    assert swap in minilm_path.read_text() and minilm.stages[0].trainable == "all"
    motion = TrainConfig.load(ROOT / "configs" / "default" / "base_motion.yaml")
    assert motion.model.init == str(minilm.model_dir) and motion.stages[0].motion_weight > 0
    contrast = TrainConfig.load(ROOT / "configs" / "default" / "base_contrast.yaml")
    assert contrast.model.init == str(motion.model_dir)
    assert contrast.stages[0].contrast_swaps == ("left=right",) and contrast.stages[0].contrast_weight > 0
    c = TrainConfig.load(ROOT / "configs" / "default" / "ttt_mlp.yaml")
    assert c.model.init == str(contrast.model_dir) and c.model.transformer["ttt_inner"] == "mlp"
    dit = c.stages
    assert dit[0].segments == 1 and dit[0].trainable == "all"
    assert dit[0].ttt_lr == pytest.approx(10 * dit[0].lr) and dit[0].lr_schedule_ttt == "cosine"
    assert all(s.trainable == "ttt_attn" for s in dit[1:])
    assert [s.segments for s in dit] == sorted(s.segments for s in dit) and dit[-1].segments >= 3
    assert all(s.betas == (0.9, 0.95) and s.weight_decay == 1e-4 and s.text_dropout == 0.1 for s in dit)
    # parts 8 and 9: part 7's model stripped of its TTT layers (the command in base_mix's header), a base
    # stage on clips that stage chases, then part 7's fine-tune unchanged but for its init and data
    mix_path = ROOT / "configs" / "default" / "base_mix.yaml"
    mix = TrainConfig.load(mix_path)
    assert f"ttt-studio strip-ttt {c.model_dir} {mix.model.init}" in mix_path.read_text()
    assert mix.model.transformer == {} and [s.trainable for s in mix.stages] == ["all"]
    assert mix.dataset.generate.chase_setup_prob > 0 and mix.dataset.path != c.dataset.path
    final = TrainConfig.load(ROOT / "configs" / "default" / "ttt_mlp_mix.yaml")
    assert final.model.init == str(mix.model_dir) and final.dataset.path == mix.dataset.path
    assert final.stages == c.stages and final.model.transformer == c.model.transformer


@pytest.mark.parametrize(("name", "inner"), [("ttt_linear.yaml", "linear"), ("local_attn.yaml", None)])
def test_ablation_configs_change_only_the_inner_model(name: str, inner: str | None) -> None:
    """A controlled comparison: same base, data, stages and seeds as the TTT-MLP arm (the fine-tune that made
    the default model shipped before base_more.yaml; the later recipes' fine-tunes are the same but for
    their base, their weight average and, in the current one, the timestep shift, motion loss and contrast
    hinge)."""
    default = TrainConfig.load(ROOT / "configs" / "ablation" / "ttt_mlp.yaml")
    hashed = TrainConfig.load(ROOT / "configs" / "experiments" / "ttt_mlp_hash.yaml")
    assert [dataclasses.replace(s, ema_decay=0.0) for s in hashed.stages] == list(default.stages)
    assert hashed.model.transformer == default.model.transformer
    current = TrainConfig.load(ROOT / "configs" / "default" / "ttt_mlp.yaml")
    plain = {"timestep_shift": 1.0, "motion_weight": 0.0, "contrast_swaps": (), "contrast_weight": 0.0}
    assert [dataclasses.replace(s, **plain) for s in current.stages] == list(hashed.stages)
    assert current.model.transformer == default.model.transformer
    other = TrainConfig.load(ROOT / "configs" / "ablation" / name)
    assert other.stages == default.stages and other.dataset == default.dataset and other.seed == default.seed
    assert other.model.init == default.model.init and other.latent_cache == default.latent_cache
    assert other.run_dir != default.run_dir
    if inner is None:
        assert other.model.transformer == {}  # the base as it is: no TTT
    else:
        assert other.model.transformer == {**default.model.transformer, "ttt_inner": inner}


@pytest.mark.parametrize(
    ("name", "transformer"),
    [
        ("local_attn.yaml", {}),
        ("ttt_linear.yaml", {"ttt_inner": "linear"}),
        ("ttt_linear_open.yaml", {"ttt_inner": "linear", "ttt_gate_init": 1.0}),
    ],
)
def test_memory_configs_change_only_the_inner_model(name: str, transformer: dict) -> None:
    """Issue #30's arms share the TTT-MLP arm's base, memory-variant data, stage and seed; only the TTT
    options differ (the inner model; the open-gate follow-up also the gates' initial value)."""
    mlp = TrainConfig.load(ROOT / "configs" / "memory" / "ttt_mlp.yaml")
    assert mlp.dataset.generate.variant == "memory" and mlp.dataset.generate.segments_range == (3, 3)
    assert [s.segments for s in mlp.stages] == [3]  # a window is a whole clip: statement, gap, recall
    other = TrainConfig.load(ROOT / "configs" / "memory" / name)
    assert other.stages == mlp.stages and other.dataset == mlp.dataset and other.seed == mlp.seed
    assert other.model.init == mlp.model.init and other.latent_cache == mlp.latent_cache
    assert other.run_dir != mlp.run_dir
    if not transformer:
        assert other.model.transformer == {}
    else:
        assert other.model.transformer == {**mlp.model.transformer, **transformer}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    stages = [
        {"name": "vae", "type": "vae", "steps": 3, "frames": 17, "kl_weight": 1e-5},
        {"name": "3s", "steps": 5, "lr_ttt": 1e-4, "betas": [0.8, 0.9]},
    ]
    config = TrainConfig.from_dict(tiny_config_dict(tmp_path / "r", tmp_path / "d", stages))
    assert TrainConfig.load(config.save(tmp_path / f"c{suffix}")) == config
    assert config.stages[1].betas == (0.8, 0.9)


def test_yaml_reads_exponent_floats(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "run_dir: r\ndataset: {path: d}\nstages:\n  - {name: a, steps: 2, lr: 1e-4, lr_ttt: 2E-3}\n"
    )
    stage = TrainConfig.load(path).stages[0]
    assert stage.lr == 1e-4 and stage.lr_ttt == 2e-3


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({**_base(), "learning_rate": 1}, "learning_rate"),
        (_base(lr_tt=1e-4), "stages[0].lr_tt"),
        ({**_base(), "dataset": {"path": "d", "shuffle": True}}, "dataset.shuffle"),
        (_base(steps="10"), "stages[0].steps"),
        (_base(steps=True), "stages[0].steps"),
        (_base(lr="fast"), "stages[0].lr"),
        (_base(betas=[0.9]), "stages[0].betas"),
        (_base(train_text_encoder="yes"), "stages[0].train_text_encoder"),
        ({**_base(), "seed": 1.5}, "seed"),
        ({**_base(), "stages": "3s"}, "stages"),
        ({**_base(), "model": {"transformer": ["tiny"]}}, "model.transformer"),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ": "):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (_base(steps=0), "stages[0].steps"),
        (_base(lr=-1.0), "stages[0].lr"),
        (_base(lr_ttt=0.0), "stages[0].lr_ttt"),
        (_base(trainable="attention"), "stages[0].trainable"),
        (_base(type="gan"), "stages[0].type"),
        (_base(text_dropout=1.0), "stages[0].text_dropout"),
        (_base(betas=[0.9, 1.5]), "stages[0].betas"),
        (_base(grad_clip=-0.1), "stages[0].grad_clip"),
        (_base(lr_schedule="linear"), "stages[0].lr_schedule"),
        (_base(trainable="ttt_attn", train_text_encoder=True), "stages[0].train_text_encoder"),
        (_base(type="vae", segments=2), "stages[0].segments"),
        (_base(type="dit", kl_weight=0.1), "stages[0].kl_weight"),
        ({**_base(), "device": "tpu"}, "device"),
        ({**_base(), "precision": "fp8"}, "precision"),
        ({**_base(), "log_every": 0}, "log_every"),
        ({**_base(), "model": {"transformer": {"preset": "huge"}}}, "model.transformer.preset"),
        ({**_base(), "model": {"init": "m", "transformer": {"preset": "tiny"}}}, "model.transformer.preset"),
        ({**_base(), "model": {"init": "m", "vae": {"latent_channels": 4}}}, "model.vae"),
        (
            {**_base(), "dataset": {"path": "d", "generate": {"segments_range": [3, 1]}}},
            "dataset.generate.segments_range",
        ),
        (
            {**_base(), "dataset": {"path": "d", "generate": {"chase_setup_prob": 1.5}}},
            "dataset.generate.chase_setup_prob",
        ),
        ({**_base(), "stages": []}, "stages"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ": "):
        TrainConfig.from_dict(data)


def test_missing_required_and_duplicate_names() -> None:
    with pytest.raises(ConfigError, match=r"^stages: missing required key"):
        TrainConfig.from_dict({"run_dir": "r", "dataset": {"path": "d"}})
    with pytest.raises(ConfigError, match=r"^stages\[0\]\.steps: missing required key"):
        TrainConfig.from_dict({"run_dir": "r", "dataset": {"path": "d"}, "stages": [{"name": "a"}]})
    dup = {
        "run_dir": "r",
        "dataset": {"path": "d"},
        "stages": [{"name": "a", "steps": 1}, {"name": "a", "steps": 1}],
    }
    with pytest.raises(ConfigError, match=r"^stages: expected unique stage names"):
        TrainConfig.from_dict(dup)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "c.toml"
    bad.write_text("x = 1")
    with pytest.raises(ConfigError, match="suffix"):
        TrainConfig.load(bad)
    broken = tmp_path / "c.yaml"
    broken.write_text("stages: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.load(broken)
    wrong = tmp_path / "w.yaml"
    wrong.write_text("run_dir: r\ndataset: {path: d}\nstages: [{name: a, steps: -3}]\n")
    with pytest.raises(ConfigError, match=r"w\.yaml: stages\[0\]\.steps: expected an integer >= 1, got -3"):
        TrainConfig.load(wrong)


def test_model_part_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^model\.transformer: .*num_layerz"):
        new_model_parts(ModelConfig(transformer={"num_layerz": 2}), seed=0)
    with pytest.raises(ConfigError, match=r"^model\.transformer: .*head_dim"):
        new_model_parts(ModelConfig(transformer={"head_dim": 30, "num_heads": 2, "dim": 60}), seed=0)
    with pytest.raises(ConfigError, match=r"^model\.text_encoder: "):
        new_model_parts(ModelConfig(text_encoder={"dim": 16}), seed=0)
    with pytest.raises(ConfigError, match=r"^model\.vae\.latent_channels: "):
        new_model_parts(ModelConfig(vae={"latent_channels": 8}), seed=0)
    with pytest.raises(ConfigError, match=r"^model\.vae\.block_channels: unknown"):
        build_vae({"block_channels": [4]})
