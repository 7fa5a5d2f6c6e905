"""Build and run the ttt-studio gRPC server.

    python -m server.main --tiny-random --insecure-no-auth            # a demo on 127.0.0.1:50051
    python -m server.main --model /models/ttt --token-file tokens.txt --address 0.0.0.0:50051 \
        --tls-cert cert.pem --tls-key key.pem --metrics-port 9464

The server: our TTTStudio service (server.service), grpc.health.v1 health checking, reflection, a
bearer-token interceptor, message size limits on both directions, TLS when a cert/key pair is given,
and a graceful stop on SIGTERM/SIGINT (new calls refused, streams ended, a running job interrupted at
its next step and requeued, so the next start resumes it). Once serving, it writes
<data_dir>/server.json with its pid and bound port (tests and the CLI read it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from server.config import (
    DEFAULT_ADDRESS,
    Limits,
    RayPoolConfig,
    ServerConfig,
    default_data_dir,
    is_loopback,
    split_address,
)
from server.limits import parse_input_limits
from server.resources import ResourcePolicy

log = logging.getLogger(__name__)

SERVICE_NAME = "ttt_studio.v1.TTTStudio"


def site_model_dir(data_dir: Path) -> Path:
    """A studio's own model for this server, used before the shipped default model when present."""
    return Path(data_dir) / "models" / "default"


def resolve_model(config: ServerConfig) -> Path:
    """--model, else <data-dir>/models/default, else the model shipped in ttt_engine/default_model/."""
    from ttt_engine.default_model import default_model_dir

    if config.model is not None:
        return Path(config.model)
    site = site_model_dir(config.data_dir)
    if site.is_dir():
        return site
    return default_model_dir()


def devices_for(workers: int | None) -> list[str]:
    """One device per worker: every GPU once, or the CPU (workers > 1 on CPU share its cores)."""
    import torch

    if torch.cuda.is_available():
        gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if workers is not None and workers > len(gpus):
            raise ValueError(f"--workers {workers}: this machine has {len(gpus)} GPU(s); one worker per GPU")
        return gpus[: workers or len(gpus)]
    return ["cpu"] * (workers or 1)


def load_pipelines(config: ServerConfig, devices: list[str] | None = None) -> list[tuple[str, Any]]:
    """A pipeline per worker device (default: devices_for(config.workers)), from --tiny-random or
    resolve_model's folder."""
    from ttt_engine.default_model import DefaultModelMissing
    from ttt_engine.pipeline import VideoPipeline

    model = None
    if not config.tiny_random:
        try:
            model = resolve_model(config)
        except DefaultModelMissing as e:
            raise ValueError(f"no model: {e}") from e
    pipelines = []
    for device in devices or devices_for(config.workers):
        if config.tiny_random:
            pipe = VideoPipeline.tiny_random(seed=config.seed, device=device)
        else:
            pipe = VideoPipeline.from_folder(model, device=device)
        pipelines.append((device, pipe))
        log.info("pipeline on %s: %s", device, pipe.source)
    return pipelines


class StudioServer:
    """The gRPC server around an Engine. start() / stop(); port is the bound port."""

    def __init__(self, config: ServerConfig, pipelines: list[tuple[str, Any]] | None = None) -> None:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
        from server.auth import Authenticator, make_interceptor
        from server.engine import Engine
        from server.metrics import Metrics
        from server.service import StudioServicer, add_studio_servicer

        self.config = config
        self.metrics = Metrics()
        self.auth = Authenticator(config.token_file)
        if config.ray is not None:  # jobs run on a Ray pool; this process validates against a CPU copy
            from server.ray_pool import RayEngine

            pipes = pipelines if pipelines is not None else load_pipelines(config, devices=["cpu"])
            self.engine: Engine = RayEngine(config, pipes, self.metrics)
        else:
            self.engine = Engine(
                config, pipelines if pipelines is not None else load_pipelines(config), self.metrics
            )
        limit = config.limits.max_message_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.keepalive_time_ms", 60_000),  # ping idle clients so dead streams end
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),  # clients may ping every 10 s
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="rpc"),
            interceptors=[make_interceptor(self.auth)],
            options=options,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        self.engine.quota_exempt = self.auth.is_admin_user
        self.engine.is_admin = self.auth.is_admin_user
        add_studio_servicer(StudioServicer(self.engine, self.auth), self._server)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._health_pb2 = health_pb2
        names = (
            pb.DESCRIPTOR.services_by_name["TTTStudio"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, self._server)
        if config.tls:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
            )
            self.port = self._server.add_secure_port(config.address, credentials)
        else:
            if not is_loopback(split_address(config.address)[0]):
                log.warning("plaintext on %s (--insecure): tokens cross the network in clear", config.address)
            self.port = self._server.add_insecure_port(config.address)
        if self.port == 0:
            raise RuntimeError(f"could not listen on {config.address} (address in use or not available)")
        self.metrics_port: int | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        host, _ = split_address(self.config.address)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> None:
        requeued = self.engine.start()
        self._server.start()
        serving = self._health_pb2.HealthCheckResponse.SERVING
        self._health.set("", serving)
        self._health.set(SERVICE_NAME, serving)
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics_port, self.config.metrics_address)
        self._write_info()
        log.info(
            "serving %s on %s (%s, auth %s, %s worker(s), %d job(s) resumed)",
            SERVICE_NAME,
            self.address,
            "TLS" if self.config.tls else "plaintext",
            "tokens" if self.auth.enabled else "OFF (loopback only)",
            len(self.engine.workers) if self.config.ray is None else f"Ray pool ({self.config.ray.address})",
            len(requeued),
        )

    def _write_info(self) -> None:
        info = {
            "pid": os.getpid(),
            "address": self.address,
            "port": self.port,
            "tls": self.config.tls,
            "metrics_port": self.metrics_port,
            "started": time.time(),
        }
        path = self.config.data_dir / "server.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING, calls refused, streams ended, the running job requeued."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_s if grace is None else grace
        log.info("stopping (grace %.1f s)", grace)
        self._health.enter_graceful_shutdown()
        self.engine.request_stop()
        done = self._server.stop(grace)
        self.engine.stop(timeout=grace + 30)
        done.wait(grace + 5)
        self.metrics.stop()
        self.engine.close()
        (self.config.data_dir / "server.json").unlink(missing_ok=True)
        log.info("stopped")

    def wait(self) -> None:
        self._server.wait_for_termination()


