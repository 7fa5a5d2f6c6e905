"""Training items of an adapter: a folder of stills and clips -> one-segment pixel windows and captions.

One rule: every item is one model segment of pixel frames (1 + t x segment_frames, t the VAE's temporal
ratio), so it has the latent layout the model samples. A still trains as a held shot: the image repeated
over the segment. (The VAE encodes a single frame to one latent frame, but the model's segment layout has
no one-frame video: a segment is `first_segment_frames` latent frames, e.g. 7 for the shipped model.)

Folder contents (top level):
- stills: *.png, *.jpg, *.jpeg (sRGB), *.exr (read in the colour space its header declares, shown on the
  sRGB display as `ttt-studio eval` reads EXRs); caption: a sidecar `<stem>.txt`, else the template.
- clips: a sub-folder in the toon-world dataset format (frames.npy or frames/*.png + storyboard.json +
  meta.json with its fps), cut into its one-segment windows, each captioned by its storyboard segment;
  or a sub-folder of *.exr frames (a sequence), cut into consecutive segments, captioned by `<folder>.txt`
  beside it, else the template. A clip's frame rate must give the model's segment length.
Images are centre-cropped to the model's aspect and resized to its size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .config import AdapterError

STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr")
# caption of an item without a sidecar text, by adapter kind
CAPTION_TEMPLATES = {
    "style": "A shot in the {trigger} look.",
    "subject": "{trigger} is here.",
    "": "{trigger}",
}


@dataclass(frozen=True)
class Item:
    """One training item: frames float32 [1 + per, H, W, 3] display values in [0, 1], its caption, source."""

    frames: np.ndarray
    caption: str
    source: str


def template_caption(kind: str, trigger: str) -> str:
    return CAPTION_TEMPLATES[kind].format(trigger=trigger)


def without_trigger(caption: str, trigger: str) -> str:
    """The caption with the trigger word taken out (prior-preservation captions), spaces tidied."""
    if not trigger:
        return caption
    text = re.sub(rf"\b{re.escape(trigger)}\b", "", caption)
    return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float [H, W, 3] in [0, 1] -> [height, width, 3]: centre crop to the aspect, then a bicubic resize."""
    h, w = image.shape[:2]
    target = width / height
    if w / h > target:
        cw = max(1, round(h * target))
        image = image[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = max(1, round(w / target))
        image = image[(h - ch) // 2 : (h - ch) // 2 + ch]
    if image.shape[:2] == (height, width):
        return image.astype(np.float32)
    channels = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((width, height), Image.BICUBIC)
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, -1), 0.0, 1.0).astype(np.float32)


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    from ..conform import colourspace_of_header, to_display

    try:
        exr = OpenEXR.File(str(path))
        channels = exr.channels()
    except Exception as err:  # OpenEXR raises plain RuntimeErrors for corrupt files
        raise AdapterError(f"{path}: cannot read EXR ({err})") from err
    key = "RGBA" if "RGBA" in channels else "RGB" if "RGB" in channels else None
    if key is None:
        raise AdapterError(f"{path}: no RGB(A) channels; found {sorted(channels)}")
    rgb = np.asarray(channels[key].pixels[..., :3], np.float32)
    return np.clip(to_display(rgb, colourspace_of_header(exr.header())), 0.0, 1.0)


def read_still(path: Path) -> np.ndarray:
    """Display float32 [H, W, 3] in [0, 1] of one still."""
    if path.suffix.lower() == ".exr":
        return _read_exr(path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), np.float32) / 255.0
    except OSError as err:
        raise AdapterError(f"{path}: cannot read image ({err})") from err


def _caption(sidecar: Path, default: str) -> str:
    if not sidecar.is_file():
        return default
    text = sidecar.read_text(encoding="utf-8").strip()
    if not text:
        raise AdapterError(f"{sidecar}: empty caption (delete it to use the template)")
    return text


def _clip_items(folder: Path, per: int, size: tuple[int, int], default: str) -> list[Item]:
    from ..eval.cli import exr_files, load_video
    from ..pipeline.text import segment_prompts
    from ..storyboard import SEGMENT_SECONDS, Storyboard
    from ..toonworld.dataset import STORYBOARD
    from ..train.data import FrameLayout

    try:
        frames, fps = load_video(folder)
    except (ValueError, OSError) as err:
        raise AdapterError(f"{folder}: not a clip ({err})") from err
    if frames.dtype == np.uint8:  # a dataset clip's frames.npy / PNGs; EXR sequences are display floats
        frames = frames.astype(np.float32) / 255.0
    if fps is not None and SEGMENT_SECONDS * int(fps) != per:
        raise AdapterError(
            f"{folder}: {fps} fps gives {SEGMENT_SECONDS * int(fps)} frames per 3-s segment; the model's "
            f"segment is {per} frames ({per / SEGMENT_SECONDS:g} fps)"
        )
    segments = frames.shape[0] // per
    if segments < 1:
        raise AdapterError(f"{folder}: {frames.shape[0]} frames; a model segment needs {per}")
    if exr_files(folder):
        captions = [_caption(folder.with_suffix(".txt"), default)] * segments
    else:
        board = Storyboard.load(folder / STORYBOARD)
        captions = segment_prompts(list(board.segments))[0]
        segments = min(segments, len(captions))
    layout = FrameLayout(per)  # the trainer's cut: a lead frame, then the segment's frames
    items = []
    for k in range(segments):
        window = np.stack([fit_image(f, *size) for f in layout.window(frames, k, 1)])
        items.append(Item(window, captions[k], f"{folder.name}[segment {k}]"))
    return items


def collect_items(
    folder: str | Path, kind: str, trigger: str, frames_per_item: int, size: tuple[int, int]
) -> list[Item]:
    """Every item of `folder` (see the module docstring), in name order.

    frames_per_item: 1 + the model's pixel frames per segment; size: (height, width) of the model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder}: expected a folder of stills and clips")
    per = frames_per_item - 1
    default = template_caption(kind, trigger)
    items: list[Item] = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in STILL_SUFFIXES:
            still = fit_image(read_still(path), *size)
            held = np.repeat(still[None], frames_per_item, axis=0)
            items.append(Item(held, _caption(path.with_suffix(".txt"), default), path.name))
        elif path.is_dir():
            items += _clip_items(path, per, size, default)
    if not items:
        raise AdapterError(
            f"{folder}: no stills ({', '.join(STILL_SUFFIXES)}) or clip folders in it; nothing to train on"
        )
    return items
