"""Toon-world detectors: components, morphology, colour masks, characters, backgrounds, motion."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from ttt_engine.eval.detectors import (
    DetectorConfig,
    classify_background,
    colour_codes,
    colour_mask,
    detect_characters,
    label_components,
    open_mask,
    segment_motion,
)
from ttt_engine.toonworld import BACKGROUNDS, CHARACTERS, FRAMINGS, ActorPlan, SegmentPlan, render_segment
from ttt_engine.toonworld.render import render_background

CFG = DetectorConfig()


def _flood_fill_partition(mask: np.ndarray) -> set[frozenset]:
    seen = np.zeros_like(mask)
    parts = set()
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        comp, queue = [], deque([start])
        seen[start] = True
        while queue:
            t, y, x = queue.popleft()
            comp.append((t, y, x))
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                n = (t, y + dy, x + dx)
                if 0 <= n[1] < mask.shape[1] and 0 <= n[2] < mask.shape[2] and mask[n] and not seen[n]:
                    seen[n] = True
                    queue.append(n)
        parts.add(frozenset(comp))
    return parts


@pytest.mark.parametrize("density", [0.2, 0.5, 0.65])
def test_label_components_matches_flood_fill(density) -> None:
    mask = np.random.default_rng(int(density * 100)).random((3, 17, 23)) < density
    labels, n = label_components(mask)
    assert labels[~mask].max() == 0 and labels[mask].min() >= 1
    parts = {frozenset(zip(*np.nonzero(labels == k))) for k in range(1, n + 1)}
    assert parts == _flood_fill_partition(mask)


def test_components_never_cross_frames() -> None:
    mask = np.ones((2, 4, 4), bool)
    labels, n = label_components(mask)
    assert n == 2 and labels[0].max() != labels[1].max()


@pytest.mark.parametrize("size", [2, 3])
def test_opening_removes_thin_lines_keeps_blocks(size) -> None:
    m = np.zeros((1, 12, 12), bool)
    m[0, 1, :] = True  # 1-px line
    m[0, 4:9, 3:8] = True  # 5x5 block
    out = open_mask(m, size)
    assert not out[0, 1].any()
    np.testing.assert_array_equal(out[0, 4:9, 3:8], True)
    assert out.sum() == 25


def test_colour_mask_agrees_with_exact_distance() -> None:
    pix = np.random.default_rng(0).random((200_000, 3)).astype(np.float32)
    colour, tol = (0.45, 0.55, 0.75), 0.2
    d = np.linalg.norm(pix - np.array(colour), axis=-1)
    lut = colour_mask(colour_codes(pix), colour, tol)
    clear = np.abs(d - tol) > 0.015  # quantisation only matters right at the boundary
    np.testing.assert_array_equal(lut[clear], d[clear] <= tol)
    assert lut.sum() > 1000


def _segment(bg: str, framing: str, actors: tuple[ActorPlan, ...]) -> SegmentPlan:
    return SegmentPlan(0, 0, True, bg, framing, actors)


@pytest.mark.parametrize("hw", [(64, 64), (128, 128), (96, 160)], ids=str)
def test_detects_characters_where_they_are(hw) -> None:
    h, w = hw
    seg = _segment(
        "garden",
        "wide",
        (
            ActorPlan("cat", "run_right", 1, 0.35, 0.7, facing=1),
            ActorPlan("dog", "idle", 0, 0.75, 0.75, facing=-1),
            ActorPlan("mouse", "jump", 0, 0.5, 0.5, hops=2),
        ),
    )
    frames = render_segment(seg, h, w, 8)
    tracks, masks = detect_characters(frames, CFG)
    cat, dog, mouse = tracks["cat"], tracks["dog"], tracks["mouse"]
    assert cat.detected.mean() > 0.9 and dog.detected.mean() > 0.9 and mouse.detected.mean() > 0.9
    assert abs(np.nanmedian(dog.cx) - 0.75) < 0.08  # body-colour centroid, not the sprite box centre
    m_cat = segment_motion(cat, slice(0, 24), 8, CFG)
    m_dog = segment_motion(dog, slice(0, 24), 8, CFG)
    m_mouse = segment_motion(mouse, slice(0, 24), 8, CFG)
    assert m_cat.label(CFG) == "right" and 0.08 < m_cat.slope < 0.16  # 0.35 W in 3 s
    assert m_dog.label(CFG) == "still"
    assert m_mouse.label(CFG) == "jump" and m_mouse.rise > 0.15
    for k, c in CHARACTERS.items():
        np.testing.assert_allclose(np.nanmean(tracks[k].colour, axis=0), c.body, atol=0.02)


def test_hide_and_absence() -> None:
    seg = _segment("kitchen", "close", (ActorPlan("mouse", "hide", 1, 0.3, 1.0, facing=1),))
    frames = render_segment(seg, 64, 64, 8)
    tracks, _ = detect_characters(frames, CFG)
    m = segment_motion(tracks["mouse"], slice(0, 24), 8, CFG)
    assert m.label(CFG) == "hide" and m.satisfies("hide", CFG)
    assert m.early == 1.0 and m.late == 0.0
    assert not m.satisfies("still", CFG)
    for k in ("cat", "dog"):
        assert not tracks[k].detected.any()


@pytest.mark.parametrize("hw", [(64, 64), (128, 128), (96, 160)], ids=str)
def test_background_and_framing_classified(hw) -> None:
    no_chars = [np.zeros((4, *hw), bool)]
    for bg in BACKGROUNDS:
        for framing in FRAMINGS:
            frames = np.repeat(render_background(bg, framing, *hw)[None], 4, axis=0)
            guess = classify_background(frames, no_chars, CFG)
            assert (guess.background, guess.framing) == (bg, framing)
            assert guess.distance < 1e-6


def test_background_with_characters_and_rejects_noise() -> None:
    seg = _segment(
        "night_street",
        "close",
        (ActorPlan("cat", "idle", 0, 0.4, 0.4), ActorPlan("dog", "jump", 0, 0.7, 0.7, hops=2)),
    )
    frames = render_segment(seg, 64, 64, 8)
    _, masks = detect_characters(frames, CFG)
    guess = classify_background(frames, list(masks.values()), CFG)
    assert (guess.background, guess.framing) == ("night_street", "close")
    noise = np.random.default_rng(0).random(frames.shape).astype(np.float32)
    tracks, masks = detect_characters(noise, CFG)
    assert classify_background(noise, list(masks.values()), CFG).background is None
    assert all(t.detected.mean() < 0.05 for t in tracks.values())
    grey = np.full_like(frames, 0.5)
    assert classify_background(grey, [np.zeros(grey.shape[:3], bool)], CFG).background is None


def _body_colour_blocks(shape: tuple[int, ...], block: int, seed: int) -> np.ndarray:
    """What an untrained generator decodes to: blocks of random colours, a third of them near a
    character's body colour, new blocks every 4 frames (the VAE's temporal factor)."""
    t, h, w, _ = shape
    rng = np.random.default_rng(seed)
    bodies = np.array([c.body for c in CHARACTERS.values()], np.float32)
    groups = -(-t // 4)
    cells = rng.random((groups, h // block, w // block, 3), dtype=np.float32)
    pick = rng.random(cells.shape[:3]) < 1 / 3
    which = rng.integers(0, len(bodies), cells.shape[:3])
    jitter = rng.normal(0.0, 0.03, cells.shape).astype(np.float32)
    cells[pick] = np.clip(bodies[which[pick]] + jitter[pick], 0, 1)
    frames = cells.repeat(block, 1).repeat(block, 2).repeat(4, 0)[:t]
    return np.ascontiguousarray(frames)


@pytest.mark.parametrize("block", [3, 4, 6])
def test_body_coloured_clutter_is_not_a_character(block: int) -> None:
    """Scattered clumps of a body colour (a random-init model's output) are no character: the
    instance must be one compact blob holding most of the frame's pixels of that colour."""
    frames = _body_colour_blocks((24, 64, 64, 3), block, seed=block)
    tracks, _ = detect_characters(frames, CFG)
    assert all(t.detected.mean() < CFG.present_frac for t in tracks.values()), {
        k: t.detected.mean() for k, t in tracks.items()
    }
    # without the instance rule the same clumps pass the per-component size filter
    lax = DetectorConfig(min_instance_frac=1e-6, min_dominance=1e-6)
    lax_tracks, _ = detect_characters(frames, lax)
    assert max(t.detected.mean() for t in lax_tracks.values()) >= 0.5


def test_a_sprite_beside_a_little_clutter_is_still_found() -> None:
    seg = _segment("kitchen", "wide", (ActorPlan("cat", "idle", 0, 0.3, 0.3),))
    frames = render_segment(seg, 64, 64, 8)
    frames[:, 50:54, 52:58] = CHARACTERS["cat"].body  # one stray cat-coloured clump, smaller than the cat
    tracks, masks = detect_characters(frames, CFG)
    assert tracks["cat"].detected.all()
    assert not masks["cat"][:, 50:54, 52:58].any()  # the clump is not part of the cat's instance
    assert abs(np.nanmedian(tracks["cat"].cx) - 0.3) < 0.08


def test_detector_config_validation() -> None:
    with pytest.raises(ValueError, match="colour_tol"):
        DetectorConfig(colour_tol=0)
