"""The storyboard: the paper's prompt format 3, one paragraph per 3-second segment.

Wire format (JSON, or YAML with a .yaml/.yml suffix): a list with one object per segment::

    [{"text": "Tom the cat chases the mouse to the left. ...",   # required, 3-5 sentences
      "neg_text": "",                                             # optional, default ""
      "requires_scene_transition": false}, ...]                   # optional, default false

``requires_scene_transition`` on segment i > 0 means segment i starts a new scene; the first segment
always starts one, so its flag is accepted either way. Every violation raises `StoryboardError`
naming the segment index and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEGMENT_SECONDS = 3
DEFAULT_MAX_SEGMENTS = 21  # 21 x 3 s = 63 s, the paper's longest video
ALLOWED_KEYS = ("text", "neg_text", "requires_scene_transition")
_YAML_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = (
    256 << 10
)  # 21 segments of 4 KB paragraphs (the server's limits) fit; more is not a storyboard


class StoryboardError(ValueError):
    """A storyboard that does not follow format 3; the message names the segment and field."""


@dataclass(frozen=True)
class Segment:
    """One 3-second segment: its paragraph, its negative prompt, and whether it starts a new scene."""

    text: str
    neg_text: str = ""
    scene_transition: bool = False


def _check_segment(i: int, text: Any, neg_text: Any, flag: Any) -> None:
    if not isinstance(text, str):
        raise StoryboardError(f"segment {i}: field 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise StoryboardError(f"segment {i}: field 'text' is empty or whitespace; expected a paragraph")
    if not isinstance(neg_text, str):
        raise StoryboardError(
            f"segment {i}: field 'neg_text' must be a string, got {type(neg_text).__name__}"
        )
    if not isinstance(flag, bool):
        raise StoryboardError(
            f"segment {i}: field 'requires_scene_transition' must be a bool (true/false), "
            f"got {type(flag).__name__} {flag!r}"
        )


@dataclass(frozen=True)
class Storyboard:
    """An ordered, non-empty tuple of segments. Build from the wire format with `from_list`/`load`."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.segments, tuple):
            object.__setattr__(self, "segments", tuple(self.segments))

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __getitem__(self, i: int) -> Segment:
        return self.segments[i]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.segments]

    @property
    def duration_s(self) -> int:
        return SEGMENT_SECONDS * len(self.segments)

    @classmethod
    def from_list(cls, obj: Any) -> Storyboard:
        """Parse the format-3 list (already decoded from JSON/YAML). Raises StoryboardError."""
        if not isinstance(obj, list):
            raise StoryboardError(f"storyboard must be a list of segment objects, got {type(obj).__name__}")
        if not obj:
            raise StoryboardError("storyboard is an empty list; expected at least one segment")
        segments = []
        for i, entry in enumerate(obj):
            if not isinstance(entry, dict):
                raise StoryboardError(
                    f"segment {i}: expected an object with keys {list(ALLOWED_KEYS)}, got {type(entry).__name__}"
                )
            unknown = sorted(str(k) for k in entry if k not in ALLOWED_KEYS)
            if unknown:
                raise StoryboardError(
                    f"segment {i}: unknown field(s) {unknown}; allowed fields are {list(ALLOWED_KEYS)}"
                )
            if "text" not in entry:
                raise StoryboardError(f"segment {i}: missing required field 'text'")
            text = entry["text"]
            neg = entry.get("neg_text", "")
            flag = entry.get("requires_scene_transition", False)
            _check_segment(i, text, neg, flag)
            segments.append(Segment(text=text, neg_text=neg, scene_transition=flag))
        return cls(tuple(segments))

    def to_list(self) -> list[dict[str, Any]]:
        """The format-3 list, every field written out."""
        return [
            {"text": s.text, "neg_text": s.neg_text, "requires_scene_transition": s.scene_transition}
            for s in self.segments
        ]

    def validate(self, max_segments: int = DEFAULT_MAX_SEGMENTS) -> None:
        """Check every segment (also for directly built objects) and the segment count."""
        if not self.segments:
            raise StoryboardError("storyboard has no segments; expected at least one")
        for i, seg in enumerate(self.segments):
            if not isinstance(seg, Segment):
                raise StoryboardError(f"segment {i}: expected a Segment, got {type(seg).__name__}")
            _check_segment(i, seg.text, seg.neg_text, seg.scene_transition)
        if len(self.segments) > max_segments:
            raise StoryboardError(
                f"storyboard has {len(self.segments)} segments ({self.duration_s} s); "
                f"at most {max_segments} ({max_segments * SEGMENT_SECONDS} s) are allowed"
            )

    def scenes(self) -> tuple[tuple[int, ...], ...]:
        """Segment indices grouped into scenes; a scene starts at segment 0 and at every flagged segment."""
        groups: list[list[int]] = []
        for i, seg in enumerate(self.segments):
            if i == 0 or seg.scene_transition:
                groups.append([])
            groups[-1].append(i)
        return tuple(tuple(g) for g in groups)

    @classmethod
    def load(cls, path: str | Path) -> Storyboard:
        """Read a .json, .yaml or .yml file of at most MAX_FILE_BYTES UTF-8 bytes (see from_bytes)."""
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise StoryboardError(f"storyboard file not found: {path}") from None
        return cls.from_bytes(data, yaml=path.suffix.lower() in _YAML_SUFFIXES, name=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, yaml: bool = False, name: str = "storyboard") -> Storyboard:
        """Parse the bytes of a JSON (or, with yaml=True, YAML) storyboard file; `name` labels errors.

        Any content raises StoryboardError or returns a Storyboard (the fuzz tests and tools/fuzz hold it
        to that): more than MAX_FILE_BYTES, bad UTF-8, nesting past the parsers' recursion limit and
        numbers too long for int() included.
        """
        if len(data) > MAX_FILE_BYTES:
            raise StoryboardError(f"{name}: larger than {MAX_FILE_BYTES} bytes; a storyboard is a few KB")
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StoryboardError(f"{name}: not UTF-8 text ({e})") from None
        if yaml:
            import yaml as pyyaml

            try:
                obj = pyyaml.safe_load(raw)
            except (pyyaml.YAMLError, RecursionError, ValueError) as e:
                raise StoryboardError(f"{name}: not valid YAML: {e}") from None
        else:
            try:
                obj = json.loads(raw)
            except (RecursionError, ValueError) as e:  # JSONDecodeError is a ValueError, as are huge ints
                raise StoryboardError(f"{name}: not valid JSON ({e}); use .yaml/.yml for YAML") from None
        try:
            return cls.from_list(obj)
        except StoryboardError as e:
            raise StoryboardError(f"{name}: {e}") from None

    def dump(self, path: str | Path) -> Path:
        """Write as JSON, or YAML when the suffix is .yaml/.yml. Returns the path."""
        path = Path(path)
        if path.suffix.lower() in _YAML_SUFFIXES:
            import yaml

            path.write_text(
                yaml.safe_dump(self.to_list(), sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
        else:
            path.write_text(json.dumps(self.to_list(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_texts(cls, texts: Iterable[str], scene_starts: Iterable[int] = ()) -> Storyboard:
        """Convenience: paragraphs plus the indices that start a new scene."""
        starts = set(scene_starts)
        return cls.from_list(
            [{"text": t, "requires_scene_transition": i in starts} for i, t in enumerate(texts)]
        )
