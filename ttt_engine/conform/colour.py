"""Colour spaces and conversions of the conform, all through OpenColorIO's built-in studio config.

The one rule: no transfer function or matrix is written here. Every conversion is an OCIO processor of
`ocio://studio-config-latest` (shipped inside the `opencolorio` wheel, nothing downloaded); this module
only names spaces, caches processors and reads / writes the EXR tags (`colorInteropID` and
`chromaticities`) that say which space a file's pixels are in.

Chromaticities are the one table here: EXR's `chromaticities` attribute names a linear RGB space by its
primaries and white point (xy), and OCIO's config does not expose those numbers, so the standard values
of the gamuts we tag are listed below, keyed by the gamut part of the interop id (`lin_ap1_scene` ->
`ap1`). They are data from the gamut standards, not a conversion; tests check them against OCIO's own
matrices.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIG_URI = "ocio://studio-config-latest"
DISPLAY = "sRGB - Display"
DISPLAY_VIEW = "Un-tone-mapped"
"""Previews show the plain sRGB encoding (what the VAE emits and the eval detectors were tuned on), not a
tone-mapping view: a model's 0..1 output maps back to itself."""

# xy of the red, green and blue primaries and the white point, as EXR's chromaticities attribute holds them
GAMUT_CHROMATICITIES: dict[str, tuple[float, ...]] = {
    # ITU-R BT.709 / IEC 61966-2-1 (sRGB), white D65
    "rec709": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
    # ACES AP1 (SMPTE ST 2065-1 / S-2014-004), ACES white (~D60)
    "ap1": (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767),
    # ACES AP0 (SMPTE ST 2065-1)
    "ap0": (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767),
    # ITU-R BT.2020, white D65
    "rec2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290),
    # SMPTE EG 432-1 (P3-D65)
    "p3d65": (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3127, 0.3290),
}
CHROMATICITY_TOLERANCE = 2e-3
"""Chromaticities written by other tools are rounded (and stored as float32): this close is a match."""
DEFAULT_FILE_SPACE = "lin_rec709_scene"
"""An EXR without colorInteropID or chromaticities is linear Rec.709 by the OpenEXR specification."""
UNKNOWN_ID = "unknown"
"""The colorInteropID a file carries when its writer did not know: read as if the tag were absent."""
EXAMPLE_IDS = ("lin_ap1_scene", "lin_ap0_scene", "lin_rec709_scene", "srgb_rec709_scene", "ACEScg")


@dataclass(frozen=True)
class ColourSpace:
    """A colour space of the studio config: its OCIO name, its interop id (EXR colorInteropID) and, for
    the gamuts in GAMUT_CHROMATICITIES, the 8 chromaticity values (None otherwise)."""

    name: str
    interop_id: str
    chromaticities: tuple[float, ...] | None
    encoding: str = ""
    """OCIO's encoding of the space: "scene-linear", "sdr-video" (0..1 display-referred), "log", ..."""

    @property
    def display_referred(self) -> bool:
        """True for encoded 0..1 spaces (sRGB-encoded textures, video): values outside 0..1 do not exist."""
        return self.encoding in ("sdr-video", "hdr-video") or self.interop_id.endswith("_display")


def _ocio() -> Any:
    import PyOpenColorIO

    return PyOpenColorIO


@functools.lru_cache(maxsize=1)
def config() -> Any:
    """The built-in studio config (loaded once)."""
    return _ocio().Config.CreateFromFile(CONFIG_URI)


def _gamut_of(interop_id: str) -> str | None:
    """ "lin_ap1_scene" -> "ap1"; "ocio:lin_awg4_scene" -> "awg4"; None for ids without that shape."""
    parts = interop_id.split(":")[-1].split("_")
    return parts[1] if len(parts) == 3 else None


