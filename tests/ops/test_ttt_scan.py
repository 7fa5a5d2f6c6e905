"""The reference scan: dual == primal, chunked == whole, padding is invisible, bad inputs are named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttt_engine.ops.ttt import LinearState, MLPState, ttt_scan
from ttt_engine.ops.ttt.reference import ttt_scan_reference


def make_inputs(kind: str, bsz=2, h=3, length=96, d=16, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    q, k = (F.normalize(rnd(bsz, h, length, d), dim=-1) for _ in range(2))
    v = k + rnd(bsz, h, length, d, scale=0.5)
    eta = torch.rand(bsz, h, length, generator=g, dtype=dtype) * 0.05
    ln_w, ln_b = 1 + rnd(h, d, scale=0.1), rnd(h, d, scale=0.1)
    if kind == "mlp":
        f = 4 * d
        state = MLPState(
            rnd(bsz, h, d, f, scale=0.2),
            rnd(bsz, h, 1, f, scale=0.1),
            rnd(bsz, h, f, d, scale=0.2),
            rnd(bsz, h, 1, d, scale=0.1),
        )
    else:
        state = LinearState(rnd(bsz, h, d, d, scale=0.2), rnd(bsz, h, 1, d, scale=0.1))
    return q, k, v, eta, ln_w, ln_b, state


def assert_states_close(a, b, **tol) -> None:
    for x, y in zip(a.tensors(), b.tensors()):
        torch.testing.assert_close(x, y, **tol)


TIGHT = {"rtol": 1e-9, "atol": 1e-11}


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_dual_form_equals_primal_form(kind: str) -> None:
    q, k, v, eta, w, b, state = make_inputs(kind)
    out_p, fin_p = ttt_scan_reference(kind, q, k, v, eta, w, b, state, 16, form="primal")
    out_d, fin_d = ttt_scan_reference(kind, q, k, v, eta, w, b, state, 16, form="dual")
    torch.testing.assert_close(out_d, out_p, **TIGHT)
    assert_states_close(fin_d, fin_p, **TIGHT)
    # and the scan is not trivial: the state moved and the output differs from the no-update read-out
    assert (fin_p.w1 - state.w1).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_two_halves_with_state_carried_equal_one_pass(kind: str) -> None:
    q, k, v, eta, w, b, state = make_inputs(kind, length=128)
    out, final = ttt_scan(kind, q, k, v, eta, w, b, state, 16)
    half = 64  # a mini-batch boundary
    out1, mid = ttt_scan(
        kind, q[:, :, :half], k[:, :, :half], v[:, :, :half], eta[..., :half], w, b, state, 16
    )
    out2, fin2 = ttt_scan(
        kind, q[:, :, half:], k[:, :, half:], v[:, :, half:], eta[..., half:], w, b, mid, 16
    )
    torch.testing.assert_close(torch.cat([out1, out2], dim=2), out, **TIGHT)
    assert_states_close(fin2, final, **TIGHT)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_padding_does_not_change_real_tokens(kind: str) -> None:
    """L = 100 with mini-batch 16: the last mini-batch has 4 real tokens and 12 padding tokens.

    Equal to scanning 6 whole mini-batches and then a short last mini-batch of just the 4 real tokens.
    """
    q, k, v, eta, w, b, state = make_inputs(kind, length=100)
    out, final = ttt_scan(kind, q, k, v, eta, w, b, state, 16)
    assert out.shape == q.shape
    head, tail = 96, slice(96, 100)
    out_a, mid = ttt_scan_reference(
        kind, q[:, :, :head], k[:, :, :head], v[:, :, :head], eta[..., :head], w, b, state, 16
    )
    out_b, fin_b = ttt_scan_reference(
        kind, q[:, :, tail], k[:, :, tail], v[:, :, tail], eta[..., tail], w, b, mid, 4
    )
    torch.testing.assert_close(out, torch.cat([out_a, out_b], dim=2), **TIGHT)
    assert_states_close(final, fin_b, **TIGHT)


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_checkpointed_scan_gives_same_gradients(kind: str) -> None:
    q, k, v, eta, w, b, state = make_inputs(kind, length=64, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, eta)]

    def grads(group: int):
        ins = [t.clone().detach().requires_grad_() for t in leaves]
        out, _ = ttt_scan_reference(kind, *ins, w, b, state, 8, checkpoint_group=group)
        (out**2).sum().backward()
        return [t.grad for t in ins]

    for a, c in zip(grads(0), grads(3)):
        torch.testing.assert_close(a, c, **TIGHT)


def test_bfloat16_inputs_return_bfloat16_close_to_fp32() -> None:
    q, k, v, eta, w, b, state = make_inputs("mlp", dtype=torch.float32)
    ref, _ = ttt_scan("mlp", q, k, v, eta, w, b, state, 16)
    out, fin = ttt_scan("mlp", q.bfloat16(), k.bfloat16(), v.bfloat16(), eta, w, b, state, 16)
    assert out.dtype == torch.bfloat16 and fin.w1.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


# --- bad input: each error names the tensor, what arrived and what was expected ---


def test_wrong_rank_is_named() -> None:
    q, k, v, eta, w, b, state = make_inputs("mlp")
    with pytest.raises(ValueError, match=r"q: expected rank 4 .* got \(2, 3, 96\)"):
        ttt_scan("mlp", q[..., 0], k, v, eta, w, b, state, 16)


def test_wrong_shape_is_named() -> None:
    q, k, v, eta, w, b, state = make_inputs("mlp")
    with pytest.raises(ValueError, match=r"eta: expected shape \(2, 3, 96\), got \(2, 3, 95\)"):
        ttt_scan("mlp", q, k, v, eta[..., :95], w, b, state, 16)
    with pytest.raises(ValueError, match=r"state.w2: expected shape \(2, 3, 64, 16\), got \(2, 3, 16, 64\)"):
        ttt_scan(
            "mlp", q, k, v, eta, w, b, MLPState(state.w1, state.b1, state.w2.transpose(-1, -2), state.b2), 16
        )


def test_wrong_dtype_is_named() -> None:
    q, k, v, eta, w, b, state = make_inputs("mlp")
    with pytest.raises(ValueError, match=r"k: expected a floating dtype .* got torch.int64"):
        ttt_scan("mlp", q, k.long(), v, eta, w, b, state, 16)


def test_wrong_device_is_named() -> None:
    q, k, v, eta, w, b, state = make_inputs("mlp")
    with pytest.raises(ValueError, match=r"v: expected device cpu .* got meta"):
        ttt_scan("mlp", q, k, v.to("meta"), eta, w, b, state, 16)


def test_non_finite_values_are_named() -> None:
    q, k, v, eta, w, b, state = make_inputs("mlp")
    v = v.clone()
    v[0, 1, 5, 3] = float("nan")
    with pytest.raises(ValueError, match=r"v: 1 non-finite values"):
        ttt_scan("mlp", q, k, v, eta, w, b, state, 16)


def test_wrong_state_kind_is_named() -> None:
    q, k, v, eta, w, b, _ = make_inputs("mlp")
    _, _, _, _, _, _, lin_state = make_inputs("linear")
    with pytest.raises(ValueError, match=r"state: expected MLPState .* got LinearState"):
        ttt_scan("mlp", q, k, v, eta, w, b, lin_state, 16)


def test_unknown_kind_and_bad_mini_batch() -> None:
    q, k, v, eta, w, b, state = make_inputs("mlp")
    with pytest.raises(ValueError, match="kind: expected 'mlp' or 'linear', got 'rnn'"):
        ttt_scan("rnn", q, k, v, eta, w, b, state, 16)
    with pytest.raises(ValueError, match="mini_batch_size: expected a positive int, got 0"):
        ttt_scan("mlp", q, k, v, eta, w, b, state, 0)


@pytest.mark.slow
def test_compiled_step_follows_the_batch_size_without_hitting_the_recompile_limit() -> None:
    """Training with a contrast hinge feeds the scan a batch of B + (rows swapped) samples, a size that
    changes every step: the compiled step must take more sizes than dynamo's recompile limit (8)."""
    for bsz in range(1, 11):
        q, k, v, eta, w, b, state = make_inputs("mlp", bsz=bsz, length=32, dtype=torch.float32, seed=bsz)
        out_c, fin_c = ttt_scan_reference("mlp", q, k, v, eta, w, b, state, 16, compile_step=True)
        out_e, fin_e = ttt_scan_reference("mlp", q, k, v, eta, w, b, state, 16)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        assert_states_close(fin_c, fin_e, rtol=1e-4, atol=1e-5)
