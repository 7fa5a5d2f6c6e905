"""Colour space names: EXR colorInteropIDs (what the server delivers and tags) <-> each host's own names.

A delivered shot is tagged with a colorInteropID (OpenEXR 3.4+, the same strings OCIO 2.4+ configs give
`ColorSpace.getInteropID()`); each host names the same space differently:
- Nuke: the names of the OCIO config the root uses (root knob `OCIO_config`): "nuke-default" (linear,
  sRGB, ...), Foundry's ACES 1.x configs ("ACES - ACEScg", "Utility - Linear - sRGB", ...) and the
  CG / studio configs Nuke 14+ ships (OCIO's built-in names: "ACEScg", "Linear Rec.709 (sRGB)", ...).
  Roles ("scene_linear", "compositing_linear") stand for the config's working space.
- Blender: its bundled config's names, `ColorManagedInputColorspaceSettings.name` ("ACEScg",
  "Linear Rec.709", "sRGB", ...); 5.0 reports the working space as `bpy.data.colorspace
  .working_space_interop_id` itself.
- Resolve: clip attribute names ("Input Color Space" with colour management, the "IDT" input transform
  in ACES projects), see RESOLVE_INPUT_NAMES.
ACES projects work in ACEScg (ACES_WORKING). Imports nothing but the standard library (Python 3.9+).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from host_plugin.core.errors import HostError

ACES_WORKING = "lin_ap1_scene"
"""An ACES project's working space: ACEScg (AP1 primaries, linear)."""

INTEROP_IDS: Tuple[str, ...] = (
    "lin_ap1_scene",
    "lin_ap0_scene",
    "lin_rec709_scene",
    "lin_rec2020_scene",
    "lin_p3d65_scene",
    "srgb_rec709_scene",
)

# Nuke: the name a space has in each family of configs Nuke ships
_NUKE_OCIO_NAMES: Dict[str, str] = {  # OCIO's built-in CG / studio configs (Nuke 14+ defaults)
    "lin_ap1_scene": "ACEScg",
    "lin_ap0_scene": "ACES2065-1",
    "lin_rec709_scene": "Linear Rec.709 (sRGB)",
    "lin_rec2020_scene": "Linear Rec.2020",
    "lin_p3d65_scene": "Linear P3-D65",
    "srgb_rec709_scene": "sRGB Encoded Rec.709 (sRGB)",
}
_NUKE_ACES1_NAMES: Dict[str, str] = {  # Foundry's aces_1.0 .. aces_1.3 configs
    "lin_ap1_scene": "ACES - ACEScg",
    "lin_ap0_scene": "ACES - ACES2065-1",
    "lin_rec709_scene": "Utility - Linear - sRGB",
    "lin_rec2020_scene": "Utility - Linear - Rec.2020",
    "lin_p3d65_scene": "Utility - Linear - P3-D65",
    "srgb_rec709_scene": "Utility - sRGB - Texture",
}
_NUKE_DEFAULT_NAMES: Dict[str, str] = {  # "nuke-default" (and Nuke's own colour management)
    "lin_rec709_scene": "linear",
    "srgb_rec709_scene": "sRGB",
}
NUKE_WORKING_ROLES = ("scene_linear", "compositing_linear", "rendering", "default")

BLENDER_NAMES: Dict[str, str] = {
    "lin_ap1_scene": "ACEScg",
    "lin_ap0_scene": "ACES2065-1",
    "lin_rec709_scene": "Linear Rec.709",
    "lin_rec2020_scene": "Linear Rec.2020",
    "lin_p3d65_scene": "Linear DCI-P3 D65",
    "srgb_rec709_scene": "sRGB",
}
"""Blender's bundled OCIO config as `ColorManagedInputColorspaceSettings.name` lists it (checked against the
real bpy 5.0 module by the tests)."""

RESOLVE_INPUT_NAMES: Dict[str, str] = {
    "lin_ap1_scene": "ACEScg",
    "lin_ap0_scene": "ACES2065-1",
    "lin_rec709_scene": "Rec.709 Linear",
    "lin_rec2020_scene": "Rec.2020 Linear",
    "lin_p3d65_scene": "P3-D65 Linear",
    "srgb_rec709_scene": "sRGB",
}
"""Resolve Color Management's "Input Color Space" clip attribute names (and ACES "IDT" for AP1 / AP0)."""

# every name above (and OCIO's built-in config names) back to its interop id
_ALIASES: Dict[str, str] = {}
for _table in (_NUKE_OCIO_NAMES, _NUKE_ACES1_NAMES, _NUKE_DEFAULT_NAMES, BLENDER_NAMES, RESOLVE_INPUT_NAMES):
    for _interop, _name in _table.items():
        _ALIASES.setdefault(_name.lower(), _interop)


def interop_id(space: str) -> str:
    """The colorInteropID of `space`: an interop id is returned as is, a known name is translated.

    Raises HostError naming the space and the ids accepted when it is neither."""
    if not isinstance(space, str) or not space.strip():
        raise HostError(f"colour space must be a non-empty name or colorInteropID, got {space!r}")
    text = space.strip()
    if text in INTEROP_IDS:
        return text
    found = _ALIASES.get(text.lower())
    if found is None:
        raise HostError(
            f"colour space {space!r} is not one ttt-studio delivers; use a colorInteropID "
            f"({', '.join(INTEROP_IDS)}) or one of the names {sorted(_NUKE_OCIO_NAMES.values())}"
        )
    return found


