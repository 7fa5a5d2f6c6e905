from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from ttt_engine.pipeline.latents_io import load_latents, save_latents
from ttt_engine.pipeline.params import PipelineError


def test_round_trip_keeps_values_dtype_and_meta(tmp_path) -> None:
    latents = torch.randn(1, 5, 4, 8, 8)
    meta = {"storyboard": [{"text": "a cat"}], "params": {"seed": 3, "steps": 2}, "fps": 16.0}
    path = save_latents(tmp_path / "sub" / "latents.safetensors", latents, meta)
    assert path.is_file() and not path.with_name(path.name + ".tmp").exists()
    back, back_meta = load_latents(path)
    assert torch.equal(back, latents)
    assert back_meta == meta
    bf16 = latents.to(torch.bfloat16)
    save_latents(path, bf16)
    back, back_meta = load_latents(path)
    assert back.dtype == torch.bfloat16 and torch.equal(back, bf16) and back_meta == {}


def test_bad_inputs_and_files(tmp_path) -> None:
    with pytest.raises(PipelineError, match=r"\[1, F, C, h, w\], got \(4, 8\)"):
        save_latents(tmp_path / "x.safetensors", torch.zeros(4, 8))
    with pytest.raises(PipelineError, match="JSON-serialisable"):
        save_latents(tmp_path / "x.safetensors", torch.zeros(1, 1, 1, 1, 1), {"bad": object()})
    with pytest.raises(PipelineError, match="no file"):
        load_latents(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(PipelineError, match="not a readable safetensors"):
        load_latents(tmp_path / "junk.safetensors")
    save_file({"weights": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(PipelineError, match=r"no 'latents' tensor \(found \['weights'\]\)"):
        load_latents(tmp_path / "other.safetensors")
