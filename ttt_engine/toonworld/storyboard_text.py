"""Storyboard paragraphs (prompt format 3) written from an episode plan.

One paragraph of 3-5 sentences per segment: a setting sentence (always names the background; says
when a new scene begins), a camera sentence ("wide shot" / "close-up", "cuts to" on a camera cut),
one sentence per character on screen, and, when there is room, a descriptive sentence. Phrasing is
drawn from a seeded vocabulary; the key facts always appear in the same words so a text encoder (and
`ttt_engine.eval.facts.parse_segment`) can pick them up:

- characters: "Tom the cat" / "the cat", "Jerry the mouse" / "the mouse", "Spike the dog" / "the dog"
- backgrounds: "kitchen", "garden", "living room", "night street"
- actions: "chases ... to the left/right", "runs left/right", "jumps", "hides", "stands still"
- framing: "wide shot", "close-up"

Character sentences mention at most two characters: the subject first (and, in a chase, the chased
one after "chases"); setting and camera sentences mention none.
"""

from __future__ import annotations

import numpy as np

from ttt_engine.storyboard import Segment, Storyboard

from .world import BACKGROUNDS, CHARACTERS, ActorPlan, Episode, SegmentPlan

_OPEN_FIRST = (
    "The story opens in the {bg}.",
    "Our cartoon begins in the {bg}.",
    "It all starts in the {bg}.",
)
_OPEN_NEW = (
    "A new scene begins in the {bg}.",
    "The scene changes to the {bg}.",
    "We move to a new scene in the {bg}.",
)
_CONTINUE = ("The action continues in the {bg}.", "We are still in the {bg}.", "The scene stays in the {bg}.")
_CAMERA = {
    ("wide", False): (
        "A wide shot shows the whole set.",
        "The camera holds a wide shot.",
        "Wide shot, the camera is still.",
    ),
    ("close", False): (
        "The camera stays in a close-up.",
        "Close-up shot, the camera is still.",
        "We see it in a close-up.",
    ),
    ("wide", True): (
        "The camera cuts to a wide shot.",
        "Cut to a wide shot of the set.",
        "The camera pulls back to a wide shot.",
    ),
    ("close", True): (
        "The camera cuts to a close-up.",
        "Cut to a close-up.",
        "The camera moves in to a close-up.",
    ),
}
_RUN = (
    "{Name} runs {dir}.",
    "{Name} runs {dir} across the {bg}.",
    "{Name} quickly runs {dir}.",
    "{Name} runs {dir}, legs spinning.",
)
_ENTER = (
    "{Name} comes back out from behind the {prop} and runs {dir}.",
    "{Name} pops out from behind the {prop} and runs {dir}.",
)
_FLEE = (
    "{Name} runs {dir} to escape.",
    "{Name} runs {dir} in a panic.",
    "{Name} runs {dir} as fast as it can.",
)
_CHASE = (
    "{Name} chases {Target} to the {dir}.",
    "{Name} chases {Target}, running {dir}.",
    "{Name} chases after {Target} towards the {dir}.",
)
_JUMP = (
    "{Name} jumps up and down.",
    "{Name} jumps happily on the spot.",
    "{Name} jumps {hops} times in place.",
)
_HIDE = (
    "{Name} hides behind the {prop}.",
    "{Name} dashes off and hides behind the {prop}.",
    "{Name} hides behind the {prop} at the {side}.",
)
_IDLE = (
    "{Name} stands still.",
    "{Name} stands still and watches.",
    "{Name} stands still, catching its breath.",
)
_LOOKS = ("{Short} is {look}.", "{Short} looks {look}.")
_AMBIENCE = {
    "kitchen": ("The tiles are clean and bright.", "Sunlight comes through the window."),
    "garden": ("The sky is blue above the fence.", "Flowers grow along the fence."),
    "living_room": ("A painting hangs on the striped wall.", "The room is warm and quiet."),
    "night_street": ("The moon shines over the houses.", "Windows glow in the dark."),
}
_HOPS = {2: "two", 3: "three"}


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _name(rng: np.random.Generator, key: str) -> str:
    ch = CHARACTERS[key]
    return ch.name if rng.random() < 0.5 else ch.short


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _actor_sentence(rng: np.random.Generator, a: ActorPlan, seg: SegmentPlan) -> str:
    bg = BACKGROUNDS[seg.background]
    fields = {
        "Name": _cap(_name(rng, a.character)),
        "bg": bg.name,
        "prop": bg.prop,
        "dir": "left" if a.direction < 0 else "right",
        "side": "left" if bg.prop_side < 0 else "right",
    }
    if a.action == "chase":
        return _pick(rng, _CHASE).format(Target=_name(rng, a.target), **fields)
    if a.action in ("run_left", "run_right"):
        if a.enters:
            return _pick(rng, _ENTER).format(**fields)
        return _pick(rng, _FLEE if a.target else _RUN).format(**fields)
    if a.action == "jump":
        return _pick(rng, _JUMP).format(hops=_HOPS.get(a.hops, str(a.hops)), **fields)
    if a.action == "hide":
        return _pick(rng, _HIDE).format(**fields)
    return _pick(rng, _IDLE).format(**fields)


def segment_paragraph(seg: SegmentPlan, prev: SegmentPlan | None, rng: np.random.Generator) -> str:
    """3-5 sentences describing `seg` (prev: the segment before it, None for the first)."""
    bg = BACKGROUNDS[seg.background]
    bg_phrase = f"{_pick(rng, bg.adjectives)} {bg.name}" if rng.random() < 0.5 else bg.name
    if prev is None:
        setting = _pick(rng, _OPEN_FIRST)
    elif seg.scene_start:
        setting = _pick(rng, _OPEN_NEW)
    else:
        setting = _pick(rng, _CONTINUE)
    cut = prev is not None and not seg.scene_start and prev.framing != seg.framing
    sentences = [setting.format(bg=bg_phrase), _pick(rng, _CAMERA[(seg.framing, cut)])]
    if rng.random() < 0.5:
        sentences.reverse()
    order = rng.permutation(len(seg.actors))
    # a chase reads best chaser first
    actors = sorted((seg.actors[i] for i in order), key=lambda a: a.action != "chase")
    sentences += [_actor_sentence(rng, a, seg) for a in actors]
    if len(sentences) < 5 and rng.random() < 0.6:
        if rng.random() < 0.5:
            key = seg.actors[int(rng.integers(len(seg.actors)))].character
            ch = CHARACTERS[key]
            sentences.append(_pick(rng, _LOOKS).format(Short=_cap(ch.short), look=_pick(rng, ch.looks)))
        else:
            sentences.append(_pick(rng, _AMBIENCE[seg.background]))
    return " ".join(sentences)


def episode_storyboard(episode: Episode) -> Storyboard:
    """The format-3 storyboard of an episode; deterministic in the episode's seed."""
    rng = np.random.default_rng([episode.seed, 0x5707])
    segments = []
    for i, seg in enumerate(episode.segments):
        prev = episode.segments[i - 1] if i else None
        segments.append(
            Segment(text=segment_paragraph(seg, prev, rng), scene_transition=seg.scene_start and i > 0)
        )
    return Storyboard(tuple(segments))
