"""TTT Studio for Nuke: "TTT > Generate..." on the selected Read node.

The selected Read's frame range is the plate: restyle it (same range), continue it (the frames after
it) or make a new shot for the range. The shot is delivered at the root's fps, in the plate Read's
format (restyle / continue) or the root format (new: nuke.root().format()), in the working colour
space (root knobs OCIO_config and workingSpaceLUT; ACES configs: ACEScg) unless the panel says
otherwise; the new Read's `colorspace` knob names that space in the root's OCIO config. On the main thread: read the node, gather the plate's EXR files
(rendered to EXR through a temporary Write node when the Read is not EXR). In a worker thread: upload,
submit, watch, fetch (ShotJob). Progress and cancel go through nuke.ProgressTask from the forwarding
thread (Foundry's documented pattern); the new Read node is made through nuke.executeInMainThread.

Takes: a Read per take into a Switch node whose `which` knob is the shown take (the approved one, else
take 0; `which` is the 0-based take index); TTT > Check Approved Takes sets it to the take approved since. Elements: the plate's Read and the matte's Read feed the
plugin's TTT node (a Group with inputs "plate" and "matte" and the element's Read inside), merged over
the plate by a Merge2 (operation over; input 1 = A = the element, input 0 = B = the plate).

Drafts (the panel's priority "preview"): the draft's Read is labelled DRAFT and reads <job>/draft/; the
final swaps its `file` knob to the final frames, on the same node.

Only this package imports nuke / nukescripts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, List, Optional, Sequence

import nuke
import opentimelineio as otio

from host_plugin.core.errors import HostError, RequestError
from host_plugin.core.frame_math import snap_rate, time_range
from host_plugin.core.placement import DeliveredMedia
from host_plugin.core.requests import KIND_CLIP, ShotRequest
from host_plugin.core.shot_job import (
    ApprovalCheck,
    Format,
    GenerationSettings,
    Plates,
    ServerSettings,
    ShotJob,
    shot_name_for,
)
from host_plugin.hosts import colour
from host_plugin.hosts.base import Host, check_chosen_take

log = logging.getLogger(__name__)

MODES = ("restyle", "continue", "new", "element")
NODE_SPACING = 120  # DAG units between the nodes the plugin makes
ELEMENT_NODE = "TTT"  # the plugin's node of an element (a Group)
DRAFT_LABEL = "DRAFT\\n"  # opens the label of a Read showing a preview job's draft
JOBS: List[ShotJob] = []  # this session's jobs; Check Approved Takes looks at those that placed takes
_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%0?(\d*)d")


@dataclass(frozen=True)
class GenerateOptions:
    """What the panel asks: mode (restyle | continue | new | element), prompts (one per segment), the
    server; the number of takes is generation.takes.

    restyle re-imagines the Read's frames (the plate's size is the generation size); continue starts
    the video with the plate's last frame and places the frames after it; new ignores the plate;
    element generates inside a matte of the plate (`matte`: a file pattern, plate.####.exr, of
    single-channel EXRs over the Read's range; empty: the plate's alpha) and merges it over the plate."""

    server: ServerSettings
    generation: GenerationSettings
    mode: str = "restyle"
    prompts: Sequence[str] = ()
    duration: int = 0  # continue: frames to add (0: as long as the plate)
    strength: float = 0.6  # restyle / element: share of the denoising redone on the plate, in (0, 1]
    matte: str = ""  # element: the matte's file pattern; "": the plate's alpha

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength!r}")
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0 frames, got {self.duration}")
        if self.matte and self.mode != "element":
            raise ValueError(f"a matte belongs to mode 'element', not {self.mode!r}")


def _placed_reads(handle: Any) -> List[Any]:
    """The Reads of delivered frames that a place_* made: a Read (place_sequence), the Reads under a
    Switch by take (place_takes), the element's Read inside the TTT node under a Merge2 (place_element)."""
    node = nuke.toNode(str(handle))
    if node is None:
        raise HostError(f"node {handle!r} is gone from the script; generate the shot again")
    if node.Class() == "Read":
        return [node]
    if node.Class() == "Switch":
        return [node.input(i) for i in range(node.inputs())]
    if node.Class() == "Merge2":
        switch = _element_switch(node)
        if switch is not None:
            return [switch.input(i) for i in range(switch.inputs())]
        return [n for n in node.input(1).nodes() if n.Class() == "Read"]
    raise HostError(f"node {handle!r} is a {node.Class()}, not what the plugin placed")


