"""Per-user quotas: what a caller keeps on the server, checked when new work is accepted.

Bytes are the caller's uploads and adapters plus the frames of their jobs still kept (every take's final
and draft frames; expired frames no longer count); a job is accepted while its owner is under the bytes
quota, so a user can go over it by at most one job's frames. Refusals are RESOURCE_EXHAUSTED naming the
quota, the use and the limit, and what to do. Users with an admin token are exempt (the engine is told who they are).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import ResourceExhaustedError
from server.resources import ResourcePolicy
from server.store import Store


@dataclass(frozen=True)
class Usage:
    bytes: int
    uploads: int
    queued_jobs: int


def usage_of(store: Store, owner: str) -> Usage:
    return Usage(*store.usage(owner))


def check_submit(policy: ResourcePolicy, store: Store, owner: str) -> None:
    """A new job: the owner must be under the bytes quota (the queued-jobs quota is the store's)."""
    use = usage_of(store, owner)
    if use.bytes >= policy.max_bytes_per_user:
        raise ResourceExhaustedError(
            f"quota max_bytes_per_user: caller {owner!r} keeps {use.bytes} bytes on the server, the limit is "
            f"{policy.max_bytes_per_user}. Fetch and let old jobs expire, or ask the administrator to run "
            "`ttt-studio gc`."
        )


def check_upload(policy: ResourcePolicy, store: Store, owner: str, incoming_bytes: int) -> None:
    """A new plate of incoming_bytes: the owner must stay within the uploads and bytes quotas."""
    use = usage_of(store, owner)
    if use.uploads >= policy.max_uploads_per_user:
        raise ResourceExhaustedError(
            f"quota max_uploads_per_user: caller {owner!r} keeps {use.uploads} uploads, the limit is "
            f"{policy.max_uploads_per_user}. Unused uploads expire after {policy.upload_max_age_s:.0f} s."
        )
    if use.bytes + incoming_bytes > policy.max_bytes_per_user:
        raise ResourceExhaustedError(
            f"quota max_bytes_per_user: caller {owner!r} keeps {use.bytes} bytes on the server and this upload "
            f"adds {incoming_bytes}, the limit is {policy.max_bytes_per_user}."
        )


def check_adapter_upload(policy: ResourcePolicy, store: Store, owner: str, incoming_bytes: int) -> None:
    """A new adapter of incoming_bytes: the owner must stay within the bytes quota (adapters are not
    plates: max_uploads_per_user does not count them)."""
    use = usage_of(store, owner)
    if use.bytes + incoming_bytes > policy.max_bytes_per_user:
        raise ResourceExhaustedError(
            f"quota max_bytes_per_user: caller {owner!r} keeps {use.bytes} bytes on the server and this adapter "
            f"adds {incoming_bytes}, the limit is {policy.max_bytes_per_user}."
        )
