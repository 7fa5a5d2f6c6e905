"""Colour space names per host, checked against the hosts' own configs: OpenColorIO's built-in configs (the
CG / studio configs Nuke 14+ ships) and the real Blender module's colour spaces."""

from __future__ import annotations

import pytest

from host_plugin.core.errors import HostError
from host_plugin.hosts import colour


def test_nuke_names_are_the_ocio_configs_own_and_carry_the_interop_id() -> None:
    ocio = pytest.importorskip("PyOpenColorIO")
    for builtin in ("ocio://cg-config-latest", "ocio://studio-config-latest"):
        config = ocio.Config.CreateFromFile(builtin)
        for interop in colour.INTEROP_IDS:
            name = colour.nuke_colorspace_name(interop, "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1", "")
            space = config.getColorSpace(name)
            assert space is not None, f"{name!r} is not in {builtin}"
            assert space.getInteropID() == interop


def test_blender_names_are_in_the_real_blenders_colour_spaces() -> None:
    bpy = pytest.importorskip("bpy")
    prop = bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"]
    names = {item.identifier for item in prop.enum_items}
    for interop in colour.INTEROP_IDS:
        assert colour.blender_colorspace_name(interop) in names
    # Blender 5's working space reports its own interop id, one of those ttt-studio delivers
    assert bpy.data.colorspace.working_space_interop_id in colour.INTEROP_IDS


@pytest.mark.parametrize(
    ("config", "working", "interop", "read_colorspace"),
    [
        ("fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1", "scene_linear", "lin_ap1_scene", "ACEScg"),
        ("fn-nuke_studio-config-v1.0.0_aces-v1.3_ocio-v2.1", "ACEScg", "lin_ap1_scene", "ACEScg"),
        ("aces_1.2", "ACES - ACEScg", "lin_ap1_scene", "ACES - ACEScg"),
        ("aces_1.2", "scene_linear", "lin_ap1_scene", "ACES - ACEScg"),
        ("nuke-default", "linear", "lin_rec709_scene", "linear"),
        (
            "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1",
            "Linear Rec.709 (sRGB)",
            "lin_rec709_scene",
            "Linear Rec.709 (sRGB)",
        ),
    ],
)
def test_nukes_working_space_and_the_reads_colorspace(
    config: str, working: str, interop: str, read_colorspace: str
) -> None:
    assert colour.nuke_working_interop(config, working) == interop
    assert colour.nuke_colorspace_name(interop, config, working) == read_colorspace


def test_a_space_the_config_lacks_is_refused_with_what_to_do() -> None:
    with pytest.raises(HostError, match="OCIO config 'nuke-default' has no colour space for 'lin_ap1_scene'"):
        colour.nuke_colorspace_name("lin_ap1_scene", "nuke-default", "linear")
    with pytest.raises(HostError, match="working space 'Cineon' .* is not one ttt-studio knows"):
        colour.nuke_working_interop("nuke-default", "Cineon")
    with pytest.raises(HostError, match="colour space 'XYZ' is not one ttt-studio delivers"):
        colour.interop_id("XYZ")
    assert colour.interop_id("ACEScg") == colour.interop_id("ACES - ACEScg") == "lin_ap1_scene"


def test_resolve_projects() -> None:
    aces = {"colorScienceMode": "acescct"}
    managed = {
        "colorScienceMode": "davinciYRGBColorManagedv2",
        "colorSpaceTimeline": "Rec.709",
        "colorSpaceTimelineGamma": "Linear",
    }
    plain = {"colorScienceMode": "davinciYRGB"}
    assert colour.resolve_working_interop(aces) == colour.ACES_WORKING == "lin_ap1_scene"
    assert colour.resolve_working_interop(managed) == "lin_rec709_scene"
    assert colour.resolve_working_interop(plain) == "srgb_rec709_scene"
    assert colour.resolve_clip_colour("lin_ap1_scene", aces) == ("IDT", "ACEScg")
    assert (
        colour.resolve_clip_colour("lin_rec709_scene", aces) is None
    )  # ACES takes only ACES input transforms here
    assert colour.resolve_clip_colour("lin_rec709_scene", managed) == ("Input Color Space", "Rec.709 Linear")
    assert colour.resolve_clip_colour("srgb_rec709_scene", plain) is None  # no per-clip colour without RCM