def _element_switch(merge: Any) -> Any:
    """The Switch over the takes inside the TTT node that `merge` (an element's Merge2) has as A; None for
    an element of one take. HostError when input A is not the plugin's TTT node."""
    group = merge.input(1)
    if group is None or group.Class() != "Group":
        raise HostError(
            f"{merge.name()}'s input A is not the plugin's {ELEMENT_NODE} node; generate the shot again"
        )
    switches = [n for n in group.nodes() if n.Class() == "Switch"]
    return switches[0] if switches else None


def frame_file(pattern: str, frame: int) -> str:
    """The file of `frame` in a Nuke file pattern (plate.####.exr or plate.%04d.exr)."""
    if _HASHES.search(pattern):
        return _HASHES.sub(lambda m: f"{frame:0{len(m.group(0))}d}", pattern, count=1)
    if _PRINTF.search(pattern):
        return _PRINTF.sub(lambda m: f"{frame:0{int(m.group(1) or 0)}d}", pattern, count=1)
    return pattern


def _frame_numbers(paths: List[str]) -> List[int]:
    """The frame numbers of numbered EXR paths (shot.1001.exr -> 1001)."""
    numbers = []
    for path in paths:
        match = re.search(r"(\d+)\.exr$", path)
        if match is None:
            raise HostError(f"{path!r} is not a numbered EXR frame (name.1001.exr)")
        numbers.append(int(match.group(1)))
    return numbers


def _hash_pattern(path: str) -> str:
    """Nuke's file pattern of a numbered frame: /p/shot.1001.exr -> /p/shot.####.exr."""
    return re.sub(r"\d+\.exr$", lambda m: "#" * (len(m.group(0)) - 4) + ".exr", path)


def selected_read() -> Any:
    """The selected node, which must be a Read (nuke.selectedNode raises ValueError when none is)."""
    try:
        node = nuke.selectedNode()
    except ValueError:
        raise HostError(
            "select a Read node first (TTT > Generate works on the selected Read's plate)"
        ) from None
    if node.Class() != "Read":
        raise HostError(f"the selected node {node.name()!r} is a {node.Class()}, not a Read node")
    return node


def node_format(node: Any) -> Format:
    """The format of a node (nuke.Node.format(): width(), height(), pixelAspect())."""
    fmt = node.format()
    return Format(int(fmt.width()), int(fmt.height()), float(fmt.pixelAspect()))


def colour_settings() -> Any:
    """(OCIO config name, working space name) of the root: knobs OCIO_config and workingSpaceLUT; Nuke's
    own colour management (colorManagement "Nuke") is nuke-default."""
    root = nuke.root()
    managed = root.knob("colorManagement")
    config_knob = root.knob("OCIO_config")
    config = "nuke-default"
    if config_knob is not None and (managed is None or managed.value() == "OCIO"):
        config = str(config_knob.value())
    working = root.knob("workingSpaceLUT")
    return config, str(working.value()) if working is not None else ""


def build_request(read: Any, options: GenerateOptions) -> ShotRequest:
    """The shot for the Read's range: restyle / new keep first..last, continue starts after last."""
    first, last = int(read["first"].value()), int(read["last"].value())
    if last < first:
        raise RequestError(f"Read {read.name()!r} has last frame {last} before first frame {first}")
    prompts = [p.strip() for p in options.prompts if p and p.strip()]
    if not prompts:
        raise RequestError("give a prompt for at least one segment")
    length = last - first + 1
    start, duration = (
        (last + 1, options.duration or length) if options.mode == "continue" else (first, length)
    )
    return ShotRequest(
        id=f"nuke.{read.name()}.{options.mode}.{start}",
        kind=KIND_CLIP,
        track_name=read.name(),
        track_index=0,
        record_start=start,
        duration=duration,
        rate=snap_rate(nuke.root()["fps"].value()),
        storyboard=[{"text": p} for p in prompts] if len(prompts) > 1 else [],
        prompt=prompts[0] if len(prompts) == 1 else None,
        name=f"{read.name()}_{options.mode}",
        metadata={"mode": options.mode, "plate": read["file"].value()},
    )


