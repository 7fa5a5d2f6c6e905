"""The server's LoRA adapters: the adapters folder, uploads, who may use which, and applying them per job.

Two sources: the folder given to `ttt-studio serve --adapters DIR` (each entry a self-contained
.safetensors file or an adapter folder, named by its stem; published, owner ""), read and checked against
the model once at start, and adapters uploaded with UploadAdapter (stored in <data-dir>/adapters/ under
their content hash, recorded in the store's `adapters` table; the uploader's own unless an admin token
publishes them). The one rule: every adapter is checked against the loaded model (shapes, key names)
before anyone can name it, and a name resolves to at most one adapter for every caller (the store refuses
a name that would make two).

A job records each adapter's name, scale and sha256 (the file's content hash) at submit. The worker looks
the adapter up by that hash, not by name: a later upload or folder change cannot change what a queued job
runs. If no adapter with that hash is on the server when the job runs (the folder entry was removed or
replaced and the server restarted), the job fails with a message naming the adapter and its hash; it is
never run with another version.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.config import Limits
from server.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, PermissionDeniedError
from server.frames import FrameStore, sha256_file
from server.jobs import AdapterRecord, UploadChunk
from server.store import Store
from server.uploads import receive_chunks

log = logging.getLogger(__name__)

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ADAPTER_SUFFIX = ".safetensors"
UPLOAD_DIR = "adapters"
CACHE_SIZE = 8
"""Loaded adapters kept in memory per registry (small LoRAs; a job with a cached one reads no file)."""


def check_adapter_name(name: str, field: str) -> str:
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise InvalidArgumentError(
            f"{field} {name!r} must match {ADAPTER_NAME.pattern} (letters, digits, _ . -; at most 64)"
        )
    return name


def _record(
    adapter: Any, name: str, owner: str, published: bool, sha256: str, size: int, path: str
) -> AdapterRecord:
    config = adapter.config
    return AdapterRecord(
        name=name,
        owner=owner,
        published=published,
        sha256=sha256,
        size=size,
        path=path,
        kind=str(getattr(config, "kind", "") or ""),
        trigger=str(getattr(config, "trigger", "") or ""),
        rank=int(getattr(config, "rank", 0) or 0),
        alpha=float(getattr(config, "alpha", 0.0) or 0.0),
        target_modules=tuple(str(m) for m in (getattr(config, "target_modules", ()) or ())),
        description=str(getattr(config, "description", "") or ""),
        created=time.time(),
    )


def _load_checked(path: Path, transformer: Any, what: str, vae: Any = None) -> Any:
    """load_adapter + check_adapter (its decoder LoRA against `vae` when given); InvalidArgumentError naming
    `what` and the first bad key otherwise."""
    import torch

    from ttt_engine.adapters import AdapterError, check_adapter, load_adapter

    try:
        adapter = load_adapter(path)
        check_adapter(adapter, transformer, vae)
        bad = next((key for key, tensor in adapter.state.items() if not torch.isfinite(tensor).all()), None)
        if bad is not None:
            raise AdapterError(f"{what}: {bad} holds NaN or infinite values")
    except AdapterError as exc:
        message = str(exc).replace(str(path), what)
        raise InvalidArgumentError(message if what in message else f"{what}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a file that is not one
        raise InvalidArgumentError(
            f"{what}: not a readable adapter (one .safetensors file with its config in the metadata): "
            f"{type(exc).__name__}: {str(exc).replace(str(path), what)}"
        ) from None
    return adapter


class AdapterRegistry:
    """Adapters by caller and by content hash. folder: the published adapters folder (or None).
    transformer, vae: the loaded model's, that every adapter (and its decoder LoRA) is checked against."""

    def __init__(
        self, store: Store, frames: FrameStore, folder: Path | None, transformer: Any, vae: Any = None
    ) -> None:
        self.store = store
        self.frames = frames
        self.transformer = transformer
        self.vae = vae
        self.upload_dir = frames.root / UPLOAD_DIR
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self._folder: dict[str, AdapterRecord] = {}
        self._cache: dict[str, Any] = {}  # sha256 -> loaded Adapter, most recent last
        self._lock = threading.Lock()
        if folder is not None:
            self._read_folder(Path(folder))

    def _read_folder(self, folder: Path) -> None:
        """Every entry of the adapters folder, checked against the model; a bad entry stops the start
        (ValueError naming it): the folder is the administrator's, so a typo must not pass unnoticed."""
        if not folder.is_dir():
            raise ValueError(f"--adapters {folder}: not a folder")
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            name = entry.name[: -len(ADAPTER_SUFFIX)] if entry.name.endswith(ADAPTER_SUFFIX) else entry.name
            if not (entry.is_dir() or entry.name.endswith(ADAPTER_SUFFIX)):
                raise ValueError(
                    f"--adapters {folder}: {entry.name} is neither an adapter folder nor a {ADAPTER_SUFFIX} file"
                )
            if not ADAPTER_NAME.match(name):
                raise ValueError(
                    f"--adapters {folder}: {entry.name}: the name must match {ADAPTER_NAME.pattern}"
                )
            try:
                adapter = _load_checked(entry, self.transformer, f"adapter {entry.name}", self.vae)
            except InvalidArgumentError as exc:
                raise ValueError(f"--adapters {folder}: {exc}") from None
            size = Path(adapter.path).stat().st_size  # the weights file: the hash is of its bytes
            record = _record(adapter, name, "", True, str(adapter.sha256), size, str(entry.resolve()))
            self._folder[name] = record
            self._remember(record.sha256, adapter)
        uploaded = self.store.adapter_owners()
        clash = {name: uploaded[name] for name in self._folder if name in uploaded}
        if clash:  # every name must resolve to one adapter for every caller
            raise ValueError(
                f"--adapters {folder}: {sorted(clash)} are also names of adapters uploaded by {clash}; rename "
                "the folder entries"
            )
        log.info("%d adapter(s) from %s", len(self._folder), folder)

    # ------------------------------------------------------------------ lookups

    def usable(self, caller: str) -> list[AdapterRecord]:
        """What `caller` may name: the folder's, the published uploads and their own, by name."""
        records = list(self._folder.values()) + self.store.adapters_for(caller)
        return sorted(records, key=lambda r: r.name)

    def resolve(self, caller: str, name: str, field: str) -> AdapterRecord:
        """The adapter `name` as `caller` sees it; NotFoundError naming `field` and the name otherwise
        (another caller's private adapter looks exactly like a missing one)."""
        check_adapter_name(name, field)
        for record in self.usable(caller):
            if record.name == name:
                return record
        raise NotFoundError(
            f"{field}: no adapter {name!r} for caller {caller!r}; GetServerInfo.adapters lists the usable ones "
            "(upload one with UploadAdapter)"
        )

    def resolve_refs(
        self, caller: str, refs: Iterable[tuple[str, float]], limits: Limits
    ) -> tuple[dict[str, Any], ...]:
        """A request's (name, scale) pairs as the job records them: {"name", "scale", "sha256"} each.
        Checks the count (max_adapters_per_job), each scale (|scale| <= max_adapter_scale, finite), that
        no name repeats and that each name resolves for the caller."""
        refs = list(refs)
        if len(refs) > limits.max_adapters_per_job:
            raise InvalidArgumentError(
                f"adapters: {len(refs)} given; the server limit is max_adapters_per_job={limits.max_adapters_per_job}"
            )
        out: list[dict[str, Any]] = []
        for i, (name, scale) in enumerate(refs):
            field = f"adapters[{i}]"
            if not math.isfinite(scale) or abs(scale) > limits.max_adapter_scale:
                raise InvalidArgumentError(
                    f"{field}.scale={scale} is outside the server's range: |scale| <= max_adapter_scale="
                    f"{limits.max_adapter_scale}"
                )
            record = self.resolve(caller, name, f"{field}.name")
            if any(o["name"] == name for o in out):
                raise InvalidArgumentError(f"{field}.name {name!r} is named twice; give each adapter once")
            out.append({"name": name, "scale": float(scale), "sha256": record.sha256})
        return tuple(out)

    def _path_of(self, record: AdapterRecord) -> Path:
        """The folder's records hold absolute paths; uploads' are relative to the data dir."""
        return Path(record.path) if record.owner == "" else self.frames.root / record.path

    def load(self, name: str, sha256: str) -> Any:
        """The loaded adapter whose content hash is sha256 (cached); FileNotFoundError naming the adapter
        when none is on the server any more (see the module docstring)."""
        from ttt_engine.adapters import load_adapter

        with self._lock:
            cached = self._cache.get(sha256)
            if cached is not None:
                self._remember(sha256, cached)
                return cached
        record = next(
            (r for r in self._folder.values() if r.sha256 == sha256), None
        ) or self.store.adapter_by_sha256(sha256)
        if record is None:
            raise FileNotFoundError(
                f"adapter {name!r} (sha256 {sha256}) is no longer on this server (removed or replaced after the "
                "job was submitted); submit the job again to use the adapter now published under that name"
            )
        adapter = load_adapter(self._path_of(record))
        if str(adapter.sha256) != sha256:
            raise FileNotFoundError(
                f"adapter {name!r}: the file {record.name} now has sha256 {adapter.sha256}, the job was submitted "
                f"with {sha256}; submit the job again"
            )
        with self._lock:
            self._remember(sha256, adapter)
        return adapter

    def _remember(self, sha256: str, adapter: Any) -> None:
        self._cache.pop(sha256, None)
        self._cache[sha256] = adapter
        while len(self._cache) > CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))

    # ------------------------------------------------------------------ upload

    def receive(
        self,
        owner: str,
        chunks: Iterable[UploadChunk],
        limits: Limits,
        may_publish: bool,
        admit: Callable[[int], None] = lambda total_bytes: None,
    ) -> AdapterRecord:
        """Store an uploaded adapter for `owner` (published when the header asks and may_publish).

        The name is checked from the header before any data; the size against max_adapter_bytes (and
        admit(): quotas) from the header too; the sha256 at the end; then the file is loaded and checked
        against the model (INVALID_ARGUMENT naming the first bad key) before it is recorded."""
        tmp_dir = self.frames.temp_path()  # the file inside is named after the adapter (load_adapter's name)
        tmp_dir.mkdir()
        tmp = tmp_dir / f"upload{ADAPTER_SUFFIX}"

        def checked(stream: Iterable[UploadChunk]) -> Iterator[UploadChunk]:
            for chunk in stream:
                if chunk.sequence == 0 and chunk.has_header:
                    check_adapter_name(chunk.display_name, "header.name")
                    if any(r.name == chunk.display_name for r in self.usable(owner)):  # before any data
                        raise AlreadyExistsError(
                            f"adapter name {chunk.display_name!r} is already one you can use "
                            "(GetServerInfo.adapters); upload it under another name"
                        )
                    if chunk.publish and not may_publish:
                        raise PermissionDeniedError(
                            f"adapter upload {chunk.display_name!r}: header.publish needs an admin token; "
                            "upload it without publish to keep it for yourself"
                        )
                yield chunk

        try:
            header, size, sha = receive_chunks(
                "adapter upload", checked(chunks), tmp, limits.max_adapter_bytes, "max_adapter_bytes", admit
            )
            name = header.display_name
            tmp = tmp.rename(tmp_dir / f"{name}{ADAPTER_SUFFIX}")
            adapter = _load_checked(tmp, self.transformer, f"adapter {name!r}", self.vae)
            if str(adapter.sha256) != sha:
                raise RuntimeError(
                    f"adapter {name!r}: load_adapter hashed {adapter.sha256}, the bytes are {sha}"
                )
            admit(size)
            final = self.upload_dir / f"{sha}{ADAPTER_SUFFIX}"
            if not final.is_file() or sha256_file(final) != sha:
                self.frames.commit(tmp, final)
            relpath = str(final.relative_to(self.frames.root))
            record = _record(adapter, name, owner, bool(header.publish), sha, size, relpath)
            self.store.add_adapter(record, reserved=lambda n: n in self._folder)
            with self._lock:
                self._remember(sha, adapter)
            log.info(
                "adapter %s stored for %s (%d bytes, %s)",
                name,
                owner,
                size,
                "published" if record.published else "private",
            )
            return record
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)


