"""The training loop: the paper's curriculum, stage by stage (ttt-mlp.md section 3).

    for each stage (config.stages):
        'vae': train the AutoencoderKLCogVideoX on frame windows          (vae_train.py)
        'dit': freeze / unfreeze by name (param_groups.py), cache the window latents (data.py), then
               for each step:  z ~ q(z | frames) * scale;  t ~ U{0..999};  eps ~ N(0, I)
                               texts: each segment's prompt -> "" with p = text_dropout
                               loss = || DiT(x_t, text, t) - v ||^2     (diffusion_loss.py)
                                      [+ motion_weight * motion loss]
                                      [+ contrast_weight * hinge(margin - (loss with swapped words - loss))]
        AdamW (per-group lr + schedule), grad clipping, optional grad accumulation, DDP across ranks,
        bf16 autocast on CUDA; checkpoints every `checkpoint_every` steps and at every stage end.
    export the model folder (transformer/, vae/, text_encoder/, scheduler/, model_index.json).

A DiT sample's randomness (latent sample, noise, timestep, text dropout) comes from a CPU generator
seeded by (seed, stage, the sample's position in the sampler's global stream), so a global batch draws
the same whatever the world size: 2 ranks of batch B/2 compute the loss and the update of 1 rank of
batch B (DDP and FSDP average the ranks' gradients; every rank's loss is a mean over an equal share).
A VAE stage draws its crops and posterior samples from one generator per rank. The generators' and
torch/numpy/python RNG states go into the checkpoint with the sampler position, so N steps == N/2
steps + resume + N/2 steps, loss for loss.

Sharding (TrainConfig.sharding) of DiT stages across ranks: 'ddp' replicates the weights; 'fsdp' shards
a copy of the objective with FSDP2 (fully_shard, per transformer block, then the whole), keeps the
plain model on the CPU meanwhile, and gathers the full weights into it for checkpoints and at the
stage's end. VAE stages always use DDP (the VAE is small next to the DiT).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from ..pipeline.prompt_edit import PromptEdit
from ..storyboard import SEGMENT_SECONDS
from ..toonworld.dataset import INDEX as DATASET_INDEX
from ..toonworld.dataset import ClipDataset, write_dataset
from . import checkpoint as ckpt
from .config import ConfigError, StageConfig, TrainConfig
from .data import (
    DiTData,
    LatentStore,
    SeededSampler,
    clip_segment_counts,
    frame_layout,
    frames_to_vae_input,
    make_windows,
)
from .diffusion_loss import VelocityLoss, make_noise_scheduler
from .distributed import DistInfo, barrier, gather_objects, init_process_group, mean_across
from .ema import WeightAverage, trained_parameters
from .param_groups import build_param_groups, set_trainable
from .vae_train import (
    VAEObjective,
    calibrate_scaling,
    check_train_frames,
    random_crop,
    save_vae,
    set_vae_trainable,
    spatial_factor,
    temporal_factor,
)

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
CALIBRATION_WINDOWS = 16  # VAE windows whose latents set the scaling factor


@dataclass(frozen=True)
class StepReport:
    """After every optimizer step. loss: mean over ranks and micro-batches; step: 1-based within the stage."""

    stage_index: int
    stage: str
    step: int
    loss: float
    lr: dict[str, float]
    grad_norm: float
    extra: dict[str, float] = field(default_factory=dict)


Callback = Callable[["Trainer", StepReport], None]


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' asked for but torch.cuda.is_available() is False")
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: plain fp32). auto: bf16 on CUDA, fp32 on CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Multiplier of the base lr after `step` optimizer steps: linear warm-up, then constant or cosine."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _stage_seed(seed: int, stage_index: int, rank: int) -> int:
    return (seed * 1_000_003 + stage_index * 7919 + rank * 104_729) % (2**63)


def _sample_seed(seed: int, stage_index: int, position: int) -> int:
    """Seed of one DiT sample's draws: a function of its global stream position, not of the rank."""
    return ((seed * 1_000_003 + stage_index * 7919) * 2_147_483_659 + position) % (2**63)


def sample_generators(seed: int, stage_index: int, positions: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(_sample_seed(seed, stage_index, p)) for p in positions]


@contextlib.contextmanager
def _fsdp_no_sync(module: Any) -> Any:
    """FSDP2's counterpart of DDP.no_sync: no gradient reduce-scatter until the block ends."""
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


