"""The extra character's detector (the zorp, for subject adapters): finds it, and nothing in base shots."""

from __future__ import annotations

import numpy as np
import pytest

from ttt_engine.eval.detectors import DetectorConfig, character_present, detect_characters
from ttt_engine.toonworld import CHARACTERS, render_segment
from ttt_engine.toonworld.extras import extra_segment
from ttt_engine.toonworld.render import render_episode
from ttt_engine.toonworld.world import BACKGROUNDS, sample_episode


@pytest.mark.parametrize("size", [64, 128])
def test_zorp_is_found_in_its_shots(size: int) -> None:
    shots = [extra_segment("zorp", s) for s in range(16)]
    assert {s.background for s in shots} == set(BACKGROUNDS)  # every set, both framings
    assert {s.framing for s in shots} == {"wide", "close"}
    assert all(character_present(render_segment(s, size, size, 8), "zorp") for s in shots)


def test_zorp_is_not_found_in_base_shots() -> None:
    segments = 0
    for seed in range(24):
        frames = render_episode(sample_episode(seed, 2), 64, 64, 8)
        for part in np.split(frames, 2):
            segments += 1
            tracks, _ = detect_characters(part, DetectorConfig(), keys=("zorp",))
            assert not tracks["zorp"].detected.any(), f"episode {seed}"
    assert segments == 48


def test_cast_detectors_do_not_take_the_zorp_for_a_cast_member() -> None:
    frames = render_segment(extra_segment("zorp", 4), 64, 64, 8)
    tracks, _ = detect_characters(frames, DetectorConfig())
    assert set(tracks) == set(CHARACTERS)
    assert not any(t.detected.any() for t in tracks.values())


def test_unknown_character_is_refused() -> None:
    frames = render_segment(extra_segment("zorp", 4), 32, 32, 8)
    with pytest.raises(ValueError, match="'yeti'"):
        character_present(frames, "yeti")
