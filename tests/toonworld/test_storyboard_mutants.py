"""Storyboard behaviour that the first mutation run showed untested (docs/reliability.md, "Mutation testing").

Each test states a rule of ttt_engine.storyboard that a one-line change broke without any test failing:
errors that name what was received, a storyboard built from a list still being an immutable value,
YAML written as YAML with the fields in format order, and storyboard files being UTF-8 whatever the
locale says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ttt_engine
from ttt_engine.storyboard import Segment, Storyboard, StoryboardError

NON_ASCII = "Amélie the cat naps in the Café Ōsaka. Jerry — the mouse — tiptoes past."


def test_wrong_neg_text_type_names_the_type_received() -> None:
    with pytest.raises(StoryboardError, match=r"segment 0: field 'neg_text' must be a string, got int"):
        Storyboard.from_list([{"text": "A cat.", "neg_text": 5}])


def test_validate_names_a_non_segment_entry_and_its_type() -> None:
    board = Storyboard((Segment("A cat."), "A dog."))
    with pytest.raises(StoryboardError, match=r"segment 1: expected a Segment, got str"):
        board.validate()


def test_a_storyboard_built_from_a_list_is_an_immutable_hashable_value() -> None:
    from_list = Storyboard([Segment("A cat."), Segment("A dog.", scene_transition=True)])
    from_tuple = Storyboard((Segment("A cat."), Segment("A dog.", scene_transition=True)))
    assert isinstance(from_list.segments, tuple)
    assert from_list == from_tuple
    assert hash(from_list) == hash(from_tuple)


@pytest.mark.parametrize("suffix", [".yaml", ".YML"])
def test_dump_writes_yaml_block_style_in_format_order(tmp_path: Path, suffix: str) -> None:
    board = Storyboard.from_texts([NON_ASCII, "The dog barks."], scene_starts=[1])
    text = board.dump(tmp_path / f"board{suffix}").read_text(encoding="utf-8")
    # YAML as people write it (not JSON, which YAML readers would also accept), fields in format-3 order,
    # non-ASCII text readable as written
    assert text.startswith("- text: ")
    first = text.split("\n- ")[0]
    assert first.index("text:") < first.index("neg_text:") < first.index("requires_scene_transition:")
    assert NON_ASCII in text
    assert Storyboard.load(tmp_path / f"board{suffix}") == board


def test_dump_json_keeps_non_ascii_text_readable(tmp_path: Path) -> None:
    board = Storyboard.from_texts([NON_ASCII])
    text = board.dump(tmp_path / "board.json").read_text(encoding="utf-8")
    assert NON_ASCII in text
    assert json.loads(text)[0]["text"] == NON_ASCII


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_files_are_utf8_even_under_an_ascii_locale(tmp_path: Path, suffix: str) -> None:
    # a server in a bare container may run with the C locale and no UTF-8 coercion: files stay UTF-8
    path = tmp_path / f"board{suffix}"
    path.write_text(json.dumps([{"text": NON_ASCII}], ensure_ascii=False), encoding="utf-8")
    code = (
        "import sys\n"
        "from ttt_engine.storyboard import Storyboard\n"
        "board = Storyboard.load(sys.argv[1])\n"
        "board.dump(sys.argv[2])\n"
        "assert sys.getfilesystemencoding() and __import__('locale').getencoding().lower() != 'utf-8'\n"
    )
    package_root = str(Path(ttt_engine.__file__).resolve().parents[1])
    env = dict(
        os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONPATH=package_root
    )
    out = tmp_path / f"out{suffix}"
    run = subprocess.run(
        [sys.executable, "-c", code, str(path), str(out)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert Storyboard.load(out)[0].text == NON_ASCII
    assert NON_ASCII in out.read_text(encoding="utf-8")
