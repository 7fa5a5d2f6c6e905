"""The planner stages chases: two characters lined up at a reset, and the old plans with the option off."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ttt_engine.toonworld import ClipDataset, write_dataset
from ttt_engine.toonworld.world import (
    BACKGROUNDS,
    CHASE_GAP,
    MAX_OCCLUSION,
    MIN_RUN,
    actor_track,
    occlusion,
    sample_episode,
    stage,
)

# sha256 of the plans of seeds 0-19 (3 segments each) as the planner made them before chases were
# staged: the plans the shipped default model's clips (data/toonworld-default) were rendered from
OLD_PLANS_SHA256 = "452f9052e2987fcf6e2c1fb3e5a066aa44a11f3ade24552c435688ee5616b3ac"


def _chases(prob: float, seeds: range) -> tuple[list, int]:
    found, segments = [], 0
    for seed in seeds:
        for seg in sample_episode(seed, 3, chase_setup_prob=prob).segments:
            segments += 1
            found += [(seg, a) for a in seg.actors if a.action == "chase"]
    return found, segments


def test_setup_off_plans_exactly_as_before() -> None:
    h = hashlib.sha256()
    for seed in range(20):
        h.update(json.dumps(sample_episode(seed, 3, chase_setup_prob=0.0).to_dict(), sort_keys=True).encode())
    assert h.hexdigest() == OLD_PLANS_SHA256


def test_chases_are_common_and_every_pair_chases() -> None:
    old, n = _chases(0.0, range(200))
    new, n_new = _chases(0.5, range(200))
    assert n == n_new == 600
    assert len(old) / n < 0.03  # why the setup exists
    assert len(new) / n > 0.08
    pairs = {(a.character, a.target) for _, a in new}
    assert ("cat", "mouse") in pairs and len(pairs) == 6


def test_lined_up_chases_are_staged_on_stage_and_clear_of_each_other() -> None:
    chases, _ = _chases(0.5, range(200))
    clear = 0
    for seg, chaser in chases:
        target = seg.actor(chaser.target)
        lo, hi = stage(BACKGROUNDS[seg.background].prop_side)
        assert target.direction == chaser.direction and target.action.startswith("run_")
        assert (target.x0 - chaser.x0) * chaser.direction > 0  # the chaser starts behind
        assert abs(chaser.x1 - chaser.x0) >= MIN_RUN - 1e-9 and lo - 1e-9 <= target.x1 <= hi + 1e-9
        # both run the same way and distance, so the gap they start with holds
        tc, tt = (actor_track(a, seg.framing, 24, 1.0) for a in (chaser, target))
        assert np.ptp(tt.x - tc.x) < 1e-9
        if np.isclose(abs(target.x0 - chaser.x0), CHASE_GAP):
            clear += occlusion([chaser, target], seg.framing) <= MAX_OCCLUSION
    assert clear > 20


def test_bad_probability_is_named() -> None:
    with pytest.raises(ValueError, match="chase_setup_prob"):
        sample_episode(0, 2, chase_setup_prob=1.5)


def test_dataset_records_its_setting(tmp_path) -> None:
    root = write_dataset(
        tmp_path / "d", n_clips=1, segments_range=(1, 1), height=32, width=32, fps=2, chase_setup_prob=0.0
    )
    index = json.loads((root / "dataset.json").read_text())
    assert index["generator"]["chase_setup_prob"] == 0.0
    assert len(ClipDataset(root)) == 1
    with pytest.raises(ValueError, match="chase_setup_prob"):
        write_dataset(tmp_path / "e", n_clips=1, chase_setup_prob=-0.1)


def test_detectors_see_every_fact_of_rendered_chases() -> None:
    """The lined-up chases are readable: on the renders every requested fact of a chase segment holds."""
    from ttt_engine.eval.compare import eval_cases
    from ttt_engine.eval.metrics import evaluate
    from ttt_engine.toonworld.render import render_episode

    checked = 0
    for case in eval_cases(2, 24):
        texts = [s["text"] for s in case.storyboard.to_list()]
        if not any("chases" in t for t in texts):
            continue
        report = evaluate(render_episode(case.episode(), 64, 64, 8), case.storyboard, 8, facts=case.facts)
        for text, seg in zip(texts, report.to_dict()["segments"]):
            if "chases" in text:
                assert all(f["ok"] for f in seg["facts"]), (text, seg["facts"])
                checked += 1
    assert checked >= 3
