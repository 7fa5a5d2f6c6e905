"""Host-independent core of the plugin: OTIO requests and placement, frame math, EXR frames, errors.

Imports on Python 3.9-3.13; needs opentimelineio and numpy; OpenEXR only when EXR functions are called.
Never imports a host API, torch, ttt_engine or server.
"""

from host_plugin.core.errors import (
    ExrWriteError,
    FillError,
    FrameMathError,
    HostError,
    HostPluginError,
    JobCancelled,
    PlacementError,
    PlateError,
    RequestError,
)
from host_plugin.core.frame_math import format_timecode, parse_timecode, snap_rate, to_frames
from host_plugin.core.placement import (
    GENERATED_TRACK_NAME,
    ShotResult,
    build_result_timeline,
    place_generated_shot,
    swap_in_final,
    use_first_frame_references,
)
from host_plugin.core.requests import ShotRequest, find_shot_requests, timeline_rate

__all__ = [
    "GENERATED_TRACK_NAME",
    "ExrWriteError",
    "FillError",
    "FrameMathError",
    "HostError",
    "HostPluginError",
    "JobCancelled",
    "PlacementError",
    "PlateError",
    "RequestError",
    "ShotRequest",
    "ShotResult",
    "build_result_timeline",
    "find_shot_requests",
    "format_timecode",
    "parse_timecode",
    "place_generated_shot",
    "snap_rate",
    "swap_in_final",
    "timeline_rate",
    "to_frames",
    "use_first_frame_references",
]
