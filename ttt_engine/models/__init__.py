"""The video model: CogVideoX-style DiT with segment-local attention and bidirectional TTT (ttt-mlp.md s. 2)."""

from .config import VideoDiTConfig, cogvideox_5b, tiny
from .loading import CheckpointError, load_video_dit, save_video_dit
from .video_dit import VideoDiT

__all__ = [
    "CheckpointError",
    "VideoDiT",
    "VideoDiTConfig",
    "cogvideox_5b",
    "load_video_dit",
    "save_video_dit",
    "tiny",
]