@functools.lru_cache(maxsize=256)
def resolve_colourspace(name: str) -> ColourSpace:
    """A colour interop id ("lin_ap1_scene"), OCIO name ("ACEScg") or alias ("lin_ap1") -> ColourSpace.

    ValueError names the value and a few accepted ids when the studio config does not know it.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"colour space must be a non-empty string, got {name!r}; e.g. {', '.join(EXAMPLE_IDS)}"
        )
    space = config().getColorSpace(name.strip())
    if space is None:
        raise ValueError(
            f"unknown colour space {name!r}: expected an EXR colorInteropID or a colour space of OCIO's "
            f"{CONFIG_URI}, e.g. {', '.join(EXAMPLE_IDS)}"
        )
    interop = space.getInteropID() or space.getName()
    gamut = _gamut_of(interop)
    # chromaticities describe linear RGB; an encoded space (sRGB texture) keeps its primaries, so tag them too
    chroma = GAMUT_CHROMATICITIES.get(gamut) if gamut is not None and not space.isData() else None
    return ColourSpace(space.getName(), interop, chroma, str(space.getEncoding()))


@functools.lru_cache(maxsize=64)
def _processor(src: str, dst: str) -> Any:
    """Cached CPU processor src -> dst (OCIO names)."""
    return config().getProcessor(src, dst).getDefaultCPUProcessor()


def _check_pixels(pixels: Any, what: str) -> np.ndarray:
    array = np.asarray(pixels)
    if array.ndim < 1 or array.shape[-1] not in (3, 4) or not np.issubdtype(array.dtype, np.floating):
        got = f"shape {array.shape}, dtype {array.dtype}"
        raise ValueError(f"{what}: expected float pixels with 3 (RGB) or 4 (RGBA) channels last, got {got}")
    return array


def convert(pixels: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Pixels (..., 3) or (..., 4) from colour space `src` to `dst` (ids or OCIO names) as new float32.

    Alpha is untouched. The same space on both sides returns a float32 copy (no processor).
    """
    array = _check_pixels(pixels, "convert")
    source, target = resolve_colourspace(src), resolve_colourspace(dst)
    out = np.array(array, dtype=np.float32, copy=True, order="C")
    if source.name == target.name:
        return out
    processor = _processor(source.name, target.name)
    rgb = np.ascontiguousarray(out[..., :3]).reshape(-1, 3)  # (N, 3): OCIO's packed RGB
    processor.applyRGB(rgb)
    out[..., :3] = rgb.reshape(out.shape[:-1] + (3,))
    return out


def to_display(pixels: np.ndarray, src: str) -> np.ndarray:
    """Pixels in `src` -> sRGB display-encoded values clipped to 0..1 (GIF previews, eval detectors)."""
    array = _check_pixels(pixels, "to_display")
    source = resolve_colourspace(src)
    out = np.array(array, dtype=np.float32, copy=True, order="C")
    rgb = np.ascontiguousarray(out[..., :3]).reshape(-1, 3)
    _display_processor(source.name).applyRGB(rgb)
    out[..., :3] = np.clip(rgb.reshape(out.shape[:-1] + (3,)), 0.0, 1.0)
    return out


@functools.lru_cache(maxsize=64)
def _display_processor(src: str) -> Any:
    ocio = _ocio()
    transform = ocio.DisplayViewTransform(src=src, display=DISPLAY, view=DISPLAY_VIEW)
    return config().getProcessor(transform).getDefaultCPUProcessor()


def exr_colour_attributes(space: str) -> dict[str, Any]:
    """EXR header entries that tag pixels in `space`: colorInteropID, plus chromaticities when known
    (a tuple of 8 floats, as OpenEXR's Python module reads and writes the attribute)."""
    resolved = resolve_colourspace(space)
    attributes: dict[str, Any] = {"colorInteropID": resolved.interop_id}
    if resolved.chromaticities is not None:
        attributes["chromaticities"] = tuple(float(v) for v in resolved.chromaticities)
    return attributes


def space_of_chromaticities(chromaticities: Any) -> str | None:
    """The linear space whose primaries and white are `chromaticities` (8 numbers), or None."""
    try:
        values = np.asarray(chromaticities, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if values.shape != (8,):
        return None
    for gamut, reference in GAMUT_CHROMATICITIES.items():
        if np.abs(values - np.asarray(reference)).max() <= CHROMATICITY_TOLERANCE:
            return f"lin_{gamut}_scene"
    return None


def colourspace_of_header(header: dict[str, Any], override: str | None = None) -> str:
    """A plate's declared colour space (an interop id), in this order: the user's `override`, the
    header's colorInteropID (unless "unknown"), its chromaticities (Rec.709 / AP1 / AP0 / Rec.2020 / P3-D65 primaries mean
    that linear space), else linear Rec.709 as the OpenEXR specification says.

    Chromaticities that match none of the known gamuts raise ValueError (guessing would shift every
    colour); so do an unknown override or colorInteropID.
    """
    if override:
        return resolve_colourspace(override).interop_id
    interop = header.get("colorInteropID")
    if interop and interop != UNKNOWN_ID:
        return resolve_colourspace(str(interop)).interop_id
    chroma = header.get("chromaticities")
    if chroma is not None:
        space = space_of_chromaticities(chroma)
        if space is None:
            raise ValueError(
                f"plate chromaticities {tuple(round(float(v), 5) for v in np.ravel(chroma))} match no known "
                f"gamut ({', '.join(GAMUT_CHROMATICITIES)}); name the plate's colour space explicitly"
            )
        return space
    return DEFAULT_FILE_SPACE


__all__ = [
    "ColourSpace",
    "colourspace_of_header",
    "convert",
    "exr_colour_attributes",
    "resolve_colourspace",
    "space_of_chromaticities",
    "to_display",
]
