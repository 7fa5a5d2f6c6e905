"""Conform: a generated shot delivered in the edit's time, format and colour (issue #22).

The server generates at the model's native rate, size and colour space; this package turns those native
frames into the delivery (`host_plugin.core.delivery.Delivery`): exactly `duration` frames at the edit
rate (`time`: exact rational plan; `retime`: optical flow, blend or hold), scaled to the target format
(`scale`: Reformat-like fit / fill / distort with library filters), in the working colour space
(`colour`: every conversion through OpenColorIO's built-in studio config), written as tagged EXRs.
`conform_in` does the reverse for plates going into the model. The stage itself: `conform.Conformer`.
"""

from host_plugin.core.delivery import STANDARD_RATES, Delivery, delivery_rate, segments_for

from .colour import (
    ColourSpace,
    colourspace_of_header,
    convert,
    exr_colour_attributes,
    resolve_colourspace,
    to_display,
)
from .conform import Conformer, ConformReport, DeliveredFrame, conform_in, write_delivered
from .retime import interpolate
from .scale import Format, Placement, placement, scale_to
from .time import Sample, native_frames_needed, native_position, retime_plan

__all__ = [
    "STANDARD_RATES",
    "ColourSpace",
    "ConformReport",
    "Conformer",
    "DeliveredFrame",
    "Delivery",
    "Format",
    "Placement",
    "Sample",
    "colourspace_of_header",
    "conform_in",
    "convert",
    "delivery_rate",
    "exr_colour_attributes",
    "interpolate",
    "native_frames_needed",
    "native_position",
    "placement",
    "resolve_colourspace",
    "retime_plan",
    "scale_to",
    "segments_for",
    "to_display",
    "write_delivered",
]
