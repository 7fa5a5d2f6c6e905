"""Retime on a synthetic scene: a textured disc moving at constant speed over a textured background,
rendered at 8 and 16 fps, conformed to 24, 23.976, 25 and 30 fps by the Conformer, each delivered frame
compared with the scene rendered at that frame's exact time."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ttt_engine.conform import Conformer, Delivery, interpolate, native_frames_needed

from .scene import DiscScene, centroid, largest_share, misplaced

SPACE = "srgb_rec709_scene"  # the scene is display-referred, like a model's output; delivered as is
NATIVE_SECONDS = 1
METHODS = ("flow", "blend", "hold")


def _scores(scene: DiscScene, native_fps: int, rate: Fraction) -> dict[str, dict[str, float]]:
    """Per method, over the delivered frames that fall between native frames: mean RMS error against the
    exact render, mean misplaced disc pixels, worst centroid error (px), worst one-disc share, fallbacks."""
    native_count = NATIVE_SECONDS * native_fps + 1
    duration = 1
    while native_frames_needed(duration + 1, rate, Fraction(native_fps)) <= native_count:
        duration += 1
    natives = [scene.render(Fraction(i, native_fps)) for i in range(native_count)]
    truths = [scene.render(Fraction(k) / rate) for k in range(duration)]
    scores = {}
    for method in METHODS:
        delivery = Delivery(rate=rate, duration=duration, retime=method, colorspace=SPACE)
        conformer = Conformer(delivery, Fraction(native_fps), native_count, (scene.size, scene.size), SPACE)
        errors, ghosts, offsets, shares = [], [], [], []
        for f in conformer.frames(lambda i: natives[i]):
            if conformer.plan[f.index].exact:
                continue
            truth, rgb = truths[f.index], f.rgba[:, :, :3]
            errors.append(float(np.sqrt(((rgb - truth) ** 2).mean())))
            ghosts.append(misplaced(rgb, truth))
            (cx, cy), (tx, ty) = centroid(rgb), centroid(truth)
            offsets.append(float(np.hypot(cx - tx, cy - ty)))
            shares.append(largest_share(rgb))
        assert errors, "the test needs frames between native frames"
        scores[method] = {
            "rmse": float(np.mean(errors)),
            "misplaced_px": float(np.mean(ghosts)),
            "centroid_px": max(offsets),
            "one_disc": min(shares),
            "fallbacks": conformer.report.flow_fallbacks,
        }
    return scores


@pytest.mark.parametrize("native_fps", [8, 16])
@pytest.mark.parametrize(
    "rate",
    [Fraction(24), Fraction(24000, 1001), Fraction(25), Fraction(30)],
    ids=["24", "23.976", "25", "30"],
)
def test_flow_puts_one_disc_at_the_true_position_and_beats_blend_and_hold(native_fps, rate, record_property):
    scores = _scores(DiscScene(), native_fps, rate)
    record_property("retime_scores", scores)
    print(
        f"\n{native_fps} fps -> {float(rate):.3f}: "
        + "; ".join(
            f"{m} rmse {s['rmse']:.4f} misplaced {s['misplaced_px']:.1f} px centroid {s['centroid_px']:.2f} px"
            for m, s in scores.items()
        )
    )
    flow, blend, hold = scores["flow"], scores["blend"], scores["hold"]
    assert flow["centroid_px"] <= 0.5, scores
    assert flow["one_disc"] >= 0.98, scores  # one disc, no detached ghost
    assert flow["fallbacks"] == 0, scores
    for other in (blend, hold):
        assert flow["rmse"] <= 0.6 * other["rmse"], scores
        assert flow["misplaced_px"] <= 0.5 * other["misplaced_px"], scores
    assert hold["centroid_px"] > 0.5, scores  # hold stutters: the disc is where a native frame had it


def test_flow_falls_back_to_blend_on_unrelated_frames():
    scene = DiscScene()
    a = scene.render(Fraction(0))
    b = np.ascontiguousarray(a[::-1, ::-1])  # another picture altogether (a cut the plan did not know)
    frame, fallback = interpolate(a, b, 0.25, "flow")
    assert fallback
    np.testing.assert_allclose(frame, 0.75 * a + 0.25 * b, atol=1e-6)


def test_fallbacks_are_counted_in_the_report_and_the_frame_attributes():
    rng = np.random.default_rng(1)
    natives = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(4)]  # noise: nothing to follow
    delivery = Delivery(rate=Fraction(24), duration=7, colorspace=SPACE)
    conformer = Conformer(delivery, Fraction(8), 4, (64, 64), SPACE)
    frames = list(conformer.frames(lambda i: natives[i]))
    flagged = [f.index for f in frames if f.attributes["ttt_studio/conform/flow_fallback"] == "1"]
    assert flagged == [k for k in range(7) if k % 3]  # every frame between native frames
    assert conformer.report.flow_fallbacks == len(flagged)
    assert conformer.report.metadata()["flow_fallbacks"] == len(flagged)


def test_hold_and_blend_are_what_they_say():
    a = np.zeros((8, 8, 3), np.float32)
    b = np.ones((8, 8, 3), np.float32)
    assert interpolate(a, b, 0.4, "hold")[0].max() == 0.0
    assert interpolate(a, b, 0.5, "hold")[0].min() == 1.0
    np.testing.assert_allclose(interpolate(a, b, 0.25, "blend")[0], 0.25)


@pytest.mark.parametrize("method", ["optical", "FLOW", ""])
def test_bad_method_is_named(method):
    a = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=repr(method).replace("'", "'")):
        interpolate(a, a, 0.5, method)
