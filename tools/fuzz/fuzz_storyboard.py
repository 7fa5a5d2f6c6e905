"""atheris: the storyboard parser (ttt_engine.storyboard.Storyboard.from_bytes, JSON and YAML). Anything
but StoryboardError (or a signal) is a finding; an accepted storyboard must validate.

    nice -n 19 python tools/fuzz/fuzz_storyboard.py -max_total_time=300
"""

from __future__ import annotations

import atheris
from _harness import run

with atheris.instrument_imports(include=["ttt_engine.storyboard"]):
    from ttt_engine.storyboard import Storyboard, StoryboardError

SEEDS = [
    b'[{"text": "A cat runs.", "neg_text": "", "requires_scene_transition": false}]',
    b'[{"text": "One."}, {"text": "Two.", "requires_scene_transition": true}]',
    b"- text: A cat runs.\n- text: A dog sleeps.\n  requires_scene_transition: true\n",
    b'[{"text": 5}]',
    b"[[[[[[]]]]]]",
]


def test_one_input(data: bytes) -> None:
    as_yaml, body = bool(data[:1]) and data[0] & 1 == 1, data[1:]
    try:
        board = Storyboard.from_bytes(body, yaml=as_yaml)
    except StoryboardError:
        return
    board.validate(max_segments=len(board))


if __name__ == "__main__":
    run(test_one_input, [b"\0" + s for s in SEEDS[:2] + SEEDS[3:]] + [b"\1" + SEEDS[2]])
