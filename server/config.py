"""Server configuration: frozen dataclasses, built from the command line by server.main."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from server.limits import InputLimits
from server.resources import ResourcePolicy

DEFAULT_ADDRESS = "127.0.0.1:50051"
MiB = 1 << 20


def default_data_dir() -> Path:
    """Per-user data folder: $XDG_DATA_HOME/ttt-studio, else ~/.local/share/ttt-studio."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ttt-studio"


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port). Raises ValueError naming the address."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"address must be 'host:port', got {address!r}")
    host, _, port_text = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {address!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535 or not host:
        raise ValueError(f"address {address!r}: expected host:port with port 0..65535")
    return host, port


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (what --insecure-no-auth may listen on)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Answered with INVALID_ARGUMENT / RESOURCE_EXHAUSTED naming the limit."""

    max_frames: int = 4096  # a 63-s shot at 60 fps delivers 3,780 frames
    max_segments: int = 21
    max_height: int = 1080
    max_width: int = 1920
    max_steps: int = 200
    max_message_bytes: int = 8 * MiB
    max_upload_bytes: int = 512 * MiB
    max_queued_jobs_per_caller: int = 16
    max_adapter_bytes: int = 1024 * MiB  # a rank-128 LoRA of CogVideoX-5B's attention is about 0.5 GB
    max_adapters_per_job: int = 4
    max_adapter_scale: int = 4  # |AdapterRef.scale|
    max_takes: int = 8  # parameters.takes
    input: InputLimits = field(default_factory=InputLimits)  # sizes, depths and ranges inside requests

    def __post_init__(self) -> None:
        if not isinstance(self.input, InputLimits):
            raise ValueError(f"Limits.input: expected an InputLimits, got {type(self.input).__name__}")
        for name, value in vars(self).items():
            if name == "input":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name}: expected a positive int, got {value!r}")
        if self.max_message_bytes < 64 * 1024:
            raise ValueError(f"Limits.max_message_bytes: expected >= 65536, got {self.max_message_bytes}")


RAY_LOCAL = "local"
"""--ray local: start a Ray instance on this machine instead of joining a cluster."""


@dataclass(frozen=True)
class RayPoolConfig:
    """`serve --ray ADDRESS`: sampling and decoding on a pool of Ray actors (server.ray_pool).

    address: RAY_LOCAL or a Ray address ("auto", "10.0.0.5:6379", "ray://head:10001"). workers: the pool
    size, None = follow the cluster (one worker per GPU, or per `threads` CPUs on a cluster without GPUs);
    changed while serving through <data_dir>/ray_workers (`ttt-studio pool --workers N|auto`). threads:
    torch threads (and Ray CPUs) of a CPU worker. device: "auto" (GPU workers when the cluster has GPUs),
    "gpu" or "cpu". max_worker_deaths: a job whose worker process died this many times while running it
    is failed instead of requeued again. start_timeout_s: how long a new worker may take to load its model
    before it is reported as pending (it keeps waiting for cluster resources).
    """

    address: str = RAY_LOCAL
    workers: int | None = None
    threads: int = 1
    device: str = "auto"
    max_worker_deaths: int = 3
    namespace: str = "ttt-studio"
    poll_s: float = 1.0
    start_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ValueError(f"--ray: expected 'local' or a Ray cluster address, got {self.address!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 0):
            raise ValueError(f"--ray-workers: expected a count >= 0 or 'auto', got {self.workers!r}")
        if self.threads < 1:
            raise ValueError(f"--ray-threads: expected >= 1, got {self.threads}")
        if self.device not in ("auto", "gpu", "cpu"):
            raise ValueError(f"--ray-device: expected auto, gpu or cpu, got {self.device!r}")
        if self.max_worker_deaths < 1:
            raise ValueError(f"--ray-max-worker-deaths: expected >= 1, got {self.max_worker_deaths}")
        if self.poll_s <= 0 or self.start_timeout_s <= 0:
            raise ValueError(
                f"RayPoolConfig: poll_s and start_timeout_s must be > 0, got {self.poll_s}, {self.start_timeout_s}"
            )


@dataclass(frozen=True)
class ServerConfig:
    """Everything `ttt-studio serve` can set.

    model: a model folder (VideoPipeline.from_folder) or None with tiny_random=True (tests and demos).
    adapters_dir: a folder of LoRA adapters every user may use (server.adapters), or None.
    workers: None = one per GPU, or one CPU worker when there is no GPU. token_file: hashed tokens (server.tokens);
    None with insecure_no_auth=True (loopback only). insecure: allow plaintext (no TLS) on a non-loopback
    address, where tokens would cross the network in clear. resources: quotas and retention. debug_*: fault-injection pauses used by tests to
    put a kill or a cancel at a known point; zero in production. draft_step_divisor, min_draft_steps: the
    draft a PRIORITY_PREVIEW job makes first when its request leaves draft_steps unset
    (default_draft_steps); draft_unguided_steps: how many of the draft's first steps run without
    guidance (one forward instead of two; the first preview is the first step's), recorded on the job and
    in the draft's frames. ray: run jobs on a Ray pool (None: the in-process workers).
    """

    address: str = DEFAULT_ADDRESS
    data_dir: Path = field(default_factory=default_data_dir)
    model: Path | None = None
    adapters_dir: Path | None = None
    tiny_random: bool = False
    seed: int = 0
    token_file: Path | None = None
    insecure_no_auth: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    limits: Limits = field(default_factory=Limits)
    resources: ResourcePolicy = field(default_factory=ResourcePolicy)
    workers: int | None = None
    rpc_threads: int = 64
    max_concurrent_rpcs: int = 256
    chunk_bytes: int = 1 * MiB
    preview_max_side: int = 160
    colour_interop_id: str = "lin_rec709_scene"
    matte_feather: float = 2.0  # an element's soft edge (Gaussian sigma, output pixels) when unset
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    grace_s: float = 10.0
    log_json: bool = True
    log_level: str = "INFO"
    debug_step_delay_s: float = 0.0
    debug_segment_delay_s: float = 0.0
    draft_step_divisor: int = 4  # a preview job's default draft: max(min_draft_steps, steps // divisor)
    min_draft_steps: int = 4
    draft_unguided_steps: int = 1  # docs/benchmarks.md, "Monitor": the first preview after one forward
    ray: RayPoolConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.draft_step_divisor < 1 or self.min_draft_steps < 1:
            raise ValueError(
                f"ServerConfig: draft_step_divisor and min_draft_steps must be >= 1, got "
                f"{self.draft_step_divisor} and {self.min_draft_steps}"
            )
        if self.draft_unguided_steps < 0:
            raise ValueError(
                f"ServerConfig.draft_unguided_steps: expected >= 0, got {self.draft_unguided_steps}"
            )
        host, _ = split_address(self.address)
        if self.model is not None and self.tiny_random:
            raise ValueError("ServerConfig: give either model or tiny_random, not both")
        from ttt_engine.conform import resolve_colourspace  # OCIO knows the default delivery space

        object.__setattr__(self, "colour_interop_id", resolve_colourspace(self.colour_interop_id).interop_id)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                f"ServerConfig: TLS needs both a certificate and a key, got cert={self.tls_cert} key={self.tls_key}"
            )
        if self.insecure_no_auth:
            if not is_loopback(host):
                raise ValueError(
                    f"--insecure-no-auth listens only on loopback (127.0.0.1, ::1, localhost); refusing {host!r}. "
                    "Use a token file (--token-file) to listen on other addresses."
                )
            if self.token_file is not None:
                raise ValueError("ServerConfig: give either token_file or insecure_no_auth, not both")
        elif self.token_file is None:
            raise ValueError(
                "ServerConfig: no token file. Pass --token-file FILE (made by `ttt-studio token add USER`), or "
                "--insecure-no-auth to listen without tokens on loopback only."
            )
        if not self.tls and not is_loopback(host) and not self.insecure:
            raise ValueError(
                f"refusing plaintext on {host!r}: bearer tokens would cross the network in clear. Give "
                "--tls-cert and --tls-key, listen on loopback, or pass --insecure if the network is trusted."
            )
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"ServerConfig.workers: expected >= 1 or None, got {self.workers}")
        if self.chunk_bytes < 1024 or self.chunk_bytes > self.limits.max_message_bytes - 16 * 1024:
            raise ValueError(
                f"ServerConfig.chunk_bytes: expected 1024..max_message_bytes-16384 "
                f"({self.limits.max_message_bytes - 16 * 1024}), got {self.chunk_bytes}"
            )
        if not 0 <= self.matte_feather < float("inf"):
            raise ValueError(f"ServerConfig.matte_feather: expected pixels >= 0, got {self.matte_feather}")
        if self.rpc_threads < 4:
            raise ValueError(f"ServerConfig.rpc_threads: expected >= 4, got {self.rpc_threads}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def default_draft_steps(self, steps: int) -> int:
        """The draft of a preview job of `steps` steps whose request leaves draft_steps unset."""
        return max(self.min_draft_steps, steps // self.draft_step_divisor)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "studio.sqlite3"
