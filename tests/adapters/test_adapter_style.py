"""The style must-show at a reduced budget: a style adapter trained on graded stills moves the shipped
model's shots towards the look (their colour distance to the stills drops).

The recorded run (docs/benchmarks.md, "Adapters (issue 24)") uses `python -m ttt_engine.adapters.experiment
style`'s defaults: 50 stills, 150 steps, 12 storyboards; this one trains on 12 stills for 40 steps and scores
2. The issue's second bound, storyboard adherence within 0.05 of the base's, is NOT met by the recorded run
(0.27 against 0.82, scored after undoing the grade), so it is not asserted here: docs/status.md lists it open.
"""

from __future__ import annotations

import pytest

from ttt_engine.adapters.experiment import StyleRun, style_experiment


@pytest.mark.slow
def test_style_adapter_moves_colours_towards_the_look(tmp_path) -> None:
    figures = style_experiment(StyleRun(out=tmp_path, stills=12, steps=40, storyboards=2))
    distance = figures["colour_distance"]
    assert distance["adapter"] < distance["base"], figures
