"""The job queue: on-set previews ahead of finals, FIFO within a priority, persisted.

The queue's contents are the 'queued' rows of the jobs table (see Store.claim_next), so nothing about
it lives only in memory: a restart finds the same queue in the same order, and jobs that were running
when the server died go back at their original place (they keep their submit order). This class only
adds the blocking `take` that workers wait in.
"""

from __future__ import annotations

import threading

from server.jobs import JobRecord, Priority
from server.store import Store


class JobQueue:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._closed = threading.Event()

    def take(self, timeout: float | None = None) -> JobRecord | None:
        """The next job (already marked running), waiting up to `timeout` s; None on timeout or close."""
        waited = 0.0
        while not self._closed.is_set():
            version = self._store.version
            job = self._store.claim_next()
            if job is not None:
                return job
            slice_s = 1.0 if timeout is None else min(1.0, timeout - waited)
            if slice_s <= 0:
                return None
            self._store.wait_for_change(version, slice_s)
            waited += slice_s
        return None

    def close(self) -> None:
        """Make every `take` return None (shutdown)."""
        self._closed.set()
        self._store.wake_all()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def lengths(self) -> dict[Priority, int]:
        return self._store.queue_counts()

    def __len__(self) -> int:
        return sum(self.lengths().values())
