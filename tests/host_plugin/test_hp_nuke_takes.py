"""Takes and elements in Nuke, against the fake `nuke` (tests/fakes/nuke.py, Foundry's API call for call)
and real EXR files.

Nuke calls added for takes and elements: nuke.nodes.Switch() with knob `which`, Node.setInput(i, node) /
input(i) / inputs(), nuke.toNode(name), nuke.nodes.Group() with setName(name) and begin() / end(),
nuke.nodes.Input(name=...) / nuke.nodes.Output() inside it, nuke.nodes.Merge2(operation="over") (input 0
= B, input 1 = A), the Read knob `raw`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hp_helpers import delivered_element, delivered_takes, use_fakes

use_fakes()
import nuke  # noqa: E402 - the fake, from tests/fakes

from host_plugin.core.errors import HostError  # noqa: E402
from host_plugin.core.exr_io import read_exr  # noqa: E402
from host_plugin.core.placement import DeliveredMedia  # noqa: E402
from host_plugin.hosts import nuke as ttt_nuke  # noqa: E402

MEDIA = DeliveredMedia(rate=24, width=8, height=8, colorspace="lin_ap1_scene")


@pytest.fixture(autouse=True)
def _fresh_nuke() -> None:
    nuke.reset()


def _host(tmp_path: Path) -> Any:
    plate, _, _ = delivered_element(tmp_path / "plate_src")
    read = nuke.nodes.Read(file=plate[0].replace("1001", "####"), first=1001, last=1004)
    return ttt_nuke.NukeHost(read)


def test_three_takes_become_reads_under_a_switch_showing_the_chosen_one(tmp_path: Path) -> None:
    takes = delivered_takes(tmp_path / "shot")
    host = _host(tmp_path)
    name = host.place_takes(takes, 0, 1001, "TTT generated", MEDIA)
    switch = nuke.toNode(name)
    assert switch.Class() == "Switch" and switch["which"].value() == 0
    assert switch.inputs() == 3
    for index in range(3):  # input i is take i's Read: its files are take_0(i+1)'s frames
        read = switch.input(index)
        assert read.Class() == "Read"
        assert read["file"].value() == takes[index][0].replace("1001", "####")
        assert (read["first"].value(), read["last"].value(), read["frame"].value()) == (1001, 1004, "1001")
        assert read["colorspace"].value() == "ACEScg"
        pixels, _ = read_exr(ttt_nuke.frame_file(read["file"].value(), 1002))
        assert pixels[0, 0, 0] == pytest.approx(0.1 * (index + 1), abs=1e-3)  # a different take each

    host.switch_take(name, 1)  # the director approved take 2
    assert nuke.toNode(name)["which"].value() == 1
    with pytest.raises(HostError, match=r"has takes 0..2; cannot show take 3"):
        host.switch_take(name, 3)
    nuke.delete(switch)
    with pytest.raises(HostError, match="is gone from the script"):
        host.switch_take(name, 0)


def test_the_approved_take_is_shown_when_placed(tmp_path: Path) -> None:
    takes = delivered_takes(tmp_path / "shot")
    host = _host(tmp_path)
    assert nuke.toNode(host.place_takes(takes, 2, 1001, "TTT generated", MEDIA))["which"].value() == 2
    with pytest.raises(HostError, match=r"take 3 cannot be shown: the shot has takes 0..2"):
        host.place_takes(takes, 3, 1001, "TTT generated", MEDIA)


def test_an_element_is_merged_over_its_plate_through_the_ttt_node(tmp_path: Path) -> None:
    plate_files, mattes, element = delivered_element(tmp_path / "src")
    host = _host(tmp_path)
    merge = nuke.toNode(host.place_element(element, 1001, 0, MEDIA, mattes))
    assert merge.Class() == "Merge2" and merge["operation"].value() == "over"
    assert merge.input(0) is host.read  # B: the plate
    ttt = merge.input(1)  # A: the plugin's node
    assert ttt.Class() == "Group" and ttt.name() == "TTT"
    assert ttt.input(0) is host.read
    matte = ttt.input(1)
    assert matte.Class() == "Read" and matte["file"].value() == mattes[0].replace("1001", "####")
    assert matte["raw"].value() is True and matte["frame"].value() == "1001"
    inside = {n.Class(): n for n in ttt.nodes()}
    assert [n["name"].value() for n in ttt.nodes() if n.Class() == "Input"] == ["plate", "matte"]
    assert inside["Output"].input(0) is inside["Read"]
    assert inside["Read"]["file"].value() == element[0].replace("1001", "####")
    pixels, _ = read_exr(element[0])  # what the Merge gets as A: red inside the matte, alpha the matte
    assert pixels[0, 0].tolist() == [1.0, 0.0, 0.0, 1.0] and pixels[0, -1].tolist() == [0.0, 0.0, 0.0, 0.0]

    # without mattes the plate's alpha is the matte: the TTT node's matte input is the plate itself
    again = nuke.toNode(host.place_element(element, 1001, 0, MEDIA, []))
    assert again.input(1).name() == "TTT1" and again.input(1).input(1) is host.read


def test_element_and_matte_options_are_checked(tmp_path: Path) -> None:
    from host_plugin.core.shot_job import GenerationSettings, ServerSettings

    server = ServerSettings("127.0.0.1:1")
    generation = GenerationSettings(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="a matte belongs to mode 'element', not 'restyle'"):
        ttt_nuke.GenerateOptions(server, generation, mode="restyle", matte="m.####.exr")
    host = _host(tmp_path)
    host.read.setSelected(True)
    options = ttt_nuke.GenerateOptions(
        server, generation, mode="element", prompts=["a bird"], matte=str(tmp_path / "none.####.exr")
    )
    with pytest.raises(HostError, match="matte .*none.####.exr.: 4 frames are missing"):
        ttt_nuke.start_generate(host.read, options)
