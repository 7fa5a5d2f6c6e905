"""Plate headers read in Python and checked before any pixel is decoded (host_plugin/core/exr_header.py).

Agreement with OpenEXR on the files OpenEXR writes; refusals before decoding (size, channels, decode
budget, header length); and fuzzing: arbitrary header bytes and mutated real files give a PlateInfo or a
PlateError, never another exception (and never a crash of this process, where OpenEXR runs).
Example counts (derandomized): agreement 40, built headers 300, mutated files 300; measured ~20 s in
all on a 2-core CPU shared with other jobs (docs/reliability.md).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from host_plugin.core import exr_io
from host_plugin.core.errors import PlateError
from host_plugin.core.exr_header import COMPRESSIONS, EXR_MAGIC, read_plate_header
from host_plugin.core.exr_io import PlateInfo, validate_plate

LIMITS = {"max_width": 64, "max_height": 64, "max_channels": 8, "max_decode_bytes": 1 << 20}
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
WRITABLE = ("NO", "RLE", "ZIPS", "ZIP", "PIZ", "PXR24", "B44", "B44A", "DWAA", "DWAB")
DTYPES = {"HALF": np.float16, "FLOAT": np.float32, "UINT": np.uint32}


def _write(path: Path, width: int, height: int, channels: dict, compression: str, tile: int | None) -> bytes:
    header = {"compression": getattr(OpenEXR, f"{compression}_COMPRESSION"), "type": OpenEXR.scanlineimage}
    if tile:
        tiles = OpenEXR.TileDescription()
        tiles.xSize, tiles.ySize, tiles.mode = tile, tile, OpenEXR.ONE_LEVEL
        header.update(type=OpenEXR.tiledimage, tiles=tiles)
    planes = {n: np.full((height, width), 0.5, DTYPES[t]) for n, t in channels.items()}
    OpenEXR.File(header, planes).write(str(path))
    return path.read_bytes()


def _plate(tmp_path: Path, width: int = 16, height: int = 8, names: str = "RGBA") -> bytes:
    return _write(tmp_path / "p.exr", width, height, dict.fromkeys(names, "HALF"), "ZIP", None)


# ---------------------------------------------------------------------------- agreement with OpenEXR


@settings(FUZZ, max_examples=40)
@given(
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    extra=st.dictionaries(
        st.sampled_from(["A", "Z", "N.x", "spec.R"]), st.sampled_from(list(DTYPES)), max_size=3
    ),
    types=st.tuples(*[st.sampled_from(["HALF", "FLOAT"])] * 3),
    compression=st.sampled_from(WRITABLE),
    tile=st.one_of(st.none(), st.integers(1, 32)),
)
def test_the_header_parser_agrees_with_openexr(
    tmp_path_factory, width, height, extra, types, compression, tile
):
    path = tmp_path_factory.mktemp("agree") / "p.exr"
    channels = {**dict(zip("RGB", types)), **extra}
    data = _write(path, width, height, channels, compression, tile)
    ours = read_plate_header(data, "p", 1 << 20)
    with OpenEXR.File(str(path), header_only=True) as exr:
        theirs = dict(exr.header())
        (x0, y0), (x1, y1) = (tuple(int(v) for v in corner) for corner in theirs["dataWindow"])
        assert (ours.width, ours.height) == (x1 - x0 + 1, y1 - y0 + 1) == (width, height)
        assert sorted(c.name for c in ours.channels) == sorted(c.name for c in theirs["channels"])
        assert ours.compression == theirs["compression"].name.replace("_COMPRESSION", "")
        assert ours.tile_size == ((tile, tile) if tile else None)
    assert {c.name: c.pixel_type for c in ours.channels} == channels


# ---------------------------------------------------------------------------- refused before decoding


@pytest.fixture()
def no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding pixels fails the test: these plates must be refused from their header alone."""

    def decode(*args, **kwargs):
        raise AssertionError("pixels were decoded before the header was refused")

    monkeypatch.setattr(exr_io, "_read_pixels", decode)


