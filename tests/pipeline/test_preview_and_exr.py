from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from host_plugin.core.exr_io import read_exr
from ttt_engine.conform import DeliveredFrame, exr_colour_attributes
from ttt_engine.pipeline.exr_out import delivered_writer, gif_frames, write_gif
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


def test_delivered_frames_are_written_as_half_rgba_zip_with_their_tags(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rgba = np.concatenate([rng.random((8, 12, 3), dtype=np.float32), np.ones((8, 12, 1), np.float32)], -1)
    attributes = {
        "framesPerSecond": Fraction(24000, 1001),
        "dataWindow": ((0, 0), (11, 7)),
        "displayWindow": ((0, 0), (11, 7)),
        "pixelAspectRatio": 1.0,
        **exr_colour_attributes("lin_ap1_scene"),
    }
    seen = []
    write = delivered_writer(
        tmp_path / "frames", "shot", attributes={"ttt_studio/seed": "4"}, on_frame=lambda i, p: seen.append(i)
    )
    paths = [write(DeliveredFrame(k, rgba, attributes)) for k in range(2)]
    assert [p.name for p in paths] == ["shot.1001.exr", "shot.1002.exr"] and seen == [0, 1]
    pixels, header = read_exr(paths[1])
    np.testing.assert_allclose(pixels, rgba, atol=1e-3)  # half precision
    assert header["colorInteropID"] == "lin_ap1_scene"
    assert header["compression"] == "ZIP_COMPRESSION"
    assert header["pixel_types"] == {"A": "HALF", "B": "HALF", "G": "HALF", "R": "HALF"}
    assert header["ttt_studio/seed"] == "4"
    with pytest.raises(PipelineError, match="plain file stem"):
        delivered_writer(tmp_path, "a/b")


def test_gif_preview(tmp_path) -> None:
    frames = np.stack([np.full((16, 16, 3), v, np.float32) for v in (0.0, 0.2, 1.0)])
    path = write_gif(frames, tmp_path / "preview.gif", fps=16, colorspace="lin_rec709_scene")
    back = gif_frames(path)
    assert len(back) == 3 and back[0].shape == (16, 16, 3)
    # linear 0.2 shows as sRGB ~124: the GIF is display-referred (OCIO's sRGB display)
    assert abs(int(back[1][0, 0, 0]) - 124) <= 3
    # a model's sRGB-encoded frames show as themselves
    encoded = write_gif(frames, tmp_path / "model.gif", fps=16, colorspace="srgb_rec709_scene")
    assert abs(int(gif_frames(encoded)[1][0, 0, 0]) - 51) <= 3
    with pytest.raises(PipelineError, match="fps"):
        write_gif(frames, tmp_path / "x.gif", fps=0, colorspace="lin_rec709_scene")
