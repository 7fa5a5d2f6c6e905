"""`ttt-studio compare NAME=MODEL ...`: generate the same held-out toon-world storyboards with several
models and score them with the detectors, side by side (the default model against a random-init copy,
and the TTT ablation in docs/ablation.md).

Storyboards come from toon-world episodes with seeds the training data never used (EVAL_SEED_BASE + i),
so the requested facts are taken from each episode's plan, not parsed back from the text. `random-init`
is a model of the first model's architecture whose transformer and text encoder are freshly initialised
(its trained VAE is kept, so the figures measure the generator, not the decoder).

Two reference arms give the ceiling a model is measured against: `rendered` scores the toon world's own
renders of the same storyboards (what the detectors make of perfect output), `vae-round-trip` those renders
encoded and decoded by the first model's VAE (the best its DiT could do through that autoencoder).

Per model the table gives the mean over storyboards of: prompt adherence, identity consistency,
temporal smoothness, framing accuracy, and adherence over the first and last `tail` segments (does a
model keep following the storyboard as the video gets longer?). With `--variant memory` the storyboards
are the toon world's memory variant (a hat colour only the first segment states) and the table adds the
memory metric (eval/memory.py) with its standard error over storyboards and its chance level.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttt_engine.storyboard import Storyboard
from ttt_engine.toonworld.memory import (
    MIN_SEGMENTS,
    VARIANTS,
    check_variant,
    variant_episode,
    variant_storyboard,
)
from ttt_engine.toonworld.world import CHASE_SETUP_PROB, check_chase_setup_prob

from .cli import RANDOM_INIT
from .facts import facts_from_episode
from .memory import CHANCE, mean_and_se, memory_score
from .metrics import EvalReport, evaluate

log = logging.getLogger(__name__)

EVAL_SEED_BASE = 1_000_000  # episode seeds of evaluation storyboards (toon-world training data uses 0..)
RENDERED = "rendered"
VAE_ROUND_TRIP = "vae-round-trip"


@dataclass(frozen=True)
class EvalCase:
    """One held-out storyboard and its episode's requested facts."""

    seed: int
    storyboard: Storyboard
    facts: list[Any]
    segments: int = 0  # of the episode (sample_episode(seed, segments)); 0: len(storyboard)
    chase_setup_prob: float = CHASE_SETUP_PROB  # the planner's, as the storyboard was made
    variant: str = "base"  # the toon world's (toonworld/memory.py)

    def episode(self) -> Any:
        return variant_episode(
            self.variant, self.seed, self.segments or len(self.storyboard), self.chase_setup_prob
        )


