"""Storyboard text -> requested facts."""

from __future__ import annotations

from ttt_engine.eval.facts import SegmentFacts, facts_from_episode, parse_segment, parse_storyboard
from ttt_engine.storyboard import Storyboard
from ttt_engine.toonworld import episode_storyboard, sample_episode


def test_generated_storyboards_parse_to_their_plans() -> None:
    for seed in range(60):
        ep = sample_episode(seed, 4)
        assert parse_storyboard(episode_storyboard(ep)) == facts_from_episode(ep), seed


def test_hand_written_sentences() -> None:
    f = parse_segment(
        "A new scene begins in the living room. Close-up. Tom the cat chases Jerry the mouse to the left.",
        scene_start=True,
    )
    assert f == SegmentFacts.make(
        ("cat", "mouse"), "living_room", "close", {"cat": "left", "mouse": "left"}, True
    )

    f = parse_segment(
        "The mouse dashes off and hides behind the bush. The dog runs right. Wide shot of the garden."
    )
    assert f.characters == ("mouse", "dog") and f.background == "garden" and f.framing == "wide"
    assert f.motion("mouse") == "hide" and f.motion("dog") == "right"

    # the chased character's own sentence wins over the implied direction
    f = parse_segment("Spike the dog chases the cat to the right. The cat jumps. In the kitchen.")
    assert f.motion("dog") == "right" and f.motion("cat") == "jump"

    # a run with no direction requests presence but no motion; "catching" is not a cat
    f = parse_segment("The dog runs around, catching its breath. Night street. It stands still.")
    assert f.characters == ("dog",) and f.motion("dog") is None and f.background == "night_street"

    f = parse_segment("Nothing happens here.")
    assert f.characters == () and f.background is None and f.framing is None


def test_background_inherited_inside_a_scene_only() -> None:
    sb = Storyboard.from_list(
        [
            {"text": "In the garden, the cat stands still."},
            {"text": "The cat runs left."},
            {"text": "The mouse jumps.", "requires_scene_transition": True},
        ]
    )
    facts = parse_storyboard(sb)
    assert [f.background for f in facts] == ["garden", "garden", None]
    assert [f.scene_start for f in facts] == [True, False, True]