class NukeHost(Host):
    """The node graph around one Read node."""

    name = "nuke"

    def __init__(self, read: Any) -> None:
        self.read = read
        self.created: List[Any] = []
        self._task: Any = None

    def target_format(self) -> Format:
        """The root format (Project Settings > full size format)."""
        return node_format(nuke.root())

    def working_colorspace(self) -> str:
        config, working = colour_settings()
        return colour.nuke_working_interop(config, working)

    def read_edit(self) -> otio.schema.Timeline:
        """A one-track timeline of the Read's range (plain Nuke has no sequence; Nuke Studio exports OTIO)."""
        rate = snap_rate(nuke.root()["fps"].value())
        first, last = int(self.read["first"].value()), int(self.read["last"].value())
        timeline = otio.schema.Timeline(
            self.read.name(), global_start_time=otio.opentime.RationalTime(first, float(rate))
        )
        track = otio.schema.Track("plate")
        track.append(
            otio.schema.Clip(self.read.name(), source_range=time_range(first, last - first + 1, rate))
        )
        timeline.tracks.append(track)
        return timeline

    def plate_frames(self, request: Any, first: int, last: int) -> List[str]:
        """The Read's files for first..last when they are EXRs; else rendered to EXR by a Write node."""
        pattern = self.read["file"].value()
        if pattern.lower().endswith(".exr"):
            paths = [frame_file(pattern, f) for f in range(first, last + 1)]
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                raise HostError(
                    f"Read {self.read.name()!r}: {len(missing)} plate frames are missing, first {missing[0]}"
                )
            return paths
        folder = tempfile.mkdtemp(prefix="ttt_plate_")
        out = os.path.join(folder, "plate.####.exr")
        write = nuke.nodes.Write(
            file=out, file_type="exr", datatype="16 bit half", compression="Zip (1 scanline)", channels="rgba"
        )
        write.setInput(0, self.read)
        try:
            nuke.execute(write, first, last, 1)
        finally:
            nuke.delete(write)
        return [frame_file(out, f) for f in range(first, last + 1)]

    def place_sequence(
        self, paths: List[str], record_frame: int, track_hint: str, media: DeliveredMedia
    ) -> str:
        """A Read node of the delivered EXR sequence, starting at record_frame, beside the plate's Read, its
        colorspace knob set to the frames' colour space as the root's OCIO config names it; returns its
        name."""
        read = self._read_node(paths, record_frame, track_hint, media)
        read.setXYpos(self.read.xpos() + NODE_SPACING, self.read.ypos())
        self.created.append(read)
        return read.name()

    def mark_draft(self, handle: Any) -> None:
        """Every Read that `handle` placed gets a label opening with DRAFT (its frames: a draft folder)."""
        for read in _placed_reads(handle):
            read["label"].setValue(DRAFT_LABEL + read["label"].value())

    def replace_media(self, handle: Any, takes: List[List[str]], media: DeliveredMedia) -> None:
        """Each placed Read (take i's) reads takes[i]: its `file` knob and label change, nothing else (the
        same node, frame range and colour space)."""
        reads = _placed_reads(handle)
        if len(reads) != len(takes):
            raise HostError(f"{handle!r} placed {len(reads)} Read(s); got frames for {len(takes)} take(s)")
        for read, paths in zip(reads, takes):
            numbers = _frame_numbers(paths)
            if (numbers[0], numbers[-1]) != (read["first"].value(), read["last"].value()):
                raise HostError(
                    f"{read.name()} reads frames {read['first'].value()}-{read['last'].value()}; the final's "
                    f"are {numbers[0]}-{numbers[-1]}"
                )
            old_folder = os.path.basename(os.path.dirname(read["file"].value()))
            new_folder = os.path.basename(os.path.dirname(paths[0]))
            label = read["label"].value()
            label = label[len(DRAFT_LABEL) :] if label.startswith(DRAFT_LABEL) else label
            read["label"].setValue(label.replace(f"\\n{old_folder}\\n", f"\\n{new_folder}\\n", 1))
            read["file"].setValue(_hash_pattern(paths[0]))
            log.info("%s now reads %s (%s fps)", read.name(), read["file"].value(), media.rate)

    def place_takes(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        track_hint: str,
        media: DeliveredMedia,
    ) -> str:
        """A Read per take side by side, all into a Switch whose `which` is `chosen`; returns the Switch's
        name (switch_take finds it with nuke.toNode)."""
        check_chosen_take(takes, chosen)
        switch = nuke.nodes.Switch()
        for index, paths in enumerate(takes):
            read = self._read_node(paths, record_frame, f"{track_hint} take {index + 1}", media)
            read.setXYpos(self.read.xpos() + NODE_SPACING * (index + 1), self.read.ypos())
            switch.setInput(index, read)
            self.created.append(read)
        switch["which"].setValue(chosen)
        switch["label"].setValue(f"{track_hint}\\n{len(takes)} takes")
        switch.setXYpos(self.read.xpos() + NODE_SPACING, self.read.ypos() + NODE_SPACING)
        self.created.append(switch)
        return switch.name()

    def switch_take(self, handle: Any, index: int) -> None:
        """Set the Switch's `which` to take `index` (0-based, its input number); an element's handle (its
        Merge2) leads to the Switch inside its TTT node."""
        switch = nuke.toNode(str(handle))
        if switch is not None and switch.Class() == "Merge2":
            switch = _element_switch(switch)
        if switch is None or switch.Class() != "Switch":
            raise HostError(
                f"the takes' Switch node {handle!r} is gone from the script; generate the shot again"
            )
        if not 0 <= index < switch.inputs():
            raise HostError(f"Switch {handle!r} has takes 0..{switch.inputs() - 1}; cannot show take {index}")
        switch["which"].setValue(index)
        log.info("%s shows take %d", handle, index)

    def place_element(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        plate_track: int,
        media: DeliveredMedia,
        mattes: List[str],
    ) -> str:
        """Read(plate) and Read(matte) -> TTT (a Group holding the element's Read; with takes a Read per
        take into a Switch showing `chosen`) -> Merge2 over the plate; returns the Merge2's name. Without
        mattes the TTT node's matte input is the plate (its alpha)."""
        check_chosen_take(takes, chosen)
        matte = None
        if mattes:
            numbers = _frame_numbers(mattes)
            matte = nuke.nodes.Read(
                file=_hash_pattern(mattes[0]),
                first=numbers[0],
                last=numbers[-1],
                origfirst=numbers[0],
                origlast=numbers[-1],
            )
            matte["raw"].setValue(True)  # a matte holds coverage, not colour: no colour conversion
            matte["frame_mode"].setValue("start at")
            matte["frame"].setValue(str(record_frame))
            matte.setXYpos(self.read.xpos() + NODE_SPACING, self.read.ypos())
            self.created.append(matte)
        group = nuke.nodes.Group()
        group.setName(ELEMENT_NODE)  # uncollide: TTT, then TTT1, TTT2, ...
        group.begin()
        try:
            nuke.nodes.Input(name="plate")
            nuke.nodes.Input(name="matte")
            reads = [
                self._read_node(
                    paths, record_frame, "element" if len(takes) == 1 else f"element take {i + 1}", media
                )
                for i, paths in enumerate(takes)
            ]
            element = reads[0]
            if len(takes) > 1:
                element = nuke.nodes.Switch()
                for index, read in enumerate(reads):
                    element.setInput(index, read)
                element["which"].setValue(chosen)
            output = nuke.nodes.Output()
            output.setInput(0, element)
        finally:
            group.end()
        group.setInput(0, self.read)
        group.setInput(1, matte if matte is not None else self.read)
        group.setXYpos(self.read.xpos(), self.read.ypos() + NODE_SPACING)
        merge = nuke.nodes.Merge2(operation="over")
        merge.setInput(0, self.read)  # B: the plate
        merge.setInput(1, group)  # A: the element, its alpha the matte
        merge.setXYpos(self.read.xpos(), self.read.ypos() + 2 * NODE_SPACING)
        self.created += [group, merge]
        return merge.name()

    def _read_node(self, paths: List[str], record_frame: int, label: str, media: DeliveredMedia) -> Any:
        """A Read of a delivered EXR sequence starting at record_frame, in its colour space."""
        if not paths:
            raise HostError("place_sequence got no frames")
        root_rate = snap_rate(nuke.root()["fps"].value())
        if media.rate != root_rate:
            raise HostError(
                f"the shot was delivered at {media.rate} fps but the script runs at {root_rate} fps; set "
                "Project Settings > fps to the edit's rate and generate again"
            )
        if not media.colorspace:
            raise HostError(f"{paths[0]} carries no colorInteropID; cannot tell Nuke its colour space")
        config, working = colour_settings()
        space = colour.nuke_colorspace_name(media.colorspace, config, working)
        numbers = _frame_numbers(paths)
        read = nuke.nodes.Read(
            file=_hash_pattern(paths[0]),
            first=numbers[0],
            last=numbers[-1],
            origfirst=numbers[0],
            origlast=numbers[-1],
        )
        read["colorspace"].setValue(space)
        read["frame_mode"].setValue("start at")
        read["frame"].setValue(str(record_frame))
        read["label"].setValue(f"{label}\\n{os.path.basename(os.path.dirname(paths[0]))}\\n{space}")
        log.info(
            "created %s for %d frames at %d (%s fps, %dx%d, %s)",
            read.name(),
            len(paths),
            record_frame,
            media.rate,
            media.width,
            media.height,
            space,
        )
        return read

    def report_progress(self, fraction: float, message: str) -> None:
        if self._task is None:
            self._task = nuke.ProgressTask("TTT Generate")
        self._task.setProgress(int(round(100 * min(max(fraction, 0.0), 1.0))))
        self._task.setMessage(message)

    def end_progress(self) -> None:
        self._task = None  # Nuke closes the progress window when the task object goes

    def is_cancelled(self) -> bool:
        return self._task is not None and bool(self._task.isCancelled())

    def report_error(self, message: str) -> None:
        nuke.message(f"TTT Generate failed:\n{message}")

    def run_on_main_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        nuke.executeInMainThread(fn, args)


