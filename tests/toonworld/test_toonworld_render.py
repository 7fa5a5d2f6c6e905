"""Toon world: planning, rendering and storyboard text."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from ttt_engine.toonworld import (
    ACTIONS,
    BACKGROUNDS,
    CHARACTERS,
    FRAMINGS,
    Episode,
    actor_track,
    episode_storyboard,
    render_background,
    render_episode,
    render_segment,
    sample_episode,
)
from ttt_engine.toonworld.render import sprite, sprite_pixel_height
from ttt_engine.toonworld.world import occlusion, stage


def test_same_seed_same_everything_different_seed_differs() -> None:
    a, b, c = sample_episode(11, 3), sample_episode(11, 3), sample_episode(12, 3)
    assert a == b
    assert a != c
    fa, fb, fc = (render_episode(e, 64, 64, 8) for e in (a, b, c))
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
    assert episode_storyboard(a) == episode_storyboard(b)
    assert episode_storyboard(a).texts != episode_storyboard(c).texts


@pytest.mark.parametrize("hw_fps", [(64, 64, 8), (128, 128, 8), (96, 160, 6)], ids=str)
def test_frames_shape_dtype_range(hw_fps) -> None:
    h, w, fps = hw_fps
    frames = render_episode(sample_episode(5, 2), h, w, fps)
    assert frames.shape == (2 * 3 * fps, h, w, 3)
    assert frames.dtype == np.float32
    assert frames.min() >= 0.0 and frames.max() <= 1.0


def test_renders_at_480x720() -> None:
    ep = sample_episode(8, 1)
    frames = render_segment(ep.segments[0], 480, 720, 2)  # 6 frames keep this test fast
    assert frames.shape == (6, 480, 720, 3)
    # every character on screen shows a sizeable patch of its body colour
    for actor in ep.segments[0].actors:
        body = np.array(CHARACTERS[actor.character].body, np.float32)
        assert (np.abs(frames[0] - body).max(-1) < 1e-3).sum() > 500


def test_bad_render_arguments() -> None:
    ep = sample_episode(1, 1)
    with pytest.raises(ValueError, match="fps"):
        render_episode(ep, 64, 64, 0)
    with pytest.raises(ValueError, match="height"):
        render_episode(ep, 8, 64, 8)
    with pytest.raises(ValueError, match="n_segments"):
        sample_episode(1, 0)
    with pytest.raises(ValueError, match="unknown background"):
        render_background("moon", "wide", 64, 64)


def test_episode_plan_structure() -> None:
    for seed in range(30):
        ep = sample_episode(seed, 6)
        assert len(ep) == 6 and ep.segments[0].scene_start
        for prev, seg in zip(ep.segments, ep.segments[1:]):
            if seg.scene_start:
                assert seg.background != prev.background and seg.scene == prev.scene + 1
            else:
                assert seg.background == prev.background and seg.cast == prev.cast
        for seg in ep.segments:
            assert seg.framing in FRAMINGS and seg.background in BACKGROUNDS and 1 <= len(seg.actors) <= 3
            lo, hi = stage(BACKGROUNDS[seg.background].prop_side)
            for a in seg.actors:
                assert a.action in ACTIONS
                if a.action == "chase":
                    target = seg.actor(a.target)
                    assert target is not None and target.direction == a.direction
                    assert (target.x0 - a.x0) * a.direction > 0  # the chaser is behind
                if a.action in ("run_left", "run_right", "chase") and not a.enters:
                    assert lo - 1e-9 <= min(a.x0, a.x1) and max(a.x0, a.x1) <= hi + 1e-9
                    assert abs(a.x1 - a.x0) >= 0.3 - 1e-9


def test_scene_lengths_and_cuts_vary_with_seed() -> None:
    lengths, cuts = set(), 0
    for seed in range(40):
        ep = sample_episode(seed, 8)
        starts = [s.index for s in ep.segments if s.scene_start] + [8]
        lengths |= {b - a for a, b in zip(starts, starts[1:])}
        cuts += sum(
            not s.scene_start and s.framing != p.framing for p, s in zip(ep.segments, ep.segments[1:])
        )
    assert lengths == {1, 2, 3}
    assert cuts > 10


def test_actions_cover_the_vocabulary_and_shots_are_staged() -> None:
    seen = set()
    worst = []
    for seed in range(60):
        for seg in sample_episode(seed, 3).segments:
            seen |= {a.action for a in seg.actors}
            worst.append(occlusion(list(seg.actors), seg.framing))
    assert seen == set(ACTIONS)
    assert (
        np.mean(np.array(worst) <= 0.2) >= 0.85
    )  # the rest are crowded shots staged as well as 30 draws allow


def test_tracks_move_as_planned() -> None:
    ep = sample_episode(3, 12)
    for seg in ep.segments:
        for a in seg.actors:
            tr = actor_track(a, seg.framing, 24, 1.0)
            if a.action in ("run_left", "run_right", "chase"):
                assert np.sign(tr.x[-1] - tr.x[0]) == a.direction
            if a.action == "jump":
                assert tr.lift.max() > 0.15 and np.ptp(tr.x) == 0
            if a.action == "hide":
                assert tr.visible[0] and not tr.visible[-1]
            if a.action == "idle":
                assert np.ptp(tr.x) == 0 and tr.lift.max() == 0


def test_legs_animate_while_running() -> None:
    still = sprite("cat", 40, 0, False, 1)[1]
    a, b = sprite("cat", 40, 1, True, 1)[1], sprite("cat", 40, 3, True, 1)[1]
    assert not np.array_equal(a, b)
    assert np.array_equal(still, sprite("cat", 40, 2, False, 1)[1])
    left = sprite("cat", 40, 0, False, -1)[1]
    np.testing.assert_array_equal(left, still[:, ::-1])


def test_characters_differ_in_shape_and_colour() -> None:
    masks = {k: sprite(k, sprite_pixel_height(k, "wide", 64), 0, False, 1)[1] for k in CHARACTERS}
    sizes = {k: m.sum() for k, m in masks.items()}
    assert sizes["mouse"] < 0.5 * sizes["cat"]
    assert masks["cat"].shape != masks["dog"].shape or not np.array_equal(masks["cat"], masks["dog"])
    colours = np.array([c.body for c in CHARACTERS.values()])
    d = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert d[~np.eye(len(colours), dtype=bool)].min() > 0.5


@pytest.mark.parametrize("hw", [(64, 64), (128, 128), (96, 160)], ids=str)
def test_palettes_are_separable(hw) -> None:
    """No background pixel, and no other character's pixel, is within 0.25 of a character's body colour."""
    for bg in BACKGROUNDS:
        for framing in FRAMINGS:
            img = render_background(bg, framing, *hw)
            for ch in CHARACTERS.values():
                assert np.linalg.norm(img - np.array(ch.body), axis=-1).min() >= 0.25, (bg, framing, ch.key)
    for key in CHARACTERS:
        for detail in (False, True):
            rgb, mask, _ = sprite(key, 60, 1, True, 1, detail)
            for other, ch in CHARACTERS.items():
                if other != key:
                    assert np.linalg.norm(rgb[mask] - np.array(ch.body), axis=-1).min() >= 0.25


def test_backgrounds_are_distinct() -> None:
    means = {b: render_background(b, "wide", 64, 64).reshape(-1, 3).mean(0) for b in BACKGROUNDS}
    keys = list(means)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert np.linalg.norm(means[a] - means[b]) > 0.1, (a, b)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def test_storyboard_paragraphs_describe_the_plan() -> None:
    for seed in range(40):
        ep = sample_episode(seed, 4)
        sb = episode_storyboard(ep)
        assert len(sb) == len(ep)
        for i, (seg, para) in enumerate(zip(ep.segments, sb)):
            text = para.text.lower()
            assert 3 <= len(_sentences(para.text)) <= 5, para.text
            assert para.scene_transition == (seg.scene_start and i > 0)
            assert BACKGROUNDS[seg.background].name in text
            assert ("close-up" in text) == (seg.framing == "close")
            assert ("wide shot" in text) == (seg.framing == "wide")
            for a in seg.actors:
                assert re.search(rf"\b{a.character}\b", text)
                key = {
                    "chase": "chases",
                    "run_left": "runs left",
                    "run_right": "runs right",
                    "jump": "jumps",
                    "hide": "hides",
                    "idle": "stands still",
                }[a.action]
                assert key in text, (a, para.text)
            for k in set(CHARACTERS) - set(seg.cast):
                assert not re.search(rf"\b{k}\b", text)


def test_storyboard_wording_varies() -> None:
    first_sentences, action_sentences = set(), set()
    for seed in range(30):
        ep = sample_episode(seed, 3)
        for para in episode_storyboard(ep):
            s = _sentences(para.text)
            first_sentences.add(re.sub(r"(kitchen|garden|living room|night street)", "BG", s[0]))
            action_sentences |= set(s[2:])
    assert len(first_sentences) >= 8
    assert len(action_sentences) >= 40


def test_plan_round_trips_through_dict() -> None:
    import json

    ep = sample_episode(21, 5)
    assert Episode.from_dict(json.loads(json.dumps(ep.to_dict()))) == ep
    with pytest.raises(ValueError, match="not a toon-world episode plan"):
        Episode.from_dict({"segments": []})
    bad = ep.to_dict()
    bad["segments"][0]["background"] = "moon"
    with pytest.raises(ValueError, match="moon"):
        Episode.from_dict(bad)


def test_rendering_100_clips_is_fast() -> None:
    start = time.perf_counter()
    for seed in range(100):
        render_episode(sample_episode(seed, 2), 64, 64, 8)
    elapsed = time.perf_counter() - start
    assert elapsed < 20.0, f"100 clips of 2 segments took {elapsed:.1f} s"
