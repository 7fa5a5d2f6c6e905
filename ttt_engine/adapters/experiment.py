"""The style and subject must-shows of issue #24, as reproducible runs:

    python -m ttt_engine.adapters.experiment style --out runs/adapter-style --strip docs/adapter_style.png
    python -m ttt_engine.adapters.experiment subject --out runs/adapter-subject --strip docs/adapter_subject.png

Style:

1. renders STYLE stills of toon-world shots in the "dusk" grade (toonworld/grade.py: a look the base never
   saw), each with its storyboard text as caption; 2. trains a style adapter on them with the shipped model
   (`train_adapter`, the timed part, torch threads as given), by default the style kind's recipe: a LoRA of
   the VAE decoder's output convolution with the "colour" objective (the base's own samples of the stills'
   captions decode to the stills' colours); `--targets` adds a transformer LoRA; 3. generates held-out storyboards
   (`compare`'s evaluation cases) with the base and with the adapter, same seeds; 4. measures each arm's
   colour distance to the stills (eval/metrics.py `colour_distance`, Lab sliced Wasserstein) and its
   storyboard adherence (the detectors). The detectors key on the toon world's palette, so the adapter's
   shots are scored after `Grade.invert` (the grade is exactly invertible on the toon world's colours);
   their adherence as generated is reported beside it. 5. measures the bound of an adapter that learns
   the VAE encoder's latents of the look (as the trainer teaches it): each case rendered by the toon world
   in the grade, encoded and decoded by the model's VAE, scored the same way (`vae_ceiling`). The shipped
   VAE never saw the grade and its encoder pulls the colours back towards the toon world's palette.

Style ceiling (`style-ceiling`, no training, minutes): the same held-out cases rendered by the toon world,
through the model's VAE as they are and in the grade; their colour distance to the stills and adherence
(graded ones after `Grade.invert`, and the grade alone without the VAE as a check that inverting is exact).

Subject: 1. renders stills of the "zorp" (world.EXTRA_CHARACTERS: a sprite no base dataset holds) alone in
the toon world's sets, captioned with the trigger word ("A wide shot of the garden. A zorp runs left.",
toonworld/extras.py); 2. trains a subject adapter on them (the subject kind's recipe: a decoder LoRA that
learns to draw the stills' latents back, weighted to the pixels the base decoder draws wrong, then a
transformer LoRA with prior preservation); 3. generates held-out
one-segment storyboards of the same kind (other seeds) with the adapter, the same storyboards with the
trigger word taken out with the adapter, and the trigger storyboards with the base; 4. counts the segments
in which the zorp detector (eval/detectors.py `character_present`) finds it, per arm, and in the held-out
shots as the toon world renders them passed through the model's VAE, as it is and with the adapter's decoder
LoRA (the bound of a transformer LoRA: the shipped VAE draws the zorp's violet back grey-blue).

Each prints a summary and writes result.json (and a base-vs-adapter PNG strip with --strip).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import (
    DECODER_OBJECTIVES,
    KIND_DEFAULTS,
    AdapterConfig,
    AdapterTrainConfig,
)

log = logging.getLogger(__name__)

STYLE_SEED = 2_000_000  # episode seeds of the style stills (training data uses 0.., evaluation 1_000_000..)
GRADE = "dusk"
SUBJECT_SEED = 3_000_000  # seeds of the subject stills; its evaluation shots use SUBJECT_EVAL_SEED..
SUBJECT_EVAL_SEED = 3_100_000
SUBJECT = "zorp"


@dataclass(frozen=True)
class StyleRun:
    """Settings of one style experiment (defaults: the recorded run)."""

    out: Path
    model: Path | None = None
    stills: int = 50
    steps: int = AdapterTrainConfig.steps
    rank: int = AdapterConfig.rank
    learning_rate: float = AdapterTrainConfig.learning_rate
    batch: int = AdapterTrainConfig.batch
    text_dropout: float = 0.3
    # the style kind's recipe (config.KIND_DEFAULTS): a LoRA of the VAE decoder's output convolution alone,
    # the "colour" objective on the base's own samples of the stills' captions. `--targets NAME...` adds a
    # transformer LoRA (with `--decoder-objective reconstruct`: the earlier runs, docs/benchmarks.md)
    targets: tuple[str, ...] = KIND_DEFAULTS["style"].target_modules
    decoder_targets: tuple[str, ...] = KIND_DEFAULTS["style"].decoder_targets
    decoder_steps: int = AdapterTrainConfig.decoder_steps
    decoder_learning_rate: float = AdapterTrainConfig.decoder_learning_rate
    decoder_batch: int = AdapterTrainConfig.decoder_batch
    decoder_objective: str = KIND_DEFAULTS["style"].decoder_objective
    decoder_samples: int = AdapterTrainConfig.decoder_samples
    decoder_sample_steps: int | None = AdapterTrainConfig.decoder_sample_steps
    storyboards: int = 12
    segments: int = 1
    scale: float = 1.0
    # 1: on a loaded shared machine two torch threads spin against other jobs (a forward pass went from
    # 2 s to 27 s in wall time); on an idle machine pass --threads 2
    threads: int = 1
    strip: Path | None = None


def _read_pngs(paths: list[Path]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in paths])


def _strip(path: Path, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """Rows of [style still | base frame | adapter frame] (display values), upscaled 2x, as a PNG."""
    from PIL import Image

    from ..toonworld.render import to_uint8

    gap = np.ones((rows[0][0].shape[0], 4, 3), np.float32)
    image = np.concatenate([np.concatenate([a, gap, b, gap, c], axis=1) for a, b, c in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(to_uint8(image))
    pil.resize((pil.width * 2, pil.height * 2), Image.NEAREST).save(path, optimize=True)
    return path


SET_MARGIN = 2  # px around a character's matte left out of the sets' error (the VAE blurs its edges)


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """mask [..., H, W] grown by px pixels in each direction (a square neighbourhood; it wraps at the frame's
    edges, which only leaves a few more pixels out of the sets there)."""
    out = mask.copy()
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            out |= np.roll(mask, (dy, dx), axis=(-2, -1))
    return out


def _through_vae(pipe: Any, frames: np.ndarray) -> np.ndarray:
    """Display frames [T, H, W, 3] -> the model VAE's round trip of them, with a generated video's leading
    frame (as `compare`'s vae-round-trip arm cuts them): [T + 1, H, W, 3] display values."""
    from ..conform import convert
    from ..eval.compare import display_frames
    from ..pipeline.model_spec import SRGB_ENCODED

    space = pipe.spec.colorspace
    lead = np.concatenate([frames[:1], frames])
    with torch.no_grad():
        return display_frames(pipe.decode(pipe.encode_frames(convert(lead, SRGB_ENCODED, space))), space)


def style_experiment(run: StyleRun) -> dict[str, Any]:
    """Run the experiment (module docstring); returns the figures (also written to run.out/result.json)."""
    from ..default_model import default_model_dir
    from ..eval.compare import EVAL_SEED_BASE, CompareConfig, display_frames, eval_cases, sampling_params
    from ..eval.metrics import colour_distance, evaluate
    from ..pipeline.video_pipeline import VideoPipeline
    from ..toonworld.grade import get_grade, write_graded_stills
    from ..toonworld.render import render_episode
    from . import applied
    from .train import train_adapter

    torch.set_num_threads(run.threads)
    grade = get_grade(GRADE)
    pipe = VideoPipeline.from_folder(run.model or default_model_dir())
    height, width = pipe.default_size
    stills = write_graded_stills(
        run.out / "stills", run.stills, GRADE, STYLE_SEED, height, width, int(pipe.fps)
    )
    config = AdapterConfig(
        rank=run.rank,
        alpha=float(run.rank),
        target_modules=run.targets,
        decoder_targets=run.decoder_targets,
        kind="style",
        trigger=GRADE,
    )
    train = AdapterTrainConfig(
        learning_rate=run.learning_rate,
        steps=run.steps,
        batch=run.batch,
        preview_every=max(1, run.steps // 3),
        text_dropout=run.text_dropout,
        decoder_steps=run.decoder_steps,
        decoder_learning_rate=run.decoder_learning_rate,
        decoder_batch=run.decoder_batch,
        decoder_objective=run.decoder_objective,
        decoder_samples=run.decoder_samples,
        decoder_sample_steps=run.decoder_sample_steps,
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = train_adapter(run.out / "stills", run.out / "adapter", pipe, config, train, progress=True)
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert result is not None
    adapter = result.adapter
    log.info("style adapter trained in %.1f s wall, %.1f s CPU", train_seconds, train_cpu)

    cases = eval_cases(run.segments, run.storyboards)
    assert all(c.seed >= EVAL_SEED_BASE for c in cases)
    params = sampling_params(pipe, CompareConfig(segments=run.segments, storyboards=run.storyboards))
    fps = int(pipe.fps)
    arms: dict[str, list[np.ndarray]] = {"base": [], "adapter": [], "vae_ceiling": []}
    reports: dict[str, list[Any]] = {"base": [], "adapter": [], "adapter_as_generated": [], "vae_ceiling": []}
    for case in cases:
        base = display_frames(pipe.generate(case.storyboard, params).frames, pipe.spec.colorspace)
        with applied(pipe.transformer, [(adapter, run.scale)], vae=pipe.vae):
            styled = display_frames(pipe.generate(case.storyboard, params).frames, pipe.spec.colorspace)
        arms["base"].append(base)
        arms["adapter"].append(styled)
        reports["base"].append(evaluate(base, case.storyboard, fps, facts=case.facts))
        reports["adapter"].append(evaluate(grade.invert(styled), case.storyboard, fps, facts=case.facts))
        reports["adapter_as_generated"].append(evaluate(styled, case.storyboard, fps, facts=case.facts))
        ceiling = _through_vae(pipe, grade.apply(render_episode(case.episode(), height, width, fps=fps)))
        arms["vae_ceiling"].append(ceiling)
        reports["vae_ceiling"].append(evaluate(grade.invert(ceiling), case.storyboard, fps, facts=case.facts))
    style = _read_pngs(stills)
    distance = {k: colour_distance(np.concatenate(v), style) for k, v in arms.items()}
    adherence = {k: float(np.mean([r.summary()["adherence"] for r in v])) for k, v in reports.items()}
    figures = {
        "run": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()},
        "adapter": {"path": str(adapter.path), "sha256": adapter.sha256},
        "train_seconds_total": round(train_seconds, 1),
        "train_seconds_steps": round(result.seconds, 1),
        "train_cpu_seconds": round(train_cpu, 1),  # this process's CPU time: the machine is shared
        "final_loss": result.losses[-1] if result.losses else None,
        "decoder_loss": [result.decoder_losses[0], result.decoder_losses[-1]]
        if result.decoder_losses
        else None,
        "colour_distance": {k: round(v, 3) for k, v in distance.items()},
        "distance_ratio": round(distance["adapter"] / distance["base"], 3),
        "vae_ceiling_distance_ratio": round(distance["vae_ceiling"] / distance["base"], 3),
        "adherence": {k: round(v, 3) for k, v in adherence.items()},
        "adherence_difference": round(adherence["adapter"] - adherence["base"], 3),
        "cases": len(cases),
        "segments": run.segments,
    }
    (run.out / "result.json").write_text(json.dumps(figures, indent=2) + "\n")
    if run.strip is not None:
        rows = []
        for i, (b, a) in enumerate(zip(arms["base"][:3], arms["adapter"][:3])):
            mid = len(b) // 2
            rows.append((style[i], b[mid], a[mid]))
        _strip(run.strip, rows)
    return figures


def style_ceiling(
    out: Path,
    model: Path | None = None,
    stills: int = StyleRun.stills,
    storyboards: int = StyleRun.storyboards,
    threads: int = StyleRun.threads,
) -> dict[str, Any]:
    """What an adapter of the VAE encoder's latents can reach (module docstring); also in out/ceiling.json."""
    from ..default_model import default_model_dir
    from ..eval.compare import eval_cases
    from ..eval.metrics import colour_distance, evaluate
    from ..pipeline.video_pipeline import VideoPipeline
    from ..toonworld.grade import get_grade, write_graded_stills
    from ..toonworld.render import render_episode

    torch.set_num_threads(threads)
    grade = get_grade(GRADE)
    pipe = VideoPipeline.from_folder(model or default_model_dir())
    height, width = pipe.default_size
    fps = int(pipe.fps)
    style = _read_pngs(write_graded_stills(out / "stills", stills, GRADE, STYLE_SEED, height, width, fps))
    arms: dict[str, list[np.ndarray]] = {"vae": [], "vae_graded": []}
    adherence: dict[str, list[float]] = {"vae": [], "vae_graded": [], "graded_no_vae": []}
    for case in eval_cases(1, storyboards):
        rendered = render_episode(case.episode(), height, width, fps=fps)
        graded = grade.apply(rendered)
        arms["vae"].append(_through_vae(pipe, rendered))
        arms["vae_graded"].append(_through_vae(pipe, graded))
        for arm, frames in (
            ("vae", arms["vae"][-1]),
            ("vae_graded", grade.invert(arms["vae_graded"][-1])),
            ("graded_no_vae", grade.invert(graded)),
        ):
            adherence[arm].append(
                evaluate(frames, case.storyboard, fps, facts=case.facts).summary()["adherence"]
            )
    distance = {k: colour_distance(np.concatenate(v), style) for k, v in arms.items()}
    figures = {
        "model": str(model or default_model_dir()),
        "cases": storyboards,
        "stills": stills,
        "colour_distance": {k: round(v, 3) for k, v in distance.items()},
        "distance_ratio": round(distance["vae_graded"] / distance["vae"], 3),
        "adherence": {k: round(float(np.mean(v)), 3) for k, v in adherence.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


@dataclass(frozen=True)
class SubjectRun:
    """Settings of one subject experiment (defaults: the recorded run)."""

    out: Path
    model: Path | None = None
    trigger: str = SUBJECT
    stills: int = 40
    clips: int = 0  # one-segment clips of the zorp moving (toonworld/extras.py write_extra_clips)
    # the recorded run's: 360 steps with 8 prior samples of 10 sampling steps (cheap priors) after a decoder
    # phase at lr 2e-2 weighted to the subject; 32 minutes of training on the idle 2-core CPU
    steps: int = 360
    rank: int = AdapterConfig.rank
    learning_rate: float = AdapterTrainConfig.learning_rate
    batch: int = AdapterTrainConfig.batch
    text_dropout: float = AdapterTrainConfig.text_dropout
    prior_samples: int = 8
    prior_steps: int | None = 10  # None: the model's 25
    targets: tuple[str, ...] = KIND_DEFAULTS["subject"].target_modules
    # the decoder phase ("reconstruct"): the shipped VAE draws the zorp's violet back grey-blue, so no
    # transformer LoRA alone can make the detector find it (the run's `vae_round_trip` arm shows it)
    decoder_targets: tuple[str, ...] = KIND_DEFAULTS["subject"].decoder_targets
    decoder_steps: int = AdapterTrainConfig.decoder_steps
    decoder_learning_rate: float = 2e-2
    decoder_batch: int = AdapterTrainConfig.decoder_batch
    decoder_focus: float = KIND_DEFAULTS["subject"].decoder_focus
    storyboards: int = 12
    scale: float = 1.0
    threads: int = 1  # see StyleRun.threads
    strip: Path | None = None


def subject_experiment(run: SubjectRun) -> dict[str, Any]:
    """Run the subject experiment (module docstring); returns the figures (also in run.out/result.json)."""
    from ..default_model import default_model_dir
    from ..eval.compare import CompareConfig, display_frames, sampling_params
    from ..eval.detectors import character_present
    from ..pipeline.video_pipeline import VideoPipeline
    from ..storyboard import Segment, Storyboard
    from ..toonworld.dataset import load_frames
    from ..toonworld.extras import extra_caption, extra_segment, write_extra_clips, write_extra_stills
    from ..toonworld.render import render_segment_and_matte
    from . import applied
    from .data import without_trigger
    from .train import train_adapter

    torch.set_num_threads(run.threads)
    pipe = VideoPipeline.from_folder(run.model or default_model_dir())
    height, width = pipe.default_size
    material = run.out / "material"
    shot = (SUBJECT, run.trigger, SUBJECT_SEED, height, width, int(pipe.fps))
    stills = write_extra_stills(material, run.stills, *shot) if run.stills else []
    clips = write_extra_clips(material, run.clips, *shot) if run.clips else []
    config = AdapterConfig(
        rank=run.rank,
        alpha=float(run.rank),
        target_modules=run.targets,
        decoder_targets=run.decoder_targets,
        kind="subject",
        trigger=run.trigger,
    )
    train = AdapterTrainConfig(
        learning_rate=run.learning_rate,
        steps=run.steps,
        batch=run.batch,
        prior_samples=run.prior_samples,
        prior_steps=run.prior_steps,
        text_dropout=run.text_dropout,
        preview_every=run.steps,  # one preview, at the end: each is a full sample (~25 s loaded)
        decoder_steps=run.decoder_steps,
        decoder_learning_rate=run.decoder_learning_rate,
        decoder_batch=run.decoder_batch,
        decoder_objective=KIND_DEFAULTS["subject"].decoder_objective,
        decoder_focus=run.decoder_focus,
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = train_adapter(material, run.out / "adapter", pipe, config, train, progress=True)
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert result is not None
    adapter = result.adapter

    captions = [
        extra_caption(extra_segment(SUBJECT, SUBJECT_EVAL_SEED + i), run.trigger)
        for i in range(run.storyboards)
    ]
    params = sampling_params(pipe, CompareConfig(segments=1, storyboards=run.storyboards))
    arms = ("adapter_with_word", "adapter_without_word", "base_with_word")
    hits: dict[str, list[bool]] = {k: [] for k in arms}
    mids: dict[str, list[np.ndarray]] = {k: [] for k in arms}
    t1 = time.perf_counter()
    for text in captions:
        with_word = Storyboard((Segment(text),))
        without = Storyboard((Segment(without_trigger(text, run.trigger)),))
        for arm, board, scale in (
            ("adapter_with_word", with_word, run.scale),
            ("adapter_without_word", without, run.scale),
            ("base_with_word", with_word, None),
        ):
            if scale is None:
                frames = pipe.generate(board, params).frames
            else:
                with applied(pipe.transformer, [(adapter, scale)], vae=pipe.vae):
                    frames = pipe.generate(board, params).frames
            shown = display_frames(frames, pipe.spec.colorspace)
            hits[arm].append(character_present(shown, SUBJECT))
            mids[arm].append(shown[len(shown) // 2])
    # the bound of any transformer LoRA: the held-out shots as the toon world renders them, through the VAE
    # as it is and with the adapter's decoder LoRA (which is all the adapter changes there); and what the
    # decoder LoRA costs the sets: the round trip's error away from the zorp
    set_error: dict[str, list[float]] = {}
    for i in range(run.storyboards):
        seg = extra_segment(SUBJECT, SUBJECT_EVAL_SEED + i)
        rendered, matte = render_segment_and_matte(seg, height, width, fps=int(pipe.fps))
        sets = ~_dilate(matte, SET_MARGIN)
        for arm, adapters in (
            ("vae_round_trip", []),
            ("vae_round_trip_adapter_decoder", [(adapter, run.scale)]),
        ):
            with applied(pipe.transformer, adapters, vae=pipe.vae):
                drawn = _through_vae(pipe, rendered)[1:]
            hits.setdefault(arm, []).append(character_present(drawn, SUBJECT))
            set_error.setdefault(arm, []).append(float(np.abs(drawn - rendered)[sets].mean()))
    rates = {k: round(float(np.mean(v)), 3) for k, v in hits.items()}
    figures = {
        "run": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()},
        "adapter": {"path": str(adapter.path), "sha256": adapter.sha256},
        "train_seconds_total": round(train_seconds, 1),
        "train_seconds_steps": round(result.seconds, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "eval_seconds": round(time.perf_counter() - t1, 1),
        "final_loss": result.losses[-1] if result.losses else None,
        "hit_rate": rates,
        "set_l1": {k: round(float(np.mean(v)), 4) for k, v in set_error.items()},
        "hits": {k: [bool(h) for h in v] for k, v in hits.items()},
        "captions": captions,
        "cases": len(captions),
    }
    (run.out / "result.json").write_text(json.dumps(figures, indent=2) + "\n")
    if run.strip is not None:
        shown = list(_read_pngs(stills[:3])) if stills else []
        for clip in clips[: 3 - len(shown)]:  # a clip shows its middle frame
            frames = load_frames(clip)
            shown.append(frames[len(frames) // 2].astype(np.float32) / 255.0)
        _strip(
            run.strip, [(shown[i], mids["base_with_word"][i], mids["adapter_with_word"][i]) for i in range(3)]
        )
    return figures


def _add_run_arguments(parser: argparse.ArgumentParser, defaults: Any, ints: tuple[str, ...]) -> None:
    """The command-line options of a run's settings (defaults: the recorded run's)."""
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path)
    for name in ints:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--lr", dest="learning_rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--text-dropout", type=float, default=defaults.text_dropout)
    parser.add_argument("--scale", type=float, default=defaults.scale)
    parser.add_argument("--targets", nargs="*", default=list(defaults.targets))
    parser.add_argument("--strip", type=Path, help="write a [still | base | adapter] PNG strip here")


def _add_decoder_arguments(parser: argparse.ArgumentParser, defaults: Any) -> None:
    parser.add_argument(
        "--decoder-targets",
        nargs="*",
        default=list(defaults.decoder_targets),
        help="VAE decoder layers given a LoRA (none: a transformer-only adapter)",
    )
    parser.add_argument(
        "--decoder-lr", dest="decoder_learning_rate", type=float, default=defaults.decoder_learning_rate
    )


def _run_from(cls: type, args: argparse.Namespace) -> Any:
    """A StyleRun / SubjectRun from the parsed options (one option per field)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)}
    tuples = {k: tuple(values[k]) for k in ("targets", "decoder_targets") if k in values}
    return cls(**{**values, **tuples})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ttt_engine.adapters.experiment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="which", required=True)
    style = sub.add_parser("style", help="the style adapter must-show")
    _add_run_arguments(
        style,
        StyleRun(out=Path(".")),
        (
            "stills",
            "steps",
            "rank",
            "batch",
            "storyboards",
            "segments",
            "threads",
            "decoder_steps",
            "decoder_batch",
            "decoder_samples",
            "decoder_sample_steps",
        ),
    )
    style.add_argument("--decoder-objective", choices=DECODER_OBJECTIVES, default=StyleRun.decoder_objective)
    _add_decoder_arguments(style, StyleRun)
    ceiling = sub.add_parser(
        "style-ceiling", help="what an adapter of the VAE encoder's latents can reach (no training)"
    )
    ceiling.add_argument("--out", type=Path, required=True)
    ceiling.add_argument("--model", type=Path)
    for name in ("stills", "storyboards", "threads"):  # the style run's
        ceiling.add_argument(f"--{name}", type=int, default=getattr(StyleRun, name))
    subject = sub.add_parser("subject", help="the subject adapter must-show")
    subject.add_argument("--trigger", default=SubjectRun(out=Path(".")).trigger)
    _add_run_arguments(
        subject,
        SubjectRun(out=Path(".")),
        (
            "stills",
            "clips",
            "steps",
            "rank",
            "batch",
            "prior_samples",
            "prior_steps",
            "storyboards",
            "threads",
            "decoder_steps",
            "decoder_batch",
        ),
    )
    _add_decoder_arguments(subject, SubjectRun)
    subject.add_argument(
        "--decoder-focus",
        type=float,
        default=SubjectRun.decoder_focus,
        help="how much more the pixels the base decoder draws wrong weigh in the decoder phase (0: plain L1)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.which == "subject":
        result = subject_experiment(_run_from(SubjectRun, args))
    elif args.which == "style-ceiling":
        result = style_ceiling(args.out, args.model, args.stills, args.storyboards, args.threads)
    else:
        result = style_experiment(_run_from(StyleRun, args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
