"""A finished job as an OTIO timeline (host_plugin.core.placement does the frame-accurate placement).

The server does not know where a client will put the frames, so the media URLs point into the job on
this server: ``ttt-studio://jobs/<job_id>/<shot>.<frame>.exr`` for take 0, ``.../<job_id>/take<k>/...``
for take k (the clip's ttt_studio metadata lists every take with its URL). A client that fetched the
frames into a folder rewrites them with `relocate_result` (server.client does this in fetch_result).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from server.jobs import FrameRecord, JobRecord

URL_SCHEME = "ttt-studio"


def job_media_url(job_id: str, take: int = 0) -> str:
    """Where a take's frames are on this server (every take's frames have the same file names)."""
    return f"{URL_SCHEME}://jobs/{job_id}/" + (f"take{take}/" if take else "")


def takes_metadata(job: JobRecord) -> list[dict[str, Any]]:
    """Every take of the job as the result clip lists them, so a host can switch to another take."""
    return [
        {
            "index": t.index,
            "seed": t.seed,
            "approved": t.approved,
            "approved_by": t.approved_by,
            "frames": t.frames_ready,
            "url": job_media_url(job.job_id, t.index),
        }
        for t in job.takes
    ]


def build_result_otio(
    job: JobRecord,
    pipe: Any,
    frames: list[FrameRecord],
    conform: dict[str, Any] | None = None,
    take: int = 0,
) -> str:
    """The result timeline of one take of the job as OTIO JSON: one clip at the delivered rate (the rate
    its EXRs' framesPerSecond say), metadata under "ttt_studio" including the take shown ("take"), every
    take ("takes": index, seed, approved, frames, url) and the conform report (native fps, retime method
    and flow fallbacks, generation size, scale, colour spaces). frames: that take's final frames."""
    from host_plugin.core.placement import ShotResult, build_result_timeline

    spec = job.spec
    if len(frames) != spec.total_frames:
        raise RuntimeError(
            f"result of job {job.job_id} take {take}: {len(frames)} frames stored, {spec.total_frames} expected"
        )
    delivery = spec.delivery
    rate = Fraction(delivery["rate"]) if delivery else Fraction(pipe.fps).limit_denominator(1001)
    model = pipe.model_info() if hasattr(pipe, "model_info") else {}
    shot = ShotResult(
        request_id=spec.request_id or spec.shot_name,
        job_id=job.job_id,
        directory=job_media_url(job.job_id, take),
        name_prefix=f"{spec.shot_name}.",
        frame_count=spec.total_frames,
        rate=rate,
        start_frame=spec.start_frame,
        padding=4,
        seed=spec.take_seed(take),
        model=str(model.get("name", "")) if isinstance(model, dict) else "",
        storyboard=[dict(s) for s in spec.storyboard],
        record_start=spec.record_start,
        metadata={
            "params": spec.take_params(take, draft=False),
            "shot_name": spec.shot_name,
            "priority": job.priority.name.lower(),
            "frame_sha256": [f.sha256 for f in frames],
            "delivery": dict(delivery) if delivery else None,
            "colorspace": spec.output_colorspace,
            "adapters": [dict(a) for a in spec.adapters],  # name, scale, sha256 of the file that made it
            "take": take,
            "takes": takes_metadata(job),
            "approved_take": job.approved_take,
        },
        conform=dict(conform or {}),
    )
    start = 0 if spec.record_start is None else min(0, spec.record_start)
    timeline = build_result_timeline([shot], rate, start_frame=start, name=f"TTT result {spec.shot_name}")
    return timeline.to_json_string()


def relocate_result(otio_json: str, directory: str | Path) -> str:
    """Point the result's media at a local folder that holds the fetched frames (same file names)."""
    import opentimelineio as otio

    from host_plugin.core.placement import FIRST_FRAME_KEY, directory_url

    timeline = otio.adapters.read_from_string(otio_json, "otio_json")
    base = directory_url(str(directory))
    for clip in timeline.find_clips():
        for key, ref in clip.media_references().items():
            if isinstance(ref, otio.schema.ImageSequenceReference):
                ref.target_url_base = base
            elif key == FIRST_FRAME_KEY and isinstance(ref, otio.schema.ExternalReference):
                ref.target_url = base + ref.target_url.rsplit("/", 1)[-1]
    return timeline.to_json_string()


def result_frame_names(otio_json: str) -> list[str]:
    """File names of the frames a result timeline refers to (for checks)."""
    data = json.loads(otio_json)
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("OTIO_SCHEMA", "").startswith("ImageSequenceReference"):
                start, step = node["start_frame"], node["frame_step"]
                count = round(node["available_range"]["duration"]["value"])
                pad = node["frame_zero_padding"]
                names.extend(
                    f"{node['name_prefix']}{start + i * step:0{pad}d}{node['name_suffix']}"
                    for i in range(count)
                )
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return names
