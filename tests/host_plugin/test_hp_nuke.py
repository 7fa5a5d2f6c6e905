"""The Nuke plugin against a fake `nuke` (tests/fakes/nuke.py, Foundry's API call for call) and a real server.

Nuke calls used by the plugin: nuke.menu(name).addMenu(name).addCommand(name, callable),
nuke.selectedNode() (ValueError when none), Node.Class() / name() / node["knob"].value() /
knob.setValue() / xpos() / ypos() / setXYpos() / setInput(), nuke.nodes.Read(file=..., first=...,
last=..., origfirst=..., origlast=...) with knobs frame_mode = "start at" and frame, nuke.nodes.Write(
file, file_type="exr", datatype="16 bit half", compression="Zip (1 scanline)", channels="rgba"),
nuke.execute(write, first, last, 1), nuke.delete(node), nuke.root()["fps"], nuke.message(text),
nuke.executeInMainThread(fn, args), nuke.ProgressTask(name).setProgress(int) / setMessage(str) /
isCancelled(), nuke.String_Knob / Password_Knob / File_Knob / Int_Knob / Enumeration_Knob,
nukescripts.PythonPanel(title, id).addKnob() / showModalDialog(), nuke.addFormat(spec), nuke.root().format()
/ node.format() (Format.width() / height() / pixelAspect()), root knobs format / colorManagement /
OCIO_config / workingSpaceLUT, the Read's colorspace knob.

The fake raises when a node or knob is touched off the main thread and records every call's thread;
a grpc interceptor records the thread of every RPC.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hp_helpers import FAST_DEFAULT, TOKEN, ThreadRecorder, job_states, use_fakes

use_fakes()
import nuke  # noqa: E402 - the fake, from tests/fakes

from host_plugin.core.errors import HostError, RequestError  # noqa: E402
from host_plugin.core.exr_io import read_exr, write_rgba_exr, write_sequence  # noqa: E402
from host_plugin.core.placement import DeliveredMedia  # noqa: E402
from host_plugin.core.shot_job import GenerationSettings, ServerSettings  # noqa: E402
from host_plugin.hosts import nuke as ttt_nuke  # noqa: E402

NODE_APIS = ("Node.", "Knob.", "nodes.", "selectedNode", "root", "delete", "execute:", "message", "Menu.")


@pytest.fixture(autouse=True)
def _fresh_nuke() -> None:
    nuke.reset()


def _plate(tmp_path: Path, first: int = 1001, count: int = 12) -> Any:
    frames = (np.full((16, 16, 3), 0.1 * (i % 5), np.float32) for i in range(count))
    write_sequence(tmp_path / "plate", "plate.", frames, start=first)
    read = nuke.nodes.Read(
        file=str(tmp_path / "plate" / "plate.####.exr"), first=first, last=first + count - 1
    )
    read.setSelected(True)
    return read


def _options(address: str, tmp_path: Path, mode: str = "restyle", steps: int = 1, duration: int = 0) -> Any:
    generation = GenerationSettings(output_dir=str(tmp_path / "out"), **{**FAST_DEFAULT, "steps": steps})
    return ttt_nuke.GenerateOptions(
        server=ServerSettings(address, token=TOKEN, retries=2),
        generation=generation,
        mode=mode,
        prompts=["A red ball rolls across a wooden floor.", ""],
        duration=duration,
    )


def _factory(options: Any, recorder: ThreadRecorder) -> Any:
    return lambda: options.server.client(interceptors=[recorder])


def test_menu_entries_and_no_selection_message() -> None:
    ttt_nuke.add_menus()
    for bar in ("Nuke", "Nodes"):
        item = nuke.menu(bar).findItem("TTT").findItem("Generate...")
        assert item is not None and item.command is ttt_nuke.show_panel
    assert nuke.menu("Nuke").findItem("TTT").findItem("Generate...").invoke() is None
    assert nuke.MESSAGES and "select a Read node" in nuke.MESSAGES[-1]


def test_restyle_uploads_the_plate_and_reads_back_the_result_off_the_main_thread(
    hp_default_server: Any, tmp_path: Path
) -> None:
    read = _plate(tmp_path)
    # a restyle runs its strength's share of the steps (0.6): 5 steps run 3, seconds of work on the default model
    options = _options(hp_default_server.address, tmp_path, steps=5)
    recorder = ThreadRecorder()
    started = time.monotonic()
    job = ttt_nuke.start_generate(read, options, client_factory=_factory(options, recorder))
    assert time.monotonic() - started < 0.5, "start_generate must only read the node and start a thread"
    longest = nuke.run_main_loop(until=lambda: job.finished, timeout=120)
    elapsed = time.monotonic() - started
    assert job.state == "done", job.message
    assert elapsed > 1.0  # the server was slow...
    assert longest < 0.25, f"...yet the main loop was never blocked for long (longest gap {longest:.3f} s)"

    # every RPC started off the main thread; every node / knob call happened on it
    assert {"GetServerInfo", "UploadPlate", "SubmitShot", "WatchJob", "FetchFrames"} <= set(
        recorder.methods()
    )
    assert recorder.methods().count("UploadPlate") == 12
    assert not [c for c in recorder.calls if c[2]], recorder.calls
    node_calls = [c for c in nuke.CALLS if (c[0] + ":").startswith(NODE_APIS)]
    assert node_calls and all(on_main for _, _, on_main in node_calls)

    created = [n for n in nuke.allNodes("Read") if n is not read]
    assert len(created) == 1
    new = created[0]
    assert new["file"].value().endswith(".####.exr")
    assert (new["first"].value(), new["last"].value()) == (1001, 1012)
    assert (new["frame_mode"].value(), new["frame"].value()) == ("start at", "1001")
    for frame in range(1001, 1013):  # delivered at the root's rate, in the plate's format, tagged
        pixels, header = read_exr(ttt_nuke.frame_file(new["file"].value(), frame), check_finite=True)
        assert pixels.shape == (16, 16, 4)
        assert (header["framesPerSecond"], header["colorInteropID"]) == (24, "lin_ap1_scene")
    assert new["colorspace"].value() == "ACEScg"  # the root's working space (cg config scene_linear)
    task = nuke.ProgressTask.TASKS[0]
    assert task.progress == 100 and any("step" in m for m in task.messages)
    (server_job,) = [j for j in job_states(hp_default_server.address) if j.job_id in job.job_ids]
    # one id per delivered frame: the plate's 12 frames, at the edit's rate (the server conforms them in)
    assert server_job.state == "completed" and len(server_job.plate_upload_ids) == 12
    assert len(set(server_job.plate_upload_ids)) == 12


def test_cancel_in_the_progress_window_cancels_the_job_on_the_server(
    hp_default_server: Any, tmp_path: Path
) -> None:
    read = _plate(tmp_path, count=4)
    options = _options(hp_default_server.address, tmp_path, mode="new", steps=200)  # >= 10 s unless cancelled
    job = ttt_nuke.start_generate(read, options)

    def click_cancel_once_sampling() -> None:
        tasks = nuke.ProgressTask.TASKS
        if tasks and any("step" in m for m in tasks[0].messages):
            nuke.ProgressTask.cancel_all()

    started = time.monotonic()
    nuke.run_main_loop(until=lambda: job.finished, timeout=60, on_tick=click_cancel_once_sampling)
    assert time.monotonic() - started < 8.0, "cancel must stop the job well before its 200 steps"
    assert job.state == "cancelled", job.message
    (server_job,) = [j for j in job_states(hp_default_server.address) if j.job_id in job.job_ids]
    assert server_job.state == "cancelled"
    assert [n for n in nuke.allNodes("Read") if n is not read] == []  # nothing placed


def test_continue_starts_from_the_plate_and_places_only_the_new_frames(
    hp_default_server: Any, tmp_path: Path
) -> None:
    read = _plate(tmp_path, first=1, count=3)
    options = _options(hp_default_server.address, tmp_path, mode="continue", duration=10)
    job = ttt_nuke.start_generate(read, options)
    nuke.run_main_loop(until=lambda: job.finished, timeout=120)
    assert job.state == "done", job.message
    (new,) = [n for n in nuke.allNodes("Read") if n is not read]
    # frame 1001 of the result is the plate's last frame, kept by the server: the shot starts at 1002
    assert (new["first"].value(), new["last"].value(), new["frame"].value()) == (1002, 1011, "4")
    (server_job,) = [j for j in job_states(hp_default_server.address) if j.job_id in job.job_ids]
    assert len(server_job.plate_upload_ids) == 1 and server_job.state == "completed"


def test_a_new_shot_arrives_in_the_root_format_and_working_space(
    hp_default_server: Any, tmp_path: Path
) -> None:
    read = _plate(tmp_path, count=12)
    root = nuke.root()
    root["format"].setValue(nuke.addFormat("64 36 1.0 ttt_16x9_small").name())
    job = ttt_nuke.start_generate(read, _options(hp_default_server.address, tmp_path, mode="new"))
    nuke.run_main_loop(until=lambda: job.finished, timeout=120)
    assert job.state == "done", job.message
    (new,) = [n for n in nuke.allNodes("Read") if n is not read]
    fmt, root_fmt = new.format(), root.format()
    assert (
        (fmt.width(), fmt.height(), fmt.pixelAspect())
        == (root_fmt.width(), root_fmt.height(), 1.0)
        == (64, 36, 1.0)
    )
    assert new["colorspace"].value() == "ACEScg"  # the cg config's scene_linear, named
    _, header = read_exr(ttt_nuke.frame_file(new["file"].value(), 1012))
    assert (header["framesPerSecond"], header["colorInteropID"]) == (24, "lin_ap1_scene")
    assert (new["first"].value(), new["last"].value(), new["frame"].value()) == (1001, 1012, "1001")


def test_continue_and_new_ranges_and_bad_input(tmp_path: Path) -> None:
    read = _plate(tmp_path, first=1, count=3)
    options = _options("127.0.0.1:1", tmp_path, mode="continue", duration=20)
    request = ttt_nuke.build_request(read, options)
    assert (request.record_start, request.duration, request.prompt) == (
        4,
        20,
        "A red ball rolls across a wooden floor.",
    )
    new = ttt_nuke.build_request(read, _options("127.0.0.1:1", tmp_path, mode="new"))
    assert (new.record_start, new.duration) == (1, 3)
    with pytest.raises(ValueError, match="mode must be one of"):
        _options("127.0.0.1:1", tmp_path, mode="sideways")
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        ttt_nuke.GenerateOptions(options.server, options.generation, strength=0.0)
    empty = ttt_nuke.GenerateOptions(options.server, options.generation, prompts=[" "])
    with pytest.raises(RequestError, match="at least one segment"):
        ttt_nuke.build_request(read, empty)
    blur = nuke.nodes.Blur()
    read.setSelected(False)
    blur.setSelected(True)
    with pytest.raises(HostError, match="is a Blur, not a Read"):
        ttt_nuke.selected_read()


def test_a_non_exr_plate_is_rendered_to_exr_through_a_write_node(tmp_path: Path) -> None:
    read = nuke.nodes.Read(file=str(tmp_path / "plate.####.dpx"), first=10, last=12)
    host = ttt_nuke.NukeHost(read)
    paths = host.plate_frames(None, 10, 12)
    assert [Path(p).name for p in paths] == ["plate.0010.exr", "plate.0011.exr", "plate.0012.exr"]
    for path in paths:
        pixels, header = read_exr(path)
        assert header["compression"] == "ZIP_COMPRESSION" and pixels.shape == (16, 16, 4)
    assert nuke.allNodes("Write") == []  # the temporary Write node is deleted


def _delivered(folder: Path, fmt: Any, colorspace: str, rate: int = 24, count: int = 2) -> list:
    """Frames as the server delivers them: the format's size, framesPerSecond and colorInteropID set."""
    from fractions import Fraction

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.full((fmt.height(), fmt.width(), 4), 0.18, np.float32)
    return [
        str(
            write_rgba_exr(
                folder / f"sh010.{1001 + i:04d}.exr", pixels, colorspace, frames_per_second=Fraction(rate)
            )
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("management", "config", "working", "interop", "read_colorspace"),
    [
        ("OCIO", "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1", "scene_linear", "lin_ap1_scene", "ACEScg"),
        ("OCIO", "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1", "ACEScg", "lin_ap1_scene", "ACEScg"),
        ("Nuke", "nuke-default", "linear", "lin_rec709_scene", "linear"),
    ],
)
def test_the_new_read_is_in_the_delivered_colour_space_and_the_root_format(
    tmp_path: Path, management: str, config: str, working: str, interop: str, read_colorspace: str
) -> None:
    plate = _plate(tmp_path)
    root = nuke.root()
    root["format"].setValue(nuke.addFormat("256 144 1.0 ttt_small").name())
    for knob, value in (
        ("colorManagement", management),
        ("OCIO_config", config),
        ("workingSpaceLUT", working),
    ):
        root[knob].setValue(value)
    host = ttt_nuke.NukeHost(plate)
    target = host.target_format()
    assert (target.width, target.height, target.pixel_aspect) == (256, 144, 1.0)
    assert host.working_colorspace() == interop

    paths = _delivered(tmp_path / "gen", root.format(), interop)
    media = DeliveredMedia.from_exr_header(read_exr(paths[0])[1])
    host.place_sequence(paths, 1001, "TTT generated", media)
    (new,) = [n for n in nuke.allNodes("Read") if n is not plate]
    assert new["colorspace"].value() == read_colorspace
    fmt = new.format()  # Nuke takes a Read's format from its file
    assert (fmt.width(), fmt.height(), fmt.pixelAspect()) == (256, 144, 1.0)
    assert (new["frame_mode"].value(), new["frame"].value()) == ("start at", "1001")


def test_a_read_at_another_rate_is_refused(tmp_path: Path) -> None:
    plate = _plate(tmp_path)
    nuke.root()["fps"].setValue(25.0)
    paths = _delivered(tmp_path / "gen", nuke.root().format(), "lin_ap1_scene", count=1)
    with pytest.raises(HostError, match="delivered at 24 fps but the script runs at 25 fps"):
        ttt_nuke.NukeHost(plate).place_sequence(
            paths, 1001, "TTT", DeliveredMedia(24, 1920, 1080, 1.0, "lin_ap1_scene")
        )


def test_the_panel_offers_delivery_defaults_and_shows_the_working_space(tmp_path: Path) -> None:
    from host_plugin.hosts.nuke.panel import GeneratePanel

    panel = GeneratePanel(_plate(tmp_path))
    knobs = panel.knobs()
    assert knobs["retime"].values() == ["flow", "blend", "hold"]
    assert knobs["fit"].values() == ["fit", "fill", "distort"]
    assert knobs["colorspace"].value() == "lin_ap1_scene" and "scene_linear" in knobs["colorspace"].label()
    knobs["retime"].setValue("hold")
    knobs["segment0"].setValue("A red ball rolls.")
    delivery = panel.options().generation.delivery
    assert (delivery.retime, delivery.fit, delivery.colorspace, delivery.format) == (
        "hold",
        "fit",
        "lin_ap1_scene",
        None,
    )
