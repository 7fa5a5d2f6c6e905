"""`ttt-studio watch JOB`: follow a job with a progress bar until it finishes."""

from __future__ import annotations

import argparse
import sys

from server.cli import add_client_arguments, fail, make_client, rpc_error_text
from server.client import StudioClient, state_name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("watch", help="follow a job's progress")
    parser.add_argument("job_id")
    parser.add_argument("--after", type=int, default=0, help="resume after this event number")
    add_client_arguments(parser)
    parser.set_defaults(func=run)


def follow(client: StudioClient, job_id: str, after: int = 0) -> int:
    """Progress bar over denoising steps, then decoded frames; 0 when the job completed."""
    import grpc
    from tqdm import tqdm

    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb

    bar = tqdm(total=None, unit="step", desc=job_id[:8], file=sys.stderr, dynamic_ncols=True)
    state = pb.JOB_STATE_UNSPECIFIED
    message = ""
    try:
        for event in client.watch(job_id, after_seq=after):
            kind = event.WhichOneof("kind")
            if kind == "state":
                state, message = event.state.state, event.state.message
                bar.set_postfix_str(state_name(state))
            elif kind == "progress":
                if bar.total != event.progress.total or bar.unit != "step":
                    bar.reset(total=event.progress.total)
                    bar.unit = "step"
                bar.n = event.progress.step
                eta = event.progress.eta_s
                run = _run_label(event.progress)
                bar.set_postfix_str(f"sampling{run}, eta {eta:.0f} s" if eta >= 0 else f"sampling{run}")
            elif kind == "frames":
                if bar.unit != "frame":
                    bar.reset(total=event.frames.total)
                    bar.unit = "frame"
                bar.n = event.frames.ready
                bar.set_postfix_str(f"decoding{_run_label(event.frames)}")
            bar.refresh()
    except grpc.RpcError as exc:
        bar.close()
        return fail(rpc_error_text(exc))
    bar.close()
    print(f"{job_id} {state_name(state)}{': ' + message if message else ''}", file=sys.stderr)
    return 0 if state == pb.JOB_STATE_COMPLETED else 1


def _run_label(event: object) -> str:
    """' take 1 draft' for a Progress or FramesReady of take 1's draft; '' for take 0's final."""
    take, draft = getattr(event, "take", 0), getattr(event, "draft", False)
    return (f" take {take}" if take else "") + (" draft" if draft else "")


def run(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return follow(client, args.job_id, args.after)
