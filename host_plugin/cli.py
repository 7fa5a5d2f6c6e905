"""`ttt-studio fill EDIT.otio -o OUT.otio --server ADDR --token T`: generate the shots an OTIO edit asks for.

Requests are the items marked for ttt-studio: a gap, a clip or a marker whose metadata["ttt_studio"]
holds a "prompt" or a "storyboard" (a gap or clip with an empty ttt_studio dict takes --prompt). Nothing
else is touched unless asked for: --requests-from gaps (every plain gap), --requests-from long-clips
(every clip running past its media; titles, generators, stills and speed-changed clips never count),
--select NAME (an item or marker by name, or a request id shown by a previous run). Nested stacks and
tracks are searched completely; a request that cannot be made is refused with the reason.

Each request is submitted, watched and its frames fetched into --frames-dir (default <OUT's folder>/
<OUT's name>_frames/), then placed frame-accurately on a "TTT generated" track. Shots that work are
placed even when others fail (--no-keep-going stops at the first failure); OUT holds what was placed.
Exit status: 0 every request placed; 1 some failed or were refused (with --keep-going the rest are
placed); 2 bad input or usage, nothing written.

Run it again to resume: clips OUT already holds for unchanged requests are kept (a shot with takes
shows the take approved on the server since), and every submit
carries an idempotency key made from the request and the settings, so a job that finished on the
server meanwhile is fetched, not generated again (a job that failed is submitted anew).

Registered by ttt_engine/cli.py (SUBCOMMANDS "fill" -> host_plugin.cli); install-plugin lives in
host_plugin.install.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from typing import Any, Optional, Tuple

from host_plugin.core.adapters import parse_choice
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
    from host_plugin.core.requests import REQUEST_SOURCES
    from host_plugin.core.shot_job import add_delivery_arguments

    if "fill" in getattr(subparsers, "choices", {}):
        return
    p = subparsers.add_parser(
        "fill",
        help="generate the shots an OTIO edit asks for and write the edit with them placed",
        description=__doc__.rsplit("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("edit", help="input OTIO file (gaps / clips / markers with metadata['ttt_studio'])")
    p.add_argument(
        "-o", "--output", required=True, help="output OTIO file: the edit with every shot that worked placed"
    )
    add_connection_arguments(p)
    p.add_argument(
        "--requests-from",
        default="",
        metavar="KINDS",
        help=f"unmarked items that are requests too, comma-separated: {', '.join(REQUEST_SOURCES)} "
        "(default: marked items only)",
    )
    p.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="NAME",
        help="an item or marker (by name, or a request id) that is a request whatever its metadata; repeatable",
    )
    p.add_argument("--include-plain-gaps", action="store_true", help="the same as --requests-from gaps")
    p.add_argument(
        "--keep-going",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="place the shots that work when others fail (default); --no-keep-going stops at the first failure",
    )
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the shots an existing OUTPUT already holds for unchanged requests (default)",
    )
    p.add_argument("--prompt", default=None, help="prompt for requests that carry none (e.g. plain gaps)")
    p.add_argument("--frames-dir", default=None, help="where fetched EXR frames go (default: <OUT>_frames/)")
    p.add_argument("--height", type=int, default=0, help="pixels (0: server default)")
    p.add_argument("--width", type=int, default=0, help="pixels (0: server default)")
    p.add_argument("--steps", type=int, default=0, help="sampling steps (0: server default)")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--takes",
        type=int,
        default=1,
        help="takes per shot (seed, seed + 1, ...): the approved one (else the first) is the clip, every "
        "take listed in its ttt_studio metadata",
    )
    p.add_argument("--priority", choices=("preview", "final"), default="final")
    p.add_argument("--start-frame", type=int, default=1001, help="first frame number of each EXR sequence")
    add_delivery_arguments(p)  # shots arrive at each request's rate and length, in this format and colour
    p.add_argument(
        "--adapter",
        type=parse_choice,
        action="append",
        default=[],
        metavar="NAME[:SCALE]",
        help="a LoRA adapter of the server for every shot whose request names none (repeatable)",
    )
    p.add_argument(
        "--first-frame-references",
        action="store_true",
        help="make the first-frame ExternalReference active (Resolve / Nuke Studio import)",
    )
    p.add_argument(
        "--report", default=None, help="write a JSON report of requests, results and failures here"
    )
    p.set_defaults(func=run_fill)


def request_sources(value: str) -> Tuple[str, ...]:
    """--requests-from's comma list as request sources; ValueError naming a kind that does not exist."""
    from host_plugin.core.requests import REQUEST_SOURCES

    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in REQUEST_SOURCES]
    if unknown:
        raise ValueError(
            f"--requests-from: unknown kind(s) {unknown}; expected some of {', '.join(REQUEST_SOURCES)}"
        )
    return kinds


