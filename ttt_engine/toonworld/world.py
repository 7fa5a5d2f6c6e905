"""The toon world as data: characters, backgrounds, actions, framings, and the episode planner.

An `Episode` is a structured plan (per 3-s segment: background, framing, and one `ActorPlan` per
character on screen). It is the single source of truth: `render.py` draws it, `storyboard_text.py`
describes it, and the evaluation can read it back from a clip's meta.json.

Screen geometry (shared by renderer and detectors): x is the horizontal centre of a character as a
fraction of the frame width; characters stand on the ground line at `GROUND_Y` (fraction of the
frame height) in both framings; a close-up scales the characters by `FRAMINGS["close"]` and zooms
the background about the point (0.5, GROUND_Y), so the ground line stays put across cuts. The hiding
prop is a foreground object at one screen edge; characters stay on the `stage` clear of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

GROUND_Y = 0.8
FRAMINGS: dict[str, float] = {"wide": 1.0, "close": 1.5}  # framing -> zoom
ACTIONS = ("chase", "run_left", "run_right", "jump", "hide", "idle")
X_MIN, X_MAX = 0.15, 0.85  # where characters stand and run (fraction of width) ...
X_PROP = 0.72  # ... but no closer than this to the edge where the hiding prop stands
STAGING_TRIES = 30
CORE = 0.6  # middle share of a sprite's width that holds its body
MAX_OCCLUSION = 0.2  # a staged shot covers nobody in more than this share of its frames
MIN_RUN = 0.3  # shortest run in one segment (fraction of width): always clear of the idle dead-zone
JUMP_HEIGHT = 0.2  # fraction of frame height
# A chase needs the chaser behind its target and the target room to run MIN_RUN ahead, which positions
# drawn at random on the stage seldom give (1% of segments had one). So a wide shot of two or more
# characters opens, with this probability, with two of them lined up for a chase: CHASE_GAP apart
# (then, in a wide shot, neither covers more than a third of the other's body core, for every pair),
# the chaser near the stage's end.
CHASE_SETUP_PROB = 0.5
CHASE_GAP = 0.25
MIN_HIDE_RUN = 0.4  # a character hides only from at least this far from the prop's edge (seen running to it)
HIDE_END = 0.6  # a hiding character is gone (behind the prop, off screen) after this fraction of the segment
RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Character:
    """A character: names the text uses, its body colour (what detectors key on) and its size."""

    key: str
    name: str  # full name, e.g. "Tom the cat"
    short: str  # e.g. "the cat"
    aliases: tuple[str, ...]  # words the storyboard parser recognises (lower case)
    body: RGB  # main body colour, display values in [0, 1]
    height: float  # sprite height, fraction of frame height, wide framing
    aspect: float  # sprite width / height
    looks: tuple[str, ...]  # appearance phrases for descriptive sentences


@dataclass(frozen=True)
class Background:
    """A location. The hiding prop stands at one screen edge (`prop_side` -1 left, +1 right)."""

    key: str
    name: str  # canonical name the text always contains, e.g. "living room"
    adjectives: tuple[str, ...]
    aliases: tuple[str, ...]  # parser words, longest first
    prop: str
    prop_side: int


CHARACTERS: dict[str, Character] = {
    c.key: c
    for c in (
        Character(
            key="cat",
            name="Tom the cat",
            short="the cat",
            aliases=("tom", "cat"),
            body=(0.45, 0.55, 0.75),
            height=0.30,
            aspect=1.2,
            looks=("grey-blue with pointed ears", "tall and grey-blue with a long tail"),
        ),
        Character(
            key="mouse",
            name="Jerry the mouse",
            short="the mouse",
            aliases=("jerry", "mouse"),
            body=(0.62, 0.36, 0.28),
            height=0.17,
            aspect=1.3,
            looks=("small and brown with round ears", "tiny and brown"),
        ),
        Character(
            key="dog",
            name="Spike the dog",
            short="the dog",
            aliases=("spike", "dog"),
            body=(0.95, 0.80, 0.20),
            height=0.32,
            aspect=1.35,
            looks=("big and yellow with floppy ears", "yellow with a red collar"),
        ),
    )
}
CHARACTER_KEYS = tuple(CHARACTERS)
DRAW_ORDER = ("dog", "cat", "mouse")  # back to front: the small mouse stays visible in a chase

# Characters the toon world can draw but never samples: no cast in `_CASTS`, no storyboard word, no base
# dataset holds them. They exist for subject adapters (a character the base never saw, issue #24) and
# are drawn only by code that asks for one by key (`extra_segment`). Drawn in front of the cast.
EXTRA_CHARACTERS: dict[str, Character] = {
    c.key: c
    for c in (
        Character(
            key="zorp",
            name="the zorp",
            short="the zorp",
            aliases=("zorp",),
            body=(0.62, 0.22, 0.86),  # violet: far from every cast colour and set colour
            height=0.26,
            aspect=1.0,
            looks=("round and violet with two antennae",),
        ),
    )
}


def get_character(key: str) -> Character:
    """The character `key`, from the cast or the extras (ValueError naming the key otherwise)."""
    found = CHARACTERS.get(key) or EXTRA_CHARACTERS.get(key)
    if found is None:
        raise ValueError(f"character: expected one of {[*CHARACTERS, *EXTRA_CHARACTERS]}, got {key!r}")
    return found


def draw_rank(key: str) -> int:
    """Back-to-front drawing position: the cast in DRAW_ORDER, then the extras."""
    if key in DRAW_ORDER:
        return DRAW_ORDER.index(key)
    return len(DRAW_ORDER) + list(EXTRA_CHARACTERS).index(get_character(key).key)


# Hat colours of the memory variant (memory.py): a per-episode appearance that only an episode's first
# segment states. Display values in [0, 1]; their names are words the base storyboard text never uses.
# Three, not more, chosen by measurement: the shipped model's 64 x 64 VAE pulls every colour it never saw
# towards the toon world's muted palette (purple, cyan, lime and magenta came back as the cat's blue-grey,
# the dog's yellow or nothing), and these three are the ones it keeps apart from each other, from the
# cast's body colours and from the outline (docs/ablation.md, "Memory"; tests/eval/test_eval_memory.py).
HAT_COLOURS: dict[str, RGB] = {
    "teal": (0.10, 0.30, 0.45),
    "rust": (0.75, 0.35, 0.05),
    "chocolate": (0.40, 0.20, 0.05),
}


BACKGROUNDS: dict[str, Background] = {
    "kitchen": Background("kitchen", "kitchen", ("bright", "tiled", "sunny"), ("kitchen",), "fridge", +1),
    "garden": Background("garden", "garden", ("green", "sunny", "leafy"), ("garden", "backyard"), "bush", -1),
    "living_room": Background(
        "living_room",
        "living room",
        ("cozy", "quiet", "pink"),
        ("living room", "lounge", "sitting room"),
        "sofa",
        +1,
    ),
    "night_street": Background(
        "night_street",
        "night street",
        ("dark", "quiet", "moonlit"),
        ("night street", "street at night", "street"),
        "trash can",
        -1,
    ),
}
BACKGROUND_KEYS = tuple(BACKGROUNDS)

# Cast of a scene -> sampling weight (cat and mouse together most often, as in the source cartoon).
_CASTS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("cat", "mouse"), 0.30),
    (("cat", "dog"), 0.14),
    (("mouse", "dog"), 0.10),
    (("cat",), 0.12),
    (("mouse",), 0.10),
    (("dog",), 0.08),
    (("cat", "mouse", "dog"), 0.16),
)


@dataclass(frozen=True)
class ActorPlan:
    """What one character does in one segment.

    direction: -1 left, +1 right, 0 in place. x0/x1: start/end centre (fraction of width); for
    `hide` x1 is the edge it leaves by (0 or 1) and for `enters` x0 is the edge it comes in from:
    the exact off-screen position depends on sprite size and is computed by `actor_track`.
    target: for `chase` the chased character; for a run, the chaser it flees from ("" otherwise).
    """

    character: str
    action: str
    direction: int = 0
    x0: float = 0.5
    x1: float = 0.5
    facing: int = 1
    target: str = ""
    hops: int = 0
    enters: bool = False


@dataclass(frozen=True)
class SegmentPlan:
    index: int
    scene: int
    scene_start: bool
    background: str
    framing: str
    actors: tuple[ActorPlan, ...]

    @property
    def cast(self) -> tuple[str, ...]:
        return tuple(a.character for a in self.actors)

    def actor(self, key: str) -> ActorPlan | None:
        return next((a for a in self.actors if a.character == key), None)


@dataclass(frozen=True)
class Episode:
    """A plan; `hats` (character -> HAT_COLOURS name, as pairs) dresses characters in every segment they
    are in (the memory variant's appearance; empty in the base toon world)."""

    seed: int
    segments: tuple[SegmentPlan, ...]
    hats: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.segments)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"seed": self.seed, "segments": [asdict(s) for s in self.segments]}
        if self.hats:  # base plans keep their meta.json as before
            d["hats"] = [list(h) for h in self.hats]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        """Inverse of `to_dict` (the "plan" in a toon-world clip's meta.json)."""
        try:
            segs = tuple(
                SegmentPlan(
                    **{k: v for k, v in s.items() if k != "actors"},
                    actors=tuple(ActorPlan(**a) for a in s["actors"]),
                )
                for s in d["segments"]
            )
            hats = tuple((str(c), str(colour)) for c, colour in d.get("hats", ()))
            episode = cls(seed=int(d["seed"]), segments=segs, hats=hats)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"not a toon-world episode plan ({e}); expected Episode.to_dict() output"
            ) from None
        for c, colour in episode.hats:
            if c not in CHARACTERS or colour not in HAT_COLOURS:
                raise ValueError(
                    f"episode plan hats: unknown character/colour {c!r}/{colour!r}; "
                    f"colours are {sorted(HAT_COLOURS)}"
                )
        for s in episode.segments:
            if s.background not in BACKGROUNDS or s.framing not in FRAMINGS:
                raise ValueError(
                    f"episode plan segment {s.index}: unknown background/framing {s.background!r}/{s.framing!r}"
                )
            for a in s.actors:
                if a.character not in CHARACTERS or a.action not in ACTIONS:
                    raise ValueError(
                        f"episode plan segment {s.index}: unknown character/action {a.character!r}/{a.action!r}"
                    )
        return episode