@contextmanager
def applied_for(
    pipe: Any, registry: AdapterRegistry | None, adapters: Iterable[dict[str, Any]]
) -> Iterator[None]:
    """The job's adapters applied to pipe.transformer and pipe.vae's decoder for the block
    (ttt_engine.adapters.applied restores the base exactly on exit); nothing to do for a job without
    adapters. The worker enters it for sampling and again for decoding."""
    adapters = list(adapters)
    if not adapters:
        yield
        return
    if registry is None:
        raise RuntimeError("the job names adapters but this worker has no adapter registry")
    from ttt_engine.adapters import applied

    pairs = [(registry.load(a["name"], a["sha256"]), float(a["scale"])) for a in adapters]
    with applied(pipe.transformer, pairs, vae=getattr(pipe, "vae", None)):
        yield


def adapter_attributes(adapters: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The EXR attribute recording a job's adapters, as `generate --adapter` writes it
    (ttt_engine.adapters.record.ATTRIBUTE); none for a job without."""
    import json

    from ttt_engine.adapters.record import ATTRIBUTE

    adapters = [{"name": a["name"], "scale": float(a["scale"]), "sha256": a["sha256"]} for a in adapters]
    return {ATTRIBUTE: json.dumps(adapters, sort_keys=True)} if adapters else {}
