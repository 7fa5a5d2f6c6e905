"""Training: the paper's curriculum for the video DiT (and the small VAE), checkpoints, exact resume, DDP.

    config = TrainConfig.load("configs/train_tiny.yaml")
    model_dir = Trainer(config).run()              # or `ttt-studio train configs/train_tiny.yaml`

Modules: config (TrainConfig / StageConfig), param_groups (what trains, lr and weight-decay groups),
diffusion_loss (v-prediction, zero terminal SNR), data (windows, latent cache, seeded sampler),
checkpoint (checkpoints and model folders), distributed (DDP plumbing), trainer (the loop),
vae_train (the autoencoder stage), cli (`ttt-studio train`).
"""

from .config import ConfigError, StageConfig, TrainConfig
from .trainer import StepReport, Trainer, train

__all__ = ["ConfigError", "StageConfig", "StepReport", "TrainConfig", "Trainer", "train"]
