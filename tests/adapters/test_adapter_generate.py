"""`ttt-studio generate --adapter PATH[:SCALE]`: applied while sampling, recorded in every frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from host_plugin.core.exr_io import read_exr
from tests.pipeline.conftest import storyboard_of
from tests.pipeline.test_cli import run_cli
from ttt_engine.adapters import (
    AdapterConfig,
    AdapterError,
    parse_adapter_arg,
    records_from_attributes,
    save_adapter,
)
from ttt_engine.pipeline.latents_io import load_latents
from ttt_engine.pipeline.video_pipeline import VideoPipeline

from .helpers import random_adapter, random_lora_state


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    board = storyboard_of(1).dump(root / "shot.json")
    model = VideoPipeline.tiny_random(0).transformer
    look = save_adapter(random_adapter(model, seed=4), root / "look")
    base = root / "base"
    assert _generate(board, base, 2) == 0
    return root, board, look, base


def _generate(board, out, steps: int, *adapters: str) -> int:
    """`ttt-studio generate` on the tiny random model with one --adapter per entry of `adapters`."""
    flags = [arg for adapter in adapters for arg in ("--adapter", adapter)]
    return run_cli(["generate", str(board), "-o", str(out), "--tiny-random", "--steps", str(steps), *flags])


def _frames(folder):
    files = sorted((folder / "frames").glob("*.exr"))
    return [read_exr(f)[0] for f in files], read_exr(files[0])[1]


def test_scale_zero_writes_the_base_frames_and_records_it(setup) -> None:
    root, board, look, base = setup
    out = root / "zero"
    assert _generate(board, out, 2, f"{look.path.parent}:0") == 0
    got, header = _frames(out)
    want, base_header = _frames(base)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert records_from_attributes(header, "zero") == [{"name": "look", "scale": 0.0, "sha256": look.sha256}]
    assert records_from_attributes(base_header, "base") == []


def test_adapter_changes_frames_and_latents_record_it(setup) -> None:
    root, board, look, base = setup
    out = root / "one"
    assert _generate(board, out, 2, str(look.path), f"{look.path.parent}:-0.5") == 0
    got, header = _frames(out)
    want, _ = _frames(base)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True)) > 1e-3
    records = records_from_attributes(header, "one")
    assert [(r["scale"], r["sha256"]) for r in records] == [(1.0, look.sha256), (-0.5, look.sha256)]
    _, meta = load_latents(out / "latents.safetensors")
    assert meta["adapters"] == records
    # decoding those latents again carries their adapters into the new frames
    again = root / "again"
    assert (
        run_cli(
            [
                "generate",
                str(out / "storyboard.json"),
                "-o",
                str(again),
                "--tiny-random",
                "--from-latents",
                str(out / "latents.safetensors"),
            ]
        )
        == 0
    )
    assert records_from_attributes(_frames(again)[1], "again") == records


def test_mismatched_adapter_exits_2_naming_the_key(setup, tmp_path, capsys) -> None:
    _, board, _, _ = setup
    model = VideoPipeline.tiny_random(0).transformer
    state = random_lora_state(model)
    state["transformer.transformer_blocks.0.attn1.to_q.lora_B.weight"] = torch.zeros(10, 4)
    bad = save_adapter(state, tmp_path / "bad", AdapterConfig(rank=4, alpha=4))
    code = _generate(board, tmp_path / "o", 1, str(bad.path))
    assert code == 2
    err = capsys.readouterr().err
    assert "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight" in err and "(10, 4)" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "text, want",
    [
        ("a/b", ("a/b", 1.0)),
        ("a/b:0.5", ("a/b", 0.5)),
        ("C:/x/y:2", ("C:/x/y", 2.0)),
        ("dir:name", ("dir:name", 1.0)),
    ],
)
def test_parse_adapter_arg(text, want) -> None:
    path, scale = parse_adapter_arg(text)
    assert (str(path), scale) == want


@pytest.mark.parametrize("text", ["", "a:", "a:nan", "a:inf"])
def test_parse_adapter_arg_refuses(text) -> None:
    with pytest.raises(AdapterError):
        parse_adapter_arg(text)
