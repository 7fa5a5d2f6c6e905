"""Does a model's prediction for segment 3 depend on what segment 1 stated? (the scan's reach)

`python -m ttt_engine.eval.memory_probe NAME=MODEL_DIR ... [--storyboards 16]`
`python -m ttt_engine.eval.memory_probe --gates RUN_DIR`   (the TTT gates at each checkpoint of a run)

A sampling-free probe for the memory variant (toonworld/memory.py), far cheaper than generating: take a
held-out 3-segment memory episode (hat colour c, the hero in segments 1 and 3, off screen in 2), render it,
encode it with the model's VAE, noise it at `timestep` with a fixed noise, and run the transformer twice:
once as it is, once with segment 1 (its text and its frames) stating another colour c'. Segments 2 and 3
are the same in both runs. Per model, over the storyboards:

- reach: |v - v'| over segment 3's latents / |v - v'| over segment 1's (0: segment 3 cannot see segment
  1). Local attention alone reaches a little: neighbouring attention windows share one latent frame, so
  segment 1 leaks into segment 2 and, a layer later, into segment 3;
- memory gain: the v-prediction loss on segment 3 with the other colour stated minus the loss with the
  true one (> 0: the model uses segment 1's statement to predict segment 3's hat).

Each with its standard error over storyboards. The probe does not say whether a model draws hats; the
memory metric (eval/memory.py) on generated videos does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttt_engine.toonworld.memory import memory_storyboard, sample_memory_episode
from ttt_engine.toonworld.render import render_episode
from ttt_engine.toonworld.world import HAT_COLOURS

from .compare import EVAL_SEED_BASE
from .memory import mean_and_se

SEGMENTS = 3  # statement, gap, recall


@dataclass(frozen=True)
class ProbeConfig:
    storyboards: int = 16
    first_storyboard: int = 0
    timestep: int = 500  # of the model's 1000 training steps: mid noise, where the hat colour is decided
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.storyboards < 2:
            raise ValueError(
                f"ProbeConfig.storyboards: expected >= 2 (for a standard error), got {self.storyboards}"
            )
        if not 0 <= self.timestep < 1000:
            raise ValueError(f"ProbeConfig.timestep: expected 0..999, got {self.timestep}")


def _latents(pipe: Any, episode: Any) -> torch.Tensor:
    """Scaled latents [1, F, C, h, w] of the episode rendered at the model's size (with a leading frame)."""
    from ttt_engine.conform import convert
    from ttt_engine.pipeline.model_spec import SRGB_ENCODED

    frames = render_episode(episode, *pipe.default_size, fps=int(pipe.fps))
    lead = np.concatenate([frames[:1], frames])
    return pipe.encode_frames(convert(lead, SRGB_ENCODED, pipe.spec.colorspace))


def probe_model(pipe: Any, config: ProbeConfig) -> dict[str, float]:
    """Reach and memory gain of one VideoPipeline, means and standard errors over the storyboards."""
    from ttt_engine.train.diffusion_loss import VelocityLoss, make_noise_scheduler

    loss_fn = VelocityLoss(make_noise_scheduler(pipe.scheduler_config or None))
    params = pipe.generation_params(dtype="float32", preview_every=0)
    bounds = [pipe.config.latent_frames(i) if i else 0 for i in range(SEGMENTS + 1)]
    first, recall = slice(bounds[0], bounds[1]), slice(bounds[2], bounds[3])
    reach, gain = [], []
    for i in range(config.first_storyboard, config.first_storyboard + config.storyboards):
        episode = sample_memory_episode(EVAL_SEED_BASE + i, SEGMENTS)
        ((hero, colour),) = episode.hats
        colours = list(HAT_COLOURS)
        other = colours[(colours.index(colour) + 1 + i % (len(colours) - 1)) % len(colours)]
        swapped = replace(episode, hats=((hero, other),))
        x0 = _latents(pipe, episode)
        x0_swapped = _latents(pipe, swapped)
        x0_swapped[:, first.stop :] = x0[:, first.stop :]  # segments 2 and 3 as they are
        g = torch.Generator().manual_seed(config.noise_seed + i)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        t = torch.tensor([config.timestep], device=x0.device)
        out = {}
        for name, lat, ep in (("true", x0, episode), ("other", x0_swapped, swapped)):
            text, mask, _, _ = pipe.encode_prompts(memory_storyboard(ep), params)
            xt = loss_fn.scheduler.add_noise(lat, noise, t)
            with torch.no_grad():
                v = pipe.transformer(xt, text, mask, t).float()
            target = loss_fn.scheduler.get_velocity(x0, noise, t)  # segment 3's truth is the same in both
            out[name] = (v, float(((v - target)[:, recall] ** 2).mean()))
        diff = out["true"][0] - out["other"][0]
        reach.append(float(diff[:, recall].norm() / diff[:, first].norm().clamp_min(1e-12)))
        gain.append(out["other"][1] - out["true"][1])
    r, r_se = mean_and_se(reach)
    m, m_se = mean_and_se(gain)
    return {"reach": r, "reach_se": r_se, "memory_gain": m, "memory_gain_se": m_se}


