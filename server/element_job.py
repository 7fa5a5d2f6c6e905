"""An element job (plate_mode "element") on the server: its mattes checked at submit, read and conformed
into the model's frames by the worker, and every delivered frame given the matte's alpha.

A matte is an upload like a plate (UploadPlate): a single-channel EXR, or any upload with an A channel
(its A is used); without matte_upload_ids each plate's own A is the matte. Mattes are coverage, not
colour: they are never colour-converted, only retimed linearly and scaled (element.conform_mattes).
The delivered frames are RGBA, RGB premultiplied by the alpha (ttt_engine.pipeline.element).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from server.errors import InvalidArgumentError, NotFoundError
from server.jobs import JobSpec, SubmitRequest, UploadRecord

ELEMENT = "element"


def check_plate_channels(plates: list[UploadRecord]) -> None:
    """Every plate has R, G and B (a single-channel upload is a matte, not a plate)."""
    for i, upload in enumerate(plates):
        if not {"R", "G", "B"} <= set(upload.channels):
            raise InvalidArgumentError(
                f"plate_upload_ids[{i}] ({upload.upload_id}) has channels {list(upload.channels)}; a plate "
                "needs R, G and B (a single-channel upload is a matte: pass it in matte_upload_ids)"
            )


def check_element(
    store: Any,
    caller: str,
    request: SubmitRequest,
    plates: list[UploadRecord],
    plate_mode: str,
    default_feather: float,
) -> float | None:
    """Submit-time checks of a request's mattes; returns the resolved feather (output pixels), or None
    for a job that is not an element. InvalidArgumentError / NotFoundError name the field and index."""
    if plate_mode != ELEMENT:
        if request.matte_ids:
            raise InvalidArgumentError(
                f"matte_upload_ids are for parameters.plate_mode 'element'; got plate_mode {plate_mode!r}"
            )
        if request.matte_feather is not None:
            raise InvalidArgumentError(
                f"parameters.matte_feather is for plate_mode 'element'; got plate_mode {plate_mode!r}"
            )
        return None
    feather = default_feather if request.matte_feather is None else request.matte_feather
    if not math.isfinite(feather) or feather < 0:
        raise InvalidArgumentError(f"parameters.matte_feather must be pixels >= 0, got {feather}")
    if not request.matte_ids:
        for i, upload in enumerate(plates):
            if "A" not in upload.channels:
                raise InvalidArgumentError(
                    f"plate_upload_ids[{i}] ({upload.upload_id}) has no A channel to use as the matte; give "
                    "matte_upload_ids (one single-channel EXR per plate) or plates with alpha"
                )
        return feather
    if len(request.matte_ids) != len(plates):
        raise InvalidArgumentError(
            f"matte_upload_ids: got {len(request.matte_ids)} mattes for {len(plates)} plates; expected one "
            "per plate, in the same order"
        )
    for i, matte_id in enumerate(request.matte_ids):
        try:
            matte = store.get_upload(matte_id, caller)
        except NotFoundError:
            raise NotFoundError(f"matte_upload_ids[{i}]: no upload {matte_id!r}") from None
        if len(matte.channels) != 1 and "A" not in matte.channels:
            raise InvalidArgumentError(
                f"matte_upload_ids[{i}] ({matte_id}) has channels {list(matte.channels)}; a matte is a "
                "single-channel EXR or has an A channel"
            )
        plate = plates[i]
        if (matte.width, matte.height) != (plate.width, plate.height):
            raise InvalidArgumentError(
                f"matte_upload_ids[{i}] ({matte_id}) is {matte.width}x{matte.height}; its plate "
                f"plate_upload_ids[{i}] is {plate.width}x{plate.height} (a matte is its plate's size)"
            )
    return feather


class ElementMattes:
    """A job's mattes, read from the upload store: the model's matte frames for sampling and each
    delivered frame's alpha. Delivered frame k's matte is plate k's (element plates are one per
    delivered frame, as restyle's)."""

    def __init__(self, frames: Any, spec: JobSpec) -> None:
        if spec.matte_feather is None:
            raise ValueError("ElementMattes: the job is not an element job (no matte_feather)")
        self.frames = frames
        self.feather = float(spec.matte_feather)
        self.own = bool(spec.matte_ids)
        self.ids = spec.matte_ids or spec.plate_ids
        self._last: tuple[str, np.ndarray] | None = None

    def matte(self, i: int) -> np.ndarray:
        """Plate i's matte, float32 (H, W) (the last one read is kept: held frames repeat an id)."""
        from host_plugin.core.exr_io import read_matte

        upload_id = self.ids[i]
        if self._last is None or self._last[0] != upload_id:
            path = self.frames.upload_path(upload_id)
            field = "matte_upload_ids" if self.own else "plate_upload_ids"
            if not path.is_file():
                raise FileNotFoundError(f"matte {upload_id} ({field}[{i}]) is missing from the upload store")
            self._last = (upload_id, read_matte(path, check_finite=True)[0])
        return self._last[1]

    def native(self, plan: Any) -> np.ndarray:
        """The mattes as the model's frames: [native_count, h, w] float32 0..1 at the generation size."""
        from ttt_engine.pipeline.element import conform_mattes

        return conform_mattes(plan, [self.matte(i) for i in range(len(self.ids))])

    def sampling_feather(self, plan: Any) -> float:
        """The feather in the generation's pixels (the request's is in output pixels)."""
        from ttt_engine.pipeline.element import output_scale

        return self.feather / output_scale(plan)

    def apply(self, plan: Any, frame: Any) -> Any:
        """Delivered frame -> the same frame with the matte's alpha and its RGB premultiplied."""
        from ttt_engine.conform import DeliveredFrame
        from ttt_engine.pipeline.element import element_frame, output_alpha

        alpha = output_alpha(plan, self.matte(frame.index), self.feather)
        return DeliveredFrame(frame.index, element_frame(frame.rgba, alpha), frame.attributes)