# ----------------------------------------------------------------------------- planning


def stage(prop_side: int) -> tuple[float, float]:
    """Where characters stand and run (fraction of width): clear of the prop at one edge."""
    return (X_MIN, X_PROP) if prop_side > 0 else (1.0 - X_PROP, X_MAX)


def _reset_positions(rng: np.random.Generator, cast: tuple[str, ...], prop_side: int) -> dict[str, float]:
    """Fresh positions after a cut: on the stage, preferably at least 0.25 apart."""
    lo, hi = stage(prop_side)
    best, best_gap = None, -1.0
    for _ in range(100):
        xs = rng.uniform(lo, hi, size=len(cast))
        gap = float(np.min(np.diff(np.sort(xs)))) if len(cast) > 1 else 1.0
        if gap > best_gap:
            best, best_gap = xs, gap
        if gap >= 0.25:
            break
    return {c: float(x) for c, x in zip(cast, best)}


def _run_room(x: float, direction: int, prop_side: int) -> float:
    lo, hi = stage(prop_side)
    return (hi - x) if direction > 0 else (x - lo)


def check_chase_setup_prob(value: float, where: str = "chase_setup_prob") -> None:
    """ValueError naming `where` unless `value` is a probability."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: expected a probability in [0, 1], got {value!r}")


def _line_up_chase(
    rng: np.random.Generator, cast: tuple[str, ...], pos: dict[str, float], prop_side: int
) -> dict[str, float]:
    """Positions with two random cast members lined up for a chase (CHASE_GAP apart, at one stage end)."""
    lo, hi = stage(prop_side)
    i, j = rng.choice(len(cast), size=2, replace=False)
    chaser, target = cast[int(i)], cast[int(j)]
    direction = 1 if rng.random() < 0.5 else -1
    start = float(rng.uniform(0.0, hi - lo - CHASE_GAP - MIN_RUN))  # keeps the target's run on the stage
    pos = dict(pos)
    pos[chaser] = lo + start if direction > 0 else hi - start
    pos[target] = pos[chaser] + direction * CHASE_GAP
    return pos


def _chase_direction(pos: dict[str, float], chaser: str, target: str, prop_side: int) -> int:
    """+1/-1 if `chaser` can chase `target` that way this segment (behind it, target has room), else 0."""
    gap = pos[target] - pos[chaser]
    direction = 1 if gap > 0 else -1
    if abs(gap) >= 0.2 and _run_room(pos[target], direction, prop_side) >= MIN_RUN:
        return direction
    return 0


def _plan_actions(
    rng: np.random.Generator, cast: tuple[str, ...], pos: dict[str, float], hidden: set[str], prop_side: int
) -> dict[str, ActorPlan]:
    """One draw of every cast member's action for a segment, from the current positions."""
    plans: dict[str, ActorPlan] = {}
    edge = 1.0 if prop_side > 0 else 0.0
    # A character that hid last segment (no cut since) comes back out, running away from the prop.
    for c in cast:
        if c in hidden:
            d = -prop_side
            x1 = float(rng.uniform(0.35, 0.65))
            plans[c] = ActorPlan(c, "run_right" if d > 0 else "run_left", d, edge, x1, facing=d, enters=True)
    free = [c for c in cast if c not in plans]
    pairs = [(a, b) for a in free for b in free if a != b and _chase_direction(pos, a, b, prop_side)]
    if pairs and rng.random() < 0.6:
        a, b = pairs[int(rng.integers(len(pairs)))]
        d = _chase_direction(pos, a, b, prop_side)
        dist = float(rng.uniform(MIN_RUN, _run_room(pos[b], d, prop_side)))
        plans[a] = ActorPlan(a, "chase", d, pos[a], pos[a] + d * dist, facing=d, target=b)
        plans[b] = ActorPlan(
            b, "run_right" if d > 0 else "run_left", d, pos[b], pos[b] + d * dist, facing=d, target=a
        )
    for c in cast:
        if c in plans:
            continue
        x = pos[c]
        options: list[tuple[str, float]] = [("idle", 1.0), ("jump", 1.2)]
        if abs(edge - x) >= MIN_HIDE_RUN:
            options.append(("hide", 0.8))
        for action, d in (("run_right", 1), ("run_left", -1)):
            if _run_room(x, d, prop_side) >= MIN_RUN:
                options.append((action, 2.0))
        weights = np.array([w for _, w in options])
        action = options[int(rng.choice(len(options), p=weights / weights.sum()))][0]
        if action in ("run_left", "run_right"):
            d = 1 if action == "run_right" else -1
            dist = float(rng.uniform(MIN_RUN, _run_room(x, d, prop_side)))
            plans[c] = ActorPlan(c, action, d, x, x + d * dist, facing=d)
        elif action == "hide":
            plans[c] = ActorPlan(c, "hide", prop_side, x, edge, facing=prop_side)
        elif action == "jump":
            facing = int(rng.choice([-1, 1]))
            plans[c] = ActorPlan(c, "jump", 0, x, x, facing=facing, hops=int(rng.integers(2, 4)))
        else:
            plans[c] = ActorPlan(c, "idle", 0, x, x, facing=int(rng.choice([-1, 1])))
    return plans


