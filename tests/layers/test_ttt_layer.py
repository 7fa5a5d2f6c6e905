"""The TTT layer against an independent implementation written here from the equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttt_engine.config import TTTConfig
from ttt_engine.layers import TTTLayer


def inner_ln(x, w, b, eps=1e-8):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def naive_ttt_layer(layer: TTTLayer, x: torch.Tensor) -> torch.Tensor:
    """Straight from the paper: per head and per mini-batch, one autograd step on the inner loss
    sum_t eta_t * 0.5 * ||f(K_t; W) - V_t||^2, then read out z = f(Q; W_updated)."""
    c = layer.config
    bsz, length, _ = x.shape
    h, d, mb = c.num_heads, c.head_dim, c.mini_batch_size
    out = torch.zeros(bsz, length, h, d, dtype=x.dtype)
    for bi in range(bsz):
        xs = x[bi]  # (L, dim)
        q_all = layer.wq(xs).view(length, h, d)
        k_all = layer.wk(xs).view(length, h, d)
        v_all = layer.wv(xs).view(length, h, d)
        for hi in range(h):
            q = q_all[:, hi] / q_all[:, hi].norm(dim=-1, keepdim=True)
            k = k_all[:, hi] / k_all[:, hi].norm(dim=-1, keepdim=True)
            gamma, beta = layer.ttt_norm_weight[hi], layer.ttt_norm_bias[hi]
            r = v_all[:, hi] - k
            v = k + (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-8) * gamma + beta
            eta = c.lr * torch.sigmoid(xs @ layer.lr_weight[hi] + layer.lr_bias[hi]) / d / mb  # (L,)
            weights = [layer.w1[hi], layer.b1[hi]] + (
                [layer.w2[hi], layer.b2[hi]] if c.inner == "mlp" else []
            )
            weights = [w.detach().clone() for w in weights]

            def f_res(inp, ws, gamma=gamma, beta=beta):  # f(x) - x
                if c.inner == "mlp":
                    hid = F.gelu(inp @ ws[0] + ws[1], approximate="tanh")
                    return inner_ln(hid @ ws[2] + ws[3], gamma, beta)
                return inner_ln(inp @ ws[0] + ws[1], gamma, beta)

            for start in range(0, length, mb):
                sl = slice(start, min(start + mb, length))
                ws = [w.requires_grad_() for w in weights]
                loss = (eta[sl].detach() * 0.5 * ((k[sl] + f_res(k[sl], ws) - v[sl]) ** 2).sum(-1)).sum()
                grads = torch.autograd.grad(loss, ws)
                weights = [(w - g).detach() for w, g in zip(ws, grads)]
                out[bi, sl, hi] = (q[sl] + f_res(q[sl], weights)).detach()
    return layer.wo(layer.post_norm(out.reshape(bsz, length, h * d)))


def tiny_layer(inner: str, **kw) -> TTTLayer:
    cfg = TTTConfig(dim=32, num_heads=2, head_dim=16, inner=inner, mini_batch_size=8, **kw)
    return TTTLayer(cfg).double()


@pytest.mark.parametrize("inner", ["mlp", "linear"])
@pytest.mark.parametrize("length", [32, 27])
def test_layer_equals_independent_implementation(inner: str, length: int) -> None:
    layer = tiny_layer(inner)
    with torch.no_grad():  # non-trivial outer parameters
        layer.lr_bias.fill_(2.0)
        layer.ttt_norm_weight.add_(0.1 * torch.randn_like(layer.ttt_norm_weight))
        layer.b1.normal_(std=0.1)
    x = torch.randn(2, length, 32, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x)
    want = naive_ttt_layer(layer, x).detach()
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
    # the inner updates matter: zeroing the learning rate changes the output
    with torch.no_grad():
        layer.lr_bias.fill_(-30.0)
        assert (layer(x) - got).abs().max() > 1e-6


@pytest.mark.parametrize("inner", ["mlp", "linear"])
def test_state_in_and_out_for_chunked_scans(inner: str) -> None:
    layer = tiny_layer(inner).eval()
    x = torch.randn(1, 48, 32, dtype=torch.float64)
    with torch.no_grad():
        whole, final = layer(x, return_state=True)
        first, mid = layer(x[:, :24], return_state=True)
        second, final2 = layer(x[:, 24:], state=mid, return_state=True)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    for a, b in zip(final.tensors(), final2.tensors()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("inner", ["mlp", "linear"])
def test_all_outer_parameters_receive_gradients(inner: str) -> None:
    layer = tiny_layer(inner, checkpoint_group=2).train()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    layer(x).pow(2).mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_rope_hook_is_applied_to_q_and_k() -> None:
    layer = tiny_layer("mlp")
    x = torch.randn(1, 16, 32, dtype=torch.float64)
    seen = {}

    def rope(q, k):
        seen["shape"] = tuple(q.shape)
        return q.flip(-1), k.flip(-1)

    with torch.no_grad():
        plain, hooked = layer(x), layer(x, rope_fn=rope)
    assert seen["shape"] == (1, 2, 16, 16)
    assert (plain - hooked).abs().max() > 1e-6


def test_bad_input_shape_is_named() -> None:
    layer = tiny_layer("mlp")
    with pytest.raises(ValueError, match=r"x: expected shape \[batch, seq_len, 32\], got \(2, 16, 31\)"):
        layer(torch.randn(2, 16, 31, dtype=torch.float64))


def test_bad_config_is_named() -> None:
    with pytest.raises(ValueError, match=r"num_heads \* head_dim must equal dim, got 3 \* 16 != 32"):
        TTTConfig(dim=32, num_heads=3, head_dim=16)
    with pytest.raises(ValueError, match="inner: expected 'mlp' or 'linear', got 'gru'"):
        TTTConfig(dim=32, num_heads=2, head_dim=16, inner="gru")


class RecallModel(torch.nn.Module):
    """embed -> TTT layer (residual) -> head."""

    def __init__(self, inner: str) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(8, 32)
        self.ttt = TTTLayer(
            TTTConfig(dim=32, num_heads=2, head_dim=16, inner=inner, mini_batch_size=8, base_lr=1.0)
        )
        self.out = torch.nn.Linear(32, 8)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.ttt(h))


def recall_batch(gen: torch.Generator, bsz: int = 16, length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence carries its own random vector c; every token must output c, seen only as a sum."""
    c = torch.randn(bsz, 1, 8, generator=gen)
    noise = torch.randn(bsz, length, 8, generator=gen)
    x = noise + c  # c is only recoverable by looking across tokens
    return x, c.expand(bsz, length, 8)


@pytest.mark.parametrize("inner", ["mlp", "linear"])
def test_tiny_sequence_task_learns_through_the_layer(inner: str) -> None:
    torch.manual_seed(0)
    model = RecallModel(inner)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    eval_x, eval_y = recall_batch(torch.Generator().manual_seed(99), bsz=64)

    def eval_loss() -> float:
        with torch.no_grad():
            return F.mse_loss(model(eval_x), eval_y).item()

    before = eval_loss()
    for _ in range(150):
        x, y = recall_batch(gen)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    # a per-token model can at best output x/2 (loss ~0.5 on unit-variance c); mixing over tokens does better
    assert after < 0.5 * before, (before, after)
    assert after < 0.25, after
