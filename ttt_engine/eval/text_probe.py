"""`ttt-studio probe-text MODEL DATASET --swap left=right ...`: does a trained model listen to a word?

Adherence figures say that a model misses, say, which way a character runs; they do not say whether
the model never learned the word or learned it and fails to draw it. This probe asks the model itself.
On one-segment windows of a dataset (the training format: toon world or a user's own footage) whose
prompt an edit changes, it compares the v-prediction loss with the true prompt against the loss with
the edited prompt ('left=right' swaps the two words both ways) and with an empty prompt, on the same
latents, noise and timesteps. A model that uses a word loses accuracy when the word is swapped; a
difference near zero at every noise level means the model ignores it (however well it does overall).
The empty prompt gives the scale: what the whole text is worth at that noise level.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ttt_engine.pipeline.prompt_edit import PromptEdit, WordSwap

DEFAULT_TIMESTEPS = (300, 600, 800, 950)  # of 1,000: the sampler fixes layout and motion above ~800


@dataclass(frozen=True)
class ProbeConfig:
    """timesteps: training timesteps (of the schedule's 1,000) to probe at; max_clips: windows per swap;
    seed: the noise."""

    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    max_clips: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.timesteps or any(not 0 <= t < 1000 for t in self.timesteps):
            raise ValueError(f"timesteps: expected integers in [0, 1000), got {list(self.timesteps)}")
        if self.max_clips < 1:
            raise ValueError(f"max_clips: expected >= 1, got {self.max_clips}")


@dataclass(frozen=True)
class ProbeRow:
    """Mean v-prediction MSE over `clips` windows at one timestep: true, edited and empty prompt."""

    swap: str
    timestep: int
    clips: int
    true: float
    edited: float
    empty: float

    @property
    def share(self) -> float:
        """(edited - true) / (empty - true): the part of the text's worth that rides on the swapped words."""
        gap = self.empty - self.true
        return (self.edited - self.true) / gap if gap > 0 else float("nan")


def _window_data(pipe: Any, dataset_dir: str | Path) -> Any:
    """DiTData of the dataset's one-segment windows, latents encoded by the model's VAE on demand (no cache)."""
    from ttt_engine.toonworld import ClipDataset
    from ttt_engine.train.data import DiTData, LatentStore, frame_layout, make_windows
    from ttt_engine.train.vae_train import temporal_factor

    dataset = ClipDataset(dataset_dir)
    c = pipe.transformer.config
    fps = int(dataset.index["fps"]) if dataset.index is not None else dataset[0].fps
    layout = frame_layout(fps, c.first_segment_frames, c.segment_frames, temporal_factor(pipe.vae))
    windows = make_windows(dataset, 1)
    store = LatentStore(dataset, layout, pipe.vae, pipe.device, None)
    vc = pipe.vae.config
    return DiTData(windows, store, vc.scaling_factor, getattr(vc, "shift_factor", None) or 0.0)


@torch.no_grad()
def probe(
    pipe: Any, dataset_dir: str | Path, swaps: Sequence[WordSwap | PromptEdit], config: ProbeConfig
) -> list[ProbeRow]:
    """Rows for every swap (a WordSwap or a PromptEdit of several) and timestep. Raises ValueError when
    no window's prompt holds a swap's words."""
    from ttt_engine.train.diffusion_loss import VelocityLoss, make_noise_scheduler

    data = _window_data(pipe, dataset_dir)
    windows = data.windows
    velocity = VelocityLoss(make_noise_scheduler(pipe.scheduler_config or None))
    device = pipe.device

    def loss(noisy: torch.Tensor, target: torch.Tensor, t: torch.Tensor, text: str) -> float:
        emb, mask = pipe.text_encoder.encode([text])
        pred = pipe.transformer(noisy.to(device), emb[None].to(device), mask[None].to(device), t.to(device))
        return float(((pred.float().cpu() - target) ** 2).mean())

    rows = []
    for swap in swaps:
        chosen = []
        for i in range(len(windows)):
            text = data.prompts(i)[0]
            if swap(text) != text:
                chosen.append((i, text))
            if len(chosen) == config.max_clips:
                break
        if not chosen:
            raise ValueError(f"word swap {swap.name}: no prompt in {dataset_dir} holds either word")
        gen = torch.Generator().manual_seed(config.seed)
        for step in config.timesteps:
            sums = [0.0, 0.0, 0.0]
            t = torch.tensor([step])
            for i, text in chosen:
                mean, _ = data.store.get(windows[i])  # the posterior mean: the probe draws no latent noise
                x0 = ((mean - data.shift_factor) * data.scaling_factor)[None]
                noisy, target = velocity.noisy_and_target(x0, torch.randn(x0.shape, generator=gen), t)
                for k, prompt in enumerate((text, swap(text), "")):
                    sums[k] += loss(noisy, target, t, prompt)
            n = len(chosen)
            rows.append(ProbeRow(swap.name, step, n, sums[0] / n, sums[1] / n, sums[2] / n))
    return rows


def format_rows(rows: Sequence[ProbeRow]) -> str:
    head = f"{'swap':<20} {'t':>4} {'clips':>5} {'loss':>8} {'+swap':>9} {'+empty':>9} {'share':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.swap:<20} {r.timestep:>4} {r.clips:>5} {r.true:>8.4f} {r.edited - r.true:>+9.4f} "
            f"{r.empty - r.true:>+9.4f} {r.share:>6.2f}"
        )
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe-text",
        help="does a trained model use a word? its loss with the word swapped, on a dataset's clips",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model folder ('default' for the shipped default model)")
    p.add_argument("dataset", help="dataset folder (clips with storyboard.json, the training format)")
    p.add_argument(
        "--swap",
        action="append",
        required=True,
        metavar="WORD=WORD",
        help="words to swap, e.g. left=right; several pairs in one quoted argument are swapped together "
        "('Tom=Jerry cat=mouse'); repeat --swap for separate probes",
    )
    p.add_argument(
        "--timesteps", default=",".join(map(str, DEFAULT_TIMESTEPS)), help="comma-separated, of 1,000"
    )
    p.add_argument("--clips", type=int, default=ProbeConfig.max_clips, help="windows per swap")
    p.add_argument("--seed", type=int, default=ProbeConfig.seed, help="noise seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ttt_engine.pipeline.params import PipelineError
    from ttt_engine.pipeline.video_pipeline import VideoPipeline

    from ..default_model import default_model_dir

    try:
        try:
            timesteps = tuple(int(s) for s in args.timesteps.split(","))
        except ValueError:
            raise ValueError(
                f"--timesteps: expected comma-separated integers, got {args.timesteps!r}"
            ) from None
        config = ProbeConfig(timesteps=timesteps, max_clips=args.clips, seed=args.seed)
        swaps = [PromptEdit.parse(s) for s in args.swap]
        model = default_model_dir() if args.model == "default" else args.model
        pipe = VideoPipeline.from_folder(model)
        rows = probe(pipe, args.dataset, swaps, config)
    except (ValueError, PipelineError) as exc:  # DatasetError and DataError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    return 0