@dataclass(frozen=True)
class CompareConfig:
    """Sampling settings left None are each model's own defaults (its model_index.json "sampling", as
    `ttt-studio generate` and the server use them), so the figures describe what users get."""

    segments: int = 2
    storyboards: int = 4
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    cfg_schedule: str | None = None
    unguided_steps: int = 0  # the first steps without guidance (a server draft's: docs/benchmarks.md)
    noise_seed: int = 0
    tail: int = 2  # segments averaged for the "first" and "last" adherence columns
    # index of the first held-out storyboard: tune settings (guidance, steps) on one range, report another
    first_storyboard: int = 0
    # the toon-world planner's chase staging (0: the storyboards of figures measured before it existed)
    chase_setup_prob: float = CHASE_SETUP_PROB
    variant: str = "base"  # 'memory': the memory variant's storyboards and the memory metric

    def __post_init__(self) -> None:
        for name in ("segments", "storyboards", "steps", "tail"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"CompareConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.unguided_steps < 0:
            raise ValueError(f"CompareConfig.unguided_steps: expected >= 0, got {self.unguided_steps}")
        if self.first_storyboard < 0:
            raise ValueError(f"CompareConfig.first_storyboard: expected >= 0, got {self.first_storyboard}")
        check_chase_setup_prob(self.chase_setup_prob, "CompareConfig.chase_setup_prob")
        check_variant(self.variant, "CompareConfig.variant")
        if self.variant == "memory" and self.segments < MIN_SEGMENTS:
            raise ValueError(
                f"CompareConfig.segments: the memory variant needs >= {MIN_SEGMENTS}, got {self.segments}"
            )


def eval_cases(
    segments: int,
    count: int,
    first: int = 0,
    chase_setup_prob: float = CHASE_SETUP_PROB,
    variant: str = "base",
) -> list[EvalCase]:
    """`count` held-out toon-world storyboards of `segments` segments, from index `first` (deterministic).

    The seeds (EVAL_SEED_BASE + i) are the same for both variants; the memory variant draws its plans
    from them with its own salt, so its held-out storyboards are its own."""
    cases = []
    for i in range(first, first + count):
        seed = EVAL_SEED_BASE + i
        episode = variant_episode(variant, seed, segments, chase_setup_prob)
        storyboard, facts = variant_storyboard(episode), facts_from_episode(episode)
        cases.append(EvalCase(seed, storyboard, facts, segments, chase_setup_prob, variant))
    return cases


def random_init_like(pipe: Any, seed: int = 0) -> Any:
    """A pipeline with `pipe`'s architecture, VAE and schedule; the transformer re-initialised, and the text
    encoder too when it was trained with the model (ours). A pretrained, frozen encoder that ships in a
    package (PackagedTextEncoder) is kept, as the VAE is: the figures then measure what training taught."""
    from ttt_engine.models import VideoDiT
    from ttt_engine.pipeline.text import HashTextEncoder, PackagedTextEncoder
    from ttt_engine.pipeline.video_pipeline import VideoPipeline

    if not isinstance(pipe.text_encoder, HashTextEncoder | PackagedTextEncoder):
        raise ValueError(
            "random-init needs a model with our hashed-word text encoder or a packaged one "
            f"(got a {type(pipe.text_encoder).__name__})"
        )
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        transformer = VideoDiT(pipe.transformer.config)
        if isinstance(pipe.text_encoder, HashTextEncoder):
            text = HashTextEncoder(pipe.text_encoder.config)
        else:
            text = pipe.text_encoder
    finally:
        torch.random.set_rng_state(gen_state)
    return VideoPipeline(
        transformer,
        pipe.vae,
        text,
        pipe.scheduler_config,
        fps=pipe.fps,
        device=pipe.device,
        max_segments=pipe.max_segments,
        source=f"{RANDOM_INIT} of {pipe.source}",
        sampling=pipe.sampling,
    )


def with_vae(pipe: Any, vae: Any, name: str, vae_source: str) -> Any:
    """`pipe` decoding with `vae`, which must share its encoder and latent scale (a decoder fine-tuned by
    a `vae_trainable: decoder` stage): the DiT's latents mean the same to both, so arms of an ablation
    can be decoded alike."""
    from ttt_engine.pipeline.video_pipeline import VideoPipeline
    from ttt_engine.train.data import vae_fingerprint

    # the latent cache's key: the VAE config (latent scale included) and its encoder-side weights
    if vae_fingerprint(vae) != vae_fingerprint(pipe.vae):
        raise ValueError(
            f"--vae: its encoder or latent scale differs from {name}'s, so its latents mean something else; "
            "use a VAE whose decoder alone was fine-tuned from this model's (a 'vae_trainable: decoder' stage)"
        )
    return VideoPipeline(
        pipe.transformer,
        vae.to(pipe.device),
        pipe.text_encoder,
        pipe.scheduler_config,
        fps=pipe.fps,
        device=pipe.device,
        max_segments=pipe.max_segments,
        source=f"{pipe.source} with the VAE of {vae_source}",
        sampling=pipe.sampling,
    )


def display_frames(frames: np.ndarray, colorspace: str) -> np.ndarray:
    """Frames in `colorspace` (a model's: pipe.spec.colorspace) as sRGB display values in [0, 1] (OCIO)."""
    from ttt_engine.conform import to_display

    return to_display(frames, colorspace)


@dataclass(frozen=True)
class ToonWorldReference:
    """A reference arm: each case's episode rendered by the toon world at the model's size and frame rate,
    as is (vae=None: `rendered`) or encoded and decoded by `vae_of`'s VAE (`vae-round-trip`)."""

    fps: int
    size: tuple[int, int]  # (height, width)
    vae_of: Any = None  # a VideoPipeline whose encode_frames / decode round-trip the renders

    def frames(self, case: EvalCase) -> np.ndarray:
        """Display frames [T, H, W, 3] in [0, 1]."""
        from ttt_engine.conform import convert
        from ttt_engine.pipeline.model_spec import SRGB_ENCODED
        from ttt_engine.toonworld.render import render_episode

        rendered = render_episode(case.episode(), *self.size, fps=self.fps)
        if self.vae_of is None:
            return rendered
        # a generated video's leading frame, as training cuts windows
        lead = np.concatenate([rendered[:1], rendered])
        space = self.vae_of.spec.colorspace  # the renders are sRGB-encoded, the VAE reads its model's space
        latents = self.vae_of.encode_frames(convert(lead, SRGB_ENCODED, space))
        return display_frames(self.vae_of.decode(latents), space)


def reference_arm(name: str, pipe: Any) -> ToonWorldReference:
    """`rendered` or `vae-round-trip` at the size and frame rate of `pipe` (whose VAE the round trip uses)."""
    if name not in (RENDERED, VAE_ROUND_TRIP):
        raise ValueError(f"reference arm {name!r}: expected {RENDERED!r} or {VAE_ROUND_TRIP!r}")
    return ToonWorldReference(
        int(pipe.fps), tuple(pipe.default_size), pipe if name == VAE_ROUND_TRIP else None
    )


def sampling_params(pipe: Any, config: CompareConfig) -> Any:
    """The GenerationParams a model samples every case with: config's settings, the model's own defaults
    for those left None."""
    return pipe.generation_params(
        steps=config.steps,
        guidance_scale=config.guidance,
        sampler=config.sampler,
        cfg_schedule=config.cfg_schedule,
        unguided_steps=config.unguided_steps,
        seed=config.noise_seed,
        dtype="float32",
        preview_every=0,
    )


def run_model(pipe: Any, cases: Sequence[EvalCase], config: CompareConfig) -> list[EvalReport]:
    """Generate every case with one model (or take a reference arm's frames) and score it."""
    reports = []
    for case in cases:
        if isinstance(pipe, ToonWorldReference):
            display, fps = pipe.frames(case), pipe.fps
        else:
            frames = pipe.generate(case.storyboard, sampling_params(pipe, config)).frames
            display, fps = display_frames(frames, pipe.spec.colorspace), int(pipe.fps)
        report = evaluate(display, case.storyboard, fps, facts=case.facts)
        if case.variant == "memory":
            report = dataclasses.replace(report, memory=memory_score(display, case.episode(), fps))
        reports.append(report)
    return reports


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarise(reports: Sequence[EvalReport], tail: int) -> dict[str, float | None]:
    """Means over storyboards of the report summaries plus first/last-segment adherence."""
    keys = ("adherence", "identity", "smoothness", "framing_accuracy")
    out: dict[str, float | None] = {}
    for key in keys:
        out[key] = _mean([r.summary().get(key) for r in reports])
    out[f"adherence_first_{tail}"] = _mean(
        [float(np.mean([s.adherence for s in r.segments[:tail]])) for r in reports]
    )
    out[f"adherence_last_{tail}"] = _mean(
        [float(np.mean([s.adherence for s in r.segments[-tail:]])) for r in reports]
    )
    for kind in ("presence", "absence", "background", "motion"):
        out[f"facts_{kind}"] = _mean([r.fact_accuracy(kind) for r in reports])
    memory = [r.memory for r in reports if r.memory is not None]
    if memory:  # means over storyboards, each with its standard error
        for key in ("text_match", "self_match", "hat_seen"):
            out[f"memory_{key}"], out[f"memory_{key}_se"] = mean_and_se([getattr(m, key) for m in memory])
        out["memory_chance"] = CHANCE
    return out


def format_summary(summaries: dict[str, dict[str, float | None]]) -> str:
    names = list(summaries)
    width = max(12, *(len(n) + 2 for n in names))
    keys = list(dict.fromkeys(k for s in summaries.values() for k in s))
    lines = ["metric".ljust(22) + "".join(n.rjust(width) for n in names)]
    lines.append("-" * len(lines[0]))
    for key in keys:
        cells = [summaries[n].get(key) for n in names]
        lines.append(key.ljust(22) + "".join(("-" if c is None else f"{c:.3f}").rjust(width) for c in cells))
    return "\n".join(lines)


def compare(
    models: dict[str, Any], config: CompareConfig
) -> tuple[dict[str, dict[str, float | None]], dict[str, list[EvalReport]]]:
    """models: name -> VideoPipeline. Returns (summaries, per-storyboard reports) by model name."""
    cases = eval_cases(
        config.segments, config.storyboards, config.first_storyboard, config.chase_setup_prob, config.variant
    )
    reports = {}
    for name, pipe in models.items():
        log.info("generating %d storyboards of %d segments with %s", len(cases), config.segments, name)
        reports[name] = run_model(pipe, cases, config)
    return {n: summarise(r, min(config.tail, config.segments)) for n, r in reports.items()}, reports


# ---- command line ---------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="generate held-out toon-world storyboards with several models and score them side by side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="NAME=MODEL_DIR",
        help=f"model folders; '{RANDOM_INIT}' alone adds a random-init copy of the first model; "
        f"'default' (alone or as NAME=default) is the shipped default model; '{RENDERED}' and '{VAE_ROUND_TRIP}' add the toon world's "
        "renders as they are and through the first model's VAE (the ceilings)",
    )
    p.add_argument("--segments", type=int, default=CompareConfig.segments, help="segments per storyboard")
    p.add_argument("--storyboards", type=int, default=CompareConfig.storyboards, help="storyboards per model")
    p.add_argument("--steps", type=int, help="denoising steps (default: each model's own)")
    p.add_argument("--guidance", type=float, help="CFG strength (default: each model's own)")
    p.add_argument(
        "--cfg-schedule", choices=("dynamic", "constant"), help="CFG schedule (default: each model's own)"
    )
    p.add_argument(
        "--unguided-steps",
        type=int,
        default=CompareConfig.unguided_steps,
        help="the first N steps without guidance, as a server's draft runs them (default 0: all guided)",
    )
    p.add_argument("--seed", type=int, default=CompareConfig.noise_seed, help="noise seed")
    p.add_argument(
        "--first-storyboard",
        type=int,
        default=CompareConfig.first_storyboard,
        help="index of the first held-out storyboard (tune on one range, report on another)",
    )
    p.add_argument(
        "--chase-setup",
        type=float,
        default=CompareConfig.chase_setup_prob,
        metavar="P",
        help="the toon-world planner's chase staging for the storyboards (default %(default)s; 0: the "
        "storyboards of figures recorded before the planner staged chases, such as docs/ablation.md's)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default=CompareConfig.variant,
        help="'memory': the toon world's memory variant (a hat colour only the first segment states; "
        "needs --segments >= 3) and the memory metric with its chance level",
    )
    p.add_argument("--tail", type=int, default=CompareConfig.tail, help="segments in the first/last columns")
    p.add_argument("--json", type=Path, help="also write summaries and reports as JSON")
    p.add_argument(
        "--vae",
        metavar="MODEL_DIR",
        help="decode every model with this model folder's VAE (same encoder, fine-tuned decoder)",
    )
    p.set_defaults(func=run)


