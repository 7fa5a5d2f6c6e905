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
    ttt_nuke.JOBS.clear()


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

    assert ttt_nuke.check_approved_takes() == []  # no job of this session placed takes
    assert nuke.MESSAGES[-1] == "TTT: no shot with takes was placed in this session"
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
    merge = nuke.toNode(host.place_element([element], 0, 1001, 0, MEDIA, mattes))
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
    again = nuke.toNode(host.place_element([element], 0, 1001, 0, MEDIA, []))
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


@pytest.mark.slow
def test_a_three_take_job_lands_under_a_switch_and_follows_the_directors_approval(
    hp_default_server: Any, tmp_path: Path
) -> None:
    """The real server makes 3 takes (seeds 7, 8, 9); each is fetched into its own folder and read under
    the Switch; a second client approves take 2, which GetJob shows to anyone of the user and nobody
    else may change; checking approvals switches the Switch."""
    from fractions import Fraction

    import numpy as np
    from hp_helpers import FAST_DEFAULT, OTHER_TOKEN, TOKEN

    from host_plugin.core.client import TTTClient
    from host_plugin.core.errors import ClientError
    from host_plugin.core.shot_job import (
        DeliverySettings,
        Format,
        GenerationSettings,
        ServerSettings,
    )

    plate, _, _ = delivered_element(tmp_path / "src", frames=12, size=(16, 16))
    read = nuke.nodes.Read(file=plate[0].replace("1001", "####"), first=1001, last=1012)
    server = ServerSettings(hp_default_server.address, token=TOKEN, retries=2)
    options = ttt_nuke.GenerateOptions(
        server=server,
        generation=GenerationSettings(
            str(tmp_path / "out"), takes=3, seed=7, delivery=DeliverySettings(Format(16, 16)), **FAST_DEFAULT
        ),
        mode="new",
        prompts=["A red ball rolls across a wooden floor."],
    )
    job = ttt_nuke.start_generate(read, options)
    nuke.run_main_loop(until=lambda: job.finished, timeout=180)
    assert job.state == "done", job.message
    (placed,) = job.placed
    result = placed.result
    assert [(t.index, t.seed, t.approved) for t in result.takes] == [(i, 7 + i, False) for i in range(3)]
    switch = nuke.toNode(placed.handle)
    assert switch["which"].value() == 0 and switch.inputs() == 3
    pictures = []
    for index in range(3):
        pattern = switch.input(index)["file"].value()
        assert Path(pattern).parent.name == f"take_{index + 1:02d}"
        frame, header = read_exr(ttt_nuke.frame_file(pattern, 1006))
        assert header["framesPerSecond"] == Fraction(24) and frame.shape[:2] == (16, 16)
        pictures.append(frame)
    for a, b in ((0, 1), (0, 2), (1, 2)):  # three seeds, three pictures
        assert not np.allclose(pictures[a], pictures[b], atol=1e-3), (a, b)

    with TTTClient(hp_default_server.address, token=TOKEN) as director:
        assert director.approve_take(result.job_id, 1).approved_take == 1
    with TTTClient(hp_default_server.address, token=TOKEN) as second:
        seen = second.get_job(result.job_id)
        assert [t.approved for t in seen.takes] == [False, True, False] and seen.takes[
            1
        ].approved_by == "alice"
        assert second.result(result.job_id).take == 1  # no take asked: the approved one
    with TTTClient(hp_default_server.address, token=OTHER_TOKEN) as bob:
        with pytest.raises(ClientError, match="NOT_FOUND"):
            bob.approve_take(result.job_id, 0)

    ttt_nuke.add_menus()
    (check,) = nuke.menu("Nuke").findItem("TTT").findItem("Check Approved Takes").invoke()
    nuke.run_main_loop(until=lambda: check.finished, timeout=60)
    assert check.switched == [(placed.request.id, 1)] and check.error is None
    assert switch["which"].value() == 1 and job.placed[0].result.takes[1].approved_by == "alice"


