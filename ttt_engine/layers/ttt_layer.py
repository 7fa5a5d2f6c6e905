"""The TTT layer (ttt-mlp.md section 1): projections, inner learning rate, the scan, post-norm, output.

    Q, K, V = wq(x), wk(x), wv(x)                 per head, Q and K L2-normalised, optional RoPE
    V      := K + LN(V - K)                        target pre-normalisation (unbiased std, eps 1e-8)
    eta_t   = base_lr * sigmoid(x_t . w_h + c_h) / head_dim / mini_batch
    z       = scan of non-causal mini-batch gradient descent on ||f(K) - V||^2, read out at Q
    out     = wo(post_norm(concat_heads(z)))

The inner state always starts from the learned W0 unless the caller passes a state (chunked scans).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PARAM_INIT_STD, POST_NORM_EPS, TTTConfig
from ..ops.ttt import LinearState, MLPState, ttt_scan
from ..ops.ttt.inner_grads import INNER_LN_EPS

# rope_fn(q, k) -> (q, k), both [B, H, L, D]: applies positions where the caller wants them
RopeFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class TTTLayer(nn.Module):
    """Multi-head TTT-MLP or TTT-Linear layer over a sequence x [B, L, dim] -> [B, L, dim]."""

    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        self.config = c = config
        h, d, f = c.num_heads, c.head_dim, c.hidden
        self.wq = nn.Linear(c.dim, c.dim)
        self.wk = nn.Linear(c.dim, c.dim)
        self.wv = nn.Linear(c.dim, c.dim)
        self.wo = nn.Linear(c.dim, c.dim)
        # per-head learnable inner learning-rate gate
        self.lr_weight = nn.Parameter(torch.empty(h, c.dim))
        self.lr_bias = nn.Parameter(torch.zeros(h))
        # inner LayerNorm (also used for target pre-normalisation)
        self.ttt_norm_weight = nn.Parameter(torch.ones(h, d))
        self.ttt_norm_bias = nn.Parameter(torch.zeros(h, d))
        # learned initial state W0
        self.w1 = nn.Parameter(torch.empty(h, d, f))
        self.b1 = nn.Parameter(torch.zeros(h, 1, f))
        if c.inner == "mlp":
            self.w2 = nn.Parameter(torch.empty(h, f, d))
            self.b2 = nn.Parameter(torch.zeros(h, 1, d))
        self.post_norm = nn.LayerNorm(c.dim, eps=POST_NORM_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.wq, self.wk, self.wv, self.wo):
            nn.init.normal_(lin.weight, std=PARAM_INIT_STD)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.lr_weight, std=PARAM_INIT_STD)
        nn.init.zeros_(self.lr_bias)
        nn.init.ones_(self.ttt_norm_weight)
        nn.init.zeros_(self.ttt_norm_bias)
        nn.init.normal_(self.w1, std=PARAM_INIT_STD)
        nn.init.zeros_(self.b1)
        if self.config.inner == "mlp":
            nn.init.normal_(self.w2, std=PARAM_INIT_STD)
            nn.init.zeros_(self.b2)
        self.post_norm.reset_parameters()

    def initial_state(self, batch: int) -> MLPState | LinearState:
        """The learned W0, expanded over the batch (a view: no copy)."""

        def ex(p: torch.Tensor) -> torch.Tensor:
            return p.unsqueeze(0).expand(batch, *p.shape)

        if self.config.inner == "mlp":
            return MLPState(ex(self.w1), ex(self.b1), ex(self.w2), ex(self.b2))
        return LinearState(ex(self.w1), ex(self.b1))

    def inner_lr(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token, per-head inner learning rate eta [B, H, L] from x [B, L, dim]."""
        c = self.config
        gate = torch.einsum("bld,hd->bhl", x, self.lr_weight) + self.lr_bias[None, :, None]
        return c.lr * torch.sigmoid(gate) / c.head_dim / c.mini_batch_size

    def prepare(
        self, x: torch.Tensor, rope_fn: RopeFn | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, target V [B, H, L, D] and eta [B, H, L] from x [B, L, dim]."""
        c = self.config
        b, length, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, c.num_heads, c.head_dim).transpose(1, 2)  # (B, H, L, D)

        q = F.normalize(heads(self.wq(x)), dim=-1)
        k = F.normalize(heads(self.wk(x)), dim=-1)
        v = heads(self.wv(x))
        if rope_fn is not None:
            q, k = rope_fn(q, k)
        # target pre-normalisation: V := K + LN(V - K) with the inner LN (unbiased std, as the paper's code)
        r = v - k
        r = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + INNER_LN_EPS)
        v = k + r * self.ttt_norm_weight[None, :, None] + self.ttt_norm_bias[None, :, None]
        return q, k, v, self.inner_lr(x)

    def forward(
        self,
        x: torch.Tensor,
        rope_fn: RopeFn | None = None,
        state: MLPState | LinearState | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, MLPState | LinearState]:
        """x [B, L, dim] -> out [B, L, dim] (and the final inner state when return_state)."""
        c = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != c.dim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape [batch, seq_len, {c.dim}], got {got}")
        b, length, _ = x.shape
        q, k, v, eta = self.prepare(x, rope_fn)
        z, final = ttt_scan(
            c.inner,
            q,
            k,
            v,
            eta,
            self.ttt_norm_weight,
            self.ttt_norm_bias,
            self.initial_state(b) if state is None else state,
            c.mini_batch_size,
            checkpoint_group=c.checkpoint_group if self.training else 0,
            compile_step=c.compile_step,
            backend=c.backend,
        )
        out = self.wo(self.post_norm(z.transpose(1, 2).reshape(b, length, c.dim)))
        return (out, final) if return_state else out
