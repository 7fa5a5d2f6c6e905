"""The adapters a shot is generated with: the server's LoRA adapters chosen by name, each at a strength.

A choice comes from a plugin's panel (GenerationSettings.adapters: one for every shot of a run) or from
the request itself (metadata["ttt_studio"]["adapters"] on the OTIO item: [{"name": ..., "scale": ...}] or
["name", ...] at scale 1), which wins for that request. Choices are checked against what the server lists
(ServerInfo.adapters) and its limits before a job is submitted, so an unknown name is reported with the
names the server does offer. Python 3.9 (hosts run it): no 3.10+ syntax.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

from host_plugin.core.errors import RequestError

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
METADATA_KEY = "adapters"
NONE_CHOICE = "(none)"
"""What a panel's adapter list shows for "no adapter"."""
LIST_TIMEOUT_S = 10.0
"""A panel's "list adapters" button waits this long for the server (it runs on the host's UI thread)."""


@dataclass(frozen=True)
class AdapterChoice:
    """One of the server's adapters by name, at `scale` (0: the base model; 1: as trained)."""

    name: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not ADAPTER_NAME.match(self.name):
            raise ValueError(f"adapter name must match {ADAPTER_NAME.pattern}, got {self.name!r}")
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, (int, float))
            or not math.isfinite(self.scale)
        ):
            raise ValueError(f"adapter {self.name!r}: strength must be a finite number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))


def parse_choice(text: str) -> AdapterChoice:
    """'NAME' or 'NAME:SCALE' (a command line's --adapter) -> AdapterChoice; ValueError naming `text`."""
    name, sep, scale = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return AdapterChoice(name, float(scale) if sep else 1.0)
    except ValueError as exc:
        raise ValueError(f"--adapter {text!r}: expected NAME or NAME:SCALE ({exc})") from None


def choice_from_panel(name: str, strength: float) -> Tuple[AdapterChoice, ...]:
    """A panel's (list value, strength) as choices: none for NONE_CHOICE or an empty name."""
    if not name or name == NONE_CHOICE:
        return ()
    return (AdapterChoice(name, float(strength)),)


def adapters_from_metadata(meta: Dict[str, Any], where: str) -> Tuple[AdapterChoice, ...]:
    """The adapters a request's ttt_studio metadata names (RequestError naming `where` when malformed)."""
    raw = meta.get(METADATA_KEY)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RequestError(
            f"{where}: metadata['ttt_studio']['adapters'] must be a list of names or "
            f"{{'name': ..., 'scale': ...}} objects, got {raw!r}"
        )
    out = []
    for i, item in enumerate(raw):
        try:
            if isinstance(item, str):
                out.append(AdapterChoice(item))
            elif isinstance(item, dict) and set(item) <= {"name", "scale"} and "name" in item:
                out.append(AdapterChoice(item["name"], item.get("scale", 1.0)))
            else:
                raise ValueError(f"expected a name or {{'name': ..., 'scale': ...}}, got {item!r}")
        except ValueError as exc:
            raise RequestError(f"{where}: metadata['ttt_studio']['adapters'][{i}]: {exc}") from None
    return tuple(out)


def check_choices(choices: Sequence[AdapterChoice], info: Any, where: str) -> None:
    """Every choice is one the server lists for this caller, within its limits (RequestError otherwise).

    info: a host_plugin.core.client.ServerInfo (adapters, limits)."""
    if not choices:
        return
    offered = [a.name for a in info.adapters]
    limit = int(info.limits.get("max_adapters_per_job") or len(choices))
    if len(choices) > limit:
        raise RequestError(
            f"{where}: {len(choices)} adapters chosen; the server allows max_adapters_per_job={limit}"
        )
    max_scale = float(info.limits.get("max_adapter_scale") or math.inf)
    seen = set()
    for choice in choices:
        if choice.name not in offered:
            raise RequestError(
                f"{where}: the server {info.address} has no adapter {choice.name!r} for you; it offers "
                f"{offered or 'none'}"
            )
        if abs(choice.scale) > max_scale:
            raise RequestError(
                f"{where}: adapter {choice.name!r} at strength {choice.scale}; the server allows at most "
                f"{max_scale} (max_adapter_scale)"
            )
        if choice.name in seen:
            raise RequestError(f"{where}: adapter {choice.name!r} chosen twice")
        seen.add(choice.name)


def panel_names(info: Any) -> Tuple[str, ...]:
    """The values of a panel's adapter list: NONE_CHOICE, then the server's adapters by name."""
    return (NONE_CHOICE,) + tuple(sorted(a.name for a in info.adapters))


def server_adapter_names(server: Any) -> Tuple[str, ...]:
    """panel_names of the server that `server` (a shot_job.ServerSettings) describes, asked once with a
    short timeout; the client's ClientError says why when the server cannot be asked."""
    quick = dataclasses.replace(server, timeout_s=LIST_TIMEOUT_S, retries=1)
    with quick.client() as client:
        return panel_names(client.server_info())