# ---- objectives -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContrastTerm:
    """The stage's contrast hinge (StageConfig.contrast_*): prompt edits (each one or more word swaps, e.g.
    "left=right" or "Tom=Jerry cat=mouse"), the hinge's weight and its margin in per-sample loss."""

    edits: tuple[PromptEdit, ...]
    weight: float
    margin: float

    @classmethod
    def from_stage(cls, stage: StageConfig) -> ContrastTerm | None:
        if not stage.contrast_weight:
            return None
        edits = tuple(PromptEdit.parse(s) for s in stage.contrast_swaps)
        return cls(edits, stage.contrast_weight, stage.contrast_margin)

    def swapped(self, texts: list[str], batch: int) -> tuple[list[int], list[str]]:
        """texts (batch x segments, row-major) -> (rows whose prompts an edit changes, their edited
        prompts, row-major): one entry per edit that changes the row, so a row may appear once per edit.
        Dropped ("") prompts stay empty, so a row of dropped prompts is left out."""
        segments = len(texts) // batch
        rows: list[int] = []
        out: list[str] = []
        for edit in self.edits:
            for b in range(batch):
                row = texts[b * segments : (b + 1) * segments]
                edited = [edit(t) for t in row]
                if edited != row:
                    rows.append(b)
                    out += edited
        return rows, out


