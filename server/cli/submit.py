"""`ttt-studio submit STORYBOARD`: queue a shot; --watch follows it, --fetch DIR downloads its frames."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli import add_client_arguments, fail, make_client, rpc_error_text
from server.cli.adapter import parse_adapter_ref


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="queue a shot from a storyboard file")
    parser.add_argument(
        "storyboard", type=Path, help="storyboard .json/.yaml (format 3: one paragraph per segment)"
    )
    parser.add_argument("--height", type=int, default=0, help="pixels (default: the model's)")
    parser.add_argument("--width", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--sampler", default="", choices=("", "dpmpp_2m", "ddim"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--preview-every", type=int, default=0)
    parser.add_argument("--priority", choices=("preview", "final"), default="final")
    parser.add_argument(
        "--takes", type=int, default=0, help="takes of the shot, seeds SEED, SEED + 1, ... (default 1)"
    )
    parser.add_argument(
        "--draft-steps",
        type=int,
        default=0,
        help="--priority preview: steps of the draft made first (default: the server's)",
    )
    parser.add_argument("--shot-name", default="", help="names the frames: SHOT.1001.exr")
    parser.add_argument("--start-frame", type=int, default=None)
    parser.add_argument("--otio", type=Path, default=None, help="an OTIO file sent as the shot's context")
    parser.add_argument(
        "--plate",
        type=Path,
        action="append",
        default=[],
        help="an EXR plate to upload (repeatable, in frame order); see --plate-mode",
    )
    parser.add_argument(
        "--plate-mode",
        default="",
        choices=("", "restyle", "continue"),
        help="restyle: one plate per output frame, repainted by --strength; continue: the plates are the "
        "video's first 1 + 4k frames and the rest is generated (default: restyle)",
    )
    parser.add_argument(
        "--strength", type=float, default=None, help="restyle: share of the denoising redone, in (0, 1]"
    )
    parser.add_argument(
        "--adapter",
        type=parse_adapter_ref,
        action="append",
        default=[],
        metavar="NAME[:SCALE]",
        help="a LoRA adapter of the server (`ttt-studio adapter list`) at SCALE (default 1.0); repeatable",
    )
    parser.add_argument("--idempotency-key", default=None)
    parser.add_argument("--watch", action="store_true", help="follow the job with a progress bar")
    parser.add_argument(
        "--fetch", type=Path, default=None, metavar="DIR", help="then download the frames to DIR"
    )
    add_client_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc

    from server.cli.watch import follow
    from ttt_engine.storyboard import Storyboard, StoryboardError

    try:
        storyboard = Storyboard.load(args.storyboard)
    except StoryboardError as exc:
        return fail(str(exc))
    otio_json = args.otio.read_text(encoding="utf-8") if args.otio else ""
    with make_client(args) as client:
        try:
            plates = [client.upload_plate(p).upload_id for p in args.plate]
            response = client.submit(
                storyboard,
                height=args.height,
                width=args.width,
                steps=args.steps,
                guidance_scale=args.guidance_scale,
                sampler=args.sampler,
                seed=args.seed,
                preview_every=args.preview_every,
                priority=args.priority,
                idempotency_key=args.idempotency_key,
                shot_name=args.shot_name,
                start_frame=args.start_frame,
                otio_json=otio_json,
                plate_upload_ids=plates,
                strength=args.strength,
                plate_mode=args.plate_mode,
                adapters=args.adapter,
                takes=args.takes,
                draft_steps=args.draft_steps,
            )
        except grpc.RpcError as exc:
            return fail(rpc_error_text(exc))
        print(response.job_id)
        if not (args.watch or args.fetch):
            return 0
        code = follow(client, response.job_id)
        if code != 0 or args.fetch is None:
            return code
        from server.cli.fetch import download

        return download(client, response.job_id, args.fetch)