GATE_KINDS = ("fwd_text", "fwd_video", "bwd_text", "bwd_video")


def gate_openings(transformer_dir: str | Path) -> dict[str, float]:
    """Mean |tanh(gate)| per gate kind over every block of a saved transformer (no TTT: empty), and the
    largest move of any gate entry from its initial value (`max_move`, in tanh units)."""
    from safetensors.numpy import load_file

    config = json.loads((Path(transformer_dir) / "config.json").read_text())["config"]
    init = float(np.tanh(config["ttt_gate_init"]))
    weights = load_file(str(Path(transformer_dir) / "model.safetensors"))
    out: dict[str, float] = {}
    moves = []
    for kind in GATE_KINDS:
        gates = [np.tanh(v) for k, v in weights.items() if k.endswith(f"gate_{kind}")]
        if gates:
            out[kind] = float(np.mean(np.abs(np.concatenate(gates))))
            moves += [float(np.max(np.abs(g - init))) for g in gates]
    if moves:
        out["max_move"] = max(moves)
    return out


def gate_trajectory(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """gate_openings of every checkpoint of a training run (checkpoints/*/transformer), by folder name."""
    folders = sorted(Path(run_dir).glob("checkpoints/*/transformer"))
    if not folders:
        raise ValueError(f"{run_dir}: no checkpoints/*/transformer folders; expected a training run folder")
    return {f.parent.name: gate_openings(f) for f in folders}


def main(argv: Sequence[str] | None = None) -> int:
    from ttt_engine.pipeline.video_pipeline import VideoPipeline

    p = argparse.ArgumentParser(prog="python -m ttt_engine.eval.memory_probe", description=__doc__)
    p.add_argument("models", nargs="*", metavar="NAME=MODEL_DIR")
    p.add_argument("--gates", metavar="RUN_DIR", help="print the TTT gates of each checkpoint of a run")
    p.add_argument("--storyboards", type=int, default=ProbeConfig.storyboards)
    p.add_argument("--first-storyboard", type=int, default=ProbeConfig.first_storyboard)
    p.add_argument("--timestep", type=int, default=ProbeConfig.timestep)
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.gates:
        try:
            trajectory = gate_trajectory(args.gates)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for name, gates in trajectory.items():
            print(name, " ".join(f"{k} {v:.4f}" for k, v in gates.items()))
        return 0
    try:
        if not args.models:
            raise ValueError("give NAME=MODEL_DIR models to probe, or --gates RUN_DIR")
        config = ProbeConfig(args.storyboards, args.first_storyboard, args.timestep)
        specs = [s.partition("=") for s in args.models]
        bad = [s for s, (n, sep, path) in zip(args.models, specs) if not (n and sep and path)]
        if bad:
            raise ValueError(f"{bad[0]!r}: expected NAME=MODEL_DIR")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    results = {n: probe_model(VideoPipeline.from_folder(path), config) for n, _, path in specs}
    for name, r in results.items():
        print(
            f"{name}: reach {r['reach']:.4f} +- {r['reach_se']:.4f}, "
            f"memory gain {r['memory_gain']:+.5f} +- {r['memory_gain_se']:.5f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": asdict(config), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
