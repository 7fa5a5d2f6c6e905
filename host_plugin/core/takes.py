"""Takes of a shot: what each one is on disk, which one a host shows, and how approval moves it.

A job may make N takes (N seeds: seed, seed + 1, ...); every take's frames are fetched into a folder of
its own (<job folder>/take_01/, take_02/, ... numbered from 1 as people count takes; the wire's take
index counts from 0). A host shows one take and keeps the others at hand:

- the chosen take is the approved one, else the first (take 0) while none is approved;
- Nuke: one Read per take under a Switch node whose `which` is the chosen take's index;
- Resolve: every take in a bin of the media pool, the timeline item a take selector over them;
- Blender: the chosen take's strip unmuted, the others muted on the channels above it;
- OTIO: the chosen take is the clip, every take listed in its ttt_studio metadata ("takes").

The rule to keep: a take's `index` is the server's 0-based take index everywhere (Switch input, list
position, metadata); only folder names and labels count from 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from host_plugin.core.errors import PlacementError

TAKE_FOLDER = "take_{number:02d}"


def take_folder(job_folder: str, index: int) -> str:
    """The folder of take `index` (0-based) under a job's folder: take_01 for take 0."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise PlacementError(f"a take index is an int >= 0, got {index!r}")
    return os.path.join(job_folder, TAKE_FOLDER.format(number=index + 1))


@dataclass(frozen=True)
class TakeInfo:
    """One take of a generated shot as the plugin placed it.

    index: the server's 0-based take index; seed: the seed it was sampled with; directory: the folder
    (or file:// URL) of its frames (named like the shot's chosen take: same prefix, numbers, suffix);
    approved / approved_by: the director's approval as the server recorded it.
    """

    index: int
    seed: Optional[int]
    directory: str
    approved: bool = False
    approved_by: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise PlacementError(f"take index must be an int >= 0, got {self.index!r}")
        if not isinstance(self.directory, str) or not self.directory:
            raise PlacementError(
                f"take {self.index}: directory must be a folder path or URL, got {self.directory!r}"
            )

    @property
    def label(self) -> str:
        """How people name it: "take 1" for index 0."""
        return f"take {self.index + 1}"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "seed": self.seed,
            "path": self.directory,
            "approved": self.approved,
            "approved_by": self.approved_by,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TakeInfo:
        missing = {"index", "path"} - set(data)
        if missing:
            raise PlacementError(f"a take's metadata lacks {sorted(missing)}; got keys {sorted(data)}")
        seed = data.get("seed")
        return cls(
            index=int(data["index"]),
            seed=None if seed is None else int(seed),
            directory=str(data["path"]),
            approved=bool(data.get("approved", False)),
            approved_by=str(data.get("approved_by") or ""),
        )


def check_takes(takes: Sequence[TakeInfo], where: str) -> List[TakeInfo]:
    """The takes in index order, which must be exactly 0..N-1 with at most one approved."""
    ordered = sorted(takes, key=lambda t: t.index)
    indices = [t.index for t in ordered]
    if indices != list(range(len(ordered))):
        raise PlacementError(f"{where}: take indices must be 0..{len(ordered) - 1} once each, got {indices}")
    approved = [t.index for t in ordered if t.approved]
    if len(approved) > 1:
        raise PlacementError(f"{where}: at most one take can be approved, got takes {approved}")
    return ordered


def chosen_take(takes: Sequence[TakeInfo]) -> int:
    """The take a host shows: the approved one, else take 0."""
    if not takes:
        raise PlacementError("a shot without takes has no take to show")
    approved = [t.index for t in takes if t.approved]
    return approved[0] if approved else 0


def with_approval(
    takes: Sequence[TakeInfo], approved: Optional[int], approved_by: str = ""
) -> List[TakeInfo]:
    """The takes with `approved` (an index, or None: none) as the only approved one."""
    if approved is not None and approved not in {t.index for t in takes}:
        raise PlacementError(
            f"take {approved} cannot be approved: the shot has takes {sorted(t.index for t in takes)}"
        )
    return [
        TakeInfo(
            t.index,
            t.seed,
            t.directory,
            approved=t.index == approved,
            approved_by=(approved_by or t.approved_by) if t.index == approved else "",
        )
        for t in takes
    ]
