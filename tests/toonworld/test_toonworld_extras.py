"""Extra characters (the zorp): drawn when asked for by key, never in base sampling or base datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ttt_engine.storyboard import Storyboard
from ttt_engine.toonworld.dataset import load_frames, write_dataset
from ttt_engine.toonworld.extras import (
    extra_caption,
    extra_segment,
    write_extra_clips,
    write_extra_stills,
)
from ttt_engine.toonworld.render import render_segment_and_matte, to_uint8
from ttt_engine.toonworld.world import CHARACTERS, EXTRA_CHARACTERS, Episode, get_character, sample_episode

ZORP_RGB = to_uint8(np.asarray(EXTRA_CHARACTERS["zorp"].body))


def _zorp_pixels(frames_uint8: np.ndarray) -> int:
    return int(np.all(frames_uint8 == ZORP_RGB, axis=-1).sum())


def test_extras_are_not_in_the_cast() -> None:
    assert not set(EXTRA_CHARACTERS) & set(CHARACTERS)
    assert get_character("zorp") is EXTRA_CHARACTERS["zorp"]
    with pytest.raises(ValueError, match="'yeti'"):
        get_character("yeti")


def test_base_sampling_never_plans_an_extra_character() -> None:
    cast = {a.character for s in range(200) for seg in sample_episode(s, 3).segments for a in seg.actors}
    assert cast == set(CHARACTERS)


def test_base_dataset_holds_no_extra_character(tmp_path) -> None:
    root = write_dataset(tmp_path / "ds", 6, (2, 3), height=32, width=32)
    clips = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(clips) == 6
    for clip in clips:
        meta = (clip / "meta.json").read_text()
        assert "zorp" not in meta and "zorp" not in (clip / "storyboard.json").read_text().lower()
        plan = Episode.from_dict(json.loads(meta)["plan"])
        assert all(a.character in CHARACTERS for s in plan.segments for a in s.actors)


def test_extra_segment_renders_the_zorp_alone() -> None:
    seg = extra_segment("zorp", 11)
    assert seg.cast == ("zorp",)
    frames, matte = render_segment_and_matte(seg, 64, 64, 8)
    pixels = _zorp_pixels(to_uint8(frames))
    assert pixels > 40 * len(frames)  # its violet body is on screen in every frame
    assert matte.any(axis=(1, 2)).all()
    base = render_segment_and_matte(sample_episode(11, 1).segments[0], 64, 64, 8)[0]
    assert _zorp_pixels(to_uint8(base)) == 0
    with pytest.raises(ValueError, match="'cat'"):
        extra_segment("cat", 11)


def test_extra_stills_have_trigger_captions(tmp_path) -> None:
    paths = write_extra_stills(tmp_path, 3, "zorp", "zorp", seed=5, height=32, width=32)
    assert [p.name for p in paths] == ["zorp_0000.png", "zorp_0001.png", "zorp_0002.png"]
    assert Image.open(paths[0]).size == (32, 32)
    for p in paths:
        assert " zorp " in p.with_suffix(".txt").read_text()
        assert _zorp_pixels(np.asarray(Image.open(p).convert("RGB"))) > 0
    assert extra_caption(extra_segment("zorp", 3), "blip").count("blip") == 1


def test_extra_clips_are_the_stills_shots_in_motion(tmp_path) -> None:
    stills = write_extra_stills(tmp_path / "stills", 3, "zorp", "zorp", seed=5, height=32, width=32)
    clips = write_extra_clips(tmp_path / "clips", 3, "zorp", "blip", seed=5, height=32, width=32)
    assert [c.name for c in clips] == ["zorp_clip_0000", "zorp_clip_0001", "zorp_clip_0002"]
    for still, clip in zip(stills, clips, strict=True):
        frames = load_frames(clip)
        assert frames.shape == (24, 32, 32, 3)  # one 3-s segment at 8 fps
        assert np.array_equal(frames[12], np.asarray(Image.open(still).convert("RGB")))  # the still's frame
        assert all(_zorp_pixels(f) > 0 for f in frames)
        (segment,) = Storyboard.load(clip / "storyboard.json").segments
        assert segment.text == still.with_suffix(".txt").read_text().strip().replace("zorp", "blip")
    running = load_frames(
        clips[2]
    )  # seed 5's third shot: "A wide shot of the night street. A blip runs right."
    assert "runs right" in Storyboard.load(clips[2] / "storyboard.json").segments[0].text
    assert not np.array_equal(running[0], running[-1])  # a clip shows the move a still only names
    with pytest.raises(ValueError, match="count"):
        write_extra_clips(tmp_path / "none", 0, "zorp", "zorp", seed=5)
