"""The memory variant: a hat whose colour only the first segment's text states, and an off-screen gap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttt_engine.toonworld import ClipDataset, write_dataset
from ttt_engine.toonworld.memory import (
    HAT_WORDS,
    memory_storyboard,
    sample_memory_episode,
    states_hat,
)
from ttt_engine.toonworld.render import frames_per_segment, render_episode, sprite, sprite_pixel_height
from ttt_engine.toonworld.world import CHARACTERS, HAT_COLOURS, Episode, sample_episode

FPS, SIZE, SEGMENTS = 8, 64, 7
SEEDS = range(1_000_000, 1_000_024)  # the held-out storyboards' seeds


def _hat_pixels(frames: np.ndarray, colour: str) -> int:
    return int(np.all(np.abs(frames - np.array(HAT_COLOURS[colour], np.float32)) < 1e-3, axis=-1).sum())


@pytest.mark.parametrize("seed", SEEDS)
def test_only_the_first_segment_states_the_hat(seed: int) -> None:
    episode = sample_memory_episode(seed, SEGMENTS)
    ((hero, colour),) = episode.hats
    texts = [s.text for s in memory_storyboard(episode).segments]
    assert f"{CHARACTERS[hero].name} " in texts[0] and f" {colour} hat" in texts[0]
    for i, text in enumerate(texts[1:], start=2):
        assert not states_hat(text), f"segment {i} states the hat: {text!r}"
        words = set(text.lower().replace(".", " ").replace(",", " ").split())
        assert not words & set(HAT_WORDS), (i, text)
    # later segments that show the hero name it (so the text asks for the character, not its look)
    for seg, text in zip(episode.segments[1:], texts[1:]):
        if hero in seg.cast:
            assert any(alias in text.lower() for alias in CHARACTERS[hero].aliases)


@pytest.mark.parametrize("seed", SEEDS[:8])
def test_the_hero_is_off_screen_between_the_statement_and_its_return(seed: int) -> None:
    episode = sample_memory_episode(seed, SEGMENTS)
    ((hero, colour),) = episode.hats
    cast = [s.cast for s in episode.segments]
    assert cast[0] == (hero,) and hero not in cast[1] and hero in cast[2]
    assert [s.scene_start for s in episode.segments[:3]] == [True, True, True]
    frames = render_episode(episode, SIZE, SIZE, FPS)
    per = frames_per_segment(FPS)
    shown = [_hat_pixels(frames[i * per : (i + 1) * per], colour) for i in range(SEGMENTS)]
    assert shown[0] > 0 and shown[2] > 0
    assert shown[1] == 0  # the gap: no frame of segment 2 shows the hat
    for i, seg in enumerate(episode.segments):
        assert (shown[i] > 0) == (hero in seg.cast), i  # the hat is on the hero wherever it is seen


def test_colours_and_heroes_are_spread() -> None:
    hats = [sample_memory_episode(s, 3).hats[0] for s in range(120)]
    assert {c for _, c in hats} == set(HAT_COLOURS)
    assert {h for h, _ in hats} == set(CHARACTERS)


def test_base_plans_are_unchanged_and_round_trip() -> None:
    base = sample_episode(5, 4)
    assert base.hats == () and "hats" not in base.to_dict()
    memory = sample_memory_episode(5, 4)
    assert Episode.from_dict(json.loads(json.dumps(memory.to_dict()))) == memory
    bad = memory.to_dict() | {"hats": [["cat", "scarlet"]]}
    with pytest.raises(ValueError, match="scarlet"):
        Episode.from_dict(bad)


def test_bad_requests_name_the_value(tmp_path) -> None:
    with pytest.raises(ValueError, match="n_segments.*>= 3"):
        sample_memory_episode(0, 2)
    with pytest.raises(ValueError, match="variant.*'hats'"):
        write_dataset(tmp_path / "d", 1, (3, 3), variant="hats")
    with pytest.raises(ValueError, match="at least 3 segments"):
        write_dataset(tmp_path / "d", 1, (2, 3), variant="memory")
    assert not (tmp_path / "d").exists()


def test_memory_dataset_holds_the_plan_and_text(tmp_path) -> None:
    root = write_dataset(tmp_path / "mem", 2, (3, 3), height=32, width=32, fps=4, seed=1, variant="memory")
    assert json.loads((root / "dataset.json").read_text())["generator"]["variant"] == "memory"
    for clip in ClipDataset(root):
        plan = clip.plan
        assert plan is not None and len(plan.hats) == 1
        assert clip.storyboard == memory_storyboard(plan)
        assert states_hat(clip.storyboard.segments[0].text)
        assert not any(states_hat(s.text) for s in clip.storyboard.segments[1:])


@pytest.mark.parametrize("hero", list(CHARACTERS))
def test_the_hat_is_big_enough_for_the_vae(hero: str) -> None:
    # at 64 x 64 in a wide shot every hat covers at least four of the shipped VAE's 4 x 4-pixel latent
    # cells' worth of pixels (the old hat's 10-20 pixels did not survive the round trip)
    height = sprite_pixel_height(hero, "wide", SIZE)
    bare = sprite(hero, height, 0, False, 1, False)[0]
    for colour in HAT_COLOURS:
        hatted = sprite(hero, height, 0, False, 1, False, colour)[0]
        assert _hat_pixels(hatted, colour) >= 4 * 4 * 4, (hero, colour)
        assert _hat_pixels(bare, colour) == 0
