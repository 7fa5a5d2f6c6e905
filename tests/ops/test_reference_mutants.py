"""TTT reference scan behaviour that the first mutation run showed untested (docs/reliability.md,
"Mutation testing"): parameters and state of another dtype compute in the inputs' precision and come
back in float32, and checkpoint groups really keep fewer tensors for the backward pass while the
default keeps them all.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttt_engine.ops.ttt import LinearState, MLPState
from ttt_engine.ops.ttt.reference import ttt_scan_reference

MINI_BATCH = 16


def _inputs(kind: str, dtype: torch.dtype, bsz: int = 1, h: int = 2, length: int = 64, d: int = 8):
    g = torch.Generator().manual_seed(0)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
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


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_float64_parameters_and_state_compute_in_float32_with_float32_inputs(kind: str) -> None:
    q, k, v, eta, ln_w, ln_b, state = _inputs(kind, torch.float64)
    inputs32 = [t.float() for t in (q, k, v, eta)]
    out, final = ttt_scan_reference(kind, *inputs32, ln_w, ln_b, state, MINI_BATCH)
    state32 = type(state)(*(t.float() for t in state.tensors()))
    out_ref, final_ref = ttt_scan_reference(kind, *inputs32, ln_w.float(), ln_b.float(), state32, MINI_BATCH)
    assert out.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in final.tensors()), "the final state comes back in float32"
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    for x, y in zip(final.tensors(), final_ref.tensors()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def _saved_tensor_count(kind: str, **kwargs: int) -> int:
    q, k, v, eta, ln_w, ln_b, state = _inputs(kind, torch.float32)
    q.requires_grad_(True)
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = ttt_scan_reference(kind, q, k, v, eta, ln_w, ln_b, state, MINI_BATCH, **kwargs)
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    return count


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_checkpoint_groups_keep_fewer_tensors_and_the_default_keeps_all(kind: str) -> None:
    everything = _saved_tensor_count(kind, checkpoint_group=0)
    assert _saved_tensor_count(kind) == everything, "no checkpointing unless asked"
    per_mini_batch = _saved_tensor_count(kind, checkpoint_group=1)
    assert per_mini_batch < everything / 2
    # one state kept per group: groups of two keep fewer than groups of one
    assert _saved_tensor_count(kind, checkpoint_group=2) < per_mini_batch
