"""atheris: plate validation (host_plugin.core.exr_io.validate_plate on an upload's bytes: the Python
header check of exr_header, then OpenEXR). Anything but PlateError (or a signal: OpenEXR runs in this
process) is a finding; an accepted plate must be within the limits.

    nice -n 19 python tools/fuzz/fuzz_plate.py -max_total_time=300
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import atheris
from _harness import run

with atheris.instrument_imports(include=["host_plugin.core.exr_header", "host_plugin.core.exr_io"]):
    from host_plugin.core.errors import PlateError
    from host_plugin.core.exr_io import validate_plate

LIMITS = {"max_width": 64, "max_height": 64, "max_channels": 8, "max_decode_bytes": 1 << 20}


def seeds() -> list[bytes]:
    """Small real plates: scanline and tiled, several compressions, HALF/FLOAT, with and without alpha."""
    import numpy as np
    import OpenEXR

    out = []
    tmp = Path(tempfile.mkdtemp(prefix="ttt_fuzz_plates_"))
    for i, (compression, tiled, names, dtype) in enumerate(
        [
            ("ZIP", False, "RGBA", np.float16),
            ("PIZ", True, "RGB", np.float32),
            ("RLE", False, "RGBZ", np.float16),
            ("NO", True, "RGBA", np.float16),
            ("DWAA", False, "RGB", np.float16),
        ]
    ):
        header = {
            "compression": getattr(OpenEXR, f"{compression}_COMPRESSION"),
            "type": OpenEXR.scanlineimage,
        }
        if tiled:
            tiles = OpenEXR.TileDescription()
            tiles.xSize, tiles.ySize, tiles.mode = 8, 8, OpenEXR.ONE_LEVEL
            header.update(type=OpenEXR.tiledimage, tiles=tiles)
        planes = {n: np.full((12, 20), 0.25 * (j + 1), dtype) for j, n in enumerate(names)}
        path = tmp / f"seed{i}.exr"
        OpenEXR.File(header, planes).write(str(path))
        out.append(path.read_bytes())
    return out


def test_one_input(data: bytes) -> None:
    try:
        info = validate_plate(data, **LIMITS)
    except PlateError:
        return
    assert info.width <= LIMITS["max_width"] and info.height <= LIMITS["max_height"], info
    assert {"R", "G", "B"} <= set(info.channels) and len(info.channels) <= LIMITS["max_channels"], info


if __name__ == "__main__":
    run(test_one_input, seeds())
