"""ttt_engine/storyboard.py's loaders fuzzed: any file content and any decoded structure give a Storyboard
or a StoryboardError, never another exception; what they accept round-trips through dump and load.

Example counts (derandomized): 300 file contents (JSON and YAML), 300 structures, 100 round trips;
measured ~15 s in all (with the hostile files) on a 2-core CPU shared with other jobs (docs/reliability.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttt_engine.storyboard import MAX_FILE_BYTES, Storyboard, StoryboardError

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KEYS = st.sampled_from(["text", "neg_text", "requires_scene_transition", "TEXT", ""])
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
structures = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, st.text()), inner, max_size=4)
    ),
    max_leaves=30,
)
# nested past the parsers' recursion limit (PyYAML needs ~2.5 s to refuse 1,000 levels, so JSON only)
DEEP = [b"[" * 5_000, b"[" * 5_000 + b"]" * 5_000]
ODD_FILES = [
    b'[{"text": ' + b"9" * 5000 + b"}]",
    b"\xff\xfe[]",
    b"- text: &a [*a]\n",
    b"- !!python/object:os.system ls\n",
    b"&a [*a, *a]",
    b"- " * 20_000,
    b"x" * (MAX_FILE_BYTES + 1),
]


def _judge(load: Any) -> Storyboard | None:
    try:
        storyboard = load()
    except StoryboardError:
        return None
    assert isinstance(storyboard, Storyboard) and len(storyboard) >= 1
    storyboard.validate(max_segments=len(storyboard))
    return storyboard


@settings(FUZZ, max_examples=300)
@given(
    content=st.one_of(
        st.binary(max_size=200),
        structures.map(lambda s: json.dumps(s).encode()),
    ),
    suffix=st.sampled_from([".json", ".yaml", ".yml"]),
)
def test_any_file_gives_a_storyboard_or_a_storyboard_error(
    tmp_path_factory, content: bytes, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("sb") / f"board{suffix}"
    path.write_bytes(content)
    _judge(lambda: Storyboard.load(path))


segment = st.fixed_dictionaries(
    {"text": st.one_of(st.text(min_size=1), leaves)},
    optional={"neg_text": st.one_of(st.text(), leaves), "requires_scene_transition": leaves},
)


@settings(FUZZ, max_examples=300)
@given(obj=st.one_of(structures, st.lists(segment, max_size=5)))
def test_any_structure_gives_a_storyboard_or_a_storyboard_error(obj: Any) -> None:
    _judge(lambda: Storyboard.from_list(obj))


@settings(FUZZ, max_examples=100)
@given(
    texts=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1).filter(str.strip),
        min_size=1,
        max_size=5,
    ),
    suffix=st.sampled_from([".json", ".yaml"]),
)
def test_accepted_storyboards_round_trip(tmp_path_factory, texts: list[str], suffix: str) -> None:
    board = Storyboard.from_texts(texts, scene_starts=[0])
    path = board.dump(tmp_path_factory.mktemp("rt") / f"board{suffix}")
    assert Storyboard.load(path) == board


@pytest.mark.parametrize(
    "content, suffix",
    [(c, ".json") for c in DEEP] + [(c, suffix) for c in ODD_FILES for suffix in (".json", ".yaml")],
    ids=["deep", "deep_closed"]
    + [
        f"{n}{s}"
        for n in ("long_int", "utf16", "anchor", "python_tag", "alias", "dashes", "big")
        for s in ("-json", "-yaml")
    ],
)
def test_hostile_files_are_storyboard_errors(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"board{suffix}"
    path.write_bytes(content)
    with pytest.raises(StoryboardError, match="board"):
        Storyboard.load(path)
