"""The video DiT on tiny random models: shapes, the TTT path, overlap averaging, masks, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttt_engine.models import VideoDiT, VideoDiTConfig, tiny
from ttt_engine.models.blocks import BlockContext, LocalAttention
from ttt_engine.models.layout import SegmentLayout
from ttt_engine.models.rope3d import apply_rope, video_rope


def _copy_shared(src: VideoDiT, dst: VideoDiT) -> None:
    """Copy every parameter dst has from src (e.g. a TTT model into a ttt='none' model)."""
    state = {k: v for k, v in src.state_dict().items() if k in dst.state_dict()}
    dst.load_state_dict(state, strict=True)


def test_multi_segment_forward_shape(make_inputs) -> None:
    c = tiny()
    model = VideoDiT(c).eval()
    latents, text, mask, t = make_inputs(c, segments=3, batch=2)
    assert latents.shape[1] == 7  # 3 + 2 + 2
    with torch.no_grad():
        out = model(latents, text, mask, t)
    assert out.shape == (2, 7, c.out_channels, 8, 8)
    assert torch.isfinite(out).all()
    # a scalar timestep is broadcast over the batch
    with torch.no_grad():
        same = model(latents, text, mask, torch.full((2,), float(t[0])))
        scalar = model(latents, text, mask, float(t[0]))
    torch.testing.assert_close(scalar, same)


def test_ttt_changes_the_output_only_when_gates_are_nonzero(make_inputs) -> None:
    c = tiny()
    model = VideoDiT(c).eval()
    latents, text, mask, t = make_inputs(c, segments=3)
    with torch.no_grad():
        with_ttt = model(latents, text, mask, t)
        model.ttt_enabled = False
        without = model(latents, text, mask, t)
        model.ttt_enabled = True
        # ttt 'none' (local attention only) with the same remaining weights equals TTT switched off
        plain = VideoDiT(tiny(ttt_inner="none")).eval()
        _copy_shared(model, plain)
        assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())
        torch.testing.assert_close(plain(latents, text, mask, t), without, rtol=0, atol=0)
        # gates of 0: TTT runs, contributes exactly nothing
        for block in model.blocks:
            for name in ("gate_fwd_text", "gate_fwd_video", "gate_bwd_text", "gate_bwd_video"):
                getattr(block.ttt, name).zero_()
        zero_gates = model(latents, text, mask, t)
    assert (with_ttt - without).abs().max() > 1e-4
    torch.testing.assert_close(zero_gates, without, rtol=0, atol=0)


def test_gradients_reach_ttt_parameters_and_all_four_gates(make_inputs) -> None:
    c = tiny()
    model = VideoDiT(c).train()
    latents, text, mask, t = make_inputs(c, segments=2)
    model(latents, text, mask, t).square().mean().backward()
    names = [n for n, _ in model.ttt_named_parameters()]
    assert any(n.endswith("ttt.layer.w1") for n in names) and any(n.endswith("gate_bwd_video") for n in names)
    # the last block's text stream is discarded after it (only video is decoded), and its backward text
    # gate only touches that stream: it alone gets no gradient, exactly like CogVideoX's last text MLP
    dead = f"blocks.{c.num_layers - 1}.ttt.gate_bwd_text"
    for name, param in model.ttt_named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        if name == dead:
            assert param.grad.abs().sum() == 0
        else:
            assert param.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_linear_inner_model_runs(make_inputs) -> None:
    c = tiny(ttt_inner="linear")
    model = VideoDiT(c).eval()
    assert not hasattr(model.blocks[0].ttt.layer, "w2")
    latents, text, mask, t = make_inputs(c, segments=2)
    with torch.no_grad():
        assert torch.isfinite(model(latents, text, mask, t)).all()


# ---- the bidirectional TTT against an explicit implementation of the specification ---------------


def _explicit_bidirectional(ttt, z: torch.Tensor, c: VideoDiTConfig, segments: int, text_len: int, grid: int):
    """Z = A + tanh(a) TTT(A); Z' = Z + tanh(b) rev(TTT(rev(Z))) written with slices and flips."""
    b, _, dim = z.shape
    n = grid * grid
    first, later = c.first_segment_frames, c.segment_frames
    bounds = [0, first] + [first + later * i for i in range(1, segments)]
    frames = bounds[-1]
    cos_v, sin_v = video_rope(c.head_dim, torch.arange(frames), grid, grid, grid, grid, c.rope_theta)
    ones, zeros = torch.ones(text_len, c.head_dim), torch.zeros(text_len, c.head_dim)

    def interleave(text, video, table_v, fill):
        """text [B, S, T, D], video [B, F*N, D] -> [text_0, video_0, text_1, ...] and its RoPE table."""
        seq, table = [], []
        for i in range(segments):
            seq += [text[:, i], video[:, bounds[i] * n : bounds[i + 1] * n]]
            table += [fill, table_v[bounds[i] * n : bounds[i + 1] * n]]
        return torch.cat(seq, 1), torch.cat(table)

    def split(seq):
        texts, videos, pos = [], [], 0
        for i in range(segments):
            texts.append(seq[:, pos : pos + text_len])
            pos += text_len
            videos.append(seq[:, pos : pos + (bounds[i + 1] - bounds[i]) * n])
            pos += (bounds[i + 1] - bounds[i]) * n
        return torch.stack(texts, 1), torch.cat(videos, 1)

    def run(text, video, cos_table_v, sin_table_v):
        seq, cos = interleave(text, video, cos_table_v, ones)
        _, sin = interleave(text, video, sin_table_v, zeros)
        return split(ttt.layer(seq, rope_fn=lambda q, k: (apply_rope(q, cos, sin), apply_rope(k, cos, sin))))

    def gated(text, video, gate_text, gate_video):
        return torch.cat(
            [torch.tanh(gate_text) * text.reshape(b, -1, dim), torch.tanh(gate_video) * video], 1
        )

    text = z[:, : segments * text_len].reshape(b, segments, text_len, dim)
    video = z[:, segments * text_len :]
    y_text, y_video = run(text, video, cos_v, sin_v)
    z = z + gated(y_text, y_video, ttt.gate_fwd_text, ttt.gate_fwd_video)
    text = z[:, : segments * text_len].reshape(b, segments, text_len, dim)
    video = z[:, segments * text_len :]
    # reverse: text blocks in reverse segment order, video token by token; positions travel with tokens
    y_text, y_video = run(text.flip(1), video.flip(1), cos_v.flip(0), sin_v.flip(0))
    return z + gated(y_text.flip(1), y_video.flip(1), ttt.gate_bwd_text, ttt.gate_bwd_video)


