"""`ttt-studio generate STORYBOARD -o DIR`: a storyboard to an EXR sequence, with a progress bar.

Writes DIR/frames/<name>.1001.exr ... (half-float RGBA, ZIP, scene-linear Rec.709), DIR/latents.safetensors
(before decoding, so `--from-latents DIR/latents.safetensors` can retry a failed decode without sampling),
DIR/storyboard.json and, with --gif, DIR/preview.gif.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

LATENTS_NAME = "latents.safetensors"
STORYBOARD_NAME = "storyboard.json"
GIF_NAME = "preview.gif"
FRAMES_DIR = "frames"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a video (EXR sequence) from a storyboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("storyboard", type=Path, help="storyboard .json/.yaml (one entry per 3-s segment)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--model",
        type=Path,
        help="model folder (ours or a diffusers CogVideoX layout); default: the shipped toon-world model",
    )
    src.add_argument(
        "--tiny-random", action="store_true", help="a tiny random model built in memory (tests, demos)"
    )
    # sampling settings left unset take the model's own (model_index.json "sampling": the shipped model's
    # were tuned on held-out storyboards, MODEL_CARD.md), else GenerationParams' (the paper's)
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's; the shipped model: 25)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--height", type=int, help="pixels (default: the model's size)")
    p.add_argument("--width", type=int, help="pixels (default: the model's size)")
    p.add_argument(
        "--guidance", type=float, help="CFG strength s (dynamic: 1 -> 1 + s; default: the model's)"
    )
    p.add_argument("--cfg-schedule", choices=("dynamic", "constant"), help="default: the model's")
    p.add_argument("--sampler", choices=("dpmpp_2m", "ddim"), help="default: the model's")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="default: bf16 on GPU, fp32 on CPU",
    )
    p.add_argument(
        "--cpu-offload", action="store_true", help="keep components on the CPU between uses (small GPUs)"
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--name", help="frame file stem (default: the storyboard's file name)")
    p.add_argument("--gif", action="store_true", help=f"also write {GIF_NAME}")
    p.add_argument("--from-latents", type=Path, help="decode these saved latents instead of sampling")
    p.set_defaults(func=run)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    import torch

    from ..default_model import DefaultModelMissing, default_model_dir
    from ..storyboard import Storyboard, StoryboardError
    from .exr_out import write_exr_sequence, write_gif
    from .latents_io import load_latents
    from .params import DecodeError, GenerationParams, PipelineError, sampling_attributes
    from .video_pipeline import VideoPipeline

    if args.model is None and not args.tiny_random:
        try:
            args.model = default_model_dir()
        except DefaultModelMissing as exc:
            return _fail(str(exc), 2)
    try:
        storyboard = Storyboard.load(args.storyboard)
    except StoryboardError as exc:
        return _fail(str(exc), 2)
    device = torch.device(args.device) if args.device else None
    try:
        pipe = (
            VideoPipeline.tiny_random(0, device=device or "cpu")
            if args.tiny_random
            else VideoPipeline.from_folder(args.model, device=device)
        )
        storyboard.validate(max_segments=pipe.max_segments)
        dtype = args.dtype or ("bfloat16" if pipe.device.type == "cuda" else "float32")
        params = pipe.generation_params(
            height=args.height,
            width=args.width,
            steps=args.steps,
            guidance_scale=args.guidance,
            sampler=args.sampler,
            seed=args.seed,
            dtype=dtype,
            cpu_offload=args.cpu_offload,
            preview_every=0,
            cfg_schedule=args.cfg_schedule,
        )
    except (StoryboardError, PipelineError) as exc:
        return _fail(str(exc), 2)

    if args.from_latents is not None:
        try:
            _, meta = load_latents(args.from_latents)
        except PipelineError as exc:
            return _fail(str(exc), 2)
        saved = meta.get("storyboard")
        if saved is not None and saved != storyboard.to_list():
            return _fail(
                f"{args.from_latents} was sampled from a different storyboard than {args.storyboard}; "
                "pass the storyboard.json written next to it",
                2,
            )
        if "params" in meta:  # the frames' attributes describe how the latents were really made
            params = GenerationParams.from_dict(meta["params"])

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or args.storyboard.stem
    storyboard_path = storyboard.dump(out / STORYBOARD_NAME)
    latents_path = out / LATENTS_NAME
    try:
        if args.from_latents is not None:
            frames = pipe.decode_saved(args.from_latents, dtype=args.dtype)
            latents_path = args.from_latents
        else:
            with tqdm(total=params.steps, desc="sampling", unit="step") as bar:

                def on_step(info):  # StepInfo
                    bar.set_postfix(t=info.timestep)
                    bar.update(1)

                result = pipe.generate(storyboard, params, latents_path=latents_path, callback=on_step)
            frames = result.frames
    except DecodeError as exc:
        return _fail(str(exc), 1)
    except PipelineError as exc:
        return _fail(str(exc), 2)

    attributes = {
        "ttt_studio/model": pipe.source,
        **sampling_attributes(params),
    }
    with tqdm(total=len(frames), desc="writing EXR", unit="frame") as bar:
        paths = write_exr_sequence(
            frames,
            out / FRAMES_DIR,
            name,
            fps=pipe.fps,
            attributes=attributes,
            on_frame=lambda i, p: bar.update(1),
        )
    print(
        f"frames:     {paths[0].parent}/{name}.####.exr ({paths[0].name} .. {paths[-1].name}, {len(paths)} frames)"
    )
    print(f"latents:    {latents_path}")
    print(f"storyboard: {storyboard_path}")
    if args.gif:
        gif = write_gif(frames, out / GIF_NAME, pipe.fps)
        print(f"preview:    {gif}")
    return 0
