"""How a job names its adapters: `PATH[:SCALE]` on the command line, and the record its frames carry.

One rule: a job's output names each adapter by its content hash (sha256 of the file), with its scale, so
a frame says exactly which adapter weights made it, whatever the file was called.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import AdapterError
from .format import Adapter

ATTRIBUTE = "ttt_studio/adapters"  # EXR string attribute: JSON list of {"name", "scale", "sha256"}


def parse_adapter_arg(text: str) -> tuple[Path, float]:
    """'looks/grade:0.8' -> (Path('looks/grade'), 0.8); without ':SCALE' the scale is 1.

    The scale is what follows the last ':' when that parses as a finite number, so a path may contain
    colons (a trailing ':' with no number is refused)."""
    if not text:
        raise AdapterError("--adapter: expected PATH[:SCALE], got ''")
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
        except ValueError:
            if tail:
                return Path(text), 1.0
            raise AdapterError(f"--adapter {text!r}: nothing after ':' (expected PATH[:SCALE])") from None
        if not math.isfinite(scale):
            raise AdapterError(f"--adapter {text!r}: scale must be a finite number, got {tail!r}")
        return Path(head), scale
    return Path(text), 1.0


def adapter_records(adapters: Sequence[tuple[Adapter, float]]) -> list[dict[str, Any]]:
    """[{"name", "scale", "sha256"}] in application order (scale-0 adapters included: they were asked for)."""
    return [{"name": a.name, "scale": float(s), "sha256": a.sha256} for a, s in adapters]


def adapter_attributes(adapters: Sequence[tuple[Adapter, float]]) -> dict[str, str]:
    """The EXR attribute recording the adapters (empty when there are none)."""
    if not adapters:
        return {}
    return {ATTRIBUTE: json.dumps(adapter_records(adapters), sort_keys=True)}


def records_from_attributes(header: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The adapter records an EXR header holds ([] when none); AdapterError naming `source` if malformed."""
    raw = header.get(ATTRIBUTE)
    if raw is None:
        return []
    try:
        records = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as err:
        raise AdapterError(f"{source}: attribute {ATTRIBUTE} is not JSON ({err})") from err
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and set(r) == {"name", "scale", "sha256"} for r in records
    ):
        raise AdapterError(f"{source}: attribute {ATTRIBUTE}: expected a list of {{name, scale, sha256}}")
    return records
