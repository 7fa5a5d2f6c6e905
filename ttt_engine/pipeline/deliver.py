"""The conform stage of a generation, shared by `ttt-studio generate` and the server's worker.

plan_delivery decides, before anything is sampled, what a request becomes: how many storyboard segments
it needs (a segment is SEGMENT_SECONDS of edit time), how many native frames the model makes, the size
it generates at (the model's supported size nearest the target's aspect: a 1080p delivery on a 64x64
model generates at 64x64 and is scaled) and the colour space the frames are delivered in.

FrameDeliverer then turns native frames, as the VAE hands them over segment by segment, into delivered
frames with ttt_engine.conform.Conformer (retime to the edit rate, scale to the format, OpenColorIO into
the working space) and hands each one to a writer exactly once. It is resumable: frames already written
are skipped, and `segments_needed` says which native segments the missing ones read, so a job killed
half way decodes only what it still needs. Native frames no missing frame reads any more are dropped as
it goes, so memory stays at a few frames whatever the shot's length.

A request without a delivery is native: the model's frames at its own rate and size, only converted
from the model's colour space into the output space (what generate and the server did before).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from host_plugin.core.delivery import SEGMENT_SECONDS, Delivery

from .params import PipelineError

Size = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class DeliveryPlan:
    """What one generation becomes. delivery None: native frames (no retime, no scale)."""

    delivery: Delivery | None
    native_fps: Fraction
    native_count: int
    generation_size: Size
    model_colorspace: str
    output_colorspace: str
    scene_starts: tuple[int, ...] = ()

    @property
    def total_frames(self) -> int:
        """Frames delivered."""
        return self.native_count if self.delivery is None else self.delivery.duration

    @property
    def rate(self) -> Fraction:
        """The delivered frame rate (the model's own for a native plan)."""
        return self.native_fps if self.delivery is None else self.delivery.rate

    @property
    def output_size(self) -> Size:
        d = self.delivery
        return self.generation_size if d is None or not d.has_format else (int(d.width), int(d.height))


def scene_starts(storyboard: Sequence[dict[str, Any]], ranges: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """Native frame index where each segment that starts a new scene begins (never interpolated across)."""
    return tuple(
        ranges[i][0]
        for i, segment in enumerate(storyboard)
        if i > 0 and i < len(ranges) and segment.get("requires_scene_transition")
    )


def plan_delivery(
    pipe: Any,
    storyboard: Sequence[dict[str, Any]],
    delivery: Delivery | None,
    output_colorspace: str,
    generation_size: Size | None = None,
) -> DeliveryPlan:
    """The plan for `storyboard` (format-3 dicts) on `pipe` (a VideoPipeline).

    generation_size: an explicit (width, height) the request named (checked against the model's sizes);
    None picks the model's size nearest the delivery's aspect (its first size without a format).
    ValueError names what is wrong: segment count, an unknown colour space, a size the model cannot make,
    or a delivery longer than the model's native frames cover.
    """
    from ttt_engine.conform import native_frames_needed, resolve_colourspace

    spec = pipe.spec
    segments = len(storyboard)
    if delivery is not None and segments != delivery.segments:
        rate = delivery.as_metadata()["rate"]
        raise ValueError(
            f"storyboard has {segments} segment(s); a delivery of {delivery.duration} frames at {rate} fps "
            f"needs {delivery.segments} ({SEGMENT_SECONDS} s of edit time each, the last one trimmed)"
        )
    if generation_size is None:
        if delivery is not None and delivery.has_format:
            generation_size = spec.generation_size(delivery.width, delivery.height, delivery.pixel_aspect)
        else:
            generation_size = spec.sizes[0]
    width, height = generation_size
    try:
        pipe.check_size(height, width)  # the VAE / patch multiple, named
        spec.check_size(width, height)
    except PipelineError as exc:
        raise ValueError(str(exc)) from None
    output = resolve_colourspace(output_colorspace).interop_id
    model = resolve_colourspace(spec.colorspace).interop_id
    native_count = int(pipe.num_frames(segments))
    if delivery is not None:
        needed = native_frames_needed(delivery.duration, delivery.rate, spec.fps)
        if needed > native_count:
            raise ValueError(
                f"this model's {segments} segment(s) make {native_count} frames at {spec.fps} fps "
                f"({float(native_count / spec.fps):.2f} s); {delivery.duration} frames at "
                f"{delivery.as_metadata()['rate']} fps read {needed}"
            )
    return DeliveryPlan(
        delivery=delivery,
        native_fps=spec.fps,
        native_count=native_count,
        generation_size=(int(width), int(height)),
        model_colorspace=model,
        output_colorspace=output,
        scene_starts=scene_starts(storyboard, pipe.segment_frame_ranges(segments)),
    )


def conform_plates(plan: DeliveryPlan, plates: np.ndarray, plate_colorspace: str, mode: str) -> np.ndarray:
    """Plates (edit frames [T, H, W, 3] in plate_colorspace) -> the model's frames for init_frames.

    Native plan: the plates are already one per native frame at the generation size; only the colour is
    converted. With a delivery they are edit frames at the delivery rate: restyle and element plates (one per
    delivered frame) become the native_count frames (native frames past the plates' end, in the trimmed
    tail of the last segment, hold the last plate); continue plates become the 1 + 4k native frames
    their edit time covers.
    """
    from ttt_engine.conform import conform_in, convert, native_frames_needed

    if plan.delivery is None:
        return convert(plates, plate_colorspace, plan.model_colorspace)
    delivery = plan.delivery
    frames = list(plates)
    if mode != "continue":  # restyle, element: one plate per delivered frame
        count = plan.native_count
        needed = native_frames_needed(count, plan.native_fps, delivery.rate)  # plate frames read
        frames += [frames[-1]] * max(0, needed - len(frames))
    else:
        count = continue_native_count(len(plates), delivery.rate, plan.native_fps)
    return conform_in(
        frames,
        delivery.rate,
        plate_colorspace,
        plan.native_fps,
        count,
        plan.generation_size,
        plan.model_colorspace,
        retime=delivery.retime,
        fit=delivery.fit,
        filter=delivery.filter,
    )


CONTINUE_TEMPORAL_STEP = 4
"""Continue plates map onto whole latent frames: 1 + 4k native frames (CogVideoX VAE's factor)."""


def continue_native_count(plates: int, rate: Fraction, native_fps: Fraction) -> int:
    """Native frames (1 + 4k) that `plates` edit frames at `rate` cover: the longest such prefix whose
    last frame lies within the plates' time."""
    last = Fraction(plates - 1) * native_fps / rate  # native position of the last plate
    return 1 + CONTINUE_TEMPORAL_STEP * int(last // CONTINUE_TEMPORAL_STEP)


class FrameDeliverer:
    """Native frames in (segment by segment), delivered frames out (each written once, in order).

    write(frame) receives a ttt_engine.conform.DeliveredFrame (index, rgba, EXR attributes); done: indices
    already written by an earlier attempt (skipped).
    """

    def __init__(self, plan: DeliveryPlan, write: Callable[[Any], None], done: Iterable[int] = ()) -> None:
        from ttt_engine.conform import Conformer

        self.plan = plan
        self._write = write
        self._native: dict[int, np.ndarray] = {}
        already = set(done)
        self._missing = [k for k in range(plan.total_frames) if k not in already]
        self.conformer = (
            Conformer(
                plan.delivery,
                plan.native_fps,
                plan.native_count,
                plan.generation_size,
                plan.model_colorspace,
                scene_starts=plan.scene_starts,
                default_colourspace=plan.output_colorspace,
            )
            if plan.delivery is not None
            else None
        )

    @property
    def missing(self) -> list[int]:
        return list(self._missing)

    def reads(self, k: int) -> tuple[int, int]:
        """(first, last) native frame delivered frame k reads."""
        if self.conformer is None:
            return k, k
        sample = self.conformer.plan[k]
        return sample.lo, sample.hi

    def segments_needed(self, ranges: Sequence[tuple[int, int]]) -> list[int]:
        """Segments holding the native frames the missing delivered frames read, ascending."""
        wanted: set[int] = set()
        for k in self._missing:
            for i in self.reads(k):
                wanted.update(s for s, (first, end) in enumerate(ranges) if first <= i < end)
        return sorted(wanted)

    def feed(self, first: int, frames: np.ndarray) -> list[int]:
        """Native frames first..first+len-1 (model space) arrived: write every missing delivered frame
        they complete; returns the delivered indices written."""
        for offset, frame in enumerate(frames):
            self._native[first + offset] = frame
        written = []
        while self._missing:
            k = self._missing[0]
            lo, hi = self.reads(k)
            if not all(i in self._native for i in range(lo, hi + 1)):
                break
            self._write(self._deliver(k))
            written.append(k)
            self._missing.pop(0)
            keep_from = self.reads(self._missing[0])[0] if self._missing else None
            for i in [i for i in self._native if keep_from is None or i < keep_from]:
                del self._native[i]
        return written

    def _deliver(self, k: int) -> Any:
        from ttt_engine.conform import DeliveredFrame, convert, exr_colour_attributes

        if self.conformer is not None:
            return self.conformer.frame(k, self._native.__getitem__)
        rgb = convert(self._native[k], self.plan.model_colorspace, self.plan.output_colorspace)
        rgba = np.concatenate([rgb, np.ones(rgb.shape[:2] + (1,), np.float32)], axis=-1)
        width, height = self.plan.generation_size
        attributes = {
            "framesPerSecond": self.plan.native_fps,
            "dataWindow": ((0, 0), (width - 1, height - 1)),
            "displayWindow": ((0, 0), (width - 1, height - 1)),
            "pixelAspectRatio": 1.0,
            **exr_colour_attributes(self.plan.output_colorspace),
        }
        return DeliveredFrame(k, rgba, attributes)

    def report(self) -> dict[str, Any]:
        """The conform report (JSON-safe): what the frames went through."""
        plan = self.plan
        if self.conformer is not None:
            return dict(self.conformer.report.metadata())
        width, height = plan.generation_size
        return {
            "native_fps": _rate_text(plan.native_fps),
            "rate": _rate_text(plan.native_fps),
            "retime": "none",
            "generation_size": [width, height],
            "scale": [1.0, 1.0],
            "model_colorspace": plan.model_colorspace,
            "colorspace": plan.output_colorspace,
        }


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"
