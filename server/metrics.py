"""Prometheus metrics of the server, in a registry of their own (several servers can live in one test
process), served over HTTP on an optional port (`ttt-studio serve --metrics-port 9464`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_JOB_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_length = Gauge("ttt_queue_length", "Jobs waiting in the queue", ["priority"], registry=r)
        self.jobs_submitted = Counter(
            "ttt_jobs_submitted", "Jobs accepted by SubmitShot", ["priority"], registry=r
        )
        self.jobs_finished = Counter(
            "ttt_jobs_finished", "Jobs that reached a final state", ["state"], registry=r
        )
        self.job_failures = Counter("ttt_job_failures", "Failed jobs by error type", ["reason"], registry=r)
        self.job_duration = Histogram(
            "ttt_job_duration_seconds", "Time per phase of a job", ["phase"], buckets=_JOB_BUCKETS, registry=r
        )
        self.step_duration = Histogram(
            "ttt_step_duration_seconds", "Wall time of one denoising step", buckets=_STEP_BUCKETS, registry=r
        )
        self.decode_calls = Counter(
            "ttt_decode_calls", "VAE decode passes (one per job run that had frames to decode)", registry=r
        )
        self.frames_written = Counter(
            "ttt_frames_written", "EXR frames written to the frame store", registry=r
        )
        self.gpu_memory = Gauge(
            "ttt_gpu_memory_bytes", "GPU memory allocated by torch", ["device"], registry=r
        )
        self._http: Any = None

    def track_queue(self, lengths: Callable[[], dict[Any, int]], names: dict[Any, str]) -> None:
        """Read the queue length at scrape time (always right, even after a restart)."""
        for key, name in names.items():
            self.queue_length.labels(priority=name).set_function(lambda key=key: lengths().get(key, 0))

    def track_gpu_memory(self, devices: list[str]) -> None:
        """A gauge per CUDA device, read from torch at scrape time."""
        import torch

        for device in devices:
            if device.startswith("cuda"):
                index = torch.device(device).index or 0
                self.gpu_memory.labels(device=device).set_function(
                    lambda index=index: float(torch.cuda.memory_allocated(index))
                )

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._http = server
        bound = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", address, bound)
        return bound

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http = None
