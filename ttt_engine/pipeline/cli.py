"""`ttt-studio generate STORYBOARD -o DIR`: a storyboard to an EXR sequence, with a progress bar.

Writes DIR/frames/<name>.1001.exr ... (half-float RGBA, ZIP, tagged with colorInteropID and
chromaticities), DIR/latents.safetensors (before decoding, so `--from-latents DIR/latents.safetensors`
can retry a failed decode without sampling), DIR/storyboard.json, DIR/conform.json (what the frames went
through) and, with --gif, DIR/preview.gif (the model's own frames).

Without --fps the frames are the model's own (its rate and size) in --colorspace (default scene-linear
Rec.709). With --fps R they are conformed to an edit, as the server does: exactly --duration frames at R
(default: the storyboard's length, 3 s a segment), retimed (--retime), scaled to --format WxH[:PAR]
(--fit, --filter) and converted to --colorspace with OpenColorIO. E.g. a 64x64, 8 fps generation on a
1080p, 23.976, ACES edit:

    ttt-studio generate examples/chase_two_scenes.json -o out/conformed --fps 24000/1001 \\
        --format 1920x1080 --colorspace lin_ap1_scene
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from host_plugin.core.delivery import (
    FILTERS,
    FIT_METHODS,
    RETIME_METHODS,
    SEGMENT_SECONDS,
    Delivery,
    Format,
    delivery_rate,
)

log = logging.getLogger(__name__)

DEFAULT_COLORSPACE = "lin_rec709_scene"
CONFORM_NAME = "conform.json"

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
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="a LoRA adapter (folder or .safetensors) applied while sampling at SCALE (default 1); "
        "repeatable, applied in order; the frames record each one's sha256 and scale",
    )
    conform = p.add_argument_group("conform (deliver to an edit; see the description)")
    conform.add_argument(
        "--fps", help="edit rate: 24, 24000/1001 (or 23.976), 25, 30000/1001, 30, 48, 50, ..."
    )
    conform.add_argument("--duration", type=int, help="frames on the edit (default: the storyboard's length)")
    conform.add_argument("--format", help="target format WxH or WxH:PAR, e.g. 1920x1080 or 1828x1556:2")
    conform.add_argument("--fit", choices=FIT_METHODS, help="how the aspect meets the format (default fit)")
    conform.add_argument("--filter", choices=FILTERS, help="scaling filter (default lanczos)")
    conform.add_argument("--retime", choices=RETIME_METHODS, help="native -> edit rate (default flow)")
    conform.add_argument(
        "--colorspace",
        default=DEFAULT_COLORSPACE,
        help=f"colour space of the frames (interop id or OCIO name; default {DEFAULT_COLORSPACE})",
    )
    p.set_defaults(func=run)


def delivery_from_args(args: argparse.Namespace, segments: int) -> Delivery | None:
    """The Delivery the conform flags ask for (None without --fps: native frames)."""
    if args.fps is None:
        given = [f"--{n}" for n in ("duration", "format", "fit", "filter", "retime") if getattr(args, n)]
        if given:
            raise ValueError(f"{', '.join(given)} need --fps (the edit rate the frames are delivered at)")
        return None
    rate = delivery_rate(args.fps)
    duration = args.duration if args.duration is not None else int(segments * SEGMENT_SECONDS * rate)
    target = Format.parse(args.format) if args.format else None
    return Delivery(
        rate=rate,
        duration=duration,
        width=target.width if target else None,
        height=target.height if target else None,
        pixel_aspect=target.pixel_aspect if target else 1.0,
        fit=args.fit or "fit",
        filter=args.filter or "lanczos",
        retime=args.retime or "flow",
        colorspace=args.colorspace,
    )


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    import torch

    from ..adapters import ATTRIBUTE as ADAPTERS_ATTRIBUTE
    from ..adapters import (
        AdapterError,
        adapter_records,
        applied,
        check_adapter,
        load_adapter,
        parse_adapter_arg,
    )
    from ..default_model import DefaultModelMissing, default_model_dir
    from ..storyboard import Storyboard, StoryboardError
    from .deliver import FrameDeliverer, plan_delivery
    from .exr_out import delivered_writer, write_gif
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
        explicit = None  # an explicit generation size; a side left out is the model's own
        if args.height is not None or args.width is not None:
            height, width = pipe.default_size
            explicit = (args.width or width, args.height or height)
        delivery = delivery_from_args(args, len(storyboard))
        plan = plan_delivery(pipe, storyboard.to_list(), delivery, args.colorspace, explicit)
        dtype = args.dtype or ("bfloat16" if pipe.device.type == "cuda" else "float32")
        params = pipe.generation_params(
            height=plan.generation_size[1],
            width=plan.generation_size[0],
            steps=args.steps,
            guidance_scale=args.guidance,
            sampler=args.sampler,
            seed=args.seed,
            dtype=dtype,
            cpu_offload=args.cpu_offload,
            preview_every=0,
            cfg_schedule=args.cfg_schedule,
        )
    except (StoryboardError, PipelineError, ValueError) as exc:
        return _fail(str(exc), 2)

    adapters: list = []
    try:
        for text in args.adapter:
            path, scale = parse_adapter_arg(text)
            adapter = load_adapter(path)
            check_adapter(adapter, pipe.transformer, pipe.vae)
            adapters.append((adapter, scale))
    except AdapterError as exc:
        return _fail(str(exc), 2)
    records = adapter_records(adapters)
    if args.from_latents is not None and adapters:
        return _fail(
            "--adapter applies while sampling; --from-latents only decodes (the adapters that made those "
            "latents are recorded in their file and carried into the frames)",
            2,
        )

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
        records = meta.get("adapters", [])

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

                with applied(pipe.transformer, adapters, vae=pipe.vae):
                    result = pipe.generate(
                        storyboard,
                        params,
                        latents_path=latents_path,
                        callback=on_step,
                        extra_meta={"adapters": records},
                    )
            frames = result.frames
    except DecodeError as exc:
        return _fail(str(exc), 1)
    except PipelineError as exc:
        return _fail(str(exc), 2)

    attributes = {
        "ttt_studio/model": pipe.source,
        **sampling_attributes(params),
    }
    if records:
        attributes[ADAPTERS_ATTRIBUTE] = json.dumps(records, sort_keys=True)
    paths: list[Path] = []
    with tqdm(total=plan.total_frames, desc="conform + EXR", unit="frame") as bar:
        writer = delivered_writer(
            out / FRAMES_DIR, name, attributes=attributes, on_frame=lambda i, p: bar.update(1)
        )
        deliverer = FrameDeliverer(plan, lambda frame: paths.append(writer(frame)))
        deliverer.feed(0, frames)
    report = deliverer.report()
    (out / CONFORM_NAME).write_text(json.dumps(report, indent=2))
    width, height = plan.output_size
    print(
        f"frames:     {paths[0].parent}/{name}.####.exr ({paths[0].name} .. {paths[-1].name}, {len(paths)} "
        f"frames, {width}x{height} at {report['rate']} fps, {plan.output_colorspace})"
    )
    gen_w, gen_h = plan.generation_size
    print(
        f"conform:    generated {gen_w}x{gen_h} at {report['native_fps']} fps in {plan.model_colorspace}; "
        f"retime {report['retime']}; {out / CONFORM_NAME}"
    )
    for r in records:
        print(f"adapter:    {r['name']} at scale {r['scale']:g} (sha256 {r['sha256'][:12]}...)")
    print(f"latents:    {latents_path}")
    print(f"storyboard: {storyboard_path}")
    if args.gif:
        gif = write_gif(frames, out / GIF_NAME, pipe.fps, plan.model_colorspace)
        print(f"preview:    {gif}")
    return 0