def occlusion(plans: list[ActorPlan], framing: str, n_frames: int = 24, frame_aspect: float = 1.0) -> float:
    """Worst share of its on-screen frames in which a character's core is more than a third covered.

    The core is the middle 60% of its width (where its body is). Covered = the part of the core
    under characters drawn in front of it (scaled by their height ratio) plus the part outside the
    frame. Used to stage shots so that detectors (and viewers) can see everyone.
    """
    tracks = {p.character: actor_track(p, framing, n_frames, frame_aspect) for p in plans}
    worst = 0.0
    for p in plans:
        back, tb = get_character(p.character), tracks[p.character]
        hb = CORE * half_width(p.character, framing, frame_aspect)
        lo, hi = tb.x - hb, tb.x + hb
        covered = (np.clip(-lo, 0, None) + np.clip(hi - 1.0, 0, None)) / (2 * hb)
        for q in plans:
            if draw_rank(q.character) <= draw_rank(p.character):
                continue
            tf, hf = tracks[q.character], half_width(q.character, framing, frame_aspect)
            overlap = np.clip(np.minimum(hi, tf.x + hf) - np.maximum(lo, tf.x - hf), 0, None) / (2 * hb)
            covered = (
                covered + overlap * min(1.0, get_character(q.character).height / back.height) * tf.visible
            )
        on_screen = tb.visible
        if on_screen.any():
            worst = max(worst, float(np.mean(covered[on_screen] > 1 / 3)))
    return worst