@pytest.mark.slow
def test_an_element_job_comes_back_with_the_mattes_alpha_and_is_merged_over_the_plate(
    hp_default_server: Any, tmp_path: Path
) -> None:
    """Element mode on the real server: the plate and a single-channel matte (left half) are uploaded;
    the delivered RGBA frames carry the matte as alpha (premultiplied) and land as Read(plate) +
    Read(matte) -> TTT -> Merge2 over."""
    import numpy as np
    from hp_helpers import FAST_DEFAULT, TOKEN

    from host_plugin.core.shot_job import GenerationSettings, ServerSettings

    server = ServerSettings(hp_default_server.address, token=TOKEN, retries=2)
    plate, mattes, _ = delivered_element(tmp_path / "src", frames=12, size=(16, 16))
    read = nuke.nodes.Read(file=plate[0].replace("1001", "####"), first=1001, last=1012)
    options = ttt_nuke.GenerateOptions(
        server=server,
        generation=GenerationSettings(str(tmp_path / "out"), seed=5, **FAST_DEFAULT),
        mode="element",
        prompts=["A red ball rolls across a wooden floor."],
        strength=1.0,
        matte=mattes[0].replace("1001", "####"),
    )
    job = ttt_nuke.start_generate(read, options)
    nuke.run_main_loop(until=lambda: job.finished, timeout=180)
    assert job.state == "done", job.message
    (placed,) = job.placed
    merge = nuke.toNode(placed.handle)
    assert merge.Class() == "Merge2" and merge["operation"].value() == "over" and merge.input(0) is read
    ttt = merge.input(1)
    assert ttt.name() == "TTT" and ttt.input(0) is read
    assert ttt.input(1)["file"].value() == mattes[0].replace("1001", "####")
    element = {n.Class(): n for n in ttt.nodes()}["Read"]
    pixels, header = read_exr(ttt_nuke.frame_file(element["file"].value(), 1006))
    assert "A" in header["channel_names"] and pixels.shape == (16, 16, 4)
    alpha = pixels[..., 3]
    # the matte's left half with a soft edge: opaque at the left, clear at the right, falling in between
    assert alpha[:, 0].min() > 0.99 and alpha[:, -1].max() < 0.01
    assert alpha[:, :8].mean() > 0.8 and alpha[:, 8:].mean() < 0.2
    assert np.all(np.diff(alpha, axis=1) <= 1e-3)
    outside = alpha < 1e-3
    assert outside.any() and np.abs(pixels[..., :3][outside]).max() < 1e-2  # premultiplied: no colour there


def test_an_elements_takes_are_reads_under_a_switch_inside_the_ttt_node(tmp_path: Path) -> None:
    _, mattes, element = delivered_element(tmp_path / "src")
    takes = delivered_takes(tmp_path / "shot", takes=3)
    host = _host(tmp_path)
    name = host.place_element(takes, 1, 1001, 0, MEDIA, mattes)
    merge = nuke.toNode(name)
    ttt = merge.input(1)
    assert merge.input(0) is host.read and ttt.name() == "TTT"
    inside = {n.Class(): n for n in ttt.nodes()}
    switch = inside["Switch"]
    assert inside["Output"].input(0) is switch and switch["which"].value() == 1 and switch.inputs() == 3
    assert [switch.input(i)["file"].value() for i in range(3)] == [
        t[0].replace("1001", "####") for t in takes
    ]
    host.switch_take(name, 2)  # the Merge2 is the element's handle
    assert switch["which"].value() == 2
    with pytest.raises(HostError, match=r"has takes 0..2; cannot show take 3"):
        host.switch_take(name, 3)
    with pytest.raises(HostError, match=r"take 3 cannot be shown: the shot has takes 0..2"):
        host.place_element(takes, 3, 1001, 0, MEDIA, mattes)
