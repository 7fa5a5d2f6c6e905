"""`ttt-studio fill EDIT.otio -o OUT.otio --server ADDR --token T`: generate every shot an OTIO edit asks for.

The core fill (host_plugin.fill: all or nothing, OUT written atomically) with a generate function backed
by the gRPC server: each request is submitted, watched and its frames fetched into --frames-dir (default
<OUT's folder>/<OUT's name>_frames/), then placed frame-accurately on a "TTT generated" track.

Registered by ttt_engine/cli.py (SUBCOMMANDS "fill" -> host_plugin.cli); install-plugin lives in
host_plugin.install.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Optional

from host_plugin.core.errors import HostPluginError

log = logging.getLogger(__name__)

SERVER_ENV = "TTT_STUDIO_SERVER"
TOKEN_ENV = "TTT_STUDIO_TOKEN"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV),
        help=f"host:port of the ttt-studio server (env {SERVER_ENV})",
    )
    parser.add_argument("--token", default=None, help=f"bearer token (default: env {TOKEN_ENV})")
    parser.add_argument(
        "--tls-root-cert", default=None, help="PEM of the CA that signed the server (turns TLS on)"
    )
    parser.add_argument("--tls", action="store_true", help="TLS with the system's CA roots")


def register(subparsers: Any) -> None:
    """Add `fill` to a `ttt-studio` subparsers object (func(args) -> exit code)."""
    if "fill" in getattr(subparsers, "choices", {}):
        return
    p = subparsers.add_parser(
        "fill",
        help="generate the shots an OTIO edit asks for and write the edit with them placed",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("edit", help="input OTIO file (gaps / markers / clips with metadata['ttt_studio'])")
    p.add_argument(
        "-o", "--output", required=True, help="output OTIO file (written only when every shot worked)"
    )
    add_connection_arguments(p)
    p.add_argument(
        "--include-plain-gaps", action="store_true", help="also fill gaps without ttt_studio metadata"
    )
    p.add_argument("--prompt", default=None, help="prompt for requests that carry none (e.g. plain gaps)")
    p.add_argument("--frames-dir", default=None, help="where fetched EXR frames go (default: <OUT>_frames/)")
    p.add_argument("--height", type=int, default=0, help="pixels (0: server default)")
    p.add_argument("--width", type=int, default=0, help="pixels (0: server default)")
    p.add_argument("--steps", type=int, default=0, help="sampling steps (0: server default)")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--priority", choices=("preview", "final"), default="final")
    p.add_argument("--start-frame", type=int, default=1001, help="first frame number of each EXR sequence")
    p.add_argument(
        "--first-frame-references",
        action="store_true",
        help="make the first-frame ExternalReference active (Resolve / Nuke Studio import)",
    )
    p.add_argument("--report", default=None, help="write a JSON report of requests and results here")
    p.set_defaults(func=run_fill)


def run_fill(args: argparse.Namespace) -> int:
    """The `fill` command: 0 on success, 2 for bad input (malformed edit, bad request), 1 for server failures."""
    from host_plugin.core.errors import ClientError, FillError
    from host_plugin.core.shot_job import GenerationSettings, ServerSettings, generate_shot
    from host_plugin.fill import fill_timeline

    if not args.server:
        return _fail(f"--server is required (or set {SERVER_ENV})", 2)
    out = os.path.abspath(args.output)
    frames_dir = args.frames_dir or os.path.splitext(out)[0] + "_frames"
    try:
        settings = GenerationSettings(
            output_dir=frames_dir,
            height=args.height,
            width=args.width,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            seed=args.seed,
            priority=args.priority,
            start_frame=args.start_frame,
        )
        server = ServerSettings(args.server, token=args.token, root_cert=args.tls_root_cert, tls=args.tls)
        client = server.client()
    except (ValueError, ImportError) as exc:
        return _fail(str(exc), 2)
    state = {"connected": False}

    def generate(request: Any) -> Any:
        if not state["connected"]:
            client.connect(settings.required_capabilities, settings.model)
            state["connected"] = True
        if args.prompt and not request.prompt and not request.storyboard:
            request.prompt = args.prompt

        def progress(fraction: float, message: str) -> None:
            log.debug("%3.0f%% %s", 100 * fraction, message)

        result = generate_shot(client, request, settings, progress=progress)
        print(
            f"{request.id}: {request.kind} {request.name!r} at {request.record_timecode} ({request.duration} frames)"
            f" -> job {result.job_id}, {result.frame_count} frames in {result.directory}"
        )
        return result

    try:
        report = fill_timeline(args.edit, out, generate, include_plain_gaps=args.include_plain_gaps)
    except FillError as exc:
        cause = exc.__cause__
        code = 1 if isinstance(cause, ClientError) else 2
        return _fail(str(exc), code)
    except HostPluginError as exc:
        return _fail(str(exc), 2)
    finally:
        client.close()
    if args.first_frame_references and report.results:
        _switch_to_first_frames(out)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2)
    print(f"{len(report.results)} shot(s) placed; wrote {out}")
    return 0


def _switch_to_first_frames(path: str) -> None:
    import opentimelineio as otio

    from host_plugin.core.placement import use_first_frame_references

    timeline = otio.adapters.read_from_file(path)
    use_first_frame_references(timeline)
    temp = f"{path}.tmp{os.getpid()}"
    otio.adapters.write_to_file(timeline, temp, adapter_name="otio_json")
    os.replace(temp, path)  # readers never see half a file


def _fail(message: str, code: int) -> int:
    print(f"ttt-studio fill: {message}", file=sys.stderr)
    return code


def main(argv: Optional[list] = None) -> int:
    """`python -m host_plugin.cli fill ...` (the same as `ttt-studio fill ...`)."""
    parser = argparse.ArgumentParser(prog="ttt-studio")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    from host_plugin import install

    install.register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