def sample_episode(
    seed: int,
    n_segments: int,
    max_scene_segments: int = 3,
    cut_prob: float = 0.35,
    close_prob: float = 0.3,
    chase_setup_prob: float = CHASE_SETUP_PROB,
) -> Episode:
    """Plan an episode of `n_segments` 3-s segments, deterministically from `seed`.

    Scenes last 1..max_scene_segments segments (drawn from the seeded RNG); each scene has a new
    background and a cast. Inside a scene, the framing changes (wide <-> close camera cut) at a
    segment boundary with probability `cut_prob`; positions carry over between segments unless the
    camera cuts. After each such reset, a wide shot of two or more characters lines two of them up
    for a chase with probability `chase_setup_prob` (0 plans exactly as before that option existed).
    """
    if not isinstance(n_segments, int) or n_segments < 1:
        raise ValueError(f"n_segments: expected a positive int, got {n_segments!r}")
    if max_scene_segments < 1:
        raise ValueError(f"max_scene_segments: expected >= 1, got {max_scene_segments}")
    check_chase_setup_prob(chase_setup_prob)
    rng = np.random.default_rng(seed)
    cast_weights = np.array([w for _, w in _CASTS])
    segments: list[SegmentPlan] = []
    prev_bg = ""
    scene = 0
    while len(segments) < n_segments:
        length = min(int(rng.integers(1, max_scene_segments + 1)), n_segments - len(segments))
        bg = str(rng.choice([b for b in BACKGROUND_KEYS if b != prev_bg]))
        prev_bg = bg
        cast = _CASTS[int(rng.choice(len(_CASTS), p=cast_weights / cast_weights.sum()))][0]
        cast = tuple(cast[i] for i in rng.permutation(len(cast)))
        framing = "close" if rng.random() < close_prob else "wide"
        side = BACKGROUNDS[bg].prop_side
        hidden: set[str] = set()
        for k in range(length):
            reset = k == 0
            if k > 0 and rng.random() < cut_prob:
                framing = "wide" if framing == "close" else "close"
                reset = True
            if reset:
                pos, hidden = _reset_positions(rng, cast, side), set()
                # (no draw when the setup is off: episodes planned before it existed stay the same)
                if chase_setup_prob > 0 and framing == "wide" and len(cast) >= 2:
                    if rng.random() < chase_setup_prob:
                        pos = _line_up_chase(rng, cast, pos, side)
            # stage the shot: re-draw until nobody is mostly covered for long (else keep the best draw)
            best, best_occ = None, 2.0
            for _ in range(STAGING_TRIES):
                plans = _plan_actions(rng, cast, pos, hidden, side)
                occ = occlusion(list(plans.values()), framing)
                if occ < best_occ:
                    best, best_occ = plans, occ
                if occ <= MAX_OCCLUSION:
                    break
            plans = best
            for c, p in plans.items():
                pos[c] = p.x1
                if p.action == "hide":
                    hidden.add(c)
                else:
                    hidden.discard(c)
            segments.append(
                SegmentPlan(len(segments), scene, k == 0, bg, framing, tuple(plans[c] for c in cast))
            )
        scene += 1
    return Episode(seed=int(seed), segments=tuple(segments))


