"""The monitor's settings, in one frozen dataclass built by `ttt-studio monitor` (server/cli/monitor.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.config import is_loopback, split_address

DEFAULT_LISTEN = "127.0.0.1:8765"
JPEG_MAX_SIDE = 65_500
"""libjpeg refuses images with a side above 65,535 pixels: a contact sheet stays under this."""


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the monitor can set.

    server: the ttt-studio gRPC server (host:port). tls / tls_ca: how the monitor connects to it.
    listen: where the page is served. https_cert / https_key: serve the page over HTTPS (a token typed on
    a tablet crosses the set's network; plain HTTP is refused off loopback unless insecure_http).
    """

    server: str
    listen: str = DEFAULT_LISTEN
    tls: bool = False
    tls_ca: Path | None = None
    https_cert: Path | None = None
    https_key: Path | None = None
    insecure_http: bool = False
    session_idle_s: float = 16 * 3600.0
    """A sign-in lasts a shooting day without activity; then the page asks for the token again."""
    max_sessions: int = 256
    """Signed-in pages kept at once (the oldest is signed out beyond this)."""
    poll_interval_s: float = 0.25
    """How often the page's stream asks ListJobs for the queue: a new job's previews start at most this late."""
    heartbeat_s: float = 15.0
    """A comment line on an idle event stream, so proxies and tablets keep it open."""
    list_limit: int = 50
    """Jobs the queue shows (newest first)."""
    rpc_timeout_s: float = 30.0
    sheet_frame_height: int = 180
    """Height of one frame of a take's playback sheet (frames are scaled down to this, never up)."""
    sheet_max_width: int = 8192
    """Width of a playback sheet: frames are laid out in rows this wide."""
    sheet_cache: int = 32
    """Playback sheets kept in memory (the least recently used go first)."""
    sheet_jpeg_quality: int = 90
    max_message_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        split_address(self.server)
        host, _ = split_address(self.listen)
        if (self.https_cert is None) != (self.https_key is None):
            raise ValueError(
                f"MonitorConfig: HTTPS needs both --https-cert and --https-key, got cert={self.https_cert} "
                f"key={self.https_key}"
            )
        if not self.https and not is_loopback(host) and not self.insecure_http:
            raise ValueError(
                f"the monitor would serve plain HTTP on {host!r}, where tokens typed on a tablet cross the "
                "network in clear: pass --https-cert and --https-key, or --insecure-http on a closed set network"
            )
        for name in ("session_idle_s", "poll_interval_s", "heartbeat_s", "rpc_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MonitorConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_sessions", "list_limit", "sheet_frame_height", "sheet_max_width", "sheet_cache"):
            if getattr(self, name) < 1:
                raise ValueError(f"MonitorConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 1 <= self.sheet_jpeg_quality <= 95:
            raise ValueError(f"MonitorConfig.sheet_jpeg_quality must be 1..95, got {self.sheet_jpeg_quality}")
        if self.sheet_frame_height > JPEG_MAX_SIDE or self.sheet_max_width > JPEG_MAX_SIDE:
            raise ValueError(f"MonitorConfig: sheet sides must be at most {JPEG_MAX_SIDE} pixels")

    @property
    def https(self) -> bool:
        return self.https_cert is not None