def start_generate(
    read: Any, options: GenerateOptions, client_factory: Optional[Callable[[], Any]] = None
) -> ShotJob:
    """Main thread: read the node and its plate, then hand everything else to a ShotJob thread."""
    request = build_request(read, options)
    host = NukeHost(read)
    first, last = int(read["first"].value()), int(read["last"].value())
    generation = options.generation
    if options.mode != "new" and generation.delivery.format is None:  # the plate's own format
        generation = dataclasses.replace(
            generation, delivery=dataclasses.replace(generation.delivery, format=node_format(read))
        )
    plates: Optional[Plates] = None
    if options.mode == "restyle":
        plates = Plates(tuple(host.plate_frames(request, first, last)), "restyle", options.strength)
    elif options.mode == "element":
        mattes = tuple(frame_file(options.matte, f) for f in range(first, last + 1)) if options.matte else ()
        missing = [m for m in mattes if not os.path.isfile(m)]
        if missing:
            raise HostError(f"matte {options.matte!r}: {len(missing)} frames are missing, first {missing[0]}")
        plates = Plates(
            tuple(host.plate_frames(request, first, last)), "element", options.strength, mattes=mattes
        )
    elif options.mode == "continue":  # the plate's last frame opens the video; what follows is placed
        plates = Plates(tuple(host.plate_frames(request, last, last)), "continue")
    job = ShotJob(
        host,
        [request],
        generation,
        client_factory=client_factory or options.server.client,
        plates={request.id: plates} if plates is not None else None,
    )
    job.start()
    job.start_forwarding()
    JOBS.append(job)
    log.info("TTT %s of %s: job for %s started", options.mode, read.name(), shot_name_for(request))
    return job


