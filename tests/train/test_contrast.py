"""contrast_swaps / contrast_weight: a hinge that makes the swapped words of a prompt cost something."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ttt_engine.pipeline.prompt_edit import PromptEdit
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.train.config import ConfigError, TrainConfig
from ttt_engine.train.diffusion_loss import VelocityLoss
from ttt_engine.train.trainer import ContrastTerm, DiTObjective, Trainer

from .conftest import tiny_config, tiny_config_dict

TEXTS = ["Tom runs left.", "Jerry jumps.", "", "Spike runs right, then left."]
LEFT_RIGHT = PromptEdit.parse("left=right")


def tiny_objective(contrast: ContrastTerm | None, seed: int = 0) -> DiTObjective:
    pipe = VideoPipeline.tiny_random(seed, first_segment_frames=7, segment_frames=6, ttt_backend="reference")
    return DiTObjective(pipe.transformer, pipe.text_encoder, train_text=False, contrast=contrast)


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy, timesteps, target) for n one-segment samples of the tiny DiT (7 latent frames, 4 x 8 x 8)."""
    gen = torch.Generator().manual_seed(seed)
    noisy = torch.randn(n, 7, 4, 8, 8, generator=gen)
    target = torch.randn(n, 7, 4, 8, 8, generator=gen)
    return noisy, torch.randint(0, 1000, (n,), generator=gen), target


def test_swapped_rows_are_those_whose_prompts_change() -> None:
    term = ContrastTerm((LEFT_RIGHT,), weight=1.0, margin=0.01)
    rows, swapped = term.swapped(TEXTS, 4)
    assert rows == [0, 3]
    assert swapped == ["Tom runs right.", "Spike runs left, then right."]
    # two segments per row: a row counts when any of its prompts changes, and all of them are swapped
    rows, swapped = term.swapped(["Jerry jumps.", "Tom runs left.", "", "Jerry jumps."], 2)
    assert rows == [0] and swapped == ["Jerry jumps.", "Tom runs right."]
    # one edit of two swaps: both at once
    both = ContrastTerm((PromptEdit.parse("left=right cat=dog"),), weight=1.0, margin=0.01)
    assert both.swapped(["The cat runs left.", "Jerry jumps."], 2) == ([0], ["The dog runs right."])
    # two edits: a row comes back once per edit that changes it, edit by edit
    two = ContrastTerm((LEFT_RIGHT, PromptEdit.parse("cat=dog")), weight=1.0, margin=0.01)
    assert two.swapped(["The cat runs left.", "Jerry jumps.", "A dog."], 3) == (
        [0, 0, 2],
        ["The cat runs right.", "The dog runs left.", "A cat."],
    )


def test_per_sample_loss_is_each_samples_own_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 2, 4, 5, generator=gen), torch.randn(3, 2, 4, 5, generator=gen)
    weight = torch.rand(3, 2, 1, 5, generator=gen) + 0.1
    per = VelocityLoss.per_sample_loss(pred, target)
    per_w = VelocityLoss.per_sample_loss(pred, target, weight)
    for i in range(3):
        assert float(per[i]) == pytest.approx(float(VelocityLoss.loss(pred[i : i + 1], target[i : i + 1])))
        assert float(per_w[i]) == pytest.approx(
            float(VelocityLoss.loss(pred[i : i + 1], target[i : i + 1], weight[i : i + 1]))
        )
    with pytest.raises(ValueError, match="prediction: expected shape"):
        VelocityLoss.per_sample_loss(pred[:, :1], target)


def test_a_text_blind_model_pays_the_margin_for_each_edited_row() -> None:
    edits = (LEFT_RIGHT, PromptEdit.parse("Tom=Jerry"))
    objective = tiny_objective(ContrastTerm(edits, weight=2.0, margin=0.25))
    encoder = objective.__dict__["frozen_text_encoder"]
    fixed = encoder.encode(["one text for every prompt"])
    encoder.encode = lambda texts: (fixed[0].expand(len(texts), -1, -1), fixed[1].expand(len(texts), -1))
    noisy, t, target = batch(4)
    with torch.no_grad():
        with_hinge = float(objective(noisy, t, target, TEXTS))
        objective.contrast = None
        plain = float(objective(noisy, t, target, TEXTS))
    # the edited prompts change nothing, so each of the 4 (row, edit) pairs pays the whole margin: rows
    # 0 and 3 for left=right, rows 0 and 1 for Tom=Jerry (batch 4)
    assert with_hinge - plain == pytest.approx(2.0 * 0.25 * 4 / 4, rel=1e-5)