def test_bidirectional_ttt_matches_the_specification(make_inputs) -> None:
    c = tiny(ttt_gate_init=0.5)
    model = VideoDiT(c).eval()
    segments, text_len, grid = 3, 5, 4
    model._context(segments, text_len, grid, grid, None, torch.device("cpu"))
    ctx, _ = model._context(segments, text_len, grid, grid, None, torch.device("cpu"))
    length = segments * text_len + c.latent_frames(segments) * grid * grid
    z = torch.randn(2, length, c.dim)
    ttt = model.blocks[0].ttt
    with torch.no_grad():
        nn.init.normal_(ttt.gate_bwd_video, std=0.5)  # distinct gates so a swapped gate is visible
        got = ttt(z, ctx)
        want = _explicit_bidirectional(ttt, z, c, segments, text_len, grid)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ---- local attention: windows and overlap averaging, checked by hand -------------------------------


def _identity_attention(dim: int, heads: int) -> LocalAttention:
    attn = LocalAttention(dim, heads, dim // heads, bias=True, qk_norm_eps=1e-6)
    with torch.no_grad():
        for lin in (attn.to_q, attn.to_k, attn.to_v, attn.to_out):
            lin.weight.copy_(torch.eye(dim))
            lin.bias.zero_()
    return attn


def _context(lay: SegmentLayout) -> BlockContext:
    empty = torch.empty(0, dtype=torch.long)
    return BlockContext(
        text_len=lay.text_len,
        text_tokens=lay.text_tokens,
        attn_index=lay.attention_index(),
        attn_counts=lay.stream_overlap_counts()[:, None],
        attn_cos=None,
        attn_sin=None,
        attn_mask=None,
        fwd_gather=empty,
        fwd_scatter=empty,
        bwd_gather=empty,
        bwd_scatter=empty,
        ttt_cos=torch.empty(0),
        ttt_sin=torch.empty(0),
        ttt_cos_rev=torch.empty(0),
        ttt_sin_rev=torch.empty(0),
    )


def test_overlap_frames_average_the_windows_that_see_them() -> None:
    # 3 segments, 2 text tokens, windows of 3 frames with stride 2 (1 frame overlap), 1 token per frame:
    # windows [0,3) [2,5) [4,7): frames 2 and 4 are seen twice
    lay = SegmentLayout(num_segments=3, text_len=2, tokens_per_frame=1, first=3, later=2)
    attn = _identity_attention(dim=4, heads=1)
    x = torch.randn(1, lay.length, 4)

    # (a) attention that returns each window's index + 1 everywhere
    def window_id(q, k, v, mask):
        return torch.arange(1.0, 4.0).view(3, 1, 1, 1).expand_as(v).contiguous()

    attn.attend = window_id
    out = attn(x, _context(lay))[0, :, 0]
    text, video = out[:6].tolist(), out[6:].tolist()
    assert text == [1, 1, 2, 2, 3, 3]
    assert video == [1, 1, 1.5, 2, 2.5, 3, 3]  # frames 2 and 4: mean of two windows

    # (b) attention replaced by identity (each token returns its own value): no frame is counted twice
    attn.attend = lambda q, k, v, mask: v
    attn.q_norm = attn.k_norm = nn.Identity()
    torch.testing.assert_close(attn(x, _context(lay)), x)


# ---- text mask ---------------------------------------------------------------------------------------


def test_text_mask_drops_padded_keys(make_inputs) -> None:
    c = tiny()
    model = VideoDiT(c).eval()
    latents, text, mask, t = make_inputs(c, segments=2)
    with torch.no_grad():
        full = model(latents, text, mask, t)
        torch.testing.assert_close(model(latents, text, None, t), full, rtol=0, atol=0)
        mask[:, 1, 4:] = False
        masked = model(latents, text, mask, t)
        # what masked keys hold no longer matters (they still pass through TTT, so change them only in
        # a model without TTT)
        plain = VideoDiT(tiny(ttt_inner="none")).eval()
        _copy_shared(model, plain)
        edited = text.clone()
        edited[:, 1, 4:] = 100.0
        torch.testing.assert_close(plain(latents, edited, mask, t), plain(latents, text, mask, t))
        mask[:, 0] = False  # a segment with no text at all stays finite: video keys remain
        assert torch.isfinite(model(latents, text, mask, t)).all()
    assert (masked - full).abs().max() > 1e-5


# ---- bad inputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,match",
    [
        ("frames", "2 segments need 5 latent frames"),
        ("channels", "expected 4 channels"),
        ("mask_shape", "text_mask: expected shape"),
        ("mask_dtype", "bool tensor"),
        ("timestep", "timestep: expected finite values in \\[0, 1000\\]"),
        ("text_dim", "text: expected"),
        ("odd_size", "multiples of patch_size"),
        ("text_len", "max_text_len=8"),
    ],
)
def test_bad_inputs_raise_clear_errors(make_inputs, bad: str, match: str) -> None:
    c = tiny()
    model = VideoDiT(c)
    latents, text, mask, t = make_inputs(c, segments=2)
    if bad == "frames":
        latents = latents[:, :4]
    elif bad == "channels":
        latents = latents[:, :, :3]
    elif bad == "mask_shape":
        mask = mask[:, :, :3]
    elif bad == "mask_dtype":
        mask = mask.float()
    elif bad == "timestep":
        t = torch.tensor([1200.0])
    elif bad == "text_dim":
        text = text[..., :16]
    elif bad == "odd_size":
        latents = latents[..., :7]
    elif bad == "text_len":
        text, mask = torch.cat([text, text], 2), torch.cat([mask, mask], 2)
    with pytest.raises(ValueError, match=match):
        model(latents, text, mask, t)


# ---- training and precision ----------------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients(make_inputs) -> None:
    c = tiny()
    model = VideoDiT(c).train()
    latents, text, mask, t = make_inputs(c, segments=2)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(latents, text, mask, t).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    calls, block_forward = [], model.blocks[0].forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return block_forward(*args, **kwargs)

    model.blocks[0].forward = counting_forward
    plain = grads()
    assert len(calls) == 1
    model.gradient_checkpointing = True
    checkpointed = grads()
    assert len(calls) == 3  # forward + recomputation in the backward pass
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, rtol=1e-5, atol=1e-7, msg=name)
    assert VideoDiT(tiny(gradient_checkpointing=True)).gradient_checkpointing


def test_bfloat16_forward_tracks_float32(make_inputs) -> None:
    c = tiny()
    model = VideoDiT(c).eval()
    latents, text, mask, t = make_inputs(c, segments=2)
    with torch.no_grad():
        ref = model(latents, text, mask, t)
        out = model.to(torch.bfloat16)(latents, text, mask, t)
    assert out.dtype == torch.bfloat16
    err = ((out.float() - ref).norm() / ref.norm()).item()
    assert err < 5e-2, err