# ---------------------------------------------------------------------- command line


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ttt-studio serve` / `python -m server.main`."""
    d = Limits()
    add = parser.add_argument
    add(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"host:port to listen on (default {DEFAULT_ADDRESS}; port 0 picks one)",
    )
    add(
        "--data-dir",
        type=Path,
        default=None,
        help=f"jobs, frames and the database (default {default_data_dir()})",
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model folder (default: <data-dir>/models/default if it exists, else the shipped default model)",
    )
    model.add_argument("--tiny-random", action="store_true", help="a tiny random model (tests, demos)")
    add(
        "--adapters",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of LoRA adapters (.safetensors files or adapter folders) every user may use, by name",
    )
    add("--seed", type=int, default=0, help="weights seed of --tiny-random")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="hashed token file written by `ttt-studio token add` (default: <data-dir>/tokens when it exists)",
    )
    auth.add_argument(
        "--insecure-no-auth", action="store_true", help="no tokens; only allowed on a loopback address"
    )
    add(
        "--tls-cert", type=Path, default=None, help="PEM certificate chain (TLS on when given with --tls-key)"
    )
    add("--tls-key", type=Path, default=None, help="PEM private key")
    add(
        "--insecure",
        action="store_true",
        help="allow plaintext (no TLS) on a non-loopback address: tokens cross the network in clear",
    )
    add_resource_arguments(parser)
    add("--workers", type=int, default=None, help="workers (default: one per GPU, or 1 on CPU)")
    add(
        "--draft-unguided-steps",
        type=int,
        default=ServerConfig.draft_unguided_steps,
        help="a preview job's draft runs its first N steps without guidance, one forward each (default "
        f"{ServerConfig.draft_unguided_steps}: the first preview after one forward; 0: every step guided)",
    )
    add_ray_arguments(parser)
    add("--max-frames", type=int, default=d.max_frames)
    add("--max-segments", type=int, default=d.max_segments)
    add("--max-height", type=int, default=d.max_height)
    add("--max-width", type=int, default=d.max_width)
    add("--max-steps", type=int, default=d.max_steps)
    add("--max-message-bytes", type=int, default=d.max_message_bytes)
    add("--max-upload-bytes", type=int, default=d.max_upload_bytes)
    add("--max-queued-per-caller", type=int, default=d.max_queued_jobs_per_caller)
    add("--max-adapter-bytes", type=int, default=d.max_adapter_bytes, help="one uploaded adapter file")
    add("--max-adapters-per-job", type=int, default=d.max_adapters_per_job)
    add("--max-adapter-scale", type=int, default=d.max_adapter_scale, help="|scale| of an adapter in a job")
    add(
        "--input-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a bound on request contents (server.limits.InputLimits, e.g. max_otio_depth=32); repeatable",
    )
    add(
        "--colorspace",
        default=ServerConfig.colour_interop_id,
        help="colour space of delivered frames when a request names none (an EXR colorInteropID such as "
        "lin_ap1_scene for ACEScg, or an OCIO studio-config name; default %(default)s)",
    )
    add("--rpc-threads", type=int, default=64, help="threads serving calls (each open stream holds one)")
    add("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port (0 picks one)")
    add("--metrics-address", default="127.0.0.1")
    add("--torch-threads", type=int, default=None, help="torch CPU threads")
    add("--grace", type=float, default=10.0, help="seconds to let calls finish on SIGTERM")
    add("--log-format", choices=("json", "text"), default="json")
    add("--log-level", default="INFO")
    add("--debug-step-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: slow each step
    add(
        "--debug-segment-delay", type=float, default=0.0, help=argparse.SUPPRESS
    )  # tests: pause after a segment


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of a server whose jobs run on a Ray pool (server.ray_pool, docs/scaling.md)."""
    r = RayPoolConfig()
    add = parser.add_argument
    add(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run jobs on a pool of Ray workers: 'local' starts Ray here, else a cluster address "
        "('auto', HOST:6379, ray://HOST:10001); default: in-process workers",
    )
    add(
        "--ray-workers",
        default="auto",
        metavar="N|auto",
        help="pool size (default auto: one worker per GPU of the cluster, or per --ray-threads CPUs); "
        "change it while serving with `ttt-studio pool --workers N`",
    )
    add("--ray-threads", type=int, default=r.threads, help="torch threads (and Ray CPUs) of a CPU worker")
    add(
        "--ray-device",
        choices=("auto", "gpu", "cpu"),
        default=r.device,
        help="worker device (auto: GPU if any)",
    )
    add(
        "--ray-max-worker-deaths",
        type=int,
        default=r.max_worker_deaths,
        help="a job whose worker died this many times while running it is failed, not requeued",
    )


def ray_from_args(args: argparse.Namespace) -> RayPoolConfig | None:
    if args.ray is None:
        return None
    workers = args.ray_workers
    if workers != "auto":
        try:
            workers = int(workers)
        except ValueError:
            raise ValueError(f"--ray-workers: expected a number or 'auto', got {workers!r}") from None
    return RayPoolConfig(
        address=args.ray,
        workers=None if workers == "auto" else workers,
        threads=args.ray_threads,
        device=args.ray_device,
        max_worker_deaths=args.ray_max_worker_deaths,
    )


def add_resource_arguments(parser: argparse.ArgumentParser) -> None:
    """Quota and retention options of `serve` (server.resources.ResourcePolicy)."""
    r = ResourcePolicy()
    add = parser.add_argument
    add("--max-bytes-per-user", type=int, default=r.max_bytes_per_user, help="quota: uploads + kept frames")
    add("--max-uploads-per-user", type=int, default=r.max_uploads_per_user, help="quota: plate uploads kept")
    add("--job-max-age", type=float, default=r.job_max_age_s, help="seconds a finished job's frames are kept")
    add("--upload-max-age", type=float, default=r.upload_max_age_s, help="seconds an unused upload is kept")
    add("--max-total-bytes", type=int, default=r.max_total_bytes, help="cap on all stored bytes (0: none)")
    add("--gc-interval", type=float, default=r.gc_interval_s, help="seconds between collections (0: off)")
    add(
        "--disk-reserve",
        type=int,
        default=r.disk_reserve_bytes,
        help="bytes held back to record failures on a full disk",
    )


def resources_from_args(args: argparse.Namespace) -> ResourcePolicy:
    return ResourcePolicy(
        max_bytes_per_user=args.max_bytes_per_user,
        max_uploads_per_user=args.max_uploads_per_user,
        job_max_age_s=args.job_max_age,
        upload_max_age_s=args.upload_max_age,
        max_total_bytes=args.max_total_bytes,
        gc_interval_s=args.gc_interval,
        disk_reserve_bytes=args.disk_reserve,
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    data_dir = args.data_dir or default_data_dir()
    token_file = args.token_file
    if token_file is None and not args.insecure_no_auth and (Path(data_dir) / "tokens").is_file():
        token_file = Path(data_dir) / "tokens"
    limits = Limits(
        max_frames=args.max_frames,
        max_segments=args.max_segments,
        max_height=args.max_height,
        max_width=args.max_width,
        max_steps=args.max_steps,
        max_message_bytes=args.max_message_bytes,
        max_upload_bytes=args.max_upload_bytes,
        max_queued_jobs_per_caller=args.max_queued_per_caller,
        max_adapter_bytes=args.max_adapter_bytes,
        max_adapters_per_job=args.max_adapters_per_job,
        max_adapter_scale=args.max_adapter_scale,
        input=parse_input_limits(args.input_limit),
    )
    return ServerConfig(
        address=args.address,
        data_dir=data_dir,
        model=args.model,
        adapters_dir=args.adapters,
        tiny_random=args.tiny_random,
        seed=args.seed,
        token_file=token_file,
        insecure_no_auth=args.insecure_no_auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        limits=limits,
        resources=resources_from_args(args),
        colour_interop_id=args.colorspace,
        workers=args.workers,
        draft_unguided_steps=args.draft_unguided_steps,
        rpc_threads=args.rpc_threads,
        chunk_bytes=min(1 << 20, limits.max_message_bytes - 16 * 1024),
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        grace_s=args.grace,
        log_json=args.log_format == "json",
        log_level=args.log_level,
        debug_step_delay_s=args.debug_step_delay,
        debug_segment_delay_s=args.debug_segment_delay,
        ray=ray_from_args(args),
    )


def serve(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code."""
    from server.logging_setup import setup_logging

    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"ttt-studio serve: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_json)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    try:
        server = StudioServer(config)
    except (ValueError, RuntimeError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s received", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if config.ray is not None:  # joining Ray installs its own fatal SIGTERM handler: ours again
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.main", description="Run the ttt-studio gRPC server."
    )
    add_serve_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