def _windows(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    for name in (b"dataWindow\0box2i\0", b"displayWindow\0box2i\0"):
        at = out.index(name) + len(name) + 4
        out[at : at + 16] = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    return bytes(out)


@pytest.mark.parametrize(
    "case, words",
    [
        ("8k", "8192x8192, above the limit of 64x64"),
        ("wide", "65x8, above the limit of 64x64"),
        ("channels", "9 channels; expected 3 to 8"),
        ("budget", "take 3072 bytes once decoded, above the budget of 3071 bytes"),
        ("header", "header is longer than the limit of 64 bytes"),
        ("no_rgb", "missing ['B']"),
        ("inverted", "empty or inverted"),
        ("compression", "unknown compression 200"),
        ("multipart", "multi-part"),
    ],
)
def test_bad_headers_are_refused_before_decoding(case: str, words: str, tmp_path: Path, no_decode) -> None:
    limits = dict(LIMITS)
    data = _plate(tmp_path)
    if case == "8k":
        data = _windows(data, 8192, 8192)
    elif case == "wide":
        data = _plate(tmp_path, width=65)
    elif case == "channels":
        data = _plate(tmp_path, names="RGBAXYZUV")
    elif case == "budget":
        limits["max_decode_bytes"] = 3071  # 16 x 8 pixels x (4 half channels: 8 bytes + float RGBA copy: 16)
    elif case == "header":
        limits["max_header_bytes"] = 64
    elif case == "no_rgb":
        data = _plate(tmp_path, names="RGA")
    elif case == "inverted":
        data = _windows(data, 0, 8)
    elif case == "compression":
        at = data.index(b"compression\0compression\0") + len(b"compression\0compression\0") + 4
        data = data[:at] + bytes([200]) + data[at + 1 :]
    else:
        data = data[:4] + struct.pack("<I", 2 | 0x1000) + data[8:]
    with pytest.raises(PlateError) as err:
        validate_plate(data, **limits)
    assert words in str(err.value)


def test_a_plate_within_every_limit_is_accepted(tmp_path: Path) -> None:
    info = validate_plate(_plate(tmp_path, 64, 64), **LIMITS)
    assert (info.width, info.height) == (64, 64) and set(info.channels) == set("RGBA")


def test_compression_names_follow_openexr() -> None:
    for code, name in enumerate(COMPRESSIONS):
        assert int(getattr(OpenEXR, f"{name}_COMPRESSION")) == code


# ---------------------------------------------------------------------------- fuzzing


def _attr(name: bytes, type_name: bytes, value: bytes) -> bytes:
    return name + b"\0" + type_name + b"\0" + struct.pack("<i", len(value)) + value


def _often(usual: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """`usual` 9 times in 10 (so that many headers pass every check and reach OpenEXR), else `odd`."""
    return st.integers(0, 9).flatmap(lambda k: odd if k == 0 else usual)


@st.composite
def _built_exr(draw) -> bytes:
    """Header bytes with arbitrary attributes, windows, channels, compression and flags, then pixels."""
    odd_ints = st.one_of(st.integers(-3, 80), st.sampled_from([-(2**31), 2**31 - 1, 2**30 + 1, 8191, 8192]))
    x0, y0 = (draw(_often(st.just(0), odd_ints)) for _ in range(2))
    x1, y1 = (draw(_often(st.integers(0, 70), odd_ints)) for _ in range(2))
    names = draw(
        _often(
            st.lists(st.sampled_from(["A", "Z", "N.x"]), max_size=2, unique=True).map(
                lambda e: ["R", "G", "B", *e]
            ),
            st.lists(st.sampled_from(["R", "G", "B", "A", "Z", "", "R"]), max_size=10),
        )
    )
    chlist = b""
    for name in names:
        kind = draw(_often(st.sampled_from([1, 2]), st.integers(-1, 3)))
        sampling = draw(_often(st.just((1, 1)), st.tuples(odd_ints, odd_ints)))
        chlist += name.encode() + b"\0" + struct.pack("<iBBBBii", kind, 0, 0, 0, 0, *sampling)
    chlist += b"\0"
    tiled = draw(st.booleans())
    compression = draw(_often(st.sampled_from(range(len(WRITABLE))), st.integers(0, 255)))
    attrs = {
        b"channels": (b"chlist", chlist),
        b"compression": (b"compression", bytes([compression])),
        b"dataWindow": (b"box2i", struct.pack("<iiii", x0, y0, x1, y1)),
        b"displayWindow": (b"box2i", struct.pack("<iiii", 0, 0, max(x1, 0), max(y1, 0))),
        b"lineOrder": (b"lineOrder", bytes([draw(_often(st.just(0), st.integers(0, 3)))])),
        b"pixelAspectRatio": (b"float", struct.pack("<f", 1.0)),
        b"screenWindowCenter": (b"v2f", struct.pack("<ff", 0, 0)),
        b"screenWindowWidth": (b"float", struct.pack("<f", 1.0)),
    }
    if tiled:
        tile = draw(st.tuples(*[_often(st.integers(1, 64), odd_ints)] * 2))
        attrs[b"tiles"] = (b"tiledesc", struct.pack("<IIB", tile[0] & 0xFFFFFFFF, tile[1] & 0xFFFFFFFF, 0))
    for name in draw(_often(st.just([]), st.lists(st.sampled_from(sorted(attrs)), max_size=2))):
        attrs.pop(name, None)  # a required attribute missing
    for _ in range(draw(st.integers(0, 3))):  # arbitrary extra attributes, some of them with a wrong type
        attrs[draw(st.binary(min_size=1, max_size=8).map(lambda b: b.replace(b"\0", b"_")))] = (
            draw(st.sampled_from([b"string", b"int", b"box2i", b"chlist", b"x"])),
            draw(st.binary(max_size=24)),
        )
    flags = draw(_often(st.just(2 | (0x200 if tiled else 0)), st.integers(0, 2**32 - 1)))
    header = b"".join(_attr(n, t, v) for n, (t, v) in attrs.items()) + b"\0"
    header = header[: draw(_often(st.just(len(header)), st.integers(0, len(header))))]
    return EXR_MAGIC + struct.pack("<I", flags) + header + draw(st.binary(max_size=512))


def _judge(data: bytes) -> None:
    """A PlateInfo within the limits or a PlateError; anything else fails."""
    try:
        info = validate_plate(data, **LIMITS)
    except PlateError as exc:  # events: --hypothesis-show-statistics says how far the inputs got
        event("refused by OpenEXR" if "cannot be" in str(exc) else "refused before OpenEXR")
        return
    event("accepted")
    assert isinstance(info, PlateInfo)
    assert 1 <= info.width <= LIMITS["max_width"] and 1 <= info.height <= LIMITS["max_height"]
    assert {"R", "G", "B"} <= set(info.channels) and len(info.channels) <= LIMITS["max_channels"]


@settings(FUZZ, max_examples=300)
@given(data=_built_exr())
def test_arbitrary_headers_give_a_plate_or_a_plate_error(data: bytes) -> None:
    _judge(data)


@pytest.fixture(scope="module")
def real_plates(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    tmp = tmp_path_factory.mktemp("real")
    return [
        _write(tmp / "zip.exr", 16, 8, dict.fromkeys("RGBA", "HALF"), "ZIP", None),
        _write(tmp / "piz.exr", 12, 12, {"R": "FLOAT", "G": "FLOAT", "B": "FLOAT"}, "PIZ", 8),
        _write(tmp / "rle.exr", 9, 5, {"R": "HALF", "G": "HALF", "B": "HALF", "Z": "UINT"}, "RLE", None),
        _write(tmp / "none.exr", 7, 3, dict.fromkeys("RGB", "HALF"), "NO", 4),
        _write(tmp / "dwaa.exr", 33, 20, dict.fromkeys("RGBA", "HALF"), "DWAA", None),
    ]


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_mutated_real_plates_give_a_plate_or_a_plate_error(real_plates: list[bytes], data) -> None:
    plate = bytearray(data.draw(st.sampled_from(real_plates)))
    for _ in range(data.draw(st.integers(1, 6))):
        where = data.draw(st.one_of(st.integers(0, min(400, len(plate) - 1)), st.integers(0, len(plate) - 1)))
        action = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if action == "set":
            plate[where] = data.draw(
                st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, data.draw(st.integers(0, 255))])
            )
        elif action == "insert":
            plate[where:where] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del plate[where : where + data.draw(st.integers(1, 8))]
        else:
            del plate[where:]
        if not plate:
            break
    _judge(bytes(plate))
