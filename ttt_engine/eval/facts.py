"""What a storyboard asks for, per segment: parsed from the TEXT with a small vocabulary parser.

The parser knows the toon world's vocabulary (character aliases, background names, action verbs,
"wide shot"/"close-up") and reads subject-verb(-object) sentences:

- a character is requested when any sentence mentions it (e.g. "Tom the cat", "the mouse");
- a sentence's subject is the last character mentioned before its verb; the verb of highest
  priority (in this order) decides the motion: "hides" -> hide, "chases X ... left/right" -> that direction for the subject
  (and for X unless X has its own sentence), "runs left/right" -> left/right, "jumps"/"hops" ->
  jump, "stands still"/"stays still"/"waits" -> still; a run without a direction requests nothing;
- the background is the first background name found; a segment naming none inherits the
  background of the previous segment of the same scene;
- the framing is "close-up" or "wide (shot)" when named.

So any format-3 storyboard written in this vocabulary can be scored, not only generated ones.
`facts_from_episode` gives the same facts from a toon-world plan (meta.json) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ttt_engine.storyboard import Storyboard
from ttt_engine.toonworld.world import BACKGROUNDS, CHARACTER_KEYS, CHARACTERS, Episode

MOTIONS = ("left", "right", "jump", "hide", "still")


@dataclass(frozen=True)
class SegmentFacts:
    """Requested content of one segment. motions: (character, motion) pairs, motion in MOTIONS."""

    characters: tuple[str, ...]
    background: str | None
    framing: str | None
    motions: tuple[tuple[str, str], ...]
    scene_start: bool

    def motion(self, character: str) -> str | None:
        return dict(self.motions).get(character)

    @classmethod
    def make(
        cls,
        characters,
        background: str | None,
        framing: str | None,
        motions: dict[str, str],
        scene_start: bool,
    ) -> SegmentFacts:
        """Canonical form: characters and motions in CHARACTER_KEYS order (so equal facts compare equal)."""
        chars = tuple(k for k in CHARACTER_KEYS if k in set(characters))
        return cls(
            chars, background, framing, tuple((k, motions[k]) for k in chars if k in motions), scene_start
        )


def _alias_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    alts = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alts})s?\b")


_CHAR_RE = {k: _alias_pattern(c.aliases) for k, c in CHARACTERS.items()}
_BG_RE = {k: _alias_pattern(b.aliases) for k, b in BACKGROUNDS.items()}
_VERBS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("hide", re.compile(r"\b(?:hides|hide|hiding)\b")),
    ("chase", re.compile(r"\b(?:chases|chase|chasing)\b")),
    ("run", re.compile(r"\b(?:runs|run|running|dashes|races|scurries)\b")),
    ("jump", re.compile(r"\b(?:jumps|jump|jumping|hops|hopping)\b")),
    ("still", re.compile(r"\b(?:stands still|stays still|sits still|keeps still|waits|does not move)\b")),
)
_DIR_RE = re.compile(r"\b(left|right)\b")
_CLOSE_RE = re.compile(r"\bclose[\s-]?ups?\b")
_WIDE_RE = re.compile(r"\bwide\b")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")


def _mentions(sentence: str) -> list[tuple[int, str]]:
    found = []
    for key, pat in _CHAR_RE.items():
        m = pat.search(sentence)
        if m:
            found.append((m.start(), key))
    return sorted(found)


def parse_segment(
    text: str, scene_start: bool = False, inherit_background: str | None = None
) -> SegmentFacts:
    """Facts requested by one paragraph (see the module docstring for the grammar)."""
    low = text.lower()
    characters: list[str] = []
    motions: dict[str, str] = {}
    implied: dict[str, str] = {}  # chased characters, unless they get a sentence of their own
    for sentence in _SENTENCE_SPLIT.split(low):
        mentions = _mentions(sentence)
        for _, key in mentions:
            if key not in characters:
                characters.append(key)
        # the highest-priority verb with a character before it ("dashes off and hides" -> hide)
        verbs = [(m.start(), kind, m.end()) for kind, pat in _VERBS if (m := pat.search(sentence))]
        verbs = [v for v in verbs if any(p < v[0] for p, _ in mentions)]
        if not verbs:
            continue
        pos, kind, end = verbs[0]
        before = [k for p, k in mentions if p < pos]
        subject = before[-1]
        direction = _DIR_RE.search(sentence, end)
        motion: str | None
        if kind in ("run", "chase"):
            motion = direction.group(1) if direction else None
        else:
            motion = kind
        if motion is None:
            continue
        motions.setdefault(subject, motion)
        if kind == "chase":
            after = [k for p, k in mentions if p > pos and k != subject]
            if after:
                implied.setdefault(after[0], motion)
    for key, motion in implied.items():
        motions.setdefault(key, motion)
    background = None
    bg_hits = sorted((m.start(), k) for k, pat in _BG_RE.items() if (m := pat.search(low)))
    if bg_hits:
        background = bg_hits[0][1]
    elif not scene_start:
        background = inherit_background
    framing = None
    fr_hits = sorted(
        (m.start(), f) for f, pat in (("close", _CLOSE_RE), ("wide", _WIDE_RE)) if (m := pat.search(low))
    )
    if fr_hits:
        framing = fr_hits[0][1]
    return SegmentFacts.make(characters, background, framing, motions, scene_start)


def parse_storyboard(storyboard: Storyboard) -> list[SegmentFacts]:
    """Facts for every segment; backgrounds carry over inside a scene when a paragraph names none."""
    out: list[SegmentFacts] = []
    for i, seg in enumerate(storyboard.segments):
        scene_start = i == 0 or seg.scene_transition
        inherit = None if scene_start or not out else out[-1].background
        out.append(parse_segment(seg.text, scene_start=scene_start, inherit_background=inherit))
    return out


_ACTION_MOTION = {"run_left": "left", "run_right": "right", "jump": "jump", "hide": "hide", "idle": "still"}


def facts_from_episode(episode: Episode) -> list[SegmentFacts]:
    """The same facts read straight from a toon-world plan (meta.json "plan")."""
    out = []
    for seg in episode.segments:
        motions = {}
        for a in seg.actors:
            if a.action == "chase":
                motions[a.character] = "left" if a.direction < 0 else "right"
            else:
                motions[a.character] = _ACTION_MOTION[a.action]
        out.append(SegmentFacts.make(seg.cast, seg.background, seg.framing, motions, seg.scene_start))
    return out
