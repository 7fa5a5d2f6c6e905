"""The memory variant of the toon world: an appearance that only an episode's first segment states.

One rule: the appearance is stated once. Each episode draws a hero (a cast member) and the colour of the
hero's hat (one of HAT_COLOURS' three); the hero wears that hat in every segment it is in, but only the
first segment's text says so ("Tom the cat wears a rust hat."); later segments name the hero, never
the hat or its colour. So a model that sees one segment's text and frames at a time (local attention)
cannot know the colour after the first segment, and one with memory across segments (TTT) can.

Plan of an N-segment episode (N >= MIN_SEGMENTS), three scenes:
- segment 1: the hero alone (the statement and the hat are unambiguous);
- segment 2: a new scene without the hero (the gap: no frame shared with the neighbouring segments
  shows the hat, so the colour cannot be copied across a segment boundary);
- segments 3..N: a new scene opening with the hero on screen (the toon world's planner; the hero may
  leave and come back in later scenes).

Each part is a `sample_episode` plan of a sub-seed drawn from the episode's seed (re-drawn until it
fits), so the variant reuses the planner's staging. The base datasets never hold a hat.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from ttt_engine.storyboard import Segment, Storyboard

from .storyboard_text import episode_storyboard
from .world import CHARACTER_KEYS, CHARACTERS, HAT_COLOURS, Episode, SegmentPlan, sample_episode

VARIANTS = ("base", "memory")
MIN_SEGMENTS = 3  # the statement, the gap, one segment that needs the memory
MEMORY_SALT = 0x4D454D  # separates the variant's draws from the base planner's for the same seed
MAX_DRAWS = 500  # sub-seeds tried per part; each fits with probability >= 0.08
_STATEMENTS = ("{Name} wears a {colour} hat.", "{Name} has a {colour} hat on.")
HAT_WORDS = ("hat", *HAT_COLOURS)  # what only the first segment's text may say


def check_variant(value: str, where: str = "variant") -> None:
    """ValueError naming `where` unless `value` is a toon-world variant."""
    if value not in VARIANTS:
        raise ValueError(f"{where}: expected one of {list(VARIANTS)}, got {value!r}")


def _part(rng: np.random.Generator, n_segments: int, fits) -> Episode:
    """The first `sample_episode(sub_seed, n_segments)` whose plan `fits` (sub-seeds drawn from rng)."""
    for _ in range(MAX_DRAWS):
        episode = sample_episode(int(rng.integers(2**31)), n_segments)
        if fits(episode):
            return episode
    raise RuntimeError(f"no fitting toon-world plan in {MAX_DRAWS} draws")  # p < 1e-18


def sample_memory_episode(seed: int, n_segments: int) -> Episode:
    """The memory variant's plan of `n_segments` segments, deterministically from `seed`."""
    if not isinstance(n_segments, int) or n_segments < MIN_SEGMENTS:
        raise ValueError(f"n_segments: the memory variant needs an int >= {MIN_SEGMENTS}, got {n_segments!r}")
    rng = np.random.default_rng([seed, MEMORY_SALT])
    hero = str(rng.choice(CHARACTER_KEYS))
    colour = str(rng.choice(list(HAT_COLOURS)))
    first = _part(rng, 1, lambda e: e.segments[0].cast == (hero,))
    gap = _part(
        rng,
        1,
        lambda e: hero not in e.segments[0].cast and e.segments[0].background != first.segments[0].background,
    )
    rest = _part(
        rng,
        n_segments - 2,
        lambda e: hero in e.segments[0].cast and e.segments[0].background != gap.segments[0].background,
    )
    segments: list[SegmentPlan] = []
    for scene_offset, part in enumerate((first, gap)):
        segments.append(replace(part.segments[0], index=len(segments), scene=scene_offset, scene_start=True))
    for s in rest.segments:
        segments.append(replace(s, index=len(segments), scene=s.scene + 2))
    return Episode(seed=int(seed), segments=tuple(segments), hats=((hero, colour),))


def hat_statement(episode: Episode, rng: np.random.Generator) -> str:
    """The sentence that states the hats (the first segment's text opens with it)."""
    sentences = []
    for key, colour in episode.hats:
        name = CHARACTERS[key].name
        sentences.append(_STATEMENTS[int(rng.integers(len(_STATEMENTS)))].format(Name=name, colour=colour))
    return " ".join(sentences)


def memory_storyboard(episode: Episode) -> Storyboard:
    """The episode's format-3 storyboard with the hats stated at the start of the first segment only.

    The statement opens the paragraph so a text encoder's length limit never cuts it off."""
    base = episode_storyboard(episode)
    rng = np.random.default_rng([episode.seed, MEMORY_SALT])
    first = base.segments[0]
    opened = Segment(
        text=f"{hat_statement(episode, rng)} {first.text}",
        neg_text=first.neg_text,
        scene_transition=first.scene_transition,
    )
    return Storyboard((opened, *base.segments[1:]))


def states_hat(text: str) -> bool:
    """Whether `text` says anything about a hat (the word or a hat colour), as whole words."""
    return re.search(r"\b(" + "|".join(HAT_WORDS) + r")\b", text, flags=re.IGNORECASE) is not None


def variant_episode(variant: str, seed: int, n_segments: int, chase_setup_prob: float) -> Episode:
    """The plan of a `variant` episode ('base': `sample_episode` with `chase_setup_prob`)."""
    check_variant(variant)
    if variant == "memory":
        return sample_memory_episode(seed, n_segments)
    return sample_episode(seed, n_segments, chase_setup_prob=chase_setup_prob)


def variant_storyboard(episode: Episode) -> Storyboard:
    """The storyboard of an episode of either variant (the hats stated when it has any)."""
    return memory_storyboard(episode) if episode.hats else episode_storyboard(episode)