def show_panel() -> Optional[ShotJob]:
    """TTT > Generate...: ask in a modal panel, then start the job (returns it, None when dismissed)."""
    from host_plugin.hosts.nuke.panel import GeneratePanel

    try:
        read = selected_read()
    except HostError as exc:
        nuke.message(str(exc))
        return None
    panel = GeneratePanel(read)
    if not panel.showModalDialog():
        return None
    try:
        return start_generate(read, panel.options())
    except (HostError, RequestError, ValueError) as exc:
        nuke.message(f"TTT Generate: {exc}")
        return None


def check_approved_takes() -> List[ApprovalCheck]:
    """TTT > Check Approved Takes: ask the server (in threads) which take of each shot placed with takes
    in this session is approved; each Switch is set to it on the main thread."""
    jobs = [job for job in JOBS if job.finished and any(p.result.takes for p in job.placed)]
    if not jobs:
        nuke.message("TTT: no shot with takes was placed in this session")
        return []
    checks = [ApprovalCheck(job.host, job.placed, job.client_factory).start() for job in jobs]
    for check in checks:
        check.start_forwarding()
    return checks


def add_menus() -> None:
    """TTT > Generate... and TTT > Check Approved Takes in the Nuke menu bar and the Nodes toolbar."""
    for bar in ("Nuke", "Nodes"):
        menu = nuke.menu(bar).addMenu("TTT")
        menu.addCommand("Generate...", show_panel)
        menu.addCommand("Check Approved Takes", check_approved_takes)


def rate_of_root() -> Fraction:
    return snap_rate(nuke.root()["fps"].value())
