from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from host_plugin.core.exr_io import read_exr
from ttt_engine.pipeline.exr_out import (
    gif_frames,
    linear_to_srgb,
    srgb_to_linear,
    write_exr_sequence,
    write_gif,
)
from ttt_engine.pipeline.params import PipelineError
from ttt_engine.pipeline.preview import first3_preview, fit_latent_rgb_projection


def test_fit_recovers_a_linear_encoder() -> None:
    """If the encoder is linear in the pooled colour, the fitted projection inverts it exactly."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(3, 6, generator=g)  # rgb -> 6 latent channels

    def encode(images: torch.Tensor) -> torch.Tensor:  # [N, 3, 1, H, W] in [-1, 1]
        pooled = F.avg_pool2d(images[:, :, 0], 4)  # (N, 3, h, w)
        return torch.einsum("nchw,cd->ndhw", pooled, mix)[:, :, None] + 0.5

    proj = fit_latent_rgb_projection(encode, spatial_factor=4, samples=8)
    colour = torch.tensor([0.8, -0.2, 0.1])  # in [-1, 1]
    latents = (torch.einsum("c,cd->d", colour, mix) + 0.5).reshape(1, 1, 6, 1, 1).expand(1, 2, 6, 3, 5)
    rgb = proj(latents)
    assert rgb.shape == (2, 3, 5, 3) and rgb.dtype == np.uint8
    expected = np.round((colour.numpy() + 1) / 2 * 255)
    assert np.abs(rgb.reshape(-1, 3).astype(float) - expected).max() <= 1
    with pytest.raises(PipelineError, match="expected latents"):
        proj(torch.zeros(1, 2, 5, 3, 3))


def test_first3_preview_normalises_per_frame() -> None:
    lat = torch.randn(1, 3, 4, 6, 6) * 5
    out = first3_preview(lat)
    assert out.shape == (3, 6, 6, 3)
    assert [int(f.min()) for f in out] == [0, 0, 0] and [int(f.max()) for f in out] == [255] * 3


def test_srgb_transfer_functions() -> None:
    x = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    # known points of IEC 61966-2-1: sRGB 0.5 is linear 0.2140; the linear toe below 0.04045
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.21404, abs=1e-4)
    assert srgb_to_linear(np.array([0.02]))[0] == pytest.approx(0.02 / 12.92)
    assert srgb_to_linear(np.array([1.0]))[0] == pytest.approx(1.0)


def test_exr_sequence_is_half_rgba_zip_linear_and_readable(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.random((3, 8, 12, 3), dtype=np.float32)
    seen = []
    paths = write_exr_sequence(
        frames,
        tmp_path / "frames",
        "shot",
        fps=16,
        attributes={"ttt_studio/seed": "4"},
        on_frame=lambda i, p: seen.append(i),
    )
    assert [p.name for p in paths] == ["shot.1001.exr", "shot.1002.exr", "shot.1003.exr"]
    assert seen == [0, 1, 2]
    pixels, header = read_exr(paths[1])
    assert pixels.shape == (8, 12, 4)
    np.testing.assert_allclose(pixels[..., :3], frames[1], atol=1e-3)  # half precision
    assert (pixels[..., 3] == 1).all()
    assert header["colorInteropID"] == "lin_rec709_scene"
    assert header["compression"] == "ZIP_COMPRESSION"
    assert header["pixel_types"] == {"A": "HALF", "B": "HALF", "G": "HALF", "R": "HALF"}
    assert header["ttt_studio/seed"] == "4"
    with pytest.raises(PipelineError, match=r"\[T, H, W, 3\]"):
        write_exr_sequence(frames[0], tmp_path, "x")
    with pytest.raises(PipelineError, match="plain file stem"):
        write_exr_sequence(frames, tmp_path, "a/b")


def test_gif_preview(tmp_path) -> None:
    frames = np.stack([np.full((16, 16, 3), v, np.float32) for v in (0.0, 0.2, 1.0)])
    path = write_gif(frames, tmp_path / "preview.gif", fps=16)
    back = gif_frames(path)
    assert len(back) == 3 and back[0].shape == (16, 16, 3)
    # linear 0.2 shows as sRGB ~124: the GIF is display-referred
    assert abs(int(back[1][0, 0, 0]) - 124) <= 3
    with pytest.raises(PipelineError, match="fps"):
        write_gif(frames, tmp_path / "x.gif", fps=0)
