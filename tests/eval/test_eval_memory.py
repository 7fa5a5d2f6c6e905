"""The memory metric on rendered ground truth: perfect at 1, a random-colour generator at chance, no hat at 0;
and through the shipped model's VAE the hat survives (the task is learnable by construction)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ttt_engine.eval.compare import CompareConfig, ToonWorldReference, eval_cases, run_model, summarise
from ttt_engine.eval.memory import CHANCE, HatConfig, mean_and_se, memory_score
from ttt_engine.toonworld.memory import sample_memory_episode, states_hat
from ttt_engine.toonworld.render import render_episode, render_segment
from ttt_engine.toonworld.world import HAT_COLOURS

FPS, SIZE, SEGMENTS = 8, 64, 6
VAE_CEILING = 0.7  # the memory metric on VAE round-tripped renders reaches 0.750 here (chance 1/3)
EPISODES = [sample_memory_episode(2_000_000 + i, SEGMENTS) for i in range(16)]


def _random_hats_video(episode, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """The episode with the hero's hat re-drawn at random in every segment (a generator without memory)."""
    ((hero, _),) = episode.hats
    parts, drawn = [], []
    for i, seg in enumerate(episode.segments):
        colour = str(rng.choice(list(HAT_COLOURS)))
        parts.append(render_segment(seg, SIZE, SIZE, FPS, i * 3 * FPS, hats={hero: colour}))
        if i > 0 and hero in seg.cast:
            drawn.append(colour)
    return np.concatenate(parts), drawn


def test_chance_is_one_in_three() -> None:
    assert len(HAT_COLOURS) == 3 and CHANCE == pytest.approx(1 / 3)


def test_rendered_ground_truth_scores_one() -> None:
    for episode in EPISODES:
        score = memory_score(render_episode(episode, SIZE, SIZE, FPS), episode, FPS)
        assert (score.text_match, score.self_match, score.hat_seen) == (1.0, 1.0, 1.0), episode.seed
        assert score.segments >= 1


def test_a_random_colour_generator_scores_chance() -> None:
    rng = np.random.default_rng(0)
    per_video, matches = [], []
    for episode in EPISODES:
        frames, drawn = _random_hats_video(episode, rng)
        score = memory_score(frames, episode, FPS)
        ((hero, stated),) = episode.hats
        # the detector reads every drawn colour back, so the score is the share of lucky draws ...
        assert [c for c, s in zip(score.seen[hero][1:], episode.segments[1:]) if hero in s.cast] == drawn
        assert score.text_match == pytest.approx(np.mean([c == stated for c in drawn]))
        per_video.append(score.text_match)
        matches += [c == stated for c in drawn]
    # ... which sits at chance: within 3 standard errors of 1/3 over all the scored segments
    mean, se = mean_and_se([float(m) for m in matches])
    assert abs(mean - CHANCE) < 3 * se, (mean, se)
    assert 0.1 < mean_and_se(per_video)[0] < 0.6


def test_no_hat_scores_zero_and_a_kept_wrong_colour_keeps_self_match() -> None:
    episode = EPISODES[0]
    ((hero, stated),) = episode.hats
    bare = memory_score(render_episode(replace(episode, hats=()), SIZE, SIZE, FPS), episode, FPS)
    assert (bare.text_match, bare.self_match, bare.hat_seen) == (0.0, 0.0, 0.0)
    other = next(c for c in HAT_COLOURS if c != stated)
    wrong = memory_score(
        render_episode(replace(episode, hats=((hero, other),)), SIZE, SIZE, FPS), episode, FPS
    )
    assert (wrong.text_match, wrong.self_match, wrong.hat_seen) == (0.0, 1.0, 1.0)


def test_bad_inputs_name_the_value() -> None:
    episode = EPISODES[0]
    frames = render_episode(episode, SIZE, SIZE, FPS)
    with pytest.raises(ValueError, match="no hats"):
        memory_score(frames, replace(episode, hats=()), FPS)
    with pytest.raises(ValueError, match="frames: 10 frames"):
        memory_score(frames[:10], episode, FPS)
    with pytest.raises(ValueError, match="HatConfig.min_pixels"):
        HatConfig(min_pixels=0)


def test_compare_scores_the_memory_variant_with_its_standard_error() -> None:
    cases = eval_cases(4, 3, variant="memory")
    assert all(c.episode().hats and states_hat(c.storyboard.segments[0].text) for c in cases)
    config = CompareConfig(segments=4, storyboards=3, variant="memory")
    summary = summarise(run_model(ToonWorldReference(FPS, (SIZE, SIZE)), cases, config), tail=2)
    assert summary["memory_text_match"] == 1.0 and summary["memory_text_match_se"] == 0.0
    assert summary["memory_chance"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="segments: the memory variant needs >= 3"):
        CompareConfig(segments=2, variant="memory")
    with pytest.raises(ValueError, match="variant.*'hat'"):
        CompareConfig(variant="hat")


@pytest.mark.slow  # 8 episodes of 4 segments through the shipped VAE: about 90 s on 2 shared cores
def test_the_hat_survives_the_shipped_vae_round_trip() -> None:
    """The ceiling a perfect DiT reaches through the shipped model's VAE: the renders round-tripped keep the
    stated hat (measured 0.750 on these 8 held-out storyboards, every cat's and dog's hat kept, the mouse's
    the misses; the first, small six-colour hat scored 0.188 on 16, at chance)."""
    from ttt_engine.default_model import default_model_dir
    from ttt_engine.pipeline.video_pipeline import VideoPipeline

    torch.set_num_threads(1)
    pipe = VideoPipeline.from_folder(default_model_dir())
    trip = ToonWorldReference(FPS, (SIZE, SIZE), pipe)
    cases = eval_cases(4, 8, variant="memory")
    assert len({c.episode().hats[0][1] for c in cases}) == len(HAT_COLOURS)  # every colour is tried
    scores = [memory_score(trip.frames(c), c.episode(), FPS) for c in cases]
    mean, _ = mean_and_se([s.text_match for s in scores])
    assert mean >= VAE_CEILING, [s.seen for s in scores]
    big = [s.text_match for s, c in zip(scores, cases) if c.episode().hats[0][0] != "mouse"]
    assert big and min(big) == 1.0, [s.seen for s in scores]
