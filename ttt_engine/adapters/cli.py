"""`ttt-studio adapter train FOLDER -o ADAPTER_DIR ...` and `ttt-studio adapter info PATH` (with `upload` and
`list`, server.cli.adapter's, in the same group).

ttt-studio adapter train stills/ -o adapters/dusk --kind style --trigger dusk
ttt-studio generate shot.json -o out/shot --adapter adapters/dusk:0.8

Each kind trains what its recorded run measured unless told otherwise (config.KIND_DEFAULTS):
- style: a LoRA of the VAE decoder's output convolution alone, with the "colour" objective: the base's own
  samples of the stills' captions decode to the stills' colours (the look as a colour mapping that keeps
  every shape); `--targets NAME...` adds a transformer LoRA (with `--decoder-objective reconstruct`).
- subject: a transformer LoRA (attention and MLP) with prior preservation, and a decoder LoRA trained first
  to draw the subject's latents back to the subject (a colour the model's VAE never saw comes back grey).
`--targets` / `--decoder-targets` with no names leave the transformer / the decoder alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import (
    DECODER_OBJECTIVES,
    DECODER_STYLE_TARGETS,
    DECODER_SUBJECT_TARGETS,
    KIND_DEFAULTS,
    AdapterConfig,
    AdapterTrainConfig,
)

_TRAIN_DEFAULTS = AdapterTrainConfig()
_CONFIG_DEFAULTS = AdapterConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "adapter",
        help="train a LoRA adapter from a folder, or describe one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="adapter_command", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train a style or subject adapter on a folder of stills and clips")
    t.add_argument(
        "folder", type=Path, help="stills (PNG, JPEG, EXR; sidecar .txt captions) and clip folders"
    )
    t.add_argument(
        "-o", "--output", type=Path, required=True, help="adapter folder (resumes if it holds a checkpoint)"
    )
    t.add_argument("--kind", choices=("style", "subject"), required=True)
    t.add_argument("--trigger", required=True, help="the word that calls the look or subject up")
    t.add_argument("--rank", type=int, default=_CONFIG_DEFAULTS.rank, help="LoRA rank (default %(default)s)")
    t.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    t.add_argument(
        "--targets",
        nargs="*",
        help="diffusers-relative block layers (default: none for style, "
        f"{' '.join(KIND_DEFAULTS['subject'].target_modules)} for subject; none: the decoder alone)",
    )
    t.add_argument(
        "--decoder-targets",
        nargs="*",
        help=f"VAE decoder layers given a LoRA (default: {' '.join(DECODER_STYLE_TARGETS)} for style, "
        f"{' '.join(DECODER_SUBJECT_TARGETS)} for subject; none: the transformer alone)",
    )
    t.add_argument(
        "--decoder-steps", type=int, default=_TRAIN_DEFAULTS.decoder_steps, help="default %(default)s"
    )
    t.add_argument(
        "--decoder-lr", type=float, default=_TRAIN_DEFAULTS.decoder_learning_rate, help="default %(default)s"
    )
    t.add_argument(
        "--decoder-batch", type=int, default=_TRAIN_DEFAULTS.decoder_batch, help="default %(default)s"
    )
    t.add_argument(
        "--decoder-objective",
        choices=DECODER_OBJECTIVES,
        help="colour: the base's own samples of the captions decode to the items' colours; reconstruct: the "
        "items' latents decode back to the items (default: colour for style, reconstruct for subject)",
    )
    t.add_argument(
        "--decoder-focus",
        type=float,
        help="reconstruct only: how much more the pixels the base decoder draws wrong weigh (0: plain L1; "
        "default: the kind's)",
    )
    t.add_argument(
        "--decoder-samples",
        type=int,
        default=_TRAIN_DEFAULTS.decoder_samples,
        help="base samples for --decoder-objective colour (0: one per item)",
    )
    t.add_argument(
        "--decoder-sample-steps",
        type=int,
        default=_TRAIN_DEFAULTS.decoder_sample_steps,
        help="sampling steps of each of them (default: the model's own)",
    )
    t.add_argument("--steps", type=int, default=_TRAIN_DEFAULTS.steps, help="default %(default)s")
    t.add_argument("--lr", type=float, default=_TRAIN_DEFAULTS.learning_rate, help="default %(default)s")
    t.add_argument("--batch", type=int, default=_TRAIN_DEFAULTS.batch, help="default %(default)s")
    t.add_argument("--preview-every", type=int, default=_TRAIN_DEFAULTS.preview_every, help="0: no previews")
    t.add_argument("--checkpoint-every", type=int, default=_TRAIN_DEFAULTS.checkpoint_every)
    t.add_argument("--prior-samples", type=int, default=_TRAIN_DEFAULTS.prior_samples, help="subject only")
    t.add_argument("--prior-weight", type=float, default=_TRAIN_DEFAULTS.prior_weight, help="subject only")
    t.add_argument(
        "--prior-steps",
        type=int,
        default=_TRAIN_DEFAULTS.prior_steps,
        help="subject only: sampling steps of each prior sample (default: the model's own)",
    )
    t.add_argument(
        "--text-dropout",
        type=float,
        default=_TRAIN_DEFAULTS.text_dropout,
        help="probability of training an item on the empty prompt, as guidance samples it (default %(default)s)",
    )
    t.add_argument("--seed", type=int, default=_TRAIN_DEFAULTS.seed)
    t.add_argument("--model", type=Path, help="model folder (default: the shipped toon-world model)")
    t.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    t.set_defaults(func=run_train)
    i = sub.add_parser("info", help="what an adapter is: config, training settings, layers, sha256")
    i.add_argument("path", type=Path, help="adapter folder or .safetensors file")
    i.add_argument("--model", type=Path, help="also check it against this model folder ('default': shipped)")
    i.set_defaults(func=run_info)
    from server.cli.adapter import add_client_commands  # upload / list: the same group, on a server

    add_client_commands(sub)


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _pipeline(model: Path | None, device: str | None):
    from ..default_model import default_model_dir
    from ..pipeline.video_pipeline import VideoPipeline

    folder = default_model_dir() if model is None or str(model) == "default" else model
    return VideoPipeline.from_folder(folder, device=device)


def train_configs(args: argparse.Namespace) -> tuple[AdapterConfig, AdapterTrainConfig]:
    """The adapter and training configs of `adapter train`'s options, the kind's defaults filled in
    (AdapterError naming a bad value)."""
    kind = KIND_DEFAULTS[args.kind]
    targets = kind.target_modules if args.targets is None else tuple(args.targets)
    decoder = kind.decoder_targets if args.decoder_targets is None else tuple(args.decoder_targets)
    config = AdapterConfig(
        rank=args.rank,
        alpha=args.alpha if args.alpha is not None else float(args.rank),
        target_modules=targets,
        decoder_targets=decoder,
        kind=args.kind,
        trigger=args.trigger,
    )
    objective = args.decoder_objective or kind.decoder_objective
    focus = args.decoder_focus
    if focus is None:  # the kind's focus weighs its own objective's pixels
        focus = kind.decoder_focus if objective == kind.decoder_objective else 0.0
    train = AdapterTrainConfig(
        learning_rate=args.lr,
        steps=args.steps,
        batch=args.batch,
        preview_every=args.preview_every,
        checkpoint_every=args.checkpoint_every,
        prior_samples=args.prior_samples,
        prior_weight=args.prior_weight,
        prior_steps=args.prior_steps,
        text_dropout=args.text_dropout,
        seed=args.seed,
        decoder_steps=args.decoder_steps,
        decoder_learning_rate=args.decoder_lr,
        decoder_batch=args.decoder_batch,
        decoder_objective=objective,
        decoder_focus=focus,
        decoder_samples=args.decoder_samples,
        decoder_sample_steps=args.decoder_sample_steps,
    )
    return config, train


def run_train(args: argparse.Namespace) -> int:
    from ..default_model import DefaultModelMissing
    from ..pipeline.params import PipelineError
    from ..train.checkpoint import ResumeError
    from .config import AdapterError
    from .train import train_adapter

    try:
        config, train = train_configs(args)
        pipe = _pipeline(args.model, args.device)
        result = train_adapter(args.folder, args.output, pipe, config, train)
    except (AdapterError, ResumeError, PipelineError, DefaultModelMissing) as exc:
        return _fail(str(exc))
    assert result is not None
    a = result.adapter
    print(f"adapter:  {a.path}")
    print(f"sha256:   {a.sha256}")
    if result.decoder_losses:
        print(f"decoder:  {len(result.decoder_losses)} steps, L1 {result.decoder_losses[-1]:.4f}")
    if result.losses:
        print(f"steps:    {len(result.losses)} in {result.seconds:.1f} s, last loss {result.losses[-1]:.4f}")
    print(f"apply:    ttt-studio generate STORYBOARD -o OUT --adapter {args.output}:1.0")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from .apply import check_adapter
    from .config import AdapterError
    from .format import load_adapter

    try:
        a = load_adapter(args.path)
        info = {
            "name": a.name,
            "file": str(a.path),
            "sha256": a.sha256,
            "config": a.config.to_dict(),
            "train": a.train.to_dict() if a.train else None,
            "modules": len(a.modules()),
            "decoder_modules": len(a.decoder_modules()),
        }
        if args.model is not None:
            pipe = _pipeline(args.model, "cpu")
            bound = check_adapter(a, pipe.transformer, pipe.vae)
            info["fits_model"] = {
                "layers": len(bound.modules),
                "decoder_layers": len(bound.decoder),
                "skipped": list(bound.skipped),
            }
    except AdapterError as exc:
        return _fail(str(exc))
    print(json.dumps(info, indent=2))
    return 0
