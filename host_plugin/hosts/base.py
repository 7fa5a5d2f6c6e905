"""The Host interface every editor adapter implements, and the JobRunner that keeps network work off the
host's main thread.

The core never imports a host: it talks to `Host`. Adapters (hosts/resolve, hosts/nuke, hosts/blender)
are the only modules that import the Resolve API, nuke or bpy. Frame numbers crossing this interface are
absolute record frames of the edit (timeline start included: 01:00:00:00 = 86400 at 24 fps).

Delivery: a host says what a generated shot must become to belong to its edit (`target_format`,
`working_colorspace`) and places the delivered frames as what they are (`place_sequence` gets their
DeliveredMedia: rate, format, colour space), setting the colour space on what it creates.

Threading: hosts let only their main thread touch the document. Network work runs in a JobRunner
worker thread; its events (progress, done, error, cancelled) wait in a queue.Queue until the host's main
thread drains them (Blender: a bpy.app.timers function; Nuke: nuke.executeInMainThread or a Qt timer;
Resolve: a UIDispatcher timer). Errors in the worker become events; nothing is raised into the host.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Union

import numpy as np
import opentimelineio as otio

from host_plugin.core.delivery import Format
from host_plugin.core.errors import HostError, JobCancelled
from host_plugin.core.placement import DeliveredMedia
from host_plugin.core.requests import ShotRequest

log = logging.getLogger(__name__)


def check_chosen_take(takes: List[List[str]], chosen: int) -> None:
    """HostError unless take `chosen` is one of `takes` (what every host's place_takes checks first)."""
    if not 0 <= chosen < len(takes):
        raise HostError(f"take {chosen} cannot be shown: the shot has takes 0..{len(takes) - 1}")


class Host(abc.ABC):
    """What the plugin needs from an editor. One instance per host session; all methods except
    report_progress / is_cancelled / run_on_main_thread are called on the host's main thread."""

    name: str = "host"

    @abc.abstractmethod
    def read_edit(self) -> otio.schema.Timeline:
        """The current edit (or the selection) as an OTIO Timeline with global_start_time set.

        Resolve: tl = proj.GetCurrentTimeline(); tl.Export(path, resolve.EXPORT_OTIO, resolve.EXPORT_NONE)
          (18.5+) then read the file; markers come with it (AddMarker customData -> metadata).
        Nuke / Nuke Studio: Hiero's OTIO export of the sequence; in plain Nuke a one-track timeline built
          from nuke.root().firstFrame()/lastFrame() and the selected Read node.
        Blender: built from scene.sequence_editor.strips (frame_start, frame_final_duration, channel);
          Blender has no OTIO of its own.
        """

    @abc.abstractmethod
    def plate_frames(
        self, request: Union[ShotRequest, Any], first: int, last: int
    ) -> Union[List[str], Iterable[np.ndarray]]:
        """The picture under `request` for frames first..last (inclusive, absolute record frames), as EXR
        paths (ZIP, half float, scanline) or an iterator of (H, W, 4) float arrays.

        Resolve: proj.SetCurrentRenderFormatAndCodec("exr", "RGBHalfZIP"); SetRenderSettings(
          {"SelectAllFrames": False, "MarkIn": first, "MarkOut": last, "TargetDir", "CustomName"});
          job = proj.AddRenderJob(); proj.StartRendering([job]); poll proj.GetRenderJobStatus(job).
        Nuke: a Write node (file_type "exr", datatype "16 bit half", compression "Zip (1 scanline)",
          channels "rgba") under the request's node; nuke.execute(write, first, last, 1).
        Blender: render the sequencer frame by frame to OPEN_EXR (scene.frame_set + render.render).
        """

    @abc.abstractmethod
    def target_format(self) -> Format:
        """The frame a generated shot fills (main thread).

        Nuke: nuke.root().format() (width(), height(), pixelAspect()).
        Resolve: tl.GetSetting("timelineResolutionWidth" / "timelineResolutionHeight" /
          "timelinePixelAspectRatio").
        Blender: scene.render.resolution_x / _y x resolution_percentage / 100, pixel_aspect_x / _y.
        """

    @abc.abstractmethod
    def working_colorspace(self) -> str:
        """The colorInteropID shots are delivered in by default: the project's working space (main thread).

        Nuke: root knobs OCIO_config and workingSpaceLUT. Resolve: project settings colorScienceMode,
        colorSpaceTimeline. Blender: bpy.data.colorspace.working_space_interop_id (5.0+). ACES projects:
        lin_ap1_scene (ACEScg).
        """

    @abc.abstractmethod
    def place_sequence(
        self, paths: List[str], record_frame: int, track_hint: str, media: DeliveredMedia
    ) -> Any:
        """Put the delivered EXR sequence `paths` on the edit starting at absolute `record_frame`, on a track
        named like `track_hint` (created when missing), at media.rate and in media.colorspace; returns a
        handle to what was made (for mark_draft / replace_media).

        Resolve: items = mp.ImportMedia([{"FilePath": "sh010.%04d.exr", "StartIndex": 1001,
          "EndIndex": 1048}]); item.SetClipProperty for frame rate and input colour space;
          tl.AddTrack("video"); mp.AppendToTimeline([{"mediaPoolItem": item, "startFrame": 0, "endFrame":
          n - 1, "mediaType": 1, "trackIndex": i, "recordFrame": record_frame}]). recordFrame is absolute
          (tl.GetStartFrame() included); marker frameIds are not.
        Nuke: nuke.nodes.Read(file="/p/sh010.####.exr", first=1001, last=1048), frame_mode "start at"
          record_frame, colorspace set; in Nuke Studio import the clip and place it on the sequence.
        Blender: s = se.strips.new_image(name, paths[0], channel, record_frame, fit_method=...) with the
          fit method of the delivery (the strip covers the scene's frame);
          s.elements.append(os.path.basename(p)) for the other paths; s.colorspace_settings.name set.
        """

    @abc.abstractmethod
    def place_takes(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        track_hint: str,
        media: DeliveredMedia,
    ) -> Any:
        """Put every take of a shot on the edit at absolute `record_frame`, showing take `chosen` and keeping
        the others at hand; returns a handle for switch_take. takes[i] are take i's frame paths (the same
        names in take folders), all delivered as `media`.

        Nuke: a Read per take (as place_sequence makes it) into a Switch node (nuke.nodes.Switch(),
          setInput(i, read_i)) whose `which` knob is `chosen`.
        Resolve: a bin of the media pool (mp.AddSubFolder(mp.GetCurrentFolder(), name); SetCurrentFolder)
          that every take is imported into (ImportMedia), take 0 appended to the timeline and the others
          added to its take selector (TimelineItem.AddTake), take chosen + 1 selected (SelectTakeByIndex:
          1-based).
        Blender: a strip per take, the chosen one unmuted, the others muted on the channels above it.
        """

    @abc.abstractmethod
    def switch_take(self, handle: Any, index: int) -> None:
        """Show take `index` of what place_takes or place_element placed (its handle). Nuke: Switch `which`; Resolve:
        TimelineItem.SelectTakeByIndex(index + 1); Blender: un-mute that strip, mute the others."""

    @abc.abstractmethod
    def place_element(
        self,
        takes: List[List[str]],
        chosen: int,
        record_frame: int,
        plate_track: int,
        media: DeliveredMedia,
        mattes: List[str],
    ) -> Any:
        """Composite a generated element (RGBA frames, the matte as alpha) over its plate at absolute
        `record_frame`, showing take `chosen` of `takes` (takes[i]: take i's frames; one list for a job of
        one take) and keeping the others at hand; plate_track: the plate's video track (0 = V1, the
        request's track_index); mattes: the matte frames sent with it (empty: the plate's alpha). Returns a
        handle for switch_take / mark_draft / replace_media.

        Nuke: Read(plate) and Read(matte) into the plugin's TTT node (a Group: inputs plate and matte, the
          element's Read inside; with takes a Read per take into a Switch inside), then Merge2 (operation
          over; input 1 = A = the element, input 0 = B = the plate).
        Blender / Resolve: the element on a track above the plate's, composited by its alpha; its takes as
          place_takes keeps them (Blender: muted strips above; Resolve: the item's take selector).
        """

    @abc.abstractmethod
    def mark_draft(self, handle: Any) -> None:
        """Mark what place_sequence / place_takes / place_element made (its handle) as a draft: a preview
        job's fewer-step frames, to be replaced by its final. The frames come from a draft folder.

        Nuke: every Read's label opens with "DRAFT". Resolve: the timeline item's clip colour (SetClipColor)
          and `ttt_studio.draft` true in its generated marker's customData (UpdateMarkerCustomData).
        Blender: every strip's custom property ttt_studio_draft = True and its colour tag.
        """

    @abc.abstractmethod
    def replace_media(self, handle: Any, takes: List[List[str]], media: DeliveredMedia) -> None:
        """Swap what `handle` placed (a draft) to the final frames in place and drop its draft mark: the same
        node, strip or timeline item at the same record frames reads takes[i] (take i's final frames, the
        same names and count as its draft's; one list for a shot without takes), delivered as `media`.

        Nuke: each Read's `file` knob. Resolve: each take's MediaPoolItem.ReplaceClip(first final frame)
          (the timeline item and its take selector stay). Blender: each strip's `directory`.
        """

    @abc.abstractmethod
    def report_progress(self, fraction: float, message: str) -> None:
        """Show progress 0..1 and a status line.

        Nuke: nuke.ProgressTask.setProgress(int(fraction * 100)) and setMessage(message).
        Blender: context.window_manager.progress_update and the status bar text.
        Resolve: a label / slider in the fu.UIManager window.
        """

    @abc.abstractmethod
    def is_cancelled(self) -> bool:
        """True once the user asked to stop. Nuke: ProgressTask.isCancelled(). Blender: the operator's
        modal handler saw ESC. Resolve: the UIManager window's Cancel button was clicked."""

    def report_error(self, message: str) -> None:
        """Show a failure (a job that failed or could not start). Default: the progress line; hosts with a
        message box (nuke.message, Blender's operator report, a Resolve label) override it."""
        self.report_progress(0.0, message)

    @abc.abstractmethod
    def run_on_main_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) soon on the host's main thread; callable from any thread.

        Nuke: nuke.executeInMainThread(fn, args). Blender: bpy.app.timers.register(lambda: fn(*args))
        (returning None so it runs once). Resolve: queue it for the UIDispatcher loop's timer handler.
        """


PROGRESS = "progress"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"
TERMINAL = (DONE, ERROR, CANCELLED)


@dataclass(frozen=True)
class JobEvent:
    """One event from a worker. seq counts from 0 in the order events were sent."""

    seq: int
    kind: str  # progress | done | error | cancelled
    fraction: float = 0.0
    message: str = ""
    result: Any = None
    error: Optional[BaseException] = None
    traceback: str = ""


class JobContext:
    """Handed to the worker function: report progress and check for cancellation."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    def progress(self, fraction: float, message: str = "") -> None:
        """Send a progress event; fraction must be in [0, 1]."""
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"progress fraction must be within [0, 1], got {fraction!r}")
        self._runner._emit(PROGRESS, fraction=float(fraction), message=message)

    def deliver(self, result: Any, fraction: float, message: str = "") -> None:
        """Hand a partial result to the main thread now (a progress event whose `result` is set), e.g. one
        finished shot of several, so the host can place it before the whole job ends."""
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"progress fraction must be within [0, 1], got {fraction!r}")
        self._runner._emit(PROGRESS, fraction=float(fraction), message=message, result=result)

    def cancelled(self) -> bool:
        return self._runner.cancel_requested

    def raise_if_cancelled(self) -> None:
        """Stop the worker here when the user cancelled (becomes a "cancelled" event)."""
        if self._runner.cancel_requested:
            raise JobCancelled("job cancelled by the user")


