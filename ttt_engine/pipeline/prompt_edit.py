"""Prompt edits shared by the text probe (eval/text_probe.py) and the trainer's contrast term
(train/trainer.py): a WordSwap turns a prompt into the same prompt with two words exchanged, e.g. the
"runs left" of a storyboard paragraph into "runs right"."""

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
