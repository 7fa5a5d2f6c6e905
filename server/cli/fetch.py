"""`ttt-studio fetch JOB DIR [--take K] [--draft]`: download one take's EXR frames (and its OTIO result)
into DIR."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.cli import add_client_arguments, fail, make_client, rpc_error_text
from server.client import StudioClient


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fetch", help="download a job's frames")
    parser.add_argument("job_id")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--start", type=int, default=0, help="first frame index to fetch (resume)")
    parser.add_argument("--follow", action="store_true", help="wait for frames of a running job")
    parser.add_argument("--take", type=int, default=0, help="which take's frames (0-based; default 0)")
    parser.add_argument("--draft", action="store_true", help="the take's draft frames instead of its final")
    add_client_arguments(parser)
    parser.set_defaults(func=run)


def download(
    client: StudioClient,
    job_id: str,
    out_dir: Path,
    start: int = 0,
    follow: bool = False,
    take: int = 0,
    draft: bool = False,
) -> int:
    """One take's frames into out_dir with a progress bar; for a completed job's final frames also
    <out_dir>/<job_id>.otio (that take's result; its clip lists every take)."""
    import grpc
    from tqdm import tqdm

    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
    from server.result import relocate_result

    bar = tqdm(unit="frame", desc=f"fetch {job_id[:8]}", file=sys.stderr, dynamic_ncols=True)

    def on_frame(_path: Path, chunk: pb.FrameChunk) -> None:
        if bar.total != chunk.total_frames:
            bar.total = chunk.total_frames
        bar.update(1)

    try:
        paths = client.fetch(
            job_id, out_dir, start_frame=start, follow=follow, on_frame=on_frame, take=take, draft=draft
        )
        bar.close()
        job = client.job(job_id)
        if job.state == pb.JOB_STATE_COMPLETED and not draft:
            result = client.result(job_id, take)
            otio_path = Path(out_dir) / f"{job_id}.otio"
            otio_path.write_text(
                relocate_result(result.otio_json, str(Path(out_dir).resolve())), encoding="utf-8"
            )
            print(otio_path)
    except grpc.RpcError as exc:
        bar.close()
        return fail(rpc_error_text(exc))
    print(f"{len(paths)} frame(s) in {out_dir}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return download(client, args.job_id, args.out_dir, args.start, args.follow, args.take, args.draft)