class JobRunner:
    """Run work(context) in a daemon thread; hand its events to the host's main thread through a queue.

    Host side (main thread):
        runner = JobRunner(work).start()
        # Blender: bpy.app.timers.register(lambda: 0.02 if runner.drain(handle) else None)
        # Nuke: a QTimer calling runner.drain(handle); Resolve: the UIDispatcher timer does the same
    Every job ends with exactly one terminal event: done (result), error (exception + traceback) or
    cancelled (the worker raised JobCancelled). Exceptions never escape the worker thread.
    """

    def __init__(self, work: Callable[[JobContext], Any], name: str = "ttt-job") -> None:
        self._work = work
        self._name = name
        self._events: queue.Queue = queue.Queue()
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._finished = False  # set on the main thread once the terminal event was drained

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        """True once the terminal event has been drained."""
        return self._finished

    def start(self) -> JobRunner:
        if self._thread is not None:
            raise RuntimeError(f"job {self._name!r} was already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the worker to stop; it sees context.cancelled() / raise_if_cancelled()."""
        self._cancel.set()

    def poll(self) -> List[JobEvent]:
        """Every event waiting now, oldest first; never blocks."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return events
            if event.kind in TERMINAL:
                self._finished = True
            events.append(event)

    def drain(self, handler: Callable[[JobEvent], None]) -> bool:
        """Call handler(event) for each waiting event on this (main) thread; True while more may come.

        Suits timer APIs directly: keep the timer while it returns True.
        """
        for event in self.poll():
            handler(event)
        return not self._finished

    def wait_and_drain(
        self, handler: Callable[[JobEvent], None], timeout: float = 30.0, interval: float = 0.01
    ) -> bool:
        """Pump events until the job ends or `timeout` seconds pass (for hosts whose timers do not run,
        e.g. Blender --background, and for tests); True when the job ended."""
        deadline = time.monotonic() + timeout
        while self.drain(handler):
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)
        return True

    def _emit(self, kind: str, **fields: Any) -> None:
        with self._seq_lock:
            event = JobEvent(seq=self._seq, kind=kind, **fields)
            self._seq += 1
            self._events.put(event)

    def _run(self) -> None:
        context = JobContext(self)
        try:
            result = self._work(context)
        except JobCancelled as exc:
            self._emit(CANCELLED, message=str(exc), error=exc)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the host as an event
            log.exception("job %s failed", self._name)
            self._emit(
                ERROR, message=f"{type(exc).__name__}: {exc}", error=exc, traceback=traceback.format_exc()
            )
        else:
            self._emit(DONE, fraction=1.0, result=result)
