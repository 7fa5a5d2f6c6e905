"""What a generated shot must become to belong to the edit it lands in: its delivery.

A storyboard segment is three seconds of the edit's time, whatever the model's native rate. The server
generates at the model's native rate and size, in the model's colour space, then conforms the frames to
the delivery: exactly `duration` frames at `rate` (output frame k shows edit time k / rate from the shot's
start), scaled to the target format, in the working colour space. This module is the contract shared by
the plugins, `ttt-studio fill`, the gRPC client and the server; it imports nothing but the standard
library so that every host's Python (3.9+) can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Optional, Tuple, Union

SEGMENT_SECONDS = 3
"""Edit-time length of one storyboard segment (the paper's unit)."""

STANDARD_RATES: Tuple[Fraction, ...] = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
)
"""Edit rates a shot can be delivered at (conform.md: snap a float rate to one of these)."""

RATE_TOLERANCE = 1e-3
"""A float rate within this of a standard rate is that rate (OTIO stores 23.976 as 23.976023976...)."""

RETIME_METHODS = ("flow", "blend", "hold")
FIT_METHODS = ("fit", "fill", "distort")
FILTERS = ("lanczos", "cubic", "linear", "nearest")
MAX_DIMENSION = 8192
"""Largest width or height a delivery may name (the server's own job limits may be lower)."""
MIN_PIXEL_ASPECT, MAX_PIXEL_ASPECT = 0.1, 10.0
"""Pixel aspect ratios a delivery may name (anamorphic 2.0 is the widest in common use)."""

RateLike = Union[Fraction, float, int, str]


def delivery_rate(rate: RateLike) -> Fraction:
    """`rate` as one of STANDARD_RATES (exact), or ValueError naming the rate and the accepted ones."""
    try:
        value = Fraction(rate) if not isinstance(rate, float) else Fraction(rate).limit_denominator(1001)
    except (ValueError, ZeroDivisionError, TypeError) as exc:
        raise ValueError(f"delivery rate must be a number of frames per second, got {rate!r}") from exc
    for standard in STANDARD_RATES:
        if abs(float(value) - float(standard)) <= RATE_TOLERANCE:
            return standard
    accepted = ", ".join(_rate_str(r) for r in STANDARD_RATES)
    raise ValueError(f"delivery rate {rate!r} is not an edit rate ttt-studio delivers; use one of {accepted}")


def segments_for(duration: int, rate: RateLike) -> int:
    """Segments a shot of `duration` frames at `rate` needs: ceil(duration / (3 * rate)), at least 1."""
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
        raise ValueError(f"shot duration must be a positive whole number of frames, got {duration!r}")
    frames_per_segment = SEGMENT_SECONDS * delivery_rate(rate)
    return max(1, -(-Fraction(duration) // frames_per_segment))  # ceil division, exact for 23.976


def _rate_str(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _check_dimension(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
        raise ValueError(f"{what} must be a whole number in 1..{MAX_DIMENSION}, got {value!r}")


def _check_pixel_aspect(what: str, value: object) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not MIN_PIXEL_ASPECT <= float(value) <= MAX_PIXEL_ASPECT:
        raise ValueError(
            f"{what} must be a number in {MIN_PIXEL_ASPECT:g}..{MAX_PIXEL_ASPECT:g}, got {value!r}"
        )


@dataclass(frozen=True)
class Format:
    """A frame format: width x height pixels of pixel_aspect (width / height of one pixel). Nuke's root
    format, Resolve's timeline resolution, Blender's scene resolution; the target a shot is scaled to."""

    width: int
    height: int
    pixel_aspect: float = 1.0

    def __post_init__(self) -> None:
        _check_dimension("format width", self.width)
        _check_dimension("format height", self.height)
        _check_pixel_aspect("format pixel_aspect", self.pixel_aspect)

    @classmethod
    def parse(cls, text: str) -> Format:
        """Parse WIDTHxHEIGHT[:PIXEL_ASPECT], e.g. 1920x1080 or 2048x858:2.0."""
        match = re.match(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*(?::\s*([0-9.]+))?\s*$", text or "")
        if match is None:
            raise ValueError(
                f"format {text!r} is not WIDTHxHEIGHT[:PIXEL_ASPECT], e.g. 1920x1080 or 2048x858:2.0"
            )
        width, height, aspect = match.groups()
        return cls(int(width), int(height), float(aspect) if aspect else 1.0)

    def __str__(self) -> str:
        aspect = "" if float(self.pixel_aspect) == 1.0 else f":{float(self.pixel_aspect):g}"
        return f"{self.width}x{self.height}{aspect}"


@dataclass(frozen=True)
class Delivery:
    """The edit's time, format and colour for one shot.

    rate: the edit rate (a STANDARD_RATES value); duration: frames on the edit (the record range);
    width, height, pixel_aspect: the target format (None: keep the generation size, square pixels);
    fit: how the generation's aspect meets the target's (Nuke Reformat's fit / fill / distort);
    filter: the scaling filter; retime: how native frames become edit frames;
    colorspace: the working space the frames are delivered in, as an EXR colorInteropID
    ("lin_ap1_scene" for ACEScg) or a colour space name of OCIO's built-in studio config;
    empty: the server's default.
    """

    rate: Fraction
    duration: int
    width: Optional[int] = None
    height: Optional[int] = None
    pixel_aspect: float = 1.0
    fit: str = "fit"
    filter: str = "lanczos"
    retime: str = "flow"
    colorspace: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", delivery_rate(self.rate))
        segments_for(self.duration, self.rate)  # validates duration
        if (self.width is None) != (self.height is None):
            raise ValueError(
                f"delivery format needs both width and height, got {self.width!r} x {self.height!r}"
            )
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                _check_dimension(f"delivery {name}", getattr(self, name))
        _check_pixel_aspect("delivery pixel_aspect", self.pixel_aspect)
        for name, allowed in (("fit", FIT_METHODS), ("filter", FILTERS), ("retime", RETIME_METHODS)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"delivery {name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if not isinstance(self.colorspace, str):
            raise ValueError(f"delivery colorspace must be a string, got {self.colorspace!r}")

    @property
    def segments(self) -> int:
        """Storyboard segments this shot needs (three seconds of edit time each)."""
        return segments_for(self.duration, self.rate)

    @property
    def has_format(self) -> bool:
        return self.width is not None

    def as_metadata(self) -> Dict[str, object]:
        """JSON-safe form (OTIO metadata, logs)."""
        return {
            "rate": _rate_str(self.rate),
            "duration": self.duration,
            "width": self.width,
            "height": self.height,
            "pixel_aspect": float(self.pixel_aspect),
            "fit": self.fit,
            "filter": self.filter,
            "retime": self.retime,
            "colorspace": self.colorspace,
        }
