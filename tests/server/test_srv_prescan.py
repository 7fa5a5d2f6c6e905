"""The OTIO context's pre-scan (server.limits.scan_json / check_otio_context), fuzzed without a server.

Properties: arbitrary text gives a JsonScanError or passes, never another exception; on real JSON the
scan measures exactly the nesting depth and element count (it passes at the true value and fails one
below); every OTIO document OTIO writes within the limits is accepted; nesting far past Python's
recursion limit is refused without recursing. Example counts (derandomized): 400 texts, 300 JSON values,
150 OTIO timelines; measured ~17 s in all on a 2-core CPU shared with other jobs (docs/reliability.md).
"""

from __future__ import annotations

import json
from typing import Any

import opentimelineio as otio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import InvalidArgumentError
from server.limits import InputLimits, JsonScanError, check_otio_context, scan_json

FUZZ = settings(derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNLIMITED = {"max_bytes": 1 << 30, "max_depth": 1 << 30, "max_elements": 1 << 30, "max_token_bytes": 1 << 30}
JSONISH = st.text(
    alphabet=st.sampled_from(list('[]{}",:\\ \n0123456789.eE+-truefalsnNIiy\u00e9\x00')), max_size=300
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _elements(value: Any) -> int:
    """Containers and scalars, object keys included (what scan_json counts)."""
    if isinstance(value, list):
        return 1 + sum(_elements(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(1 + _elements(v) for v in value.values())
    return 1


@settings(FUZZ, max_examples=400)
@given(text=st.one_of(JSONISH, st.text(max_size=200)))
def test_arbitrary_text_is_scanned_or_refused(text: str) -> None:
    limits = InputLimits(max_otio_depth=8, max_otio_elements=50, max_otio_token_bytes=16)
    try:
        scan_json(text, 1 << 20, 8, 50, 16)
    except JsonScanError:
        pass
    try:
        check_otio_context(text, limits)
    except InvalidArgumentError:
        pass


@settings(FUZZ, max_examples=300)
@given(value=json_values, indent=st.sampled_from([None, 0, 2]))
def test_the_scan_measures_depth_and_elements_exactly(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    depth, elements = _depth(value), _elements(value)
    scan_json(text, **{**UNLIMITED, "max_depth": depth, "max_elements": elements})
    if depth:
        with pytest.raises(JsonScanError, match="nests deeper"):
            scan_json(text, **{**UNLIMITED, "max_depth": depth - 1})
    with pytest.raises(JsonScanError, match="more than"):
        scan_json(text, **{**UNLIMITED, "max_elements": elements - 1})


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
metadata = st.recursive(
    st.one_of(st.integers(-(2**31), 2**31), st.text(max_size=10), st.booleans(), st.floats(allow_nan=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def timelines(draw: Any) -> otio.schema.Timeline:
    """An OTIO timeline of clips, gaps, markers, nested stacks and arbitrary metadata."""
    rate = draw(st.sampled_from([24, 25, 30, 24000 / 1001]))

    def duration() -> otio.opentime.TimeRange:
        frames = draw(st.integers(1, 500))
        return otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(frames, rate)
        )

    timeline = otio.schema.Timeline(draw(names))
    for _ in range(draw(st.integers(1, 3))):
        track = otio.schema.Track(draw(names))
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(["clip", "gap", "stack"]))
            if kind == "gap":
                item = otio.schema.Gap(source_range=duration())
            elif kind == "stack":
                item = otio.schema.Stack(draw(names))
                item.append(otio.schema.Clip(draw(names), source_range=duration()))
            else:
                item = otio.schema.Clip(draw(names), source_range=duration())
                item.media_reference = otio.schema.ExternalReference(target_url=draw(names))
                if draw(st.booleans()):
                    item.markers.append(otio.schema.Marker(draw(names), marked_range=duration()))
            item.metadata["ttt_studio"] = draw(metadata)
            track.append(item)
        timeline.tracks.append(track)
    return timeline


@settings(FUZZ, max_examples=150)
@given(timeline=timelines())
def test_every_otio_document_within_the_limits_is_accepted(timeline: otio.schema.Timeline) -> None:
    check_otio_context(otio.adapters.write_to_string(timeline, "otio_json"), InputLimits())


@pytest.mark.parametrize("levels", [65, 1_000, 100_000, 1_000_000])
def test_nesting_far_past_the_recursion_limit_is_refused_without_recursing(levels: int) -> None:
    for text in ("[" * levels + "]" * levels, '{"a":' * levels + "1" + "}" * levels, "[" * levels):
        with pytest.raises(JsonScanError, match="nests deeper than 64"):
            scan_json(text, 1 << 30, 64, 1 << 30, 256)
    scan_json("[" * 64 + "]" * 64, 1 << 30, 64, 1 << 30, 256)
