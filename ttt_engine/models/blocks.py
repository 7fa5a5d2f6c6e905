"""One block of the video DiT: CogVideoX's expert-adaLN block with the paper's change (ttt-mlp.md section 2).

    A  = local_attention(adaLN(X))                 attention inside each segment's window, overlaps averaged
    Z  = A + tanh(alpha) * TTT(A)                  over the interleaved [text_0, video_0, text_1, ...] sequence
    Z' = Z + tanh(beta) * rev(TTT(rev(Z)))         same TTT parameters, fresh inner state W0
    X  = X + gate_msa * Z' ; X = X + gate_ff * MLP(adaLN(X))

Tokens are kept in stream order [all text ; all video] (layout.py); a BlockContext carries the index
tensors that cut attention windows out of the stream and put the TTT sequence together. With one segment,
TTT off (or gates 0) this is exactly diffusers' CogVideoXBlock.

TTT positions: 3D RoPE at each video token's GLOBAL (t, h, w), in both directions: a token keeps its own
position when the sequence is reversed. (The paper's code instead applies the position table in sequence
order to the reversed video, i.e. mirrored positions in the backward pass; its weights are not released,
so nothing depends on matching that.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TTTConfig
from ..layers import TTTLayer
from .rope3d import apply_rope


@dataclass
class BlockContext:
    """What every block needs to know about one forward pass (built once per call by VideoDiT).

    text_tokens: S * T (text comes first in the stream). Index tensors live on the activations' device.
    attn_index [S, W]: stream positions of each attention window (W = T + first * N).
    attn_counts [L, 1] | None: windows per stream token (None when there is one window: no averaging).
    attn_cos/attn_sin [first * N, head_dim] | None: RoPE of a window's video tokens (local frame positions).
    attn_mask [B * S, 1, 1, W] bool | None: False on padded text keys (None = attend to everything).
    fwd_gather/fwd_scatter, bwd_gather/bwd_scatter [L]: stream -> TTT sequence and back, forward and reversed.
    ttt_cos/ttt_sin (forward order) and ttt_cos_rev/ttt_sin_rev (reversed) [L, head_dim]: global 3D RoPE,
    identity on text tokens.
    """

    text_len: int
    text_tokens: int
    attn_index: torch.Tensor
    attn_counts: torch.Tensor | None
    attn_cos: torch.Tensor | None
    attn_sin: torch.Tensor | None
    attn_mask: torch.Tensor | None
    fwd_gather: torch.Tensor
    fwd_scatter: torch.Tensor
    bwd_gather: torch.Tensor
    bwd_scatter: torch.Tensor
    ttt_cos: torch.Tensor
    ttt_sin: torch.Tensor
    ttt_cos_rev: torch.Tensor
    ttt_sin_rev: torch.Tensor
    ttt_enabled: bool = True

    def rope_forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TTT rope_fn for the forward sequence: q, k [B, H, L, D]."""
        return apply_rope(q, self.ttt_cos, self.ttt_sin), apply_rope(k, self.ttt_cos, self.ttt_sin)

    def rope_reverse(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TTT rope_fn for the reversed sequence: every token keeps its own global position."""
        return apply_rope(q, self.ttt_cos_rev, self.ttt_sin_rev), apply_rope(
            k, self.ttt_cos_rev, self.ttt_sin_rev
        )


class AdaNormZero(nn.Module):
    """Expert adaLN (CogVideoXLayerNormZero): one LayerNorm, separate shift/scale/gate for video and text."""

    def __init__(self, cond_dim: int, dim: int, eps: float, elementwise_affine: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(
        self, video: torch.Tensor, text: torch.Tensor, temb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """video [B, Lv, D], text [B, Lt, D], temb [B, E] -> normed video, normed text, gates [B, 1, D] x 2."""
        shift, scale, gate, t_shift, t_scale, t_gate = self.linear(F.silu(temb)).unsqueeze(1).chunk(6, dim=-1)
        video = self.norm(video) * (1 + scale) + shift
        text = self.norm(text) * (1 + t_scale) + t_shift
        return video, text, gate, t_gate


class LocalAttention(nn.Module):
    """Full bidirectional attention inside each segment window [text_i ; frames of window i].

    QK-LayerNorm per head, RoPE on video tokens at window-local frame positions, outputs of frames seen by
    two windows averaged, then the output projection.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, bias: bool, qk_norm_eps: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(dim, dim, bias=bias)
        self.to_v = nn.Linear(dim, dim, bias=bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=qk_norm_eps)
        self.k_norm = nn.LayerNorm(head_dim, eps=qk_norm_eps)
        self.to_out = nn.Linear(dim, dim)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """[B*S, H, W, hd] x 3 -> [B*S, H, W, hd]."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """x [B, L, D] in stream order -> [B, L, D]."""
        b, length, dim = x.shape
        h, hd = self.num_heads, self.head_dim
        segments, window = ctx.attn_index.shape
        flat_index = ctx.attn_index.reshape(-1)

        def windows(t: torch.Tensor) -> torch.Tensor:
            t = t.index_select(1, flat_index).view(b, segments, window, h, hd)
            return t.permute(0, 1, 3, 2, 4).reshape(b * segments, h, window, hd)  # (B*S, H, W, hd)

        q = windows(self.q_norm(self.to_q(x).view(b, length, h, hd)))
        k = windows(self.k_norm(self.to_k(x).view(b, length, h, hd)))
        v = windows(self.to_v(x).view(b, length, h, hd))
        if ctx.attn_cos is not None:
            t = ctx.text_len
            q = torch.cat([q[:, :, :t], apply_rope(q[:, :, t:], ctx.attn_cos, ctx.attn_sin)], dim=2)
            k = torch.cat([k[:, :, :t], apply_rope(k[:, :, t:], ctx.attn_cos, ctx.attn_sin)], dim=2)
        out = self.attend(q, k, v, ctx.attn_mask)
        out = out.view(b, segments, h, window, hd).permute(0, 1, 3, 2, 4).reshape(b, segments * window, dim)
        if ctx.attn_counts is None:  # one window: it is the whole stream, in order
            stream = out
        else:
            stream = out.new_zeros(b, length, dim).index_add_(1, flat_index, out)
            stream = stream / ctx.attn_counts.to(stream.dtype)
        return self.to_out(stream)


class FeedForward(nn.Module):
    """gelu-tanh MLP, 4x wide."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class BidirectionalTTT(nn.Module):
    """Z = A + tanh(alpha) TTT(A); Z' = Z + tanh(beta) rev(TTT(rev(Z))), one TTT layer for both directions.

    Four gate vectors of size dim: forward/backward x text/video.
    """

    def __init__(self, config: TTTConfig, gate_init: float) -> None:
        super().__init__()
        self.gate_init = gate_init
        self.layer = TTTLayer(config)
        dim = config.dim
        self.gate_fwd_text = nn.Parameter(torch.full((dim,), float(gate_init)))
        self.gate_fwd_video = nn.Parameter(torch.full((dim,), float(gate_init)))
        self.gate_bwd_text = nn.Parameter(torch.full((dim,), float(gate_init)))
        self.gate_bwd_video = nn.Parameter(torch.full((dim,), float(gate_init)))

    def reset_parameters(self) -> None:
        """The paper's initialisation: TTT layer as TTTLayer.reset_parameters, gates = gate_init."""
        self.layer.reset_parameters()
        for gate in (self.gate_fwd_text, self.gate_fwd_video, self.gate_bwd_text, self.gate_bwd_video):
            nn.init.constant_(gate, self.gate_init)

    @staticmethod
    def _gated(
        y: torch.Tensor, text_gate: torch.Tensor, video_gate: torch.Tensor, text_tokens: int
    ) -> torch.Tensor:
        return torch.cat(
            [torch.tanh(text_gate) * y[:, :text_tokens], torch.tanh(video_gate) * y[:, text_tokens:]], 1
        )

    def forward(self, z: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """z [B, L, D] in stream order -> [B, L, D] in stream order."""
        t = ctx.text_tokens
        y = self.layer(z.index_select(1, ctx.fwd_gather), rope_fn=ctx.rope_forward).index_select(
            1, ctx.fwd_scatter
        )
        z = z + self._gated(y, self.gate_fwd_text, self.gate_fwd_video, t)
        y = self.layer(z.index_select(1, ctx.bwd_gather), rope_fn=ctx.rope_reverse).index_select(
            1, ctx.bwd_scatter
        )
        return z + self._gated(y, self.gate_bwd_text, self.gate_bwd_video, t)


class DiTBlock(nn.Module):
    """CogVideoX block (expert adaLN, QK-norm, gelu-tanh MLP) with local attention and bidirectional TTT."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        time_embed_dim: int,
        *,
        norm_eps: float,
        qk_norm_eps: float,
        norm_elementwise_affine: bool,
        attention_bias: bool,
        ttt: TTTConfig | None,
        ttt_gate_init: float,
    ) -> None:
        super().__init__()
        self.norm1 = AdaNormZero(time_embed_dim, dim, norm_eps, norm_elementwise_affine)
        self.attn = LocalAttention(dim, num_heads, head_dim, attention_bias, qk_norm_eps)
        self.ttt = BidirectionalTTT(ttt, ttt_gate_init) if ttt is not None else None
        self.norm2 = AdaNormZero(time_embed_dim, dim, norm_eps, norm_elementwise_affine)
        self.mlp = FeedForward(dim)

    def forward(
        self, video: torch.Tensor, text: torch.Tensor, temb: torch.Tensor, ctx: BlockContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, Lv, D], text [B, S*T, D], temb [B, E] -> (video, text)."""
        t = text.shape[1]
        norm_video, norm_text, gate, text_gate = self.norm1(video, text, temb)
        mixed = self.attn(torch.cat([norm_text, norm_video], dim=1), ctx)
        if self.ttt is not None and ctx.ttt_enabled:
            mixed = self.ttt(mixed, ctx)
        video = video + gate * mixed[:, t:]
        text = text + text_gate * mixed[:, :t]

        norm_video, norm_text, gate, text_gate = self.norm2(video, text, temb)
        ff = self.mlp(torch.cat([norm_text, norm_video], dim=1))
        video = video + gate * ff[:, t:]
        text = text + text_gate * ff[:, :t]
        return video, text
