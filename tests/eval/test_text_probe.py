"""`ttt-studio probe-text`: word swaps, the paired losses, and the command's errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttt_engine.cli import main
from ttt_engine.eval.text_probe import ProbeConfig, format_rows, probe
from ttt_engine.pipeline.prompt_edit import PromptEdit, WordSwap
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.toonworld.dataset import write_dataset


@pytest.fixture(scope="module")
def toon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe") / "data"
    return write_dataset(root, n_clips=6, segments_range=(1, 1), height=32, width=32, fps=8, seed=0)


def tiny_pipe() -> VideoPipeline:
    # the toon world's prompts are 30-50 words: a text length that keeps them whole
    return VideoPipeline.tiny_random(
        0, first_segment_frames=7, segment_frames=6, max_text_len=64, ttt_backend="reference"
    )


def test_word_swap_goes_both_ways_on_whole_words_and_keeps_capitals() -> None:
    swap = WordSwap.parse("left=right")
    assert swap("Tom runs left. Right away Jerry runs right; leftover cheese.") == (
        "Tom runs right. Left away Jerry runs left; leftover cheese."
    )
    assert swap.name == "left<->right"
    for bad, message in [
        ("left", "expected WORD=WORD"),
        ("left=two words", "is not a single word"),
        ("cat=Cat", "the same"),
        ("=dog", "is not a single word"),
    ]:
        with pytest.raises(ValueError, match=message):
            WordSwap.parse(bad)


def test_prompt_edit_swaps_several_pairs_together() -> None:
    edit = PromptEdit.parse("Tom=Jerry  cat=mouse")
    assert edit("Tom the cat chases Jerry the mouse. The mouse hides.") == (
        "Jerry the mouse chases Tom the cat. The cat hides."
    )
    assert edit.spec == "Tom=Jerry cat=mouse" and edit.name == "Tom<->Jerry cat<->mouse"
    for bad, message in [
        ("", "expected WORD=WORD swaps"),
        ("cat=mouse mouse=dog", "'mouse' is in two swaps"),
        ("Tom=Jerry cat", "word swap 'cat': expected WORD=WORD"),
    ]:
        with pytest.raises(ValueError, match=message):
            PromptEdit.parse(bad)


def test_probe_config_is_validated() -> None:
    with pytest.raises(ValueError, match="timesteps"):
        ProbeConfig(timesteps=(1000,))
    with pytest.raises(ValueError, match="max_clips"):
        ProbeConfig(max_clips=0)


def test_a_text_blind_model_loses_nothing_when_words_are_swapped(toon: Path) -> None:
    pipe = tiny_pipe()
    config = ProbeConfig(timesteps=(500, 900), max_clips=3)
    seeing = probe(pipe, toon, [WordSwap("cat", "dog")], config)
    assert [(r.timestep, r.clips) for r in seeing] == [(500, 3), (900, 3)]
    # a random model reacts to any change of its text, so both differences are non-zero
    assert all(r.edited != r.true and r.empty != r.true for r in seeing)

    fixed = pipe.text_encoder.encode(["one text for every prompt"])
    pipe.text_encoder.encode = lambda texts: (
        fixed[0].expand(len(texts), -1, -1),
        fixed[1].expand(len(texts), -1),
    )
    blind = probe(pipe, toon, [WordSwap("cat", "dog")], config)
    # same latents, noise and timesteps for the three prompts: the differences are exactly zero
    assert all(r.edited == r.true == r.empty for r in blind)
    assert [r.true for r in blind] != [r.true for r in seeing]
    table = format_rows(seeing)
    assert "cat<->dog" in table and "+swap" in table.splitlines()[0]


def test_a_swap_no_prompt_holds_is_an_error(toon: Path) -> None:
    with pytest.raises(ValueError, match="word swap piano<->violin: no prompt"):
        probe(tiny_pipe(), toon, [WordSwap("piano", "violin")], ProbeConfig(timesteps=(500,), max_clips=2))


def test_cli_prints_the_table_and_names_bad_input(tmp_path: Path, toon: Path, capsys) -> None:
    model = tiny_pipe().save_folder(tmp_path / "model")
    assert (
        main(["probe-text", str(model), str(toon), "--swap", "cat=dog", "--timesteps", "900", "--clips", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "cat<->dog" in out and " 900 " in out
    assert main(["probe-text", str(model), str(toon), "--swap", "cat"]) == 2
    assert "expected WORD=WORD" in capsys.readouterr().err
    assert main(["probe-text", str(model), str(toon), "--swap", "cat=dog", "--timesteps", "9x"]) == 2
    assert "--timesteps: expected comma-separated integers" in capsys.readouterr().err
    assert main(["probe-text", str(model), str(tmp_path / "nowhere"), "--swap", "cat=dog"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_probe_uses_the_posterior_mean_so_it_repeats(toon: Path) -> None:
    pipe = tiny_pipe()
    config = ProbeConfig(timesteps=(700,), max_clips=2, seed=5)
    a = probe(pipe, toon, [WordSwap("cat", "dog")], config)
    b = probe(pipe, toon, [WordSwap("cat", "dog")], config)
    assert a == b and torch.isfinite(torch.tensor([a[0].true, a[0].edited, a[0].empty])).all()
