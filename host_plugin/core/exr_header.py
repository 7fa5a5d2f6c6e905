"""The header of an EXR plate, read and checked in pure Python before OpenEXR touches the file.

A plate is untrusted input: its header says how big its pixels are, and OpenEXR allocates what the header
says (a 416 KB ZIP file can declare 8192 x 8192 and cost 1.45 GB to decode). `read_plate_header` parses
the header bytes itself (the layout of the OpenEXR file format: magic, version flags, then attributes
`name\\0 type\\0 int32 size, value` up to an empty name) with every length checked against the bytes
present, and `check_plate_header` refuses, before any pixel is decoded: multi-part and deep files, an
unknown compression, more channels than allowed, subsampled or missing R/G/B (a single-channel matte
needs no R/G/B), a data window that is
inverted, huge or beyond the size limit, and pixels that would take more than a memory budget once
decoded. Only then does OpenEXR read the file.

Python 3.9 compatible (host_plugin rule); no third-party imports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from host_plugin.core.errors import PlateError

EXR_MAGIC = b"\x76\x2f\x31\x01"
_TILED, _LONG_NAMES, _NON_IMAGE, _MULTIPART = 0x200, 0x400, 0x800, 0x1000
_KNOWN_FLAGS = 0xFF | _TILED | _LONG_NAMES | _NON_IMAGE | _MULTIPART
COMPRESSIONS = (
    "NO",
    "RLE",
    "ZIPS",
    "ZIP",
    "PIZ",
    "PXR24",
    "B44",
    "B44A",
    "DWAA",
    "DWAB",
    "HTJ2K256",
    "HTJ2K32",
    "LJ2K",
    "ZSTD",
)  # index = the compression attribute's byte (OpenEXR 3.5)
PIXEL_TYPES = ("UINT", "HALF", "FLOAT")  # index = the channel's pixel type
SAMPLE_BYTES = {"UINT": 4, "HALF": 2, "FLOAT": 4}
RGBA_FLOAT32_BYTES = 16  # the reader's own (H, W, 4) float32 copy, per pixel
MAX_COORDINATE = 1 << 30  # OpenEXR's own sanity bound on window coordinates
REQUIRED = ("channels", "compression", "dataWindow", "displayWindow", "lineOrder")


@dataclass(frozen=True)
class Channel:
    name: str
    pixel_type: str  # "UINT" | "HALF" | "FLOAT"
    x_sampling: int
    y_sampling: int


@dataclass(frozen=True)
class PlateHeader:
    """What the header of a single-part EXR declares. windows are ((x0, y0), (x1, y1)), inclusive."""

    version: int
    tiled: bool
    channels: Tuple[Channel, ...]
    compression: str
    data_window: Tuple[Tuple[int, int], Tuple[int, int]]
    display_window: Tuple[Tuple[int, int], Tuple[int, int]]
    line_order: int
    tile_size: Optional[Tuple[int, int]]
    header_bytes: int
    attributes: Dict[str, str]  # attribute name -> type name, every attribute

    @property
    def width(self) -> int:
        (x0, _), (x1, _) = self.data_window
        return x1 - x0 + 1

    @property
    def height(self) -> int:
        (_, y0), (_, y1) = self.data_window
        return y1 - y0 + 1

    def decoded_bytes(self) -> int:
        """Bytes the pixels take once decoded: every channel at its sampling, plus the RGBA float copy."""
        samples = sum(
            SAMPLE_BYTES[c.pixel_type]
            * _ceil_div(self.width, c.x_sampling)
            * _ceil_div(self.height, c.y_sampling)
            for c in self.channels
        )
        return samples + RGBA_FLOAT32_BYTES * self.width * self.height


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _Reader:
    """Bounds-checked reads of data[:limit]; PlateError names the label and offset. A read past limit
    is a header longer than max_header_bytes when data goes on beyond it, else a truncated file."""

    def __init__(self, data: bytes, label: str, limit: int, max_header_bytes: int = 0) -> None:
        self.data, self.label, self.limit, self.pos = data, label, limit, 0
        self.max_header_bytes = max_header_bytes

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > self.limit:
            if self.limit < len(self.data):
                raise PlateError(
                    f"plate {self.label!r}: its header is longer than the limit of {self.max_header_bytes} bytes"
                )
            raise PlateError(
                f"plate {self.label!r} is truncated: {what} at byte {self.pos} needs {n} bytes, "
                f"the file has {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def cstring(self, max_len: int, what: str) -> str:
        end = self.data.find(b"\0", self.pos, min(self.limit, self.pos + max_len + 1))
        if end < 0:
            raise PlateError(
                f"plate {self.label!r}: {what} at byte {self.pos} is not a NUL-terminated name of at most "
                f"{max_len} characters (corrupt or truncated header)"
            )
        raw = self.data[self.pos : end]
        self.pos = end + 1
        return raw.decode("latin-1")


def read_plate_header(data: bytes, label: str, max_header_bytes: int) -> PlateHeader:
    """Parse the header of the EXR whose first bytes are `data` (the whole file or at least its header).

    Raises PlateError for anything that is not a single-part, flat (non-deep) EXR header with the
    required attributes, or whose header is longer than max_header_bytes.
    """
    if data[:4] != EXR_MAGIC:
        raise PlateError(
            f"plate {label!r} is not an EXR file: it starts with bytes {bytes(data[:4])!r}, an EXR starts "
            f"with {EXR_MAGIC!r}"
        )
    reader = _Reader(bytes(data), label, min(len(data), 8 + max_header_bytes), max_header_bytes)
    reader.take(4, "the magic number")
    (flags,) = struct.unpack("<I", reader.take(4, "the version field"))
    version = flags & 0xFF
    if version != 2 or flags & ~_KNOWN_FLAGS:
        raise PlateError(f"plate {label!r}: unknown EXR version field 0x{flags:08x}; expected version 2")
    if flags & _MULTIPART:
        raise PlateError(f"plate {label!r} is a multi-part EXR; only single-part EXRs are supported")
    if flags & _NON_IMAGE:
        raise PlateError(f"plate {label!r} is a deep EXR; only flat scanline/tiled EXRs are supported")
    max_name = 255 if flags & _LONG_NAMES else 31
    values: Dict[str, Tuple[str, bytes]] = {}
    while True:
        name = reader.cstring(max_name, "an attribute name")
        if not name:
            break
        type_name = reader.cstring(max_name, f"the type of attribute {name!r}")
        (size,) = struct.unpack("<i", reader.take(4, f"the size of attribute {name!r}"))
        if size < 0:
            raise PlateError(f"plate {label!r}: attribute {name!r} has a negative size {size}")
        value = reader.take(size, f"the value of attribute {name!r}")
        if name in values:
            raise PlateError(f"plate {label!r}: attribute {name!r} appears twice in the header")
        values[name] = (type_name, value)
    missing = [n for n in REQUIRED + (("tiles",) if flags & _TILED else ()) if n not in values]
    if missing:
        raise PlateError(f"plate {label!r}: the header lacks the required attribute(s) {missing}")
    return PlateHeader(
        version=version,
        tiled=bool(flags & _TILED),
        channels=_channels(label, *values["channels"]),
        compression=_compression(label, *values["compression"]),
        data_window=_box2i(label, "dataWindow", *values["dataWindow"]),
        display_window=_box2i(label, "displayWindow", *values["displayWindow"]),
        line_order=_uchar(label, "lineOrder", "lineOrder", *values["lineOrder"]),
        tile_size=_tiles(label, *values["tiles"]) if flags & _TILED else None,
        header_bytes=reader.pos,
        attributes={k: t for k, (t, _) in values.items()},
    )


def check_plate_header(
    header: PlateHeader,
    label: str,
    max_width: int,
    max_height: int,
    max_channels: int,
    max_decode_bytes: int,
) -> None:
    """Refuse, before any pixel is decoded, a plate whose header asks for more than the limits allow."""
    if header.line_order > 2:
        raise PlateError(f"plate {label!r}: unknown lineOrder {header.line_order}; expected 0, 1 or 2")
    for name, ((x0, y0), (x1, y1)) in (
        ("dataWindow", header.data_window),
        ("displayWindow", header.display_window),
    ):
        if x1 < x0 or y1 < y0:
            raise PlateError(f"plate {label!r}: {name} ({x0}, {y0})-({x1}, {y1}) is empty or inverted")
        if max(abs(x0), abs(y0), abs(x1), abs(y1)) > MAX_COORDINATE:
            raise PlateError(
                f"plate {label!r}: {name} ({x0}, {y0})-({x1}, {y1}) has a coordinate beyond +-{MAX_COORDINATE}"
            )
    if header.width > max_width or header.height > max_height:
        raise PlateError(
            f"plate {label!r} is {header.width}x{header.height}, above the limit of {max_width}x{max_height} "
            "(plates are used at the job's size; the server's max_width x max_height)"
        )
    if not header.channels or len(header.channels) > max_channels:
        raise PlateError(
            f"plate {label!r} has {len(header.channels)} channels; expected 3 to {max_channels} (R, G, B, A, ...), "
            "or 1 for a matte"
        )
    names = [c.name for c in header.channels]
    missing = [c for c in "RGB" if c not in names]
    matte = len(names) == 1  # a single-channel matte (an element's coverage), whatever its name
    if matte and (header.channels[0].x_sampling != 1 or header.channels[0].y_sampling != 1):
        raise PlateError(f"matte {label!r}: channel {names[0]} is subsampled; only full resolution")
    if missing and not matte:
        raise PlateError(
            f"plate {label!r} has channels {names}; expected R, G, B (and optionally A), or a single "
            f"channel for a matte; missing {missing}"
        )
    for channel in header.channels:
        if channel.name in ("R", "G", "B", "A") and (channel.x_sampling != 1 or channel.y_sampling != 1):
            raise PlateError(
                f"plate {label!r}: channel {channel.name} is subsampled; only full-resolution RGBA"
            )
    if header.tile_size is not None:
        tx, ty = header.tile_size
        if tx > max(max_width, max_height) or ty > max(max_width, max_height):
            raise PlateError(
                f"plate {label!r}: tiles of {tx}x{ty} are larger than the plate limit of {max_width}x{max_height}"
            )
    decoded = header.decoded_bytes()
    if decoded > max_decode_bytes:
        raise PlateError(
            f"plate {label!r}: its {len(names)} channels of {header.width}x{header.height} take {decoded} bytes "
            f"once decoded, above the budget of {max_decode_bytes} bytes; send only R, G, B (and A)"
        )


def _channels(label: str, type_name: str, value: bytes) -> Tuple[Channel, ...]:
    if type_name != "chlist":
        raise PlateError(f"plate {label!r}: attribute 'channels' has type {type_name!r}; expected 'chlist'")
    reader = _Reader(value, label, len(value))
    channels = []
    while True:
        name = reader.cstring(255, "a channel name")
        if not name:
            break
        pixel_type, _linear, _r1, _r2, _r3, xs, ys = struct.unpack(
            "<iBBBBii", reader.take(16, f"channel {name!r}")
        )
        if not 0 <= pixel_type < len(PIXEL_TYPES):
            raise PlateError(f"plate {label!r}: channel {name!r} has unknown pixel type {pixel_type}")
        if xs < 1 or ys < 1:
            raise PlateError(f"plate {label!r}: channel {name!r} has sampling {xs}x{ys}; expected >= 1")
        if any(c.name == name for c in channels):
            raise PlateError(f"plate {label!r}: channel {name!r} appears twice")
        channels.append(Channel(name, PIXEL_TYPES[pixel_type], xs, ys))
    return tuple(channels)


def _compression(label: str, type_name: str, value: bytes) -> str:
    code = _uchar(label, "compression", "compression", type_name, value)
    if code >= len(COMPRESSIONS):
        raise PlateError(
            f"plate {label!r}: unknown compression {code}; expected one of {', '.join(COMPRESSIONS)}"
        )
    return COMPRESSIONS[code]


def _uchar(label: str, name: str, expected: str, type_name: str, value: bytes) -> int:
    if type_name != expected or len(value) != 1:
        raise PlateError(
            f"plate {label!r}: attribute {name!r} is {type_name!r} of {len(value)} bytes; expected {expected!r} of 1"
        )
    return value[0]


def _box2i(label: str, name: str, type_name: str, value: bytes) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    if type_name != "box2i" or len(value) != 16:
        raise PlateError(
            f"plate {label!r}: attribute {name!r} is {type_name!r} of {len(value)} bytes; expected 'box2i' of 16"
        )
    x0, y0, x1, y1 = struct.unpack("<iiii", value)
    return (x0, y0), (x1, y1)


def _tiles(label: str, type_name: str, value: bytes) -> Tuple[int, int]:
    if type_name != "tiledesc" or len(value) != 9:
        raise PlateError(
            f"plate {label!r}: attribute 'tiles' is {type_name!r} of {len(value)} bytes; expected 'tiledesc' of 9"
        )
    tx, ty, _mode = struct.unpack("<IIB", value)
    if tx < 1 or ty < 1:
        raise PlateError(f"plate {label!r}: tiles of {tx}x{ty}; expected >= 1x1")
    return tx, ty


__all__ = ["Channel", "PlateHeader", "check_plate_header", "read_plate_header"]
