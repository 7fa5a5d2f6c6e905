"""The video diffusion transformer: CogVideoX with segment-local attention and global bidirectional TTT.

    latents [B, F, C, h, w] --patch embed (2D, per frame)--> video tokens [B, F*N, D]
    text    [B, S, T, text_dim] --linear--> text tokens [B, S*T, D]
    timestep [B] --sinusoid + MLP--> temb [B, E]  (drives every adaLN)
    blocks (blocks.py) -> LayerNorm -> adaLN(shift, scale) -> linear -> unpatchify -> [B, F, C_out, h, w]

S = number of segments (from the text), F = config.latent_frames(S), N = (h/p) (w/p).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BlockContext, DiTBlock
from .config import VideoDiTConfig
from .layout import SegmentLayout, frame_window_positions, invert_permutation
from .rope3d import sincos_3d, video_rope

MAX_TIMESTEP = 1000.0
_CONTEXT_CACHE_SIZE = 4


def timestep_sinusoid(
    timesteps: torch.Tensor,
    dim: int,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """[B] -> [B, dim] float32: sin/cos of t * max_period^(-i / (dim/2 - freq_shift)) (cos first when flipped)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * freqs[None, :]  # (B, half)
    sin, cos = torch.sin(angles), torch.cos(angles)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoid of width `dim` -> linear -> SiLU -> linear (width time_embed_dim)."""

    def __init__(self, dim: int, time_embed_dim: int, flip_sin_to_cos: bool, freq_shift: float) -> None:
        super().__init__()
        self.dim, self.flip_sin_to_cos, self.freq_shift = dim, flip_sin_to_cos, freq_shift
        self.linear_1 = nn.Linear(dim, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        emb = timestep_sinusoid(timesteps, self.dim, self.flip_sin_to_cos, self.freq_shift).to(dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class OutputNorm(nn.Module):
    """adaLN of the output (diffusers AdaLayerNorm with chunk_dim=1): shift first, then scale."""

    def __init__(self, cond_dim: int, dim: int, eps: float, elementwise_affine: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class VideoDiT(nn.Module):
    """forward(latents [B, F, C, h, w], text [B, S, T, text_dim], text_mask [B, S, T] bool | None,
    timestep [B]) -> prediction [B, F, C_out, h, w].

    text_mask: True = a real token. False keys are left out of attention (text_mask None or all True:
    every text token is attended to, as CogVideoX does with its padded T5 text). TTT sees every token.

    Attributes you may flip at run time: `ttt_enabled` (False: skip TTT entirely, exactly as gates of 0)
    and `gradient_checkpointing` (recompute each block in the backward pass; training only).
    """

    def __init__(self, config: VideoDiTConfig) -> None:
        super().__init__()
        if not isinstance(config, VideoDiTConfig):
            raise ValueError(f"config: expected a VideoDiTConfig, got {type(config).__name__}")
        self.config = c = config
        self.patch_embed = nn.Conv2d(
            c.in_channels, c.dim, c.patch_size, stride=c.patch_size, bias=c.patch_bias
        )
        self.text_proj = nn.Linear(c.text_dim, c.dim)
        self.time_embed = TimeEmbedding(c.dim, c.time_embed_dim, c.flip_sin_to_cos, c.freq_shift)
        ttt = c.ttt_config()
        self.blocks = nn.ModuleList(
            DiTBlock(
                c.dim,
                c.num_heads,
                c.head_dim,
                c.time_embed_dim,
                norm_eps=c.norm_eps,
                qk_norm_eps=c.qk_norm_eps,
                norm_elementwise_affine=c.norm_elementwise_affine,
                attention_bias=c.attention_bias,
                ttt=ttt,
                ttt_gate_init=c.ttt_gate_init,
            )
            for _ in range(c.num_layers)
        )
        self.norm_final = nn.LayerNorm(c.dim, eps=c.norm_eps, elementwise_affine=c.norm_elementwise_affine)
        self.norm_out = OutputNorm(c.time_embed_dim, c.dim, c.norm_eps, c.norm_elementwise_affine)
        self.proj_out = nn.Linear(c.dim, c.patch_size * c.patch_size * c.out_channels)
        self.ttt_enabled = True
        self.gradient_checkpointing = c.gradient_checkpointing
        self._contexts: OrderedDict[tuple, dict[str, torch.Tensor | None]] = OrderedDict()

    # ---- parameters ----------------------------------------------------------------------------------

    def ttt_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """TTT layers and gates: what the paper trains at the 9-63 s stages besides attention QKVO."""
        for name, param in self.named_parameters():
            if ".ttt." in name:
                yield name, param

    def reset_ttt_parameters(self) -> None:
        """Re-initialise every TTT layer and gate as the paper does (gates = config.ttt_gate_init)."""
        for block in self.blocks:
            if block.ttt is not None:
                block.ttt.reset_parameters()

    # ---- inputs --------------------------------------------------------------------------------------

    def _check_inputs(
        self, latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None, timestep: object
    ) -> tuple[int, torch.Tensor]:
        c = self.config
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents: expected [batch, frames, {c.in_channels}, height, width], got {got}")
        b, frames, channels, height, width = latents.shape
        if channels != c.in_channels:
            raise ValueError(
                f"latents: expected {c.in_channels} channels (dim 2), got shape {tuple(latents.shape)}"
            )
        if height % c.patch_size or width % c.patch_size:
            raise ValueError(
                f"latents: height and width must be multiples of patch_size {c.patch_size}, got {height} x {width}"
            )
        if not isinstance(text, torch.Tensor) or text.dim() != 4:
            got = tuple(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__
            raise ValueError(f"text: expected [batch, segments, tokens, {c.text_dim}], got {got}")
        if text.device != latents.device:
            raise ValueError(
                f"text: expected device {latents.device} (where latents live), got {text.device}"
            )
        tb, segments, tokens, text_dim = text.shape
        if tb != b or text_dim != c.text_dim:
            raise ValueError(
                f"text: expected [batch={b}, segments, tokens, {c.text_dim}], got shape {tuple(text.shape)}"
            )
        if segments < 1 or tokens < 1:
            raise ValueError(
                f"text: expected at least one segment and one token, got shape {tuple(text.shape)}"
            )
        if tokens > c.max_text_len:
            raise ValueError(
                f"text: expected at most max_text_len={c.max_text_len} tokens per segment, got {tokens}"
            )
        expected_frames = c.latent_frames(segments)
        if frames != expected_frames:
            raise ValueError(
                f"latents: {segments} segments need {expected_frames} latent frames "
                f"({c.first_segment_frames} + {c.segment_frames} per later segment), got {frames}"
            )
        if text_mask is not None:
            if not isinstance(text_mask, torch.Tensor) or text_mask.dtype != torch.bool:
                got = text_mask.dtype if isinstance(text_mask, torch.Tensor) else type(text_mask).__name__
                raise ValueError(f"text_mask: expected a bool tensor [batch, segments, tokens], got {got}")
            if tuple(text_mask.shape) != (b, segments, tokens):
                raise ValueError(
                    f"text_mask: expected shape {(b, segments, tokens)}, got {tuple(text_mask.shape)}"
                )
        if isinstance(timestep, int | float) and not isinstance(timestep, bool):
            timestep = torch.full((b,), float(timestep), device=latents.device)
        if not isinstance(timestep, torch.Tensor):
            raise ValueError(
                f"timestep: expected a tensor [batch] or a number, got {type(timestep).__name__}"
            )
        if timestep.dim() == 0:
            timestep = timestep.expand(b)
        if tuple(timestep.shape) != (b,):
            raise ValueError(f"timestep: expected shape ({b},) or a scalar, got {tuple(timestep.shape)}")
        if timestep.dtype == torch.bool or timestep.is_complex():
            raise ValueError(f"timestep: expected a float or integer tensor, got {timestep.dtype}")
        tf = timestep.float()
        if not bool(torch.isfinite(tf).all()) or bool((tf < 0).any()) or bool((tf > MAX_TIMESTEP).any()):
            raise ValueError(
                f"timestep: expected finite values in [0, {MAX_TIMESTEP:g}], got {timestep.tolist()}"
            )
        return segments, timestep.to(latents.device)

    # ---- per-call layout -----------------------------------------------------------------------------

    def _layout_tensors(
        self, segments: int, text_len: int, grid_h: int, grid_w: int, device: torch.device
    ) -> dict[str, torch.Tensor | None]:
        """Index and position tensors for one input shape (cached: they depend on shapes only)."""
        key = (segments, text_len, grid_h, grid_w, str(device))
        if key in self._contexts:
            self._contexts.move_to_end(key)
            return self._contexts[key]
        c = self.config
        lay = SegmentLayout(segments, text_len, grid_h * grid_w, c.first_segment_frames, c.segment_frames)
        base_h, base_w = c.sample_height // c.patch_size, c.sample_width // c.patch_size
        out: dict[str, torch.Tensor | None] = {"attn_index": lay.attention_index()}
        out["attn_counts"] = lay.stream_overlap_counts()[:, None] if segments > 1 else None
        out["attn_cos"] = out["attn_sin"] = out["pos_table"] = None
        if c.use_rotary:
            window_frames = torch.arange(c.first_segment_frames)
            out["attn_cos"], out["attn_sin"] = video_rope(
                c.head_dim, window_frames, grid_h, grid_w, base_h, base_w, c.rope_theta
            )
        else:
            positions = torch.tensor(
                frame_window_positions(segments, c.first_segment_frames, c.segment_frames)
            )
            out["pos_table"] = sincos_3d(
                c.dim,
                positions,
                grid_h,
                grid_w,
                c.spatial_interpolation_scale,
                c.temporal_interpolation_scale,
            )
        if c.ttt_inner != "none":
            g = lay.interleave_index()
            p = lay.reverse_index()
            g_inv = invert_permutation(g)
            out["fwd_gather"], out["fwd_scatter"] = g, g_inv
            out["bwd_gather"], out["bwd_scatter"] = g[p], p[g_inv]
            # global 3D RoPE in stream order; text rows rotate by 0
            cos_v, sin_v = video_rope(
                c.head_dim, torch.arange(lay.num_frames), grid_h, grid_w, base_h, base_w, c.rope_theta
            )
            cos = torch.cat([torch.ones(lay.text_tokens, c.head_dim), cos_v])
            sin = torch.cat([torch.zeros(lay.text_tokens, c.head_dim), sin_v])
            out["ttt_cos"], out["ttt_sin"] = cos[g], sin[g]
            out["ttt_cos_rev"], out["ttt_sin_rev"] = cos[g[p]], sin[g[p]]
        out = {k: (v.to(device) if v is not None else None) for k, v in out.items()}
        self._contexts[key] = out
        while len(self._contexts) > _CONTEXT_CACHE_SIZE:
            self._contexts.popitem(last=False)
        return out

    def _context(
        self,
        segments: int,
        text_len: int,
        grid_h: int,
        grid_w: int,
        text_mask: torch.Tensor | None,
        device: torch.device,
    ) -> tuple[BlockContext, torch.Tensor | None]:
        t = self._layout_tensors(segments, text_len, grid_h, grid_w, device)
        attn_mask = None
        if text_mask is not None and not bool(text_mask.all()):
            b = text_mask.shape[0]
            video = torch.ones(
                b, segments, t["attn_index"].shape[1] - text_len, dtype=torch.bool, device=device
            )
            attn_mask = torch.cat([text_mask.to(device), video], dim=2).view(b * segments, 1, 1, -1)
        empty = t["attn_index"].new_empty(0)
        none_f = torch.empty(0)
        ctx = BlockContext(
            text_len=text_len,
            text_tokens=segments * text_len,
            attn_index=t["attn_index"],
            attn_counts=t["attn_counts"],
            attn_cos=t["attn_cos"],
            attn_sin=t["attn_sin"],
            attn_mask=attn_mask,
            fwd_gather=t.get("fwd_gather", empty),
            fwd_scatter=t.get("fwd_scatter", empty),
            bwd_gather=t.get("bwd_gather", empty),
            bwd_scatter=t.get("bwd_scatter", empty),
            ttt_cos=t.get("ttt_cos", none_f),
            ttt_sin=t.get("ttt_sin", none_f),
            ttt_cos_rev=t.get("ttt_cos_rev", none_f),
            ttt_sin_rev=t.get("ttt_sin_rev", none_f),
            ttt_enabled=self.ttt_enabled,
        )
        return ctx, t["pos_table"]

    # ---- forward -------------------------------------------------------------------------------------

    def forward(
        self,
        latents: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        timestep: torch.Tensor | float,
    ) -> torch.Tensor:
        """latents [B, F, C, h, w], text [B, S, T, text_dim], text_mask [B, S, T] bool or None,
        timestep [B] (float or long, 0..1000) -> prediction [B, F, C_out, h, w] in the model's dtype."""
        c = self.config
        segments, timestep = self._check_inputs(latents, text, text_mask, timestep)
        b, frames, channels, height, width = latents.shape
        text_len = text.shape[2]
        p = c.patch_size
        grid_h, grid_w = height // p, width // p
        dtype = self.proj_out.weight.dtype
        ctx, pos_table = self._context(segments, text_len, grid_h, grid_w, text_mask, latents.device)

        temb = self.time_embed(timestep, dtype)  # (B, E)
        video = self.patch_embed(latents.to(dtype).reshape(b * frames, channels, height, width))
        video = video.flatten(2).transpose(1, 2).reshape(b, frames * grid_h * grid_w, c.dim)  # (B, F*N, D)
        if pos_table is not None:
            video = video + pos_table.to(dtype)
        text_tokens = self.text_proj(
            text.to(dtype).reshape(b, segments * text_len, c.text_dim)
        )  # (B, S*T, D)

        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if use_ckpt:
                video, text_tokens = checkpoint(block, video, text_tokens, temb, ctx, use_reentrant=False)
            else:
                video, text_tokens = block(video, text_tokens, temb, ctx)

        video = self.proj_out(self.norm_out(self.norm_final(video), temb))  # (B, F*N, p*p*C_out)
        video = video.reshape(b, frames, grid_h, grid_w, c.out_channels, p, p)
        video = video.permute(0, 1, 4, 2, 5, 3, 6)  # (B, F, C, gh, p, gw, p)
        return video.reshape(b, frames, c.out_channels, height, width)
