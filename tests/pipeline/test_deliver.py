"""What a model declares it can generate (model_spec.py) and the conform stage shared by generate and the
server (deliver.py): planning a delivery, streaming native frames into delivered ones, resuming."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from host_plugin.core.delivery import Delivery
from ttt_engine import default_model
from ttt_engine.conform import convert
from ttt_engine.pipeline.deliver import FrameDeliverer, continue_native_count, plan_delivery, scene_starts
from ttt_engine.pipeline.model_spec import ModelSpec
from ttt_engine.pipeline.params import PipelineError
from ttt_engine.pipeline.video_pipeline import VideoPipeline

BEAT = [{"text": "Tom the cat chases Jerry the mouse to the right in the garden."}]
NTSC_FILM = Fraction(24000, 1001)


@pytest.fixture(scope="module")
def pipe() -> VideoPipeline:
    return VideoPipeline.from_folder(default_model.default_model_dir(), device="cpu")


def test_the_default_model_declares_its_rate_size_and_colour_space(pipe: VideoPipeline) -> None:
    spec = pipe.spec
    assert (spec.fps, spec.sizes, spec.colorspace) == (8, ((64, 64),), "srgb_rec709_scene")
    spec.check_size(64, 64)
    spec.check_size(96, 64)  # within its size constraints
    with pytest.raises(PipelineError, match=r"cannot generate 1920x1080; it generates 64x64 \(trained\)"):
        spec.check_size(1920, 1080)
    assert pipe.model_info()["sizes"] == [[64, 64]]


def test_a_folder_without_declarations_gets_the_documented_defaults() -> None:
    ours = ModelSpec.from_index({}, (64, 48), 8, "test")
    assert (ours.fps, ours.sizes, ours.multiple_of, ours.colorspace) == (
        16,
        ((64, 48),),
        8,
        "srgb_rec709_scene",
    )
    cogvideox = ModelSpec.from_index({"_class_name": "CogVideoXPipeline"}, (720, 480), 16, "test")
    assert cogvideox.fps == 8 and cogvideox.sizes == ((720, 480),)
    assert ModelSpec.from_index(ours.to_index(), (1, 1), 1, "round trip") == ours
    with pytest.raises(PipelineError, match="sizes must be a non-empty list"):
        ModelSpec.from_index({"sizes": [[64]]}, (64, 64), 8, "bad")


def test_generation_size_is_the_trained_size_nearest_the_targets_aspect() -> None:
    spec = ModelSpec(Fraction(16), ((720, 480), (480, 720), (512, 512)), 16, 256, 1024)
    assert spec.generation_size(1920, 1080) == (720, 480)
    assert spec.generation_size(1080, 1920) == (480, 720)
    assert spec.generation_size(1024, 1024) == (512, 512)
    assert spec.generation_size(1828, 1556, pixel_aspect=2.0) == (720, 480)  # 2.35:1 on screen


@pytest.mark.parametrize("rate", [Fraction(24), NTSC_FILM])
def test_a_one_beat_storyboard_fills_a_two_second_marker(pipe: VideoPipeline, rate: Fraction) -> None:
    plan = plan_delivery(pipe, BEAT, Delivery(rate, 48, colorspace="lin_ap1_scene"), "lin_rec709_scene")
    assert (plan.total_frames, plan.rate, plan.native_count) == (48, rate, pipe.num_frames(1))
    assert (plan.generation_size, plan.output_colorspace) == ((64, 64), "lin_rec709_scene")
    with pytest.raises(
        ValueError, match=r"storyboard has 1 segment\(s\); a delivery of 73 frames .* needs 2"
    ):
        plan_delivery(pipe, BEAT, Delivery(rate, 73), "lin_rec709_scene")
    with pytest.raises(ValueError, match="needs 1"):
        plan_delivery(pipe, BEAT * 2, Delivery(rate, 48), "lin_rec709_scene")


def test_a_1080p_delivery_generates_at_the_models_size(pipe: VideoPipeline) -> None:
    plan = plan_delivery(pipe, BEAT, Delivery(24, 48, width=1920, height=1080), "lin_ap1_scene")
    assert (plan.generation_size, plan.output_size) == ((64, 64), (1920, 1080))
    with pytest.raises(ValueError, match="cannot generate 1920x1080"):
        plan_delivery(pipe, BEAT, Delivery(24, 48), "lin_ap1_scene", generation_size=(1920, 1080))
    with pytest.raises(ValueError, match="unknown colour space 'not-a-space'"):
        plan_delivery(pipe, BEAT, Delivery(24, 48), "not-a-space")


def test_scene_starts_are_the_native_starts_of_segments_that_change_scene(pipe: VideoPipeline) -> None:
    board = [BEAT[0], {**BEAT[0], "requires_scene_transition": True}, BEAT[0]]
    ranges = pipe.segment_frame_ranges(3)
    assert scene_starts(board, ranges) == (ranges[1][0],) == (25,)


def test_continue_plates_cover_whole_latent_frames() -> None:
    assert continue_native_count(1, Fraction(24), Fraction(8)) == 1
    assert continue_native_count(13, Fraction(24), Fraction(8)) == 5  # 0.5 s of plates: native 0..4
    assert continue_native_count(72, Fraction(24), Fraction(8)) == 21  # 3 s less a frame: native 0..20


def _native(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((count, 64, 64, 3), dtype=np.float32)


def test_delivered_frames_stream_segment_by_segment_and_resume(pipe: VideoPipeline) -> None:
    """Fed segment by segment, every delivered frame is written once, in order; a deliverer that already
    holds frames 0..29 asks only for the segments the rest read and writes exactly the same frames."""
    board = BEAT * 2
    plan = plan_delivery(pipe, board, Delivery(24, 144, retime="blend"), "lin_ap1_scene")
    ranges = pipe.segment_frame_ranges(2)
    native = _native(plan.native_count)
    first: list = []
    deliverer = FrameDeliverer(plan, first.append)
    assert deliverer.segments_needed(ranges) == [0, 1]
    for start, end in ranges:
        deliverer.feed(start, native[start:end])
    assert [f.index for f in first] == list(range(144)) and not deliverer.missing
    assert first[30].attributes["framesPerSecond"] == 24
    assert first[30].attributes["colorInteropID"] == "lin_ap1_scene"

    again: list = []
    resumed = FrameDeliverer(plan, again.append, done=range(100))
    assert resumed.segments_needed(ranges) == [1]  # frames 100.. read native 33.. (segment 1 only)
    resumed.feed(ranges[1][0], native[ranges[1][0] :])
    assert [f.index for f in again] == list(range(100, 144))
    for frame in again:
        np.testing.assert_array_equal(frame.rgba, first[frame.index].rgba)
    assert resumed.report()["retime"] == "blend" and resumed.report()["generation_size"] == [64, 64]


def test_a_native_plan_converts_colour_only(pipe: VideoPipeline) -> None:
    plan = plan_delivery(pipe, BEAT, None, "lin_rec709_scene")
    native = _native(plan.native_count)
    out: list = []
    FrameDeliverer(plan, out.append).feed(0, native)
    assert len(out) == plan.native_count == pipe.num_frames(1)
    np.testing.assert_allclose(
        out[3].rgba[..., :3], convert(native[3], "srgb_rec709_scene", "lin_rec709_scene")
    )
    assert out[3].attributes["framesPerSecond"] == 8
