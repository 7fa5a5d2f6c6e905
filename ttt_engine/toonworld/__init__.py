"""The toon world: a procedural cartoon world to train and evaluate the tiny default model on.

Three characters of distinct shape and colour (Tom the cat: grey-blue, pointed ears, long tail;
Jerry the mouse: small, brown, round ears; Spike the dog: big, yellow, floppy ears, red collar),
four backgrounds with their own palettes and a hiding prop (kitchen + fridge, garden + bush,
living room + sofa, night street + trash can), six actions (chase, run_left, run_right, jump,
hide, idle), two framings (wide, close-up), camera cuts inside a scene and new backgrounds at scene
transitions. Everything is deterministic from a seed and rendered with numpy only. A wide shot of two
or more characters opens, with probability `chase_setup_prob` (0.5), with two of them lined up for a
chase; with 0 the planner plans as before that option (the default model's training clips). The memory
variant (`memory.py`, `write_dataset(..., variant="memory")`) dresses each episode's hero in a hat whose
colour only the first segment's text states.

    episode = sample_episode(seed=3, n_segments=4)        # structured plan, per 3-s segment
    frames = render_episode(episode, 64, 64, fps=8)       # float32 [96, 64, 64, 3] in [0, 1]
    storyboard = episode_storyboard(episode)              # format 3: one 3-5 sentence paragraph/segment

Dataset format (also the format for a user's own footage)
---------------------------------------------------------
::

    ROOT/
      dataset.json            {"format": "ttt-studio-clips", "version": 1, "fps": 8, "height": 64,
                               "width": 64, "frames_per_segment": 24, "clips": ["clip_000000", ...],
                               "generator": {...}}          (optional; see below)
      clip_000000/
        frames.npy            uint8 [T, H, W, 3], display (sRGB) values
          or frames/0000.png, 0001.png, ...  (numbered RGB/RGBA PNGs, no gaps)
        storyboard.json       the format-3 list: [{"text", "neg_text", "requires_scene_transition"}, ...]
        matte.npy             optional subject matte, uint8 [T, H, W] (255 = subject), or matte/0000.png, ...
                              (grey, or the alpha of LA/RGBA PNGs): a stage's `matte_weight` weights the
                              training loss by it (the toon world writes its characters' matte)
        meta.json             {"fps": 8, "height": 64, "width": 64, "n_segments": 4,
                               "frames_per_segment": 24, "source": "toonworld", "plan": {...}}

Rules: T = n_segments x 3 s x fps (each storyboard entry covers exactly 3 seconds); meta.json needs
"fps", the other fields are checked when present; "plan" (toon world only) is the structured
`Episode.to_dict()` used by the evaluation. With a dataset.json, only its listed clips are read and
all must share its fps and size; without one, every sub-folder holding a storyboard.json is a clip.
`ClipDataset(root)[i]` returns a `Clip` with float32 frames in [0, 1], the Storyboard, the meta and the matte,
and raises `DatasetError` naming the file and the problem for anything that does not fit.
"""

from .dataset import Clip, ClipDataset, DatasetError, load_frames, load_matte, write_clip, write_dataset
from .render import (
    frames_per_segment,
    render_background,
    render_episode,
    render_episode_and_matte,
    render_segment,
    render_segment_and_matte,
    to_uint8,
)
from .storyboard_text import episode_storyboard, segment_paragraph
from .world import (
    ACTIONS,
    BACKGROUNDS,
    CHARACTERS,
    FRAMINGS,
    ActorPlan,
    Background,
    Character,
    Episode,
    SegmentPlan,
    actor_track,
    sample_episode,
)

__all__ = [
    "ACTIONS",
    "BACKGROUNDS",
    "CHARACTERS",
    "FRAMINGS",
    "ActorPlan",
    "Background",
    "Character",
    "Clip",
    "ClipDataset",
    "DatasetError",
    "Episode",
    "SegmentPlan",
    "actor_track",
    "episode_storyboard",
    "frames_per_segment",
    "load_frames",
    "load_matte",
    "render_background",
    "render_episode",
    "render_episode_and_matte",
    "render_segment",
    "render_segment_and_matte",
    "sample_episode",
    "segment_paragraph",
    "to_uint8",
    "write_clip",
    "write_dataset",
]