def _load_models(specs: Sequence[str]) -> dict[str, Any]:
    from ttt_engine.pipeline.video_pipeline import VideoPipeline

    from ..default_model import default_model_dir

    models: dict[str, Any] = {}
    for spec in specs:
        if spec in (RANDOM_INIT, RENDERED, VAE_ROUND_TRIP):
            if not models:
                raise ValueError(f"'{spec}' needs a model before it (its architecture, size and VAE)")
            first = next(iter(models.values()))
            models[spec] = random_init_like(first) if spec == RANDOM_INIT else reference_arm(spec, first)
            continue
        name, sep, path = spec.partition("=")
        if spec == "default":
            name, path = "default", str(default_model_dir())
        elif not sep or not name or not path:
            raise ValueError(f"{spec!r}: expected NAME=MODEL_DIR, '{RANDOM_INIT}' or 'default'")
        elif path == "default":  # NAME=default: the shipped model under another name, as in probe-text
            path = str(default_model_dir())
        if name in models:
            raise ValueError(f"two models named {name!r}")
        models[name] = VideoPipeline.from_folder(path)
    return models


def run(args: argparse.Namespace) -> int:
    from ttt_engine.pipeline.params import SAMPLING_KEYS, PipelineError
    from ttt_engine.pipeline.video_pipeline import VideoPipeline

    try:
        config = CompareConfig(
            segments=args.segments,
            storyboards=args.storyboards,
            steps=args.steps,
            guidance=args.guidance,
            cfg_schedule=args.cfg_schedule,
            unguided_steps=args.unguided_steps,
            noise_seed=args.seed,
            tail=args.tail,
            first_storyboard=args.first_storyboard,
            chase_setup_prob=args.chase_setup,
            variant=args.variant,
        )
        models = _load_models(args.models)
        if args.vae:
            vae = VideoPipeline.from_folder(args.vae).vae
            swapped = {
                n: with_vae(p, vae, n, args.vae)
                for n, p in models.items()
                if not isinstance(p, ToonWorldReference)
            }
            first = next(iter(swapped.values()))  # the reference arms follow the swapped VAE too
            models = {n: swapped[n] if n in swapped else reference_arm(n, first) for n in models}
        for pipe in models.values():  # each model's settings checked before anything is generated
            if not isinstance(pipe, ToonWorldReference):
                sampling_params(pipe, config)
    except (ValueError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summaries, reports = compare(models, config)
    sampling = {
        n: {k: getattr(sampling_params(p, config), k) for k in SAMPLING_KEYS}
        for n, p in models.items()
        if not isinstance(p, ToonWorldReference)
    }
    print(
        f"{config.storyboards} held-out storyboards x {config.segments} segments from {config.first_storyboard}, "
        f"noise seed {config.noise_seed}"
    )
    for n, values in sampling.items():
        print(
            f"  {n}: {values['steps']} {values['sampler']} steps, {values['cfg_schedule']} guidance "
            f"{values['guidance_scale']:g}"
            + (f", first {config.unguided_steps} unguided" if config.unguided_steps else "")
        )
    print(format_summary(summaries))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": dataclasses.asdict(config),
            "sampling": sampling,
            "summaries": summaries,
            "reports": {n: [r.to_dict() for r in rs] for n, rs in reports.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0
