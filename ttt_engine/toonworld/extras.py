"""Shots of an extra character (world.EXTRA_CHARACTERS): training material for subject adapters (#24).

One rule: only this module puts an extra character on screen, and only when asked for one by key; the
episode planner (`sample_episode`) and the base datasets never do. A shot takes a sampled one-segment
episode's set, framing and first actor's staging, and gives that staging to the extra character alone.

Captions name the character by a trigger word: "A wide shot of the garden. A zorp jumps in place."
Material comes as stills (`write_extra_stills`: the shot's middle frame) or as clips in the dataset format
(`write_extra_clips`: the whole 3-s shot, so an adapter sees the character move as the captions say).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .world import BACKGROUNDS, EXTRA_CHARACTERS, SegmentPlan, sample_episode

# what the caption says the character does, per planned action (a hide is staged as a stand)
_VERBS = {
    "idle": "stands still",
    "jump": "jumps in place",
    "run_left": "runs left",
    "run_right": "runs right",
}
_FRAMING_TEXT = {"wide": "A wide shot of the {bg}.", "close": "A close-up in the {bg}."}


def extra_segment(key: str, seed: int) -> SegmentPlan:
    """A one-segment shot of the extra character `key` alone, staged from `sample_episode(seed, 1)`."""
    if key not in EXTRA_CHARACTERS:
        raise ValueError(f"extra character: expected one of {sorted(EXTRA_CHARACTERS)}, got {key!r}")
    seg = sample_episode(seed, 1).segments[0]
    actor = seg.actors[0]
    if actor.action == "chase":
        actor = replace(actor, action="run_right" if actor.direction > 0 else "run_left", target="")
    elif actor.action == "hide":
        actor = replace(actor, action="idle", direction=0, x1=actor.x0)
    actor = replace(actor, character=key, target="", enters=False)
    return replace(seg, actors=(actor,))


def extra_caption(seg: SegmentPlan, trigger: str) -> str:
    """The shot's caption, naming its one character by `trigger`."""
    (actor,) = seg.actors
    setting = _FRAMING_TEXT[seg.framing].format(bg=BACKGROUNDS[seg.background].name)
    return f"{setting} A {trigger} {_VERBS[actor.action]}."


def write_extra_stills(
    folder: str | Path,
    count: int,
    key: str,
    trigger: str,
    seed: int,
    height: int = 64,
    width: int = 64,
    fps: int = 8,
) -> list[Path]:
    """`count` stills (PNG, the shot's middle frame) of the extra character with sidecar captions.

    Still i is `extra_segment(key, seed_i)`, seed_i drawn from (seed, i)."""
    from .render import frames_per_segment, render_segment, to_uint8

    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected an int >= 1, got {count!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        shot_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        seg = extra_segment(key, shot_seed)
        frames = render_segment(seg, height, width, fps)
        path = folder / f"{key}_{i:04d}.png"
        Image.fromarray(to_uint8(frames[frames_per_segment(fps) // 2])).save(path)
        path.with_suffix(".txt").write_text(extra_caption(seg, trigger) + "\n", encoding="utf-8")
        written.append(path)
    return written


def write_extra_clips(
    folder: str | Path,
    count: int,
    key: str,
    trigger: str,
    seed: int,
    height: int = 64,
    width: int = 64,
    fps: int = 8,
) -> list[Path]:
    """`count` one-segment clips of the extra character, in the dataset's clip format (dataset.write_clip),
    each captioned by its storyboard: clip i is the whole shot of which `write_extra_stills` (same seed)
    keeps the middle frame as still i."""
    from ..storyboard import Segment, Storyboard
    from .dataset import write_clip
    from .render import render_segment

    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected an int >= 1, got {count!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        shot_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        seg = extra_segment(key, shot_seed)
        frames = render_segment(seg, height, width, fps)
        board = Storyboard((Segment(extra_caption(seg, trigger)),))
        written.append(write_clip(folder / f"{key}_clip_{i:04d}", frames, board, fps))
    return written
