"""EXR frames in and out, with the OpenEXR (>= 3.4) Python bindings.

Written frames are scanline, ZIP-compressed (readable by every host; never HTJ2K/ZSTD), half-float RGBA,
tagged with the standard colorInteropID attribute and our own string attributes ("ttt_studio/job_id").
Read frames come back as float32 (H, W, 4) RGBA; RGB files get alpha 1. Plates from hosts are checked
by validate_plate before they go anywhere: a bad plate fails here with a PlateError that says why.

OpenEXR is imported inside the functions so that this module (and host_plugin) imports in a host whose
Python has no OpenEXR wheel; only the EXR functions then fail, with a clear message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from host_plugin.core.errors import ExrWriteError, PlateError
from host_plugin.core.exr_header import check_plate_header, read_plate_header

log = logging.getLogger(__name__)

EXR_MAGIC = b"\x76\x2f\x31\x01"
_HALF_MAX = 65504.0
_HALF_EXPONENT = 0x7C00  # a half whose exponent bits are all set is inf or NaN
DEFAULT_MAX_SIDE = 8192  # pixels; 8K plates pass, anything bigger is refused before decoding
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_CHANNELS = 64
DEFAULT_MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_DECODE_BYTES = 2 << 30  # an 8K RGBA half plate decodes to ~1.6 GB (with the float32 copy)
# header attributes the writer sets itself; custom attributes may not override them
_RESERVED = {
    "channels",
    "chromaticities",
    "compression",
    "dataWindow",
    "displayWindow",
    "lineOrder",
    "pixelAspectRatio",
    "screenWindowCenter",
    "screenWindowWidth",
    "type",
    "tiles",
    "colorInteropID",
    "framesPerSecond",
}
# the Color Interop Forum's ids ("lin_ap1_scene") and OCIO's namespaced ones for camera spaces
# ("ocio:arrilogc4_awg4_scene"), as OCIO's built-in configs tag their colour spaces
_INTEROP_ID = re.compile(r"^(data|unknown|([a-z][a-z0-9]*:)?[a-z0-9]+_[a-z0-9]+_(scene|display))$")

PathLike = Union[str, "os.PathLike[str]"]
Window = Tuple[int, int, int, int]
"""An EXR window as (xmin, ymin, xmax, ymax), inclusive."""


@dataclass(frozen=True)
class PlateInfo:
    """What validate_plate found: size, all channel names, HALF/FLOAT of R, G, B (, A) and the header."""

    width: int
    height: int
    channels: Tuple[str, ...]
    pixel_types: Tuple[str, ...]
    header: Dict[str, Any] = field(default_factory=dict)


def _openexr() -> Any:
    try:
        import OpenEXR
    except ImportError as exc:  # pragma: no cover - depends on the host's Python
        raise ImportError(
            "the OpenEXR Python package (>= 3.4) is needed for EXR frames; install a wheel for this Python "
            "(OpenEXR 3.5.3 has cp311+ wheels, 3.5.2 / 3.4.x still have cp39 and cp310)"
        ) from exc
    return OpenEXR


def write_rgba_exr(
    path: PathLike,
    rgba: np.ndarray,
    colour_interop_id: Optional[str] = "lin_rec709_scene",
    attributes: Optional[Dict[str, Any]] = None,
    frames_per_second: Optional[Fraction] = None,
    data_window: Optional[Window] = None,
    display_window: Optional[Window] = None,
    pixel_aspect_ratio: Optional[float] = None,
    chromaticities: Optional[Sequence[float]] = None,
) -> str:
    """Write one half-float RGBA scanline EXR with ZIP compression; returns the path.

    rgba: (H, W, 4) or (H, W, 3) (alpha 1 added) finite float array; float16 is written as is, other
    floats are converted to HALF and must fit in it (|x| <= 65504). attributes: extra header entries
    (str, int, float or Fraction), e.g. {"ttt_studio/job_id": "j42"}. frames_per_second: e.g.
    Fraction(24000, 1001), written as the standard rational framesPerSecond attribute.
    colour_interop_id: e.g. "lin_ap1_scene" for ACEScg, "ocio:lin_awg4_scene" for a camera's namespaced
    space; None leaves it untagged.
    data_window: (xmin, ymin, xmax, ymax) inclusive, where the pixels lie (its size must be rgba's);
    default (0, 0, W - 1, H - 1). display_window: the frame (the format), same form; default the data
    window. pixel_aspect_ratio: e.g. 2.0 for anamorphic; default 1. chromaticities: 8 floats (red, green,
    blue, white xy) naming the RGB primaries, e.g. ACEScg's AP1; None leaves the attribute out.
    """
    OpenEXR = _openexr()
    pixels = _as_half_rgba(rgba)
    header: Dict[str, Any] = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    header.update(_geometry(pixels.shape, data_window, display_window, pixel_aspect_ratio))
    if chromaticities is not None:
        header["chromaticities"] = _chromaticities(chromaticities)
    if colour_interop_id is not None:
        if not isinstance(colour_interop_id, str) or not _INTEROP_ID.match(colour_interop_id):
            raise ExrWriteError(
                f"colour_interop_id {colour_interop_id!r} is not a colour interop id; expected e.g. "
                "'lin_rec709_scene', 'lin_ap1_scene', 'srgb_rec709_display'"
            )
        header["colorInteropID"] = colour_interop_id
    if frames_per_second is not None:
        fps = Fraction(frames_per_second)
        if fps <= 0:
            raise ExrWriteError(f"frames_per_second must be > 0, got {frames_per_second!r}")
        header["framesPerSecond"] = fps
    for key, value in (attributes or {}).items():
        if not isinstance(key, str) or not key or key in _RESERVED:
            raise ExrWriteError(
                f"attribute name {key!r} is empty, not a string or reserved ({sorted(_RESERVED)})"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float, Fraction)):
            raise ExrWriteError(
                f"attribute {key!r} must be str, int, float or Fraction, got {type(value).__name__}: {value!r}"
            )
        if isinstance(value, int) and not -(2**31) <= value < 2**31:
            # OpenEXR int attributes are 32-bit and silently wrap larger values (2**40 reads back as 0)
            raise ExrWriteError(
                f"attribute {key!r} = {value} does not fit a 32-bit EXR int; store it as a str"
            )
        header[key] = value
    path = os.fspath(path)
    OpenEXR.File(header, {"RGBA": pixels}).write(path)
    return path


def _window(value: Any, name: str) -> Tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ExrWriteError(f"{name} must be (xmin, ymin, xmax, ymax) whole numbers, got {value!r}") from exc
    if x1 < x0 or y1 < y0 or any(v != w for v, w in zip((x0, y0, x1, y1), value)):
        raise ExrWriteError(
            f"{name} must be (xmin, ymin, xmax, ymax) with xmax >= xmin, ymax >= ymin; got {value!r}"
        )
    return x0, y0, x1, y1


def _geometry(
    shape: Tuple[int, ...],
    data_window: Optional[Window],
    display_window: Optional[Window],
    pixel_aspect_ratio: Optional[float],
) -> Dict[str, Any]:
    """dataWindow, displayWindow and pixelAspectRatio header entries, checked against the pixels' shape."""
    height, width = shape[0], shape[1]
    data = _window(data_window, "data_window") if data_window is not None else (0, 0, width - 1, height - 1)
    if (data[2] - data[0] + 1, data[3] - data[1] + 1) != (width, height):
        raise ExrWriteError(
            f"data_window {data} is {data[2] - data[0] + 1}x{data[3] - data[1] + 1} pixels but the pixels are "
            f"{width}x{height}"
        )
    display = _window(display_window, "display_window") if display_window is not None else data
    aspect = 1.0 if pixel_aspect_ratio is None else pixel_aspect_ratio
    if isinstance(aspect, bool) or not isinstance(aspect, (int, float)) or not 0.0 < float(aspect) < 1e3:
        raise ExrWriteError(f"pixel_aspect_ratio must be a number > 0, got {pixel_aspect_ratio!r}")
    return {
        "dataWindow": ((data[0], data[1]), (data[2], data[3])),
        "displayWindow": ((display[0], display[1]), (display[2], display[3])),
        "pixelAspectRatio": float(aspect),
    }


def _chromaticities(value: Sequence[float]) -> Tuple[float, ...]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ExrWriteError(
            f"chromaticities must be 8 numbers (red, green, blue, white xy), got {value!r}"
        ) from exc
    if len(values) != 8 or not all(np.isfinite(values)):
        raise ExrWriteError(
            f"chromaticities must be 8 finite numbers (red, green, blue, white xy), got {value!r}"
        )
    return values


def read_exr(path: PathLike, check_finite: bool = False) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Read an RGB or RGBA EXR as float32 (H, W, 4) RGBA (alpha 1 when absent) and a plain header dict.

    Other channels (depth, layers) are ignored; a file without R, G and B raises PlateError. The header
    has plain Python values: "compression" is e.g. "ZIP_COMPRESSION", windows are ((x0, y0), (x1, y1)),
    plus "width", "height" and "channel_names".
    """
    path = os.fspath(path)
    _check_exr_file(path)
    header, channels = _read_header(path)
    pixels = _read_pixels(path, header, channels)
    if check_finite:
        _check_finite(pixels, path)
    return pixels, header


def read_matte(path: PathLike, check_finite: bool = False) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Read a matte as float32 (H, W) coverage: the one channel of a single-channel EXR (whatever its
    name: A, Y, mask, ...) or the A channel of an RGBA file; PlateError when the file has neither."""
    path = os.fspath(path)
    _check_exr_file(path)
    header, channels = _read_header(path)
    names = header["channel_names"]
    if len(names) == 1:
        plane = _read_single(path, names[0]).astype(np.float32)
    elif "A" in names:
        plane = _read_pixels(path, header, channels)[:, :, 3]
    else:
        raise PlateError(f"matte {path!r} has channels {names}; expected a single channel or an A channel")
    if check_finite:
        _check_finite(plane[:, :, None], path, names[0] if len(names) == 1 else "A")
    return plane, header


def _read_single(path: str, name: str) -> np.ndarray:
    """The one channel of a single-channel EXR as float32 (H, W)."""
    OpenEXR = _openexr()
    try:
        with OpenEXR.File(path, separate_channels=True) as exr:
            plane = np.array(exr.channels()[name].pixels, copy=True)
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises RuntimeError for every decode failure
        raise PlateError(
            f"matte {path!r} is corrupt or truncated: its pixels cannot be decoded ({exc})"
        ) from exc
    if plane.dtype not in (np.float16, np.float32):
        raise PlateError(f"matte {path!r}: channel {name} holds {plane.dtype} values; expected HALF or FLOAT")
    return plane


def validate_plate(
    source: Union[PathLike, bytes],
    max_width: int = DEFAULT_MAX_SIDE,
    max_height: int = DEFAULT_MAX_SIDE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_channels: int = DEFAULT_MAX_CHANNELS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> PlateInfo:
    """Check a plate (a path or the bytes of an upload) is a usable EXR; PlateError says what is wrong.

    Checks, in order: exists, size in bytes, EXR magic number, then the header, parsed in Python before
    OpenEXR sees the file (exr_header): single part, flat, known compression, at most max_header_bytes,
    a sane data window within max_width x max_height, 3..max_channels channels with full-resolution
    R/G/B, and pixels that take at most max_decode_bytes once decoded. Only then are the pixels decoded:
    R/G/B float, every pixel finite (no NaN / inf). A single-channel file is a matte (an element's
    coverage): its one channel must be float and finite.
    """
    budget = {
        "max_width": max_width,
        "max_height": max_height,
        "max_bytes": max_bytes,
        "max_channels": max_channels,
        "max_header_bytes": max_header_bytes,
        "max_decode_bytes": max_decode_bytes,
    }
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise PlateError(f"plate upload is {len(data)} bytes, above the limit of {max_bytes} bytes")
        _check_magic(data[:4], "plate upload")
        with _temp_exr(data) as path:
            return _validate_path(path, label="plate upload", **budget)
    return _validate_path(os.fspath(source), label=os.fspath(source), **budget)


def read_exr_bytes(data: bytes, **limits: int) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Validate then read an EXR received as bytes (e.g. a plate uploaded to the server)."""
    validate_plate(data, **limits)
    with _temp_exr(bytes(data)) as path:
        return read_exr(path)


def frame_path(directory: PathLike, prefix: str, frame: int, padding: int = 4, suffix: str = ".exr") -> str:
    """<directory>/<prefix><frame zero-padded to `padding`><suffix>, e.g. dir/sh010_gen.1001.exr."""
    if frame < 0:
        raise ValueError(f"frame numbers must be >= 0, got {frame}")
    return os.path.join(os.fspath(directory), f"{prefix}{frame:0{padding}d}{suffix}")


def sequence_paths(
    directory: PathLike, prefix: str, start: int, count: int, padding: int = 4, suffix: str = ".exr"
) -> List[str]:
    """Paths of `count` frames numbered from `start`."""
    if count < 0:
        raise ValueError(f"frame count must be >= 0, got {count}")
    return [frame_path(directory, prefix, start + i, padding, suffix) for i in range(count)]


def write_sequence(
    directory: PathLike,
    prefix: str,
    frames: Iterable[np.ndarray],
    start: int = 1001,
    padding: int = 4,
    colour_interop_id: Optional[str] = "lin_rec709_scene",
    attributes: Optional[Dict[str, Any]] = None,
    frames_per_second: Optional[Fraction] = None,
) -> List[str]:
    """Write frames as <prefix><frame>.exr from `start` in `directory` (created); returns the paths.

    Every frame gets the same attributes; frames may be an iterator (one frame in memory at a time).
    """
    os.makedirs(os.fspath(directory), exist_ok=True)
    paths = []
    for i, rgba in enumerate(frames):
        path = frame_path(directory, prefix, start + i, padding)
        write_rgba_exr(path, rgba, colour_interop_id, attributes, frames_per_second)
        paths.append(path)
    return paths


def _as_half_rgba(rgba: Any) -> np.ndarray:
    array = np.asarray(rgba)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.shape[0] < 1 or array.shape[1] < 1:
        raise ExrWriteError(f"pixels must be (H, W, 4) or (H, W, 3), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ExrWriteError(f"pixels must be float16/float32/float64 scene values, got dtype {array.dtype}")
    # the checks are whole-frame reductions, kept cheap (a 1080p frame is 8 M values): min and max carry
    # NaN and inf with them; half values are checked on their exponent bits (numpy's float16 maths is slow)
    if array.dtype == np.float16:
        if ((array.view(np.uint16) & _HALF_EXPONENT) == _HALF_EXPONENT).any():
            raise ExrWriteError("pixels contain NaN or inf; refusing to write them")
    else:
        low, high = float(array.min()), float(array.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ExrWriteError("pixels contain NaN or inf; refusing to write them")
        if max(-low, high) > _HALF_MAX:
            raise ExrWriteError(f"pixel magnitude {max(-low, high):g} does not fit in half float (max 65504)")
        array = array.astype(np.float16)
    if array.shape[2] == 3:  # (H, W, 3) -> (H, W, 4) with opaque alpha
        array = np.concatenate([array, np.ones(array.shape[:2] + (1,), np.float16)], axis=2)
    return np.ascontiguousarray(array)


def _check_magic(head: bytes, label: str) -> None:
    if head != EXR_MAGIC:
        raise PlateError(
            f"{label} is not an EXR file: it starts with bytes {head!r}, an EXR starts with {EXR_MAGIC!r}"
        )


def write_matte_exr(path: PathLike, matte: np.ndarray, channel: str = "A") -> str:
    """Write one single-channel half-float ZIP EXR (an element's matte: 1 inside, 0 outside); returns
    the path. matte: (H, W) finite values in [0, 1]."""
    OpenEXR = _openexr()
    values = np.asarray(matte)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.floating):
        raise ExrWriteError(f"a matte is an (H, W) float array, got {values.dtype} {values.shape}")
    if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
        raise ExrWriteError("a matte's values must be finite and within [0, 1]")
    header: Dict[str, Any] = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    path = os.fspath(path)
    OpenEXR.File(header, {channel: values.astype(np.float16)}).write(path)
    return path


def matte_channels(path: PathLike) -> List[str]:
    """The channel names of an EXR (header only): a matte must have exactly one."""
    path = os.fspath(path)
    _check_exr_file(path)
    return list(_read_header(path)[0]["channel_names"])


def _check_exr_file(path: str) -> None:
    if not os.path.exists(path):
        raise PlateError(f"plate {path!r} does not exist")
    if not os.path.isfile(path):
        raise PlateError(f"plate {path!r} is not a regular file")
    with open(path, "rb") as handle:
        _check_magic(handle.read(4), f"plate {path!r}")


def _read_header(path: str) -> Tuple[Dict[str, Any], List[Any]]:
    OpenEXR = _openexr()
    try:
        # the header dict is cleared when the file closes: copy out what we need inside the block
        with OpenEXR.File(path, header_only=True) as exr:
            raw = dict(exr.header())
            channels = list(raw.get("channels", []))
            header = {k: _plain(v) for k, v in raw.items() if k != "channels"}
            parts = len(exr.parts)
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises RuntimeError for every decode failure
        raise PlateError(
            f"plate {path!r} is corrupt or truncated: the EXR header cannot be read ({exc})"
        ) from exc
    if parts != 1:
        raise PlateError(f"plate {path!r} has {parts} parts; only single-part EXRs are supported")
    if raw.get("type") not in (OpenEXR.scanlineimage, OpenEXR.tiledimage):
        raise PlateError(
            f"plate {path!r} is a {_plain(raw.get('type'))} image; only flat scanline/tiled EXRs"
        )
    channels = list(raw.get("channels", []))
    header = {k: _plain(v) for k, v in raw.items() if k != "channels"}
    (x0, y0), (x1, y1) = header["dataWindow"]
    header["width"], header["height"] = x1 - x0 + 1, y1 - y0 + 1
    header["channel_names"] = [c.name for c in channels]
    return header, channels


def _read_pixels(path: str, header: Dict[str, Any], channels: List[Any]) -> np.ndarray:
    names = header["channel_names"]
    missing = [c for c in "RGB" if c not in names]
    if missing:
        raise PlateError(
            f"plate {path!r} has channels {names}; expected R, G, B (and optionally A), missing {missing}"
        )
    for channel in channels:
        if channel.name in ("R", "G", "B", "A") and (channel.xSampling != 1 or channel.ySampling != 1):
            raise PlateError(
                f"plate {path!r}: channel {channel.name} is subsampled; only full-resolution RGBA"
            )
    OpenEXR = _openexr()
    try:
        with OpenEXR.File(path, separate_channels=True) as exr:
            # copy: the pixel buffers belong to the file object and go when it closes
            planes = {
                n: np.array(ch.pixels, copy=True)
                for n, ch in exr.channels().items()
                if n in ("R", "G", "B", "A")
            }
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises RuntimeError for every decode failure
        raise PlateError(
            f"plate {path!r} is corrupt or truncated: its pixels cannot be decoded ({exc})"
        ) from exc
    for name, plane in planes.items():
        if plane.dtype not in (np.float16, np.float32):
            raise PlateError(
                f"plate {path!r}: channel {name} holds {plane.dtype} values; expected HALF or FLOAT colour"
            )
    header["pixel_types"] = {
        n: "HALF" if p.dtype == np.float16 else "FLOAT" for n, p in sorted(planes.items())
    }
    height, width = header["height"], header["width"]
    rgba = np.ones((height, width, 4), np.float32)  # (H, W, 4); A stays 1 when the file has none
    for i, name in enumerate("RGBA"):
        if name in planes:
            rgba[:, :, i] = planes[name]
    return rgba


def _check_finite(pixels: np.ndarray, label: str, *names: str) -> None:
    """PlateError on a NaN or inf in pixels (H, W, C); names: the C channels' names (default R G B A)."""
    names = names or ("R", "G", "B", "A")
    bad = ~np.isfinite(pixels)
    if bad.any():
        y, x, c = (int(v) for v in np.argwhere(bad)[0])
        nans = int(np.isnan(pixels).sum())
        infs = int(np.isinf(pixels).sum())
        raise PlateError(
            f"plate {label!r} has {nans} NaN and {infs} inf values (first at x={x}, y={y}, channel "
            f"{names[c]}); fix or clamp the plate before sending it"
        )


def _validate_path(
    path: str,
    label: str,
    max_width: int,
    max_height: int,
    max_bytes: int,
    max_channels: int,
    max_header_bytes: int,
    max_decode_bytes: int,
) -> PlateInfo:
    _check_exr_file(path)
    size = os.path.getsize(path)
    if size > max_bytes:
        raise PlateError(f"plate {label!r} is {size} bytes, above the limit of {max_bytes} bytes")
    with open(path, "rb") as handle:
        head = handle.read(8 + max_header_bytes + 1)  # one byte more: "longer than the limit" is then seen
    declared = read_plate_header(head, label, max_header_bytes)
    check_plate_header(declared, label, max_width, max_height, max_channels, max_decode_bytes)
    header, channels = _read_header(path)
    if (header["width"], header["height"]) != (declared.width, declared.height):
        raise PlateError(
            f"plate {label!r}: OpenEXR reads {header['width']}x{header['height']}, the header says "
            f"{declared.width}x{declared.height}"
        )
    if len(channels) == 1:  # a matte
        plane = _read_single(path, channels[0].name)
        _check_finite(plane[:, :, None], label, channels[0].name)
        header["pixel_types"] = {channels[0].name: "HALF" if plane.dtype == np.float16 else "FLOAT"}
        pixel_types = tuple(header["pixel_types"].values())
    else:
        pixels = _read_pixels(path, header, channels)
        _check_finite(pixels, label)
        pixel_types = tuple(header["pixel_types"].get(c, "") for c in "RGBA" if c in header["pixel_types"])
    return PlateInfo(
        width=header["width"],
        height=header["height"],
        channels=tuple(header["channel_names"]),
        pixel_types=pixel_types,
        header=header,
    )


@contextlib.contextmanager
def _temp_exr(data: bytes) -> Iterator[str]:
    """`data` written to a temporary .exr file (OpenEXR 3.4 reads files, not buffers), removed on exit."""
    handle, path = tempfile.mkstemp(suffix=".exr", prefix="ttt_plate_")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        yield path
    finally:
        try:
            os.unlink(path)
        except OSError:
            log.warning("could not remove temporary plate %s", path)


def _plain(value: Any) -> Any:
    """Header values as plain Python: enums -> names, numpy arrays -> tuples, tuples recursively."""
    if isinstance(value, np.ndarray):
        return tuple(v.item() for v in value.reshape(-1))
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, Fraction)) or value is None:
        return value
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name
    return str(value)


__all__ = [
    "PlateInfo",
    "frame_path",
    "read_exr",
    "read_exr_bytes",
    "sequence_paths",
    "validate_plate",
    "write_rgba_exr",
    "write_sequence",
]
