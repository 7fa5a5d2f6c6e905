"""Per-segment metrics: ground truth scores high, noise and wrong storyboards score low."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttt_engine.eval import evaluate, facts_from_episode, format_table
from ttt_engine.eval.detectors import DetectorConfig, Motion
from ttt_engine.eval.metrics import FactResult, motion_fact
from ttt_engine.storyboard import Storyboard
from ttt_engine.toonworld import episode_storyboard, render_background, render_episode, sample_episode

FPS = 8


def _episodes(base: int, n: int):
    """n episodes of 2-4 segments, rendered at 64x64 8 fps."""
    out = []
    for i in range(n):
        ep = sample_episode(base + i, 2 + i % 3)
        out.append((ep, render_episode(ep, 64, 64, FPS)))
    return out


@pytest.fixture(scope="module")
def ground_truth():
    return _episodes(100, 10)


def test_ground_truth_scores_high(ground_truth) -> None:
    reports = [evaluate(frames, episode_storyboard(ep), FPS) for ep, frames in ground_truth]
    adherence = [r.adherence for r in reports]
    assert np.mean(adherence) >= 0.9, adherence
    assert min(adherence) >= 0.75, adherence
    identity = [r.identity_mean for r in reports if r.identity_mean is not None]
    assert len(identity) >= 8 and np.mean(identity) >= 0.9, identity
    assert np.mean([r.framing_accuracy for r in reports]) >= 0.9
    for r in reports:
        assert all(0.0 <= s.smoothness <= 1.0 for s in r.segments)


def test_a_motion_seen_is_reported_as_the_one_asked() -> None:
    """A runner that leaves the frame satisfies "right" and "hide" at once: the report names the asked one."""
    cfg = DetectorConfig()
    leaving = Motion(visible=0.42, slope=0.5, rise=0.0, early=1.0, late=0.0)
    assert leaving.satisfies("right", cfg) and leaving.satisfies("hide", cfg) and leaving.label(cfg) == "hide"
    assert motion_fact("cat", "right", leaving, cfg) == FactResult("motion", "cat", "right", "right", True)
    assert motion_fact("cat", "hide", leaving, cfg) == FactResult("motion", "cat", "hide", "hide", True)
    assert motion_fact("cat", "left", leaving, cfg) == FactResult("motion", "cat", "left", "hide", False)


def test_noise_scores_low(ground_truth) -> None:
    rng = np.random.default_rng(0)
    reports = [
        evaluate(rng.random(frames.shape, dtype=np.float32), episode_storyboard(ep), FPS)
        for ep, frames in ground_truth
    ]
    assert np.mean([r.adherence for r in reports]) <= 0.3
    assert all(r.fact_accuracy("presence") == 0.0 and r.fact_accuracy("background") == 0.0 for r in reports)
    assert all(r.identity_mean is None for r in reports)
    assert max(r.smoothness for r in reports) == 0.0


def test_wrong_storyboard_scores_low(ground_truth) -> None:
    """Each clip scored against the storyboard of another episode with as many segments."""
    wrong, right = [], []
    for i, (ep, frames) in enumerate(ground_truth):
        other = sample_episode(5000 + i, len(ep))
        wrong.append(evaluate(frames, episode_storyboard(other), FPS).adherence)
        right.append(evaluate(frames, episode_storyboard(ep), FPS).adherence)
    extra = _episodes(200, 10)  # 20 pairs: the wrong score is a chance level, so average more of it
    for i, (ep, frames) in enumerate(extra):
        wrong.append(evaluate(frames, episode_storyboard(sample_episode(6000 + i, len(ep))), FPS).adherence)
    assert np.mean(wrong) <= 0.4, wrong
    assert np.mean(right) - np.mean(wrong) >= 0.5


def test_plan_facts_agree_with_text_facts(ground_truth) -> None:
    ep, frames = ground_truth[3]
    by_text = evaluate(frames, episode_storyboard(ep), FPS)
    by_plan = evaluate(frames, episode_storyboard(ep), FPS, facts=facts_from_episode(ep))
    assert by_text == by_plan


def test_identity_drops_when_a_character_changes_colour(ground_truth) -> None:
    ep, frames = next((e, f) for e, f in ground_truth if sum("cat" in s.cast for s in e.segments) >= 2)
    base = evaluate(frames, episode_storyboard(ep), FPS)
    assert base.identity["cat"] >= 0.95
    altered = frames.copy()
    last = (
        ep.segments[-1]
        if "cat" in ep.segments[-1].cast
        else next(s for s in ep.segments[::-1] if "cat" in s.cast)
    )
    sl = slice(last.index * 3 * FPS, (last.index + 1) * 3 * FPS)
    cat = np.all(np.abs(altered[sl] - np.array([0.45, 0.55, 0.75], np.float32)) < 1e-3, axis=-1)
    altered[sl][cat] += np.array([0.12, 0.0, 0.0], np.float32)  # still inside the detection tolerance
    changed = evaluate(altered, episode_storyboard(ep), FPS)
    assert changed.segments[last.index].visible["cat"] == base.segments[last.index].visible["cat"]
    assert changed.identity["cat"] < 0.8 * base.identity["cat"]


def test_smoothness_ignores_cuts_but_not_jitter() -> None:
    board = Storyboard.from_texts(
        ["The cat stands still in the kitchen.", "The dog jumps in the garden."], [1]
    )
    a, b = render_background("kitchen", "wide", 64, 64), render_background("garden", "close", 64, 64)
    two_shots = np.concatenate([np.repeat(a[None], 24, 0), np.repeat(b[None], 24, 0)])
    report = evaluate(two_shots, board, FPS)
    assert [s.smoothness for s in report.segments] == [1.0, 1.0]
    assert report.segments[1].cuts == 1
    flicker = np.stack([a if t % 2 else b for t in range(48)])
    assert evaluate(flicker, board, FPS).smoothness < 0.2


def test_input_errors(ground_truth) -> None:
    ep, frames = ground_truth[0]
    board = episode_storyboard(ep)
    with pytest.raises(ValueError, match=r"frames do not match the storyboard: \d segments x 3 s x 8 fps"):
        evaluate(frames[:-1], board, FPS)
    with pytest.raises(ValueError, match="frames do not match the storyboard"):
        evaluate(np.concatenate([frames[:2], frames]), board, FPS)  # two extra frames: not a leading frame
    # a generated video's leading frame (1 + 24k frames at 8 fps) is dropped before scoring
    lead = evaluate(np.concatenate([frames[:1], frames]), board, FPS)
    assert [s.adherence for s in lead.segments] == [
        s.adherence for s in evaluate(frames, board, FPS).segments
    ]
    with pytest.raises(ValueError, match=r"shape \[T, H, W, 3\]"):
        evaluate(frames[..., 0], board, FPS)
    bad = frames.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, board, FPS)
    with pytest.raises(ValueError, match="fps"):
        evaluate(frames, board, 0)
    with pytest.raises(ValueError, match="facts: 1 entries"):
        evaluate(frames, board, FPS, facts=facts_from_episode(ep)[:1])


def test_uint8_input_and_report_output(ground_truth) -> None:
    ep, frames = ground_truth[1]
    board = episode_storyboard(ep)
    as_float = evaluate(frames, board, FPS)
    as_uint8 = evaluate(np.rint(frames * 255).astype(np.uint8), board, FPS)
    assert as_uint8.adherence == as_float.adherence
    noise = evaluate(np.random.default_rng(1).random(frames.shape, dtype=np.float32), board, FPS)
    table = format_table({"default": as_float, "random-init": noise})
    assert "default" in table and "random-init" in table
    lines = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:] if line.strip()}
    assert float(lines["adherence"][0]) > float(lines["adherence"][1])
    assert len([line for line in table.splitlines() if line.startswith("seg")]) == 2 * len(board)
    blob = json.loads(json.dumps(as_float.to_dict()))
    assert blob["adherence"] == as_float.adherence and len(blob["segments"]) == len(board)
    with pytest.raises(ValueError, match="no reports"):
        format_table({})


def test_larger_frames_ground_truth() -> None:
    ep = sample_episode(42, 2)
    frames = render_episode(ep, 128, 128, 4)
    assert evaluate(frames, episode_storyboard(ep), 4).adherence >= 0.9