def test_the_hinge_is_the_margin_minus_the_swapped_prompts_extra_loss() -> None:
    term = ContrastTerm((LEFT_RIGHT,), weight=1.0, margin=1.0)
    objective = tiny_objective(term)
    noisy, t, target = batch(4)
    with torch.no_grad():
        total = float(objective(noisy, t, target, TEXTS))
        objective.contrast = None
        plain = float(objective(noisy, t, target, TEXTS))
        true = VelocityLoss.per_sample_loss(
            objective.transformer(noisy, *objective.encode(TEXTS, 4), t), target
        )
        swapped_texts = [TEXTS[0].replace("left", "right"), "Spike runs left, then right."]
        rows = [0, 3]
        other = VelocityLoss.per_sample_loss(
            objective.transformer(noisy[rows], *objective.encode(swapped_texts, 2), t[rows]), target[rows]
        )
    expected = float(torch.relu(1.0 - (other - true[rows])).sum() / 4)
    assert expected > 0
    assert total - plain == pytest.approx(expected, rel=1e-4)


def test_minimising_the_hinge_makes_the_swapped_words_cost_more() -> None:
    torch.manual_seed(0)
    objective = tiny_objective(ContrastTerm((LEFT_RIGHT,), weight=1.0, margin=1.0), seed=3)
    texts = ["Tom runs left.", "Tom runs right."]
    noisy, t, target = batch(2, seed=4)

    def gap() -> float:
        with torch.no_grad():
            true = VelocityLoss.per_sample_loss(
                objective.transformer(noisy, *objective.encode(texts, 2), t), target
            )
            swapped = list(reversed(texts))
            other = VelocityLoss.per_sample_loss(
                objective.transformer(noisy, *objective.encode(swapped, 2), t), target
            )
        return float((other - true).mean())

    before = gap()
    optim = torch.optim.Adam(objective.transformer.parameters(), lr=1e-3)
    for _ in range(20):
        optim.zero_grad()
        objective.contrast = ContrastTerm((LEFT_RIGHT,), weight=1.0, margin=1.0)
        hinge = objective(noisy, t, target, texts)
        objective.contrast = None
        hinge = hinge - objective(noisy, t, target, texts)  # the hinge alone
        hinge.backward()
        optim.step()
    assert gap() > before + 0.05


def test_contrast_keys_are_validated(tmp_path: Path, toon_dir: Path) -> None:
    def stage(**keys: object) -> dict:
        return {"name": "3s", "type": "dit", "segments": 1, "steps": 1, **keys}

    for keys, message in [
        ({"contrast_weight": 0.5}, r"stages\[0\]: contrast_swaps \[\] with contrast_weight 0.5: set both"),
        ({"contrast_swaps": ["left=right"]}, "set both"),
        ({"contrast_swaps": ["left"], "contrast_weight": 1.0}, r"contrast_swaps\[0\]: word swap 'left'"),
        (
            {"contrast_swaps": [" "], "contrast_weight": 1.0},
            r"contrast_swaps\[0\]: prompt edit ' ': expected",
        ),
        (
            {"contrast_swaps": ["left=right", "cat=dog dog=mouse"], "contrast_weight": 1.0},
            r"contrast_swaps\[1\]: prompt edit 'cat=dog dog=mouse': 'dog' is in two swaps",
        ),
        (
            {"contrast_swaps": ["left=right"], "contrast_weight": -1.0},
            "contrast_weight: expected a number >= 0",
        ),
        (
            {"contrast_swaps": ["left=right"], "contrast_weight": 1.0, "contrast_margin": -0.1},
            "contrast_margin: expected a number >= 0",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(tiny_config_dict(tmp_path, toon_dir, [stage(**keys)]))


def test_the_trainer_adds_the_hinge(tmp_path: Path, toon_dir: Path) -> None:
    def run(name: str, **keys: object) -> Trainer:
        stage = {"name": "3s", "type": "dit", "segments": 1, "steps": 1, "batch_size": 3, "text_dropout": 0.0}
        trainer = Trainer(tiny_config(tmp_path / name, toon_dir, [{**stage, **keys}]), progress=False)
        trainer.run()
        return trainer

    plain = run("plain")
    # every toon-world prompt names its set: swapping two set names of the dataset changes some prompts
    hinged = run(
        "hinged", contrast_swaps=["kitchen=garden", "street=room"], contrast_weight=1.0, contrast_margin=5.0
    )
    # same items, noise and timesteps at step 1; the hinge is about 5 x (swapped rows / 3) > 0
    assert hinged.losses[0] > plain.losses[0] + 1.0
    logged = [json.loads(line) for line in (tmp_path / "hinged" / "train_log.jsonl").read_text().splitlines()]
    assert logged[-1]["contrast_hinge"] > 0 and "contrast_gap" in logged[-1]
    assert "contrast_hinge" not in (tmp_path / "plain" / "train_log.jsonl").read_text()
    saved = TrainConfig.load(tmp_path / "hinged" / "train_config.yaml")
    assert saved.stages[0].contrast_swaps == ("kitchen=garden", "street=room")
