"""Colour grades: a look the base never saw, exactly invertible on the toon world's colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ttt_engine.toonworld.grade import GRADES, get_grade, hue_rotation, write_graded_stills
from ttt_engine.toonworld.render import render_episode
from ttt_engine.toonworld.world import sample_episode


def test_hue_rotation_keeps_grey_and_is_orthogonal() -> None:
    r = hue_rotation(40.0)
    np.testing.assert_allclose(r @ np.ones(3), np.ones(3), atol=1e-12)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("name", sorted(GRADES))
def test_grade_is_invertible_on_toon_world_renders(name: str) -> None:
    grade = get_grade(name)
    frames = np.concatenate([render_episode(sample_episode(s, 2), 48, 48) for s in range(6)])
    raw = frames @ grade.matrix.T + np.asarray(grade.offset)
    assert raw.min() >= 0 and raw.max() <= 1  # no clipping: the inverse is exact
    graded = grade.apply(frames)
    assert np.abs(graded - frames).mean() > 0.1  # a different look
    np.testing.assert_allclose(grade.invert(graded), frames, atol=1e-5)


def test_graded_stills_have_captions(tmp_path) -> None:
    paths = write_graded_stills(tmp_path, 3, "dusk", seed=5, height=32, width=32)
    assert [p.name for p in paths] == ["dusk_0000.png", "dusk_0001.png", "dusk_0002.png"]
    assert Image.open(paths[0]).size == (32, 32)
    assert all(p.with_suffix(".txt").read_text().strip() for p in paths)
    with pytest.raises(ValueError, match="grade"):
        get_grade("sepia")
