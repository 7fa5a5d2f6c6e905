"""Per-user quotas and the retention policy: one typed config, reported through ServerInfo.resources.

Quotas are checked when work is accepted (SubmitShot, UploadPlate) and answered with RESOURCE_EXHAUSTED
naming the quota, the caller's use and the limit (server.quotas). Retention (server.retention) expires
what is finished: the frames and latents of jobs finished longer than job_max_age_s ago, uploads no
queued or running job uses and older than upload_max_age_s, and, when everything stored is over
max_total_bytes, the oldest of both until it fits. It runs every gc_interval_s inside the server and on
demand with `ttt-studio gc`. The queued-jobs quota is Limits.max_queued_jobs_per_caller.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30
DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class ResourcePolicy:
    """max_bytes_per_user: a user's uploads plus the frames of their jobs kept on disk.
    max_uploads_per_user: plate uploads a user keeps at once. max_total_bytes: 0 means no cap on the
    whole store. gc_interval_s: 0 turns the server's own periodic collection off (`ttt-studio gc` still
    works). disk_reserve_bytes: space the server holds back in its data dir (a file it deletes when the
    disk fills) so that it can still record the failed job in its database."""

    max_bytes_per_user: int = 50 * GiB
    max_uploads_per_user: int = 4096
    job_max_age_s: float = 7 * DAY_S
    upload_max_age_s: float = 1 * DAY_S
    max_total_bytes: int = 0
    gc_interval_s: float = 600.0
    disk_reserve_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        if isinstance(self.disk_reserve_bytes, bool) or not isinstance(self.disk_reserve_bytes, int):
            raise ValueError(
                f"ResourcePolicy.disk_reserve_bytes: expected an int, got {self.disk_reserve_bytes!r}"
            )
        if self.disk_reserve_bytes < 0:
            raise ValueError(
                f"ResourcePolicy.disk_reserve_bytes: expected >= 0, got {self.disk_reserve_bytes}"
            )
        for name in ("max_bytes_per_user", "max_uploads_per_user"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ResourcePolicy.{name}: expected a positive int, got {value!r}")
        if isinstance(self.max_total_bytes, bool) or not isinstance(self.max_total_bytes, int):
            raise ValueError(f"ResourcePolicy.max_total_bytes: expected an int, got {self.max_total_bytes!r}")
        if self.max_total_bytes < 0:
            raise ValueError(
                f"ResourcePolicy.max_total_bytes: expected >= 0 (0: no cap), got {self.max_total_bytes}"
            )
        for name in ("job_max_age_s", "upload_max_age_s", "gc_interval_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"ResourcePolicy.{name}: expected seconds >= 0, got {value!r}")