def nuke_config_family(config: str) -> str:
    """ "nuke-default", "aces1" or "ocio" (OCIO's built-in names: cg / studio / custom configs)."""
    name = (config or "").strip().lower()
    if name in ("", "nuke-default", "nuke"):
        return "nuke-default"
    if name.startswith("aces_1") or name.startswith("aces_0"):
        return "aces1"
    return "ocio"


def _nuke_table(family: str) -> Dict[str, str]:
    return {"nuke-default": _NUKE_DEFAULT_NAMES, "aces1": _NUKE_ACES1_NAMES}.get(family, _NUKE_OCIO_NAMES)


def nuke_working_interop(config: str, working_space: str) -> str:
    """The interop id of Nuke's working space (root knobs `OCIO_config` and `workingSpaceLUT`).

    A role (scene_linear, ...) is the config's working space: ACEScg in ACES configs, linear Rec.709 in
    nuke-default."""
    family = nuke_config_family(config)
    space = (working_space or "").strip()
    if not space or space in NUKE_WORKING_ROLES:
        return "lin_rec709_scene" if family == "nuke-default" else ACES_WORKING
    for interop, name in _nuke_table(family).items():
        if name == space:
            return interop
    try:
        return interop_id(space)
    except HostError:
        raise HostError(
            f"Nuke's working space {space!r} (OCIO config {config!r}) is not one ttt-studio knows; choose the "
            "delivered colour space in the TTT panel"
        ) from None


def nuke_colorspace_name(interop: str, config: str, working_space: str) -> str:
    """The Read `colorspace` value for frames delivered in `interop` under the root's OCIO config.

    Frames delivered in the working space get the working space's own name (always valid in that
    config) unless it is a role (the explicit name says more: "ACEScg", not "scene_linear"); others the
    name the config family gives that space."""
    named = bool(working_space) and working_space not in NUKE_WORKING_ROLES
    if named and nuke_working_interop(config, working_space) == interop:
        return working_space
    family = nuke_config_family(config)
    name = _nuke_table(family).get(interop)
    if name is None:
        raise HostError(
            f"Nuke's OCIO config {config!r} has no colour space for {interop!r}; pick an OCIO config with it "
            f"(e.g. the ACES or CG config) or deliver in one of {sorted(_nuke_table(family))}"
        )
    return name


def blender_colorspace_name(interop: str) -> str:
    """Blender's name for `interop` (strip / image `colorspace_settings.name`)."""
    name = BLENDER_NAMES.get(interop)
    if name is None:
        raise HostError(
            f"Blender's colour config has no space for {interop!r}; expected one of {sorted(BLENDER_NAMES)}"
        )
    return name


def resolve_working_interop(settings: Dict[str, str]) -> str:
    """The interop id frames should be delivered in for a Resolve project, from its settings
    (`colorScienceMode`, `colorSpaceTimeline`, `colorSpaceTimelineGamma`).

    ACES (acescc / acescct): ACEScg. Colour managed (davinciYRGBColorManaged*): the timeline space when
    it is a linear space ttt-studio delivers, else sRGB-encoded Rec.709 (Resolve's input transform
    brings it into the timeline space). DaVinci YRGB without colour management shows file values as
    Rec.709 code values: sRGB-encoded Rec.709."""
    mode = str(settings.get("colorScienceMode") or "davinciYRGB")
    if mode.startswith("aces"):
        return ACES_WORKING
    if mode.startswith("davinciYRGBColorManaged"):
        space = str(settings.get("colorSpaceTimeline") or "")
        gamma = str(settings.get("colorSpaceTimelineGamma") or "")
        combined = f"{space} {gamma}".strip() if gamma and gamma not in space else space
        for candidate in (combined, space):
            found = _ALIASES.get(candidate.lower())
            if found is not None:
                return found
        return "srgb_rec709_scene"
    if mode == "davinciYRGB":
        return "srgb_rec709_scene"
    raise HostError(
        f"Resolve colorScienceMode {mode!r} is not one ttt-studio knows; choose the colour space in the window"
    )


def resolve_clip_colour(interop: str, settings: Dict[str, str]) -> Optional[Tuple[str, str]]:
    """(clip property, value) that tells Resolve what the imported frames are, or None where its API
    has none: ACES projects set "IDT" (ACEScg / ACES2065-1 only), colour-managed projects set
    "Input Color Space"; DaVinci YRGB without colour management has no per-clip colour space."""
    mode = str(settings.get("colorScienceMode") or "davinciYRGB")
    if mode.startswith("aces"):
        if interop not in ("lin_ap1_scene", "lin_ap0_scene"):
            return None
        return "IDT", RESOLVE_INPUT_NAMES[interop]
    if mode.startswith("davinciYRGBColorManaged"):
        name = RESOLVE_INPUT_NAMES.get(interop)
        return None if name is None else ("Input Color Space", name)
    return None
