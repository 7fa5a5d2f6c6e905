"""Prompt edits shared by the text probe (eval/text_probe.py) and the trainer's contrast term
(train/trainer.py): a WordSwap turns a prompt into the same prompt with two words exchanged, e.g. the
"runs left" of a storyboard paragraph into "runs right"; a PromptEdit applies one or more swaps together,
e.g. "Tom=Jerry cat=mouse" makes the cat and the mouse trade places in the story."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class WordSwap:
    """Swap two words both ways (whole words, case-insensitive; a capital first letter is kept)."""

    a: str
    b: str

    def __post_init__(self) -> None:
        for word in (self.a, self.b):
            if not re.fullmatch(r"\w+", word or ""):
                raise ValueError(f"word swap {self.a!r}={self.b!r}: {word!r} is not a single word")
        if self.a.lower() == self.b.lower():
            raise ValueError(f"word swap {self.a!r}={self.b!r}: the two words are the same")

    @classmethod
    def parse(cls, spec: str) -> WordSwap:
        a, sep, b = spec.partition("=")
        if not sep:
            raise ValueError(f"word swap {spec!r}: expected WORD=WORD, e.g. left=right")
        return cls(a.strip(), b.strip())

    @property
    def name(self) -> str:
        return f"{self.a}<->{self.b}"

    def __call__(self, text: str) -> str:
        other = {self.a.lower(): self.b.lower(), self.b.lower(): self.a.lower()}

        def repl(m: re.Match[str]) -> str:
            word = other[m.group(0).lower()]
            return word[:1].upper() + word[1:] if m.group(0)[:1].isupper() else word

        pattern = rf"\b({re.escape(self.a)}|{re.escape(self.b)})\b"
        return re.sub(pattern, repl, text, flags=re.IGNORECASE)


@dataclass(frozen=True)
class PromptEdit:
    """Word swaps applied together: "left=right" or "Tom=Jerry cat=mouse" (pairs separated by spaces).
    No word may appear in two pairs, so the order the swaps run in does not matter."""

    swaps: tuple[WordSwap, ...]

    def __post_init__(self) -> None:
        if not self.swaps:
            raise ValueError("prompt edit: expected at least one WORD=WORD swap")
        words = [w.lower() for s in self.swaps for w in (s.a, s.b)]
        repeated = sorted({w for w in words if words.count(w) > 1})
        if repeated:
            raise ValueError(f"prompt edit {self.spec!r}: {repeated[0]!r} is in two swaps")

    @classmethod
    def parse(cls, spec: str) -> PromptEdit:
        """'left=right' or 'Tom=Jerry cat=mouse' -> PromptEdit (ValueError naming a bad pair)."""
        pairs = spec.split()
        if not pairs:
            raise ValueError(f"prompt edit {spec!r}: expected WORD=WORD swaps, e.g. left=right")
        return cls(tuple(WordSwap.parse(p) for p in pairs))

    @property
    def spec(self) -> str:
        return " ".join(f"{s.a}={s.b}" for s in self.swaps)

    @property
    def name(self) -> str:
        return " ".join(s.name for s in self.swaps)

    def __call__(self, text: str) -> str:
        for swap in self.swaps:
            text = swap(text)
        return text