# ----------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class Track:
    """Per-frame motion of one actor in one segment. All arrays have shape [T]."""

    x: np.ndarray  # centre, fraction of width
    lift: np.ndarray  # height above the ground line, fraction of frame height
    facing: np.ndarray  # +1 right, -1 left
    moving: np.ndarray  # legs animate
    visible: np.ndarray  # False once hidden


def half_width(character: str, framing: str, frame_aspect: float) -> float:
    """Half the sprite width as a fraction of frame width (frame_aspect = W / H)."""
    ch = get_character(character)
    return 0.5 * ch.aspect * ch.height * FRAMINGS[framing] / frame_aspect


def actor_track(actor: ActorPlan, framing: str, n_frames: int, frame_aspect: float) -> Track:
    """Where the actor is in each of the segment's `n_frames` frames (pure function of the plan)."""
    t = (np.arange(n_frames) + 0.5) / n_frames  # [T] in (0, 1)
    off = half_width(actor.character, framing, frame_aspect) + 0.02  # fully off screen beyond this
    x0, x1 = actor.x0, actor.x1
    if actor.enters:
        x0 = 1.0 + off if x0 >= 1.0 else -off
    facing = np.full(n_frames, actor.facing, dtype=np.int8)
    visible = np.ones(n_frames, dtype=bool)
    lift = np.zeros(n_frames)
    moving = np.zeros(n_frames, dtype=bool)
    if actor.action == "hide":
        x1 = 1.0 + off if x1 >= 1.0 else -off
        s = np.clip(t / HIDE_END, 0.0, 1.0)
        x = x0 + (x1 - x0) * s
        visible = s < 1.0
        moving = visible.copy()
    elif actor.action in ("chase", "run_left", "run_right"):
        x = x0 + (x1 - x0) * t
        moving[:] = True
        lift = 0.015 * np.abs(np.sin(np.pi * 6 * t))  # running bounce
    elif actor.action == "jump":
        x = np.full(n_frames, x0)
        lift = JUMP_HEIGHT * np.abs(np.sin(np.pi * actor.hops * t))
    else:
        x = np.full(n_frames, x0)
    return Track(x=x.astype(np.float64), lift=lift, facing=facing, moving=moving, visible=visible)
