"""Edits as other tools write them, through request scanning and `ttt-studio fill` on a real server
running the shipped default model.

The files under data/edits/ are written the way each tool's OTIO route writes them (metadata namespaces,
rates, start timecodes, their habits):
- premiere_titles.otio (Premiere Pro via the fcp_xml adapter, 24 fps at 01:00:00:00): a cross dissolve,
  a title and a colour matte (GeneratorReference) longer than their media, a still png held for 60
  frames, a lower third on V2; a marked marker, a marked gap, a marked storyboard gap, plain gaps and
  plain markers;
- resolve_export.otio (Resolve's own export, 23.976 at 01:00:00:00): gap ranges that do not start at
  0, a 24 fps clip whose source range was not rescaled (with a marked marker in its source time), a
  freeze frame and a 50% retime past their media, a clip past its media without metadata, a Fusion
  title, a solid colour generator and a one-frame DPX sequence held for 36 frames;
- avid_nested.otio (Media Composer via the AAF adapter, 24 fps): a nested sequence (a Stack in the
  track) with two tracks and a clip straight inside the Stack carrying a marked marker, a 200% motion
  effect, a nested Track, and a trimmed nest whose marked gap is trimmed out of view;
- fcpx_compound.otio (Final Cut Pro via the fcpx_xml adapter, 25 fps at 01:00:00:00): a compound clip
  (Stack) with a title and a marked storyboard marker on the compound, a gap marked with an empty
  ttt_studio dict (its text comes from --prompt), a jpg still with a long range, a 25% speed ramp.

Only the marked items are requests; titles, generators, stills and retimed clips are left alone; the
hidden request is named; the fill places every marked request and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import opentimelineio as otio
import pytest
from hp_helpers import FAST_DEFAULT, TOKEN

from host_plugin import cli
from host_plugin.core.requests import SOURCE_LONG_CLIPS, is_generated_track, scan_shot_requests
from host_plugin.fill import read_timeline

EDITS = Path(__file__).parent / "data" / "edits"

# (request id, absolute record start, duration) of every marked request, summed by hand from the files
MARKED = {
    "premiere_titles": [
        ("v0.m1", 86400 + 20, 8),
        ("v0.i3.gap", 86400 + 96, 12),
        ("v1.i2.gap", 86400 + 148, 10),
    ],
    "resolve_export": [("v0.i1.m0", 86400 + 24 + 10, 10), ("v0.i6.gap", 86400 + 244, 12)],
    "avid_nested": [
        ("v0.i1.t1.i1.gap", 86400 + 24 + 6, 10),
        ("v0.i1.c2.m0", 86400 + 24 + 12, 8),  # the marker on the clip straight inside the nested Stack
        ("v0.i4.i0.gap", 86400 + 24 + 36 + 48, 12),
    ],
    "fcpx_compound": [("v0.i2.m0", 90000 + 50 + 5, 10), ("v0.i3.gap", 90000 + 90, 10)],
}
HIDDEN = {"avid_nested": ["v0.i5.t0.i0.gap"]}
# what --requests-from long-clips adds: only Resolve's plain clip past its media, never a title, a
# generator, a still or a retimed clip
LONG_CLIPS = {"resolve_export": [("v0.i4.clip", 86400 + 156, 40)]}


@pytest.mark.parametrize("name", MARKED)
def test_only_marked_items_are_requests(name: str) -> None:
    timeline = read_timeline(str(EDITS / f"{name}.otio"))
    scan = scan_shot_requests(timeline)
    assert [(r.id, r.record_start, r.duration) for r in scan.requests] == MARKED[name]
    assert scan.refused == []
    assert [h.id for h in scan.hidden] == HIDDEN.get(name, [])
    long_clips = scan_shot_requests(timeline, sources=[SOURCE_LONG_CLIPS]).requests
    added = sorted(set((r.id, r.record_start, r.duration) for r in long_clips) - set(MARKED[name]))
    assert added == LONG_CLIPS.get(name, [])


@pytest.mark.slow  # 10-20 s per edit on a shared 2-core CPU (the shipped model, 2-3 shots each)
@pytest.mark.parametrize("name", MARKED)
def test_fill_places_the_marked_requests_and_nothing_else(
    hp_default_server: Any, tmp_path: Path, name: str, capsys: Any
) -> None:
    out = tmp_path / f"{name}_filled.otio"
    extra = ["--prompt", "Soft light over a field."] if name == "fcpx_compound" else []
    fast = ["--steps", str(FAST_DEFAULT["steps"]), "--guidance-scale", str(FAST_DEFAULT["guidance_scale"])]
    argv = [
        "fill",
        str(EDITS / f"{name}.otio"),
        "-o",
        str(out),
        "--server",
        hp_default_server.address,
        "--token",
        TOKEN,
    ]
    code = cli.main([*argv, *fast, *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    filled = otio.adapters.read_from_file(str(out))
    origin = round(filled.global_start_time.value)
    placed = []
    for track in filled.video_tracks():
        if not is_generated_track(track):
            continue
        for clip in track.find_clips(shallow_search=True):
            start = origin + round(track.range_of_child(clip).start_time.value)
            placed.append(
                (clip.metadata["ttt_studio"]["request_id"], start, round(clip.source_range.duration.value))
            )
    assert sorted(placed) == sorted(MARKED[name])
    for hidden in HIDDEN.get(name, []):
        assert f"hidden: request {hidden} " in captured.out
    # the edit itself is untouched: same tracks, same items, plus the generated track
    source = read_timeline(str(EDITS / f"{name}.otio"))
    kept = [t for t in filled.tracks if not is_generated_track(t)]
    assert [t.to_json_string() for t in kept] == [t.to_json_string() for t in source.tracks]