def idempotency_key(request: Any, settings: Any) -> str:
    """The submit key of a request: the same request (id, frames, text) with the same generation
    settings gets the same key in every run, so the server hands back the job it already has."""
    from dataclasses import asdict

    wanted = {k: v for k, v in asdict(settings).items() if k != "output_dir"}  # where frames go locally
    content = {
        "request": {k: v for k, v in request.to_dict().items() if k not in ("name", "metadata")},
        "settings": wanted,
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"{KEY_PREFIX}{digest}"


KEY_PREFIX = "ttt-fill-"
MAX_RESUBMITS = 20  # new keys tried past jobs that ended failed or cancelled under the earlier ones


class ResumingClient:
    """A TTTClient whose submit() steps past earlier jobs of the same key that ended failed or cancelled.

    The server answers a known key with its job (deduplicated); a finished one is then fetched, not
    made again. A failed or cancelled one would fail again, so the next key ("<key>.retry<n>") is tried.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def submit(self, *args: Any, idempotency_key: Optional[str] = None, **kwargs: Any) -> Any:
        if idempotency_key is None:
            return self._client.submit(*args, **kwargs)
        for attempt in range(MAX_RESUBMITS + 1):
            key = idempotency_key if attempt == 0 else f"{idempotency_key}.retry{attempt}"
            submitted = self._client.submit(*args, idempotency_key=key, **kwargs)
            if not (submitted.deduplicated and submitted.job.state in ("failed", "cancelled")):
                if submitted.deduplicated:
                    log.info(
                        "key %s: job %s is already %s; resumed", key, submitted.job_id, submitted.job.state
                    )
                return submitted
            log.info("key %s: job %s ended %s; submitting anew", key, submitted.job_id, submitted.job.state)
        raise ValueError(
            f"idempotency key {idempotency_key}: {MAX_RESUBMITS + 1} earlier jobs ended failed or cancelled; "
            "change the request or the settings"
        )


def run_fill(args: argparse.Namespace) -> int:
    """The `fill` command: 0 when every request was placed, 1 when some failed or were refused, 2 for bad
    input or usage (nothing written)."""
    from host_plugin.core.shot_job import (
        GenerationSettings,
        ServerSettings,
        approved_result,
        delivery_settings_from,
        generate_shot,
    )
    from host_plugin.fill import fill_timeline

    if not args.server:
        return _fail(f"--server is required (or set {SERVER_ENV})", 2)
    out = os.path.abspath(args.output)
    frames_dir = args.frames_dir or os.path.splitext(out)[0] + "_frames"
    try:
        sources = request_sources(args.requests_from)
        settings = GenerationSettings(
            output_dir=frames_dir,
            height=args.height,
            width=args.width,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            seed=args.seed,
            priority=args.priority,
            start_frame=args.start_frame,
            delivery=delivery_settings_from(args),
            takes=args.takes,
            adapters=tuple(args.adapter),
        )
        server = ServerSettings(args.server, token=args.token, root_cert=args.tls_root_cert, tls=args.tls)
        client = server.client()
    except (ValueError, ImportError) as exc:
        return _fail(str(exc), 2)
    resuming = ResumingClient(client)
    state = {"connected": False}

    def generate(request: Any) -> Any:
        if not state["connected"]:
            client.connect(settings.required_capabilities, settings.model)
            state["connected"] = True
        if args.prompt and not request.prompt and not request.storyboard:
            request.prompt = args.prompt

        def progress(fraction: float, message: str) -> None:
            log.debug("%3.0f%% %s", 100 * fraction, message)

        key = idempotency_key(request, settings)
        result = generate_shot(resuming, request, settings, progress=progress, idempotency_key=key)
        print(
            f"{request.id}: {request.kind} {request.name!r} at {request.record_timecode} ({request.duration} frames)"
            f" -> job {result.job_id}, {result.frame_count} frames in {result.directory}"
        )
        return result

    def refresh(result: Any) -> Any:
        """A carried shot with takes shows the take approved on the server now."""
        job = client.get_job(result.job_id)
        by = next((t.approved_by for t in job.takes if t.approved), "")
        return approved_result(result, job.approved_take, by)

    try:
        report = fill_timeline(
            args.edit,
            out,
            generate,
            include_plain_gaps=args.include_plain_gaps,
            sources=sources,
            select=args.select,
            keep_going=args.keep_going,
            resume=args.resume,
            refresh=refresh,
        )
    except HostPluginError as exc:  # FillError: the edit or OUT unreadable, OUT unwritable
        return _fail(str(exc), 2)
    finally:
        client.close()
    if args.first_frame_references and (report.results or report.carried):
        _switch_to_first_frames(out)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2)
    for hidden in report.hidden:
        print(f"hidden: {hidden.message}")
    kept = f", {len(report.carried)} kept from {out}" if report.carried else ""
    if report.ok:
        print(f"{len(report.results)} shot(s) placed{kept}; wrote {out}")
        return 0
    for failure in report.failures:
        print(f"ttt-studio fill: failed: {failure.message}", file=sys.stderr)
    written = f"; wrote {out}" if report.written else f"; {out} left as it was"
    return _fail(
        f"{len(report.failures)} of {len(report.requests) + _refused(report)} request(s) failed, "
        f"{len(report.results)} shot(s) placed{kept}{written}; run again to resume",
        1,
    )


def _refused(report: Any) -> int:
    """Refused requests are failures that never became requests."""
    ids = {r.id for r in report.requests}
    return sum(1 for f in report.failures if f.request_id not in ids)


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
