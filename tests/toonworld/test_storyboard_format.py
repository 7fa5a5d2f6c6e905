"""ttt_engine.storyboard: the format-3 storyboard shared by the whole project."""

from __future__ import annotations

import json

import pytest

from ttt_engine.storyboard import ALLOWED_KEYS, Segment, Storyboard, StoryboardError

GOOD = [
    {"text": "The story opens in the kitchen. Tom the cat runs left. A wide shot."},
    {"text": "We are still in the kitchen. The mouse jumps.", "neg_text": "blurry"},
    {"text": "A new scene begins in the garden. The dog hides.", "requires_scene_transition": True},
    {"text": "The action continues in the garden. The dog stands still.", "requires_scene_transition": False},
]


def test_from_list_defaults_and_round_trip() -> None:
    sb = Storyboard.from_list(GOOD)
    assert len(sb) == 4
    assert sb[0] == Segment(text=GOOD[0]["text"], neg_text="", scene_transition=False)
    assert sb[1].neg_text == "blurry"
    assert sb[2].scene_transition is True
    out = sb.to_list()
    assert all(set(e) == set(ALLOWED_KEYS) for e in out)
    assert Storyboard.from_list(out) == sb
    assert sb.duration_s == 12


def test_scenes_split_at_transitions_and_first_segment_flag_either_way() -> None:
    assert Storyboard.from_list(GOOD).scenes() == ((0, 1), (2, 3))
    flagged_first = [dict(GOOD[0], requires_scene_transition=True)] + GOOD[1:]
    assert Storyboard.from_list(flagged_first).scenes() == ((0, 1), (2, 3))
    all_new = [{"text": "x", "requires_scene_transition": True}] * 3
    assert Storyboard.from_list(all_new).scenes() == ((0,), (1,), (2,))


@pytest.mark.parametrize(
    "obj, needles",
    [
        ({"text": "a"}, ["must be a list", "dict"]),
        ("just text", ["must be a list", "str"]),
        ([], ["empty list"]),
        ([GOOD[0], "text"], ["segment 1", "expected an object", "str"]),
        ([GOOD[0], {"neg_text": ""}], ["segment 1", "missing", "'text'"]),
        ([{"text": ""}], ["segment 0", "'text'", "empty"]),
        ([GOOD[0], GOOD[1], {"text": "  \n\t"}], ["segment 2", "'text'", "whitespace"]),
        ([{"text": 3}], ["segment 0", "'text'", "must be a string", "int"]),
        ([GOOD[0], {"text": "b", "neg_text": None}], ["segment 1", "'neg_text'", "NoneType"]),
        (
            [{"text": "b", "requires_scene_transition": "yes"}],
            ["segment 0", "requires_scene_transition", "bool", "str"],
        ),
        (
            [GOOD[0], {"text": "b", "requires_scene_transition": 1}],
            ["segment 1", "requires_scene_transition", "int"],
        ),
        (
            [GOOD[0], {"text": "b", "scene_change": True, "caption": "x"}],
            [
                "segment 1",
                "unknown",
                "caption",
                "scene_change",
                "allowed",
                "requires_scene_transition",
                "neg_text",
            ],
        ),
    ],
    ids=[
        "dict",
        "str",
        "empty",
        "entry-not-object",
        "missing-text",
        "empty-text",
        "whitespace-text",
        "text-int",
        "neg-none",
        "flag-str",
        "flag-int",
        "unknown-keys",
    ],
)
def test_validation_errors_name_segment_and_field(obj, needles) -> None:
    with pytest.raises(StoryboardError) as e:
        Storyboard.from_list(obj)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_storyboard_error_is_value_error() -> None:
    assert issubclass(StoryboardError, ValueError)


def test_validate_max_segments() -> None:
    sb = Storyboard.from_list([{"text": f"segment {i}."} for i in range(22)])
    with pytest.raises(StoryboardError, match=r"22 segments \(66 s\); at most 21 \(63 s\)"):
        sb.validate()
    sb.validate(max_segments=22)
    with pytest.raises(StoryboardError, match="at most 3"):
        Storyboard.from_list(GOOD).validate(max_segments=3)
    Storyboard.from_list(GOOD).validate()


def test_validate_checks_directly_built_objects() -> None:
    with pytest.raises(StoryboardError, match=r"segment 1: field 'text' is empty"):
        Storyboard((Segment("fine."), Segment("   "))).validate()
    with pytest.raises(StoryboardError, match=r"segment 0: field 'requires_scene_transition' must be a bool"):
        Storyboard((Segment("fine.", scene_transition="no"),)).validate()  # type: ignore[arg-type]
    with pytest.raises(StoryboardError, match="no segments"):
        Storyboard(()).validate()


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_load_dump_round_trip(tmp_path, suffix) -> None:
    sb = Storyboard.from_list(GOOD)
    path = sb.dump(tmp_path / f"board{suffix}")
    assert Storyboard.load(path) == sb
    if suffix == ".json":
        assert json.loads(path.read_text()) == sb.to_list()


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(StoryboardError, match="not found"):
        Storyboard.load(tmp_path / "missing.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{'text': 1}]")
    with pytest.raises(StoryboardError, match="bad.json: not valid JSON"):
        Storyboard.load(bad_json)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("- text: [unclosed\n")
    with pytest.raises(StoryboardError, match="bad.yaml: not valid YAML"):
        Storyboard.load(bad_yaml)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("- text: ok\n- text: ''\n")
    with pytest.raises(StoryboardError, match=r"wrong.yaml: segment 1: field 'text' is empty"):
        Storyboard.load(wrong)


def test_from_texts() -> None:
    sb = Storyboard.from_texts(["a.", "b.", "c."], scene_starts=[2])
    assert [s.scene_transition for s in sb] == [False, False, True]
    with pytest.raises(StoryboardError, match="segment 1"):
        Storyboard.from_texts(["a.", ""])
