"""Stand-in for Blackmagic's DaVinciResolveScript module: scriptapp("Resolve") returns the fake Resolve of
tests/fakes/resolve.py (make_resolve() sets it); UIDispatcher is bmd.UIDispatcher (fu.UIManager's loop)."""

from __future__ import annotations

from typing import Any

import resolve as _fake

UIDispatcher = _fake.UIDispatcher


def scriptapp(name: str) -> Any | None:
    """Like the real module: None when the app is not running (no current fake)."""
    if name != "Resolve":
        return None
    return _fake.CURRENT