class DiTObjective(nn.Module):
    """forward(noisy, timesteps, target, texts) -> v-prediction MSE (+ motion and contrast terms). The
    text encoder is a submodule (and trains, and DDP syncs it) only when train_text; otherwise it runs
    frozen under no_grad. After a forward with swapped rows, `terms` holds the contrast hinge and the
    mean gap (swapped prompt's loss - true prompt's) for the training log."""

    def __init__(
        self,
        transformer: nn.Module,
        text_encoder: Any,
        train_text: bool,
        motion_weight: float = 0.0,
        contrast: ContrastTerm | None = None,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.motion_weight = float(motion_weight)
        self.contrast = contrast
        self.terms: dict[str, float] = {}
        if train_text:
            self.text_encoder = text_encoder
        else:
            # not a submodule: DDP and .parameters() skip it
            self.__dict__["frozen_text_encoder"] = text_encoder
        self.train_text = train_text

    def encode(self, texts: list[str], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """texts (batch x segments, row-major) -> [B, S, T, d] embeddings and [B, S, T] mask."""
        encoder = self.text_encoder if self.train_text else self.__dict__["frozen_text_encoder"]
        with contextlib.nullcontext() if self.train_text else torch.no_grad():
            emb, mask = encoder.encode(texts)  # (B*S, T, d), (B*S, T)
        segments = len(texts) // batch
        return emb.view(batch, segments, *emb.shape[1:]), mask.view(batch, segments, -1)

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        target: torch.Tensor,
        texts: list[str],
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch = noisy.shape[0]
        rows: list[int] = []
        self.terms = {}
        if self.contrast is not None:
            rows, swapped = self.contrast.swapped(texts, batch)
            if rows:
                # one transformer call: the batch, then its swapped rows again with the swapped prompts
                index = torch.tensor(rows, device=noisy.device)
                texts = texts + swapped
                noisy = torch.cat([noisy, noisy[index]])
                timesteps = torch.cat([timesteps, timesteps[index]])
        emb, mask = self.encode(texts, noisy.shape[0])
        pred_all = self.transformer(noisy, emb, mask, timesteps)
        pred = pred_all[:batch]
        loss = VelocityLoss.loss(pred, target, weight)
        if self.motion_weight:
            loss = loss + self.motion_weight * VelocityLoss.motion_loss(pred, target)
        if rows:
            assert self.contrast is not None
            index = torch.tensor(rows, device=target.device)
            w = None if weight is None else weight[index]
            true = VelocityLoss.per_sample_loss(pred[index], target[index], w)
            other = VelocityLoss.per_sample_loss(pred_all[batch:], target[index], w)
            # summed over the swapped rows and divided by the batch: an expectation over the data
            gap = other - true
            hinge = torch.relu(self.contrast.margin - gap).sum() / batch
            loss = loss + self.contrast.weight * hinge
            self.terms = {"contrast_hinge": float(hinge.detach()), "contrast_gap": float(gap.detach().mean())}
        return loss


# ---- the trainer ----------------------------------------------------------------------------------------


class Trainer:
    """Runs a TrainConfig (all stages) in this process; one rank of `info` when distributed.

    resume: a checkpoint folder or a run folder (its latest checkpoint). callbacks(trainer, StepReport)
    run after every optimizer step on every rank.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        info: DistInfo | None = None,
        resume: str | Path | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
    ) -> None:
        self.config = config
        self.info = info or DistInfo()
        self.resume = Path(resume) if resume is not None else None
        self.callbacks = list(callbacks)
        self.progress = progress
        self.device = resolve_device(config.device, self.info)
        self.autocast_dtype = resolve_dtype(config.precision, self.device)
        self.run_dir = Path(config.run_dir)
        self.parts: ckpt.ModelParts | None = None
        self.losses: list[float] = []
        self.text_trained = False
        self._data: DiTData | None = None
        self._objective: DiTObjective | None = None
        self._velocity = VelocityLoss(make_noise_scheduler(None))
        # with sharding 'fsdp' during a DiT stage: the sharded copy of the objective and the plain one
        self._sharded: nn.Module | None = None
        self._plain: nn.Module | None = None

    # ---- setup ------------------------------------------------------------------------------------------

    def _dataset(self) -> ClipDataset:
        c = self.config.dataset
        root = Path(c.path)
        if c.generate is not None and not (root / DATASET_INDEX).exists():
            if self.info.is_main:
                g = c.generate
                log.info("writing a toon-world dataset to %s", root)
                write_dataset(
                    root,
                    g.n_clips,
                    tuple(g.segments_range),
                    g.height,
                    g.width,
                    g.fps,
                    g.seed,
                    chase_setup_prob=g.chase_setup_prob,
                    variant=g.variant,
                )
            barrier(self.info)
        return ClipDataset(root)

    def _initial_parts(self) -> tuple[ckpt.ModelParts, int, int, dict[str, Any] | None]:
        """(parts, first stage, first step, resume state)."""
        m = self.config.model
        if self.resume is not None:
            folder = ckpt.resolve_resume(self.resume)
            state = ckpt.load_state(folder)
            saved = TrainConfig.load(folder / ckpt.CONFIG_FILE)
            diff = ckpt.config_differences(saved, self.config)
            if diff:
                log.warning("resuming %s with a config that differs in %s: not an exact resume", folder, diff)
            idx = int(state["stage_index"])
            if idx >= len(self.config.stages) or self.config.stages[idx].name != state["stage_name"]:
                names = [s.name for s in self.config.stages]
                raise ckpt.ResumeError(
                    f"{folder}: written in stage {idx} {state['stage_name']!r}, but the config's stages are {names}"
                )
            self.text_trained = bool(state.get("text_trained", False))
            parts = ckpt.load_checkpoint_parts(folder, state)
            if (folder / "vae").is_dir():  # a VAE stage's weights: make them the model folder's VAE again
                vae_dir = self.config.model_dir / "vae"
                if self.info.is_main:
                    save_vae(parts.vae, vae_dir)
                parts.sources["vae"] = str(vae_dir)
                barrier(self.info)
            log.info("resuming from %s (stage %d, step %d)", folder, state["stage_index"], state["step"])
            return parts, idx, int(state["step"]), state
        if m.init is not None:
            parts = ckpt.load_model_parts(m.init, m.transformer)
        else:
            parts = ckpt.new_model_parts(m, self.config.seed)
            vae_dir = self.config.model_dir / "vae"
            if self.info.is_main:
                save_vae(parts.vae, vae_dir)
            parts.sources["vae"] = str(vae_dir)
            barrier(self.info)
        return parts, 0, 0, None

    def _fps(self, dataset: ClipDataset) -> int:
        """The model's fps: the dataset's (a model segment is 3 s of dataset frames); model.fps must agree."""
        fps = self._clip_fps(dataset)
        if self.config.model.fps is not None and self.config.model.fps != fps:
            raise ConfigError(
                f"model.fps: {self.config.model.fps}, but the dataset {dataset.root} is {fps} fps and a model "
                "segment is 3 s of its frames; set model.fps to null or to the dataset's fps"
            )
        return fps

    # ---- run --------------------------------------------------------------------------------------------

    def run(self) -> Path:
        """Train every stage (from the resume point) and export the model folder; returns its path."""
        init_process_group(self.info, self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        dataset = self._dataset()
        fps = self._fps(dataset)
        self.parts, first_stage, first_step, state = self._initial_parts()
        if self.info.is_main:
            self.config.save(self.run_dir / ckpt.CONFIG_FILE)
        for i in range(first_stage, len(self.config.stages)):
            stage = self.config.stages[i]
            resume_state = state if i == first_stage else None
            start = first_step if i == first_stage else 0
            if start >= stage.steps:
                continue
            if stage.type == "vae":
                self._run_vae_stage(i, stage, dataset, start, resume_state)
            else:
                self._run_dit_stage(i, stage, dataset, start, resume_state)
        out = self.config.model_dir
        if self.info.is_main:
            ckpt.export_model_folder(self.parts, out, fps)
            log.info("model folder written: %s", out)
        barrier(self.info)
        return out

    # ---- shared loop ------------------------------------------------------------------------------------

    def _optimizer(
        self, stage: StageConfig, modules: dict[str, nn.Module]
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, list[nn.Parameter]]:
        groups = build_param_groups(
            modules, lr=stage.lr, lr_ttt=stage.ttt_lr, weight_decay=stage.weight_decay
        )
        opt = torch.optim.AdamW(
            groups, lr=stage.lr, betas=stage.betas, eps=stage.eps, weight_decay=stage.weight_decay
        )
        lambdas = [
            lr_lambda(
                stage.lr_schedule_ttt if g["kind"] == "ttt" else stage.lr_schedule,
                stage.warmup_steps,
                stage.steps,
                stage.min_lr_ratio,
            )
            for g in groups
        ]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        params = [p for g in groups for p in g["params"]]
        for g in groups:
            log.debug("group %s: %d tensors, lr %g", g["name"], len(g["params"]), g["lr"])
        return opt, sched, params

    def _wrap(self, module: nn.Module) -> nn.Module:
        """DDP around `module` (itself for one process)."""
        if not self.info.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        # find_unused_parameters: the last block's backward text gate never reaches the loss (the text stream
        # of the last block is dropped), so it gets no gradient; DDP must not wait for it
        return DDP(module, device_ids=ids, find_unused_parameters=True)

    def _shard(self, objective: DiTObjective) -> DiTObjective:
        """FSDP2: a copy of the objective on the device, sharded per transformer block and as a whole; the
        plain objective moves to the CPU until `_gather` fills it with the trained weights."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        objective.to("cpu")
        # a frozen text encoder is shared, not copied (it is not a submodule: FSDP leaves it alone)
        frozen = objective.__dict__.get("frozen_text_encoder")
        sharded = copy.deepcopy(objective, memo={id(frozen): frozen}).to(self.device)
        mesh = init_device_mesh(self.device.type, (self.info.world_size,))
        for block in sharded.transformer.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        self._sharded, self._plain = sharded, objective
        return sharded

    def _gather(self, all_ranks: bool) -> None:
        """Full weights of the sharded objective into the plain one: on every rank, or on rank 0 only (for
        a checkpoint). A collective: every rank calls it."""
        if self._sharded is None:
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        assert self._plain is not None
        options = StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks)
        state = get_model_state_dict(self._sharded, options=options)
        if all_ranks or self.info.is_main:
            self._plain.load_state_dict({k: v.to("cpu") for k, v in state.items()})

    def _optimizer_state(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state for the checkpoint (full on rank 0 under FSDP: a collective)."""
        if self._sharded is None:
            return opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self._sharded, opt, options=options)

    def _load_optimizer_state(
        self, opt: torch.optim.Optimizer, state: dict[str, Any], saved: str, stage: StageConfig
    ) -> None:
        """Restore a checkpoint's optimizer state. An 'fsdp' checkpoint holds the full state keyed by
        parameter name, which loads into a DiT stage of any sharding and world size; a 'ddp' one (keyed by
        position) loads into 'ddp' only."""
        if saved == "ddp":
            if self._sharded is not None:
                raise ckpt.ResumeError(
                    f"checkpoint of stage {stage.name!r} was written with sharding 'ddp'; resume it with "
                    "sharding 'ddp' (an 'fsdp' checkpoint resumes under either)"
                )
            opt.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        assert self._objective is not None
        set_optimizer_state_dict(
            self._objective, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
        )

    def _sharding(self, stage: StageConfig) -> str:
        """How this stage spreads over the ranks: 'fsdp' only for a DiT stage of a distributed fsdp run."""
        fsdp = self.config.sharding == "fsdp" and stage.type == "dit" and self.info.enabled
        return "fsdp" if fsdp else "ddp"

    def _no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager:
        """Accumulate gradients locally (a micro-batch that is not the step's last)."""
        if isinstance(wrapped, DDP):
            return wrapped.no_sync()
        if wrapped is self._sharded:
            return _fsdp_no_sync(wrapped)
        return contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _loop(
        self,
        index: int,
        stage: StageConfig,
        start: int,
        resume_state: dict[str, Any] | None,
        modules: dict[str, nn.Module],
        wrapped: nn.Module,
        num_items: int,
        micro_step: Callable[
            [nn.Module, SeededSampler, torch.Generator], tuple[torch.Tensor, dict[str, float]]
        ],
        write_weights: Callable[[Path], None],
        before_last_checkpoint: Callable[[], None] | None = None,
    ) -> None:
        """The optimizer loop shared by both stage types. micro_step(wrapped, sampler, gen) -> (loss, extras).

        before_last_checkpoint runs after the last step, before the stage's final checkpoint is written
        (e.g. the VAE's latent scaling), so that a run resumed from that checkpoint has its result."""
        from tqdm.auto import tqdm

        opt, sched, params = self._optimizer(stage, modules)
        ema = WeightAverage(trained_parameters(modules), stage.ema_decay) if stage.ema_decay > 0 else None
        sampler = SeededSampler(
            num_items, self.config.seed + 7919 * index, self.info.world_size, self.info.rank
        )
        gen = torch.Generator().manual_seed(_stage_seed(self.config.seed, index, self.info.rank))
        if resume_state is not None and start > 0:
            saved = resume_state.get("sharding", "ddp") if stage.type == "dit" else "ddp"
            self._load_optimizer_state(opt, resume_state["optimizer"], saved, stage)
            sched.load_state_dict(resume_state["lr_scheduler"])
            sampler.load_state_dict(resume_state["sampler"])
            rng = resume_state["rng"]
            # a DiT stage draws by global sample position (the sampler's state is global), so it resumes in
            # any number of processes; a VAE stage draws from per-rank generators
            if len(rng) != self.info.world_size and stage.type != "dit":
                raise ckpt.ResumeError(
                    f"checkpoint of VAE stage {stage.name!r} was written by {len(rng)} process(es), this run has "
                    f"{self.info.world_size}; resume with the same --nproc"
                )
            ckpt.restore_rng(rng[self.info.rank % len(rng)], gen)
            if ema is not None:
                if resume_state.get("ema") is None:
                    raise ckpt.ResumeError(
                        f"stage {stage.name!r} has ema_decay {stage.ema_decay}, but the checkpoint has no weight "
                        "average: resume with the config that wrote it"
                    )
                ema.load_state_dict(resume_state["ema"])
        else:
            torch.manual_seed(_stage_seed(self.config.seed, index, self.info.rank))
        bar = tqdm(
            total=stage.steps,
            initial=start,
            desc=f"{stage.name} ({stage.type})",
            disable=not (self.progress and self.info.is_main),
            dynamic_ncols=True,
        )
        for step in range(start, stage.steps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), device=self.device)
            extras: dict[str, float] = {}
            for micro in range(stage.grad_accum):
                sync = micro == stage.grad_accum - 1
                with contextlib.nullcontext() if sync else self._no_sync(wrapped):
                    loss, extra = micro_step(wrapped, sampler, gen)
                    (loss / stage.grad_accum).backward()
                total = total + loss.detach().float()
                for k, v in extra.items():
                    extras[k] = extras.get(k, 0.0) + v / stage.grad_accum
            loss_value = float(mean_across(total / stage.grad_accum, self.info))
            if not math.isfinite(loss_value):  # stop before the step spoils the weights
                raise FloatingPointError(
                    f"stage {stage.name!r} step {step + 1}: the loss is {loss_value}; lower the lr, clip gradients "
                    "harder (grad_clip) or use precision fp32 (weights are as of the last checkpoint)"
                )
            max_norm = stage.grad_clip if stage.grad_clip > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            grad_norm = float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
            lrs = {g["name"]: g["lr"] for g in opt.param_groups}  # the lr this step used
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(step + 1)
            self.losses.append(loss_value)
            report = StepReport(index, stage.name, step + 1, loss_value, lrs, grad_norm, extras)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", gnorm=f"{grad_norm:.3f}")
            if self.info.is_main and ((step + 1) % self.config.log_every == 0 or step + 1 == stage.steps):
                self._log(report, time.perf_counter() - t0)
            for cb in self.callbacks:
                cb(self, report)
            done = step + 1 == stage.steps
            every = self.config.checkpoint_every
            if done and ema is not None:
                ema.copy_to_params()  # the average is the stage's result
            if done and before_last_checkpoint is not None:
                before_last_checkpoint()
            if done or (every and (step + 1) % every == 0):
                self._checkpoint(index, stage, step + 1, opt, sched, sampler, gen, write_weights, ema)
        bar.close()

    def _log(self, r: StepReport, seconds: float) -> None:
        log.info(
            "%s step %d: loss %.5f grad_norm %.4f lr %s (%.2f s/step)",
            r.stage,
            r.step,
            r.loss,
            r.grad_norm,
            {k: f"{v:.3g}" for k, v in r.lr.items()},
            seconds,
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOG_FILE, "a", encoding="utf-8") as f:
            entry = {
                "stage": r.stage,
                "step": r.step,
                "loss": r.loss,
                "grad_norm": r.grad_norm,
                "lr": r.lr,
                **r.extra,
            }
            f.write(json.dumps(entry) + "\n")

    def _checkpoint(
        self,
        index: int,
        stage: StageConfig,
        step: int,
        opt: torch.optim.Optimizer,
        sched: Any,
        sampler: SeededSampler,
        gen: torch.Generator,
        write_weights: Callable[[Path], None],
        ema: WeightAverage | None,
    ) -> None:
        rng = gather_objects(ckpt.capture_rng(gen), self.info)  # collective: every rank
        optimizer = self._optimizer_state(opt)  # collectives under FSDP
        self._gather(all_ranks=False)
        if self.info.is_main:
            assert self.parts is not None
            state = {
                "stage_index": index,
                "stage_name": stage.name,
                "stage_type": stage.type,
                "step": step,
                "optimizer": optimizer,
                "lr_scheduler": sched.state_dict(),
                "sampler": sampler.state_dict(),
                "rng": rng,
                "world_size": self.info.world_size,
                "sharding": self._sharding(stage),
                "sources": self.parts.sources,
                "text_trained": self.text_trained,
                "ema": ema.state_dict() if ema is not None else None,
            }
            name = ckpt.checkpoint_name(index, stage.name, step)
            ckpt.save_checkpoint(
                self.run_dir, name, state, self.config, write_weights, self.config.keep_checkpoints
            )
        barrier(self.info)

    def _write_parts(self, with_vae: bool) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            from ..models.loading import save_video_dit

            assert self.parts is not None
            save_video_dit(self.parts.transformer, folder / "transformer")
            if self.parts.text_is_ours or self.text_trained:
                ckpt.write_text_encoder(self.parts, folder)
            if with_vae:
                save_vae(self.parts.vae, folder / "vae")

        return write

    # ---- DiT stages -------------------------------------------------------------------------------------

    def _run_dit_stage(
        self,
        index: int,
        stage: StageConfig,
        dataset: ClipDataset,
        start: int,
        resume_state: dict[str, Any] | None,
    ) -> None:
        parts = self.parts
        assert parts is not None
        dit, vae = parts.transformer, parts.vae
        cfg = dit.config
        layout = frame_layout(
            self._clip_fps(dataset), cfg.first_segment_frames, cfg.segment_frames, temporal_factor(vae)
        )
        windows = make_windows(dataset, stage.segments, self.config.dataset.max_clips)
        if cfg.latent_frames(stage.segments) % 2 == 0:
            log.warning(
                "stage %s: %d latent frames (an even count); diffusers' CogVideoX VAE decodes only odd counts "
                "frame-exactly, so VideoPipeline.decode cannot decode videos of this length: use an even "
                "segment_frames (paper: 12)",
                stage.name,
                cfg.latent_frames(stage.segments),
            )
        vae.to(self.device).eval().requires_grad_(False)
        cache_root = (
            Path(self.config.latent_cache) if self.config.latent_cache else self.run_dir / "cache" / "latents"
        )
        cache = cache_root if self.config.cache_latents else None
        store = LatentStore(dataset, layout, vae, self.device, cache)
        store.prepare(windows, self.info, self.progress)
        if cache is not None and self.device.type == "cuda":
            vae.to("cpu")  # every latent is on disk now
        vc = vae.config
        self._data = DiTData(
            windows, store, vc.scaling_factor, getattr(vc, "shift_factor", None) or 0.0, stage.matte_weight
        )
        self._data.check_mattes()
        self._velocity = VelocityLoss(make_noise_scheduler(parts.sources.get("scheduler_config")))

        trained = set_trainable(dit, stage.trainable)
        train_text = self._train_text(index, stage)
        self.text_trained = self.text_trained or train_text
        text = parts.text_encoder
        if isinstance(text, nn.Module):
            text.requires_grad_(train_text).train(train_text)
        text.to(self.device)
        dit.to(self.device).train()
        log.info(
            "stage %s: %d segment(s), %d windows, %d/%d transformer tensors trained, text encoder %s",
            stage.name,
            stage.segments,
            len(windows),
            len(trained),
            len(list(dit.parameters())),
            "trained" if train_text else "frozen",
        )
        objective = DiTObjective(dit, text, train_text, stage.motion_weight, ContrastTerm.from_stage(stage))
        if self._sharding(stage) == "fsdp":
            wrapped = trainee = self._shard(objective)
        else:
            trainee, wrapped = objective, self._wrap(objective)
        self._objective = trainee
        modules = {"transformer": trainee.transformer}
        if train_text:
            modules["text_encoder"] = trainee.text_encoder

        def micro_step(
            model: nn.Module, sampler: SeededSampler, gen: torch.Generator
        ) -> tuple[torch.Tensor, dict]:
            indices, positions = sampler.next_draws(stage.batch_size)
            gens = sample_generators(self.config.seed, index, positions)
            noisy, t, target, texts, weight = self._dit_batch(
                indices, gens, stage.text_dropout, stage.timestep_shift
            )
            with self._autocast():
                loss = model(noisy, t, target, texts, weight)
            return loss, dict(objective.terms)

        self._loop(
            index,
            stage,
            start,
            resume_state,
            modules,
            wrapped,
            len(windows),
            micro_step,
            self._write_parts(False),
        )
        self._gather(all_ranks=True)
        if self._sharded is not None:
            objective.to(self.device)
        self._objective = self._sharded = self._plain = None

    def _clip_fps(self, dataset: ClipDataset) -> int:
        if dataset.index is not None:
            return int(dataset.index["fps"])
        return int(dataset[0].fps)

    def _train_text(self, index: int, stage: StageConfig) -> bool:
        assert self.parts is not None
        ours = self.parts.text_is_ours
        if stage.train_text_encoder is None:
            return stage.trainable == "all" and ours
        if stage.train_text_encoder and not ours:
            raise ConfigError(
                f"stages[{index}].train_text_encoder: only our HashTextEncoder can be trained, the model has a "
                f"{type(self.parts.text_encoder).__name__}"
            )
        return stage.train_text_encoder

    def _dit_batch(
        self,
        indices: list[int],
        gens: Sequence[torch.Generator],
        text_dropout: float,
        timestep_shift: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], torch.Tensor | None]:
        """(x_t, t, v target) on the device, the flat per-segment prompts (dropped ones are "") and the
        matte loss weights (None without matte_weight). Sample b draws its latent sample, noise, timestep
        and text dropout from gens[b] alone. eval_loss keeps uniform timesteps (shift 1)."""
        assert self._data is not None
        prompts = [self._data.prompts(i) for i in indices]
        rows = []
        for i, g in zip(indices, gens, strict=True):
            latent = self._data.latents([i], g)  # (1, F, C, h, w)
            noise = torch.randn(latent.shape, generator=g)
            t = self._velocity.sample_timesteps(1, g, timestep_shift)
            drop = torch.rand(len(prompts[0]), generator=g) < text_dropout
            rows.append((latent, noise, t, drop))
        latents = torch.cat([r[0] for r in rows])
        noise = torch.cat([r[1] for r in rows])
        t = torch.cat([r[2] for r in rows])
        drop = torch.stack([r[3] for r in rows])
        noisy, target = self._velocity.noisy_and_target(latents, noise, t)
        texts = [p if not drop[b, s] else "" for b, row in enumerate(prompts) for s, p in enumerate(row)]
        weight = self._data.weights(indices, latents.shape)
        d = self.device
        return noisy.to(d), t.to(d), target.to(d), texts, None if weight is None else weight.to(d)

    @torch.no_grad()
    def eval_loss(self, indices: Sequence[int] = (0,), seed: int = 0) -> float:
        """Loss of the running DiT stage on fixed items, noise and timesteps, without text dropout."""
        if self._objective is None or self._data is None:
            raise RuntimeError("eval_loss: no DiT stage is running")
        gens = [torch.Generator().manual_seed(seed + k) for k in range(len(indices))]
        noisy, t, target, texts, weight = self._dit_batch(list(indices), gens, 0.0)
        with self._autocast():
            return float(self._objective(noisy, t, target, texts, weight))

    # ---- VAE stages -------------------------------------------------------------------------------------

    def _run_vae_stage(
        self,
        index: int,
        stage: StageConfig,
        dataset: ClipDataset,
        start: int,
        resume_state: dict[str, Any] | None,
    ) -> None:
        parts = self.parts
        assert parts is not None
        vae = parts.vae
        check_train_frames(stage.frames, vae, f"stages[{index}].frames")
        factor = spatial_factor(vae)
        if stage.crop % factor:
            raise ConfigError(
                f"stages[{index}].crop: {stage.crop} is not a multiple of the VAE factor {factor}"
            )
        per_segment = SEGMENT_SECONDS * self._clip_fps(dataset)
        lengths = [n * per_segment for n in clip_segment_counts(dataset, self.config.dataset.max_clips)]
        items = [(c, s) for c, n in enumerate(lengths) for s in range(0, n - stage.frames + 1)]
        if not items:
            raise ValueError(
                f"stages[{index}].frames: {stage.frames} frames is longer than every clip ({max(lengths)})"
            )
        decoder_only = stage.vae_trainable == "decoder"
        vae.to(self.device).train()
        set_vae_trainable(vae, stage.vae_trainable)
        vae.disable_tiling()
        objective = VAEObjective(vae, stage.recon_loss, stage.kl_weight, train_encoder=not decoder_only)
        wrapped = self._wrap(objective)
        cache: dict[int, Any] = {}

        def frames_of(clip: int) -> Any:
            if clip not in cache:
                if len(cache) > 64:
                    cache.clear()
                cache[clip] = dataset[clip].frames
            return cache[clip]

        def micro_step(
            model: nn.Module, sampler: SeededSampler, gen: torch.Generator
        ) -> tuple[torch.Tensor, dict]:
            chosen = [items[i] for i in sampler.next_indices(stage.batch_size)]
            x = torch.cat([frames_to_vae_input(frames_of(c)[s : s + stage.frames]) for c, s in chosen])
            if x.shape[-1] % factor or x.shape[-2] % factor:
                raise ValueError(
                    f"frames of {tuple(x.shape[-2:])} pixels are not multiples of the VAE factor {factor}"
                )
            if stage.crop:
                x = random_crop(x, stage.crop, gen)
            with self._autocast():
                loss, recon, kl = model(x.to(self.device), gen)
            return loss, {"recon": float(recon), "kl": float(kl)}

        def calibrate() -> None:
            # whole frames of evenly spaced windows: every rank computes the same factor
            picks = [items[i] for i in range(0, len(items), max(1, len(items) // CALIBRATION_WINDOWS))]
            picks = picks[:CALIBRATION_WINDOWS]
            vae.eval()
            batches = [frames_to_vae_input(frames_of(c)[s : s + stage.frames]) for c, s in picks]
            scale = calibrate_scaling(vae, batches)
            log.info("VAE latent scaling_factor set to %.4f (1 / std of %d windows)", scale, len(picks))

        self._loop(
            index,
            stage,
            start,
            resume_state,
            {"vae": vae},
            wrapped,
            len(items),
            micro_step,
            self._write_parts(True),
            # a decoder-only stage keeps the encoder, so the latents and their scale stay the DiT's
            before_last_checkpoint=None if decoder_only else calibrate,
        )
        vae.eval().requires_grad_(False)
        if self.info.is_main:
            save_vae(vae, self.config.model_dir / "vae")
        parts.sources["vae"] = str(self.config.model_dir / "vae")
        barrier(self.info)


def train(config: TrainConfig, info: DistInfo | None = None, resume: str | Path | None = None) -> Path:
    """Run a whole training config in this process (one rank of `info`); returns the model folder."""
    return Trainer(config, info=info, resume=resume).run()
