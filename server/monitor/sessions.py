"""Sign-in sessions: the browser holds a random id in an HttpOnly cookie, the monitor maps it to the token.

The token never goes back to the browser after sign-in (a script on the page cannot read it), and it is
kept in this process's memory only: restarting the monitor signs everyone out.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_ID_BYTES = 32


@dataclass
class Session:
    """One signed-in page: the user's server token and what the server said about it at sign-in."""

    token: str
    caller: str
    native_fps: float
    last_seen: float = field(default_factory=time.monotonic)


class SessionStore:
    """id -> Session, at most `max_sessions`, each dropped `idle_s` after its last use."""

    def __init__(self, idle_s: float, max_sessions: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, token: str, caller: str, native_fps: float) -> str:
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        with self._lock:
            self._sessions[session_id] = Session(token, caller, native_fps, self._clock())
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this id (and marks it used), or None."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self.idle_s:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def __len__(self) -> int:
        return len(self._sessions)
