"""Retention: expire finished jobs' frames and unused uploads by age and by total size.

The one rule: a job's frames are never deleted while a client fetches them. Every FetchFrames stream
holds a lease on its job (FrameLeases.hold); the collector expires a job only after taking it with
try_expire, which fails while a lease is held and makes new fetches wait until the expiry is recorded
(they then answer that the frames expired). Expiring records the job in the store first, then removes
its folder (frames and latents), so a crash in between leaves files nobody indexes, which the next
collection removes. Jobs that are queued or running and uploads they use are never candidates.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from server.frames import FrameStore
from server.resources import ResourcePolicy
from server.store import Store

log = logging.getLogger(__name__)


class FrameLeases:
    """Reference counts of open FetchFrames streams per job, and the jobs being expired right now."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: Counter[str] = Counter()
        self._expiring: set[str] = set()

    @contextmanager
    def hold(self, job_id: str) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: job_id not in self._expiring)
            self._held[job_id] += 1
        try:
            yield
        finally:
            with self._cond:
                self._held[job_id] -= 1
                if self._held[job_id] <= 0:
                    del self._held[job_id]
                self._cond.notify_all()

    def held(self, job_id: str) -> int:
        with self._cond:
            return self._held[job_id]

    def try_expire(self, job_id: str) -> bool:
        """Reserve a job for expiry; False while a fetch holds it."""
        with self._cond:
            if self._held[job_id]:
                return False
            self._expiring.add(job_id)
            return True

    def done_expiring(self, job_id: str) -> None:
        with self._cond:
            self._expiring.discard(job_id)
            self._cond.notify_all()


@dataclass(frozen=True)
class Candidate:
    kind: str  # "job" (its frames and latents) or "upload"
    item_id: str
    owner: str
    bytes: int
    reason: str


@dataclass
class GcReport:
    removed: list[Candidate] = field(default_factory=list)
    kept_leased: list[str] = field(default_factory=list)  # jobs skipped because a client was fetching
    dry_run: bool = False

    @property
    def freed_bytes(self) -> int:
        return sum(c.bytes for c in self.removed)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        jobs = sum(c.kind == "job" for c in self.removed)
        uploads = len(self.removed) - jobs
        text = f"{verb} {jobs} job(s)' frames and {uploads} upload(s), {self.freed_bytes} bytes"
        if self.kept_leased:
            text += f"; kept {len(self.kept_leased)} job(s) being fetched"
        return text


class Collector:
    """Plans and runs one collection under a ResourcePolicy."""

    def __init__(
        self,
        store: Store,
        frames: FrameStore,
        policy: ResourcePolicy,
        leases: FrameLeases,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.frames = frames
        self.policy = policy
        self.leases = leases
        self.clock = clock
        self._lock = threading.Lock()  # one collection at a time

    def plan(self) -> list[Candidate]:
        """What the policy expires now: by age, then the oldest of the rest while over max_total_bytes."""
        now, policy = self.clock(), self.policy
        jobs = [("job", *row) for row in self.store.finished_jobs()]
        uploads = [("upload", *row) for row in self.store.unused_uploads()]
        chosen: list[Candidate] = []
        rest = []
        for kind, item_id, owner, when, size in sorted(jobs + uploads, key=lambda r: r[3]):
            max_age = policy.job_max_age_s if kind == "job" else policy.upload_max_age_s
            if now - when > max_age:
                age = "finished" if kind == "job" else "unused, uploaded"
                chosen.append(Candidate(kind, item_id, owner, size, f"{age} more than {max_age:.0f} s ago"))
            else:
                rest.append((kind, item_id, owner, size))
        if policy.max_total_bytes:
            total = self.store.stored_bytes() - sum(c.bytes for c in chosen)
            for kind, item_id, owner, size in rest:  # oldest first
                if total <= policy.max_total_bytes:
                    break
                reason = f"store over max_total_bytes={policy.max_total_bytes}"
                chosen.append(Candidate(kind, item_id, owner, size, reason))
                total -= size
        return chosen

    def run(self, dry_run: bool = False) -> GcReport:
        with self._lock:
            report = GcReport(dry_run=dry_run)
            if not dry_run:
                self._sweep_expired_folders()
            for candidate in self.plan():
                if dry_run:
                    report.removed.append(candidate)
                elif candidate.kind == "upload":
                    self.store.delete_upload(candidate.item_id)
                    self.frames.upload_path(candidate.item_id).unlink(missing_ok=True)
                    report.removed.append(candidate)
                elif self._expire_job(candidate):
                    report.removed.append(candidate)
                else:
                    report.kept_leased.append(candidate.item_id)
            for candidate in report.removed:
                log.info(
                    "gc %s %s %s (%s, %d bytes): %s",
                    "would expire" if dry_run else "expired",
                    candidate.kind,
                    candidate.item_id,
                    candidate.owner,
                    candidate.bytes,
                    candidate.reason,
                )
            return report

    def _sweep_expired_folders(self) -> None:
        """Folders of jobs already recorded as expired (a crash came between record and removal)."""
        for job_id in self.store.expired_job_ids():
            folder = self.frames.job_dir(job_id)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)

    def _expire_job(self, candidate: Candidate) -> bool:
        if not self.leases.try_expire(candidate.item_id):
            return False
        try:
            self.store.expire_job(candidate.item_id, candidate.reason)
            shutil.rmtree(self.frames.job_dir(candidate.item_id), ignore_errors=True)
        finally:
            self.leases.done_expiring(candidate.item_id)
        return True


class PeriodicCollector(threading.Thread):
    """Runs the collector every policy.gc_interval_s until `stopped` is set (a daemon thread)."""

    def __init__(self, collector: Collector, stopped: threading.Event) -> None:
        super().__init__(name="gc", daemon=True)
        self.collector = collector
        self.stopped = stopped

    def run(self) -> None:
        interval = self.collector.policy.gc_interval_s
        while not self.stopped.wait(interval):
            try:
                report = self.collector.run()
            except Exception:  # noqa: BLE001 - a failed collection is retried at the next interval
                log.exception("gc failed; retrying in %.0f s", interval)
                continue
            if report.removed or report.kept_leased:
                log.info("gc: %s", report.summary())
