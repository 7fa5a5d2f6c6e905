"""Submit-time checks of a request's delivery and plates' colour, and the plan the worker runs.

The wire's Delivery (rate_num / rate_den, duration, format, fit, filter, retime, colorspace) becomes a
host_plugin.core.delivery.Delivery here; the DeliveryPlan (ttt_engine.pipeline.deliver) it leads to is
recomputed by the worker from the stored spec, so submit and worker always agree.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from host_plugin.core.delivery import Delivery
from server.errors import InvalidArgumentError


def delivery_of(wire: dict[str, Any] | None) -> Delivery | None:
    """The request's Delivery (None: native). InvalidArgumentError names the field and what is accepted."""
    if wire is None:
        return None
    if not wire.get("duration"):
        raise InvalidArgumentError(
            "delivery.duration must be >= 1 frames (the shot's length on the edit); leave the delivery "
            "unset for native frames"
        )
    if not wire.get("rate_num"):
        raise InvalidArgumentError("delivery.rate_num must be set: the edit rate as rate_num / rate_den")
    width, height = int(wire.get("width") or 0), int(wire.get("height") or 0)
    try:
        return Delivery(
            rate=Fraction(int(wire["rate_num"]), int(wire.get("rate_den") or 1)),
            duration=int(wire["duration"]),
            width=width or None,
            height=height or None,
            pixel_aspect=float(wire.get("pixel_aspect") or 1.0),
            fit=wire.get("fit") or "fit",
            filter=wire.get("filter") or "lanczos",
            retime=wire.get("retime") or "flow",
            colorspace=wire.get("colorspace") or "",
        )
    except ValueError as exc:
        raise InvalidArgumentError(f"delivery: {exc}") from None  # the message names the field


def delivery_from_spec(stored: dict[str, Any] | None) -> Delivery | None:
    """A stored spec's delivery (Delivery.as_metadata() form) back as a Delivery."""
    if stored is None:
        return None
    return Delivery(**{**stored, "rate": Fraction(stored["rate"])})


def check_colourspace(name: str, field: str) -> str:
    """The interop id of `name`; InvalidArgumentError naming `field` when OCIO does not know it."""
    from ttt_engine.conform import resolve_colourspace

    try:
        return resolve_colourspace(name).interop_id
    except ValueError as exc:
        raise InvalidArgumentError(f"{field}: {exc}") from None


def plate_colourspace(paths: list[Path], override: str) -> str:
    """The colour space the plates are in: the override, else each plate's colorInteropID /
    chromaticities (headers only: no pixels are read), else linear Rec.709. Plates of one request must
    agree (a job converts them with one transform)."""
    import OpenEXR

    from ttt_engine.conform import colourspace_of_header

    if override:
        return check_colourspace(override, "plate_colorspace")
    spaces: dict[str, int] = {}
    for i, path in enumerate(paths):
        with OpenEXR.File(str(path), header_only=True) as exr:
            header = dict(exr.header())  # a copy: closing the file empties the header it handed out
        try:
            spaces.setdefault(colourspace_of_header(header), i)
        except ValueError as exc:
            raise InvalidArgumentError(f"plate_upload_ids[{i}]: {exc} (set plate_colorspace)") from None
    if len(spaces) > 1:
        found = ", ".join(f"{space} (plate_upload_ids[{i}])" for space, i in spaces.items())
        raise InvalidArgumentError(
            f"the plates are in different colour spaces: {found}; upload plates of one space or set "
            "plate_colorspace"
        )
    return next(iter(spaces))


CONFORM_REPORT = "conform.json"
"""The job's conform report, beside its frames (written by the worker, read for the result)."""


def conform_report_path(frames: Any, job_id: str, take: int = 0, draft: bool = False) -> Path:
    """One take's (final or draft) conform report: flow fallbacks differ from take to take."""
    return Path(frames.run_dir(job_id, take, draft)) / CONFORM_REPORT


def read_conform_report(frames: Any, job_id: str, take: int = 0, draft: bool = False) -> dict[str, Any]:
    """The stored conform report ({} before the worker wrote one)."""
    import json

    path = conform_report_path(frames, job_id, take, draft)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
