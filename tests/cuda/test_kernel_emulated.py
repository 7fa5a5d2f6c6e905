"""The CUDA kernels' own source, run on the CPU by an emulator, against the PyTorch reference.

No GPU: tests/cuda/kernel_emu.py compiles each .cu as host C++ against kernel_emu.h, which runs one fiber
per CUDA thread and emulates ldmatrix / mma.m16n8k16 (PTX ISA fragment layouts), shuffles, cp.async,
__syncthreads and thread-block-cluster barriers + distributed shared memory. The launches go through
the real cuda/backend.py (scan_forward, scan_backward, the autograd function), with loader.launch
pointed at the emulator, so argument order, buffer shapes and dtype handling are exercised too.
Outputs start as NaN (torch.empty is patched), cp.async destinations read NaN until waited for, and
warps run in a seeded random order, so unwritten outputs, missing waits and missing barriers show.

What this cannot show: timing, real memory-model effects beyond barriers, register/shared-memory
limits of a real SM (checked by nvcc in test_compile.py), and the exact tensor-core rounding.
"""

from __future__ import annotations

from types import SimpleNamespace

import kernel_emu
import pytest
import torch
import torch.nn.functional as F

from cuda import backend as cuda_backend
from cuda import loader
from ttt_engine.ops.ttt import LinearState, MLPState, ttt_scan
from ttt_engine.ops.ttt.dispatch import ENV_BACKEND, Backend
from ttt_engine.ops.ttt.reference import ttt_scan_reference

# about 20 s on a 2-core CPU, g++ builds included (the libraries are cached in the temp dir by hash)
pytestmark = pytest.mark.skipif(not kernel_emu.AVAILABLE, reason="kernel emulation needs g++ on x86-64")

BF16_RTOL = 1e-2  # relative RMS, as the GPU tests


@pytest.fixture(autouse=True)
def _nan_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty / empty_like return NaN-filled floating tensors (a kernel must write every output)."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(empty_like(*a, **kw)))


@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """cuda.backend with loader.load_kernel / launch running the kernels in the emulator on CPU tensors."""
    libs: dict[str, kernel_emu.Library] = {}

    def load_kernel(kind, dtype, device, *, backward=False):  # as on an sm_90 device (or as forced)
        spec = loader.select_spec(kind, dtype, 90, backward=backward)
        if spec.source not in libs:
            libs[spec.source] = kernel_emu.build(spec.source)
        return SimpleNamespace(spec=spec, lib=libs[spec.source])

    def launch(kernel, grid, args):
        kernel.lib.launch(kernel.spec.function, grid, kernel.spec.threads, kernel.spec.ctas_per_head, args)

    monkeypatch.setattr(loader, "load_kernel", load_kernel)
    monkeypatch.setattr(loader, "launch", launch)
    monkeypatch.setattr(cuda_backend, "unsupported_reason", lambda call: None)  # CPU tensors allowed
    monkeypatch.setattr(
        "ttt_engine.ops.ttt.dispatch._fast_backends", [Backend("cuda", lambda call: None, cuda_backend.run)]
    )
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    return SimpleNamespace(libs=libs, load_kernel=load_kernel)


def make_inputs(kind: str, b: int, h: int, length: int, *, eta_scale: float = 0.05, seed: int = 0):
    """As tests/cuda/test_kernel_gpu.py, on the CPU: unit-norm q, k; v near k; small eta."""
    gen = torch.Generator().manual_seed(seed)
    d, f = 64, (256 if kind == "mlp" else 64)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    q = F.normalize(randn(b, h, length, d), dim=-1).bfloat16()
    k = F.normalize(randn(b, h, length, d), dim=-1)
    v = (k + randn(b, h, length, d) / 8).bfloat16()
    k = k.bfloat16()
    eta = torch.rand(b, h, length, generator=gen) * eta_scale
    ln_w, ln_b = 1 + 0.1 * randn(h, d), 0.1 * randn(h, d)
    if kind == "mlp":
        state = MLPState(
            0.02 * randn(b, h, d, f),
            0.01 * randn(b, h, 1, f),
            0.02 * randn(b, h, f, d),
            0.01 * randn(b, h, 1, d),
        )
    else:
        state = LinearState(0.02 * randn(b, h, d, d), 0.01 * randn(b, h, 1, d))
    return q, k, v, eta, ln_w, ln_b, state


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float(), want.float()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def padded_reference(kind, q, k, v, eta, ln_w, ln_b, state):
    pad = (-q.shape[2]) % 64
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    out, final = ttt_scan_reference(kind, q, k, v, F.pad(eta, (0, pad)), ln_w, ln_b, state, 64)
    return out[:, :, : out.shape[2] - pad], final


# forward kernels: (kind, TTT_STUDIO_TTT_CUDA_VARIANT); "sm80" runs the no-cluster TTT-MLP kernel
FORWARD_VARIANTS = [("mlp", "sm90"), ("linear", "sm90"), ("mlp", "sm80")]


@pytest.mark.parametrize(("kind", "variant"), FORWARD_VARIANTS, ids=[f"{k}-{v}" for k, v in FORWARD_VARIANTS])
def test_forward_kernel_and_checkpoints(
    emulated, monkeypatch: pytest.MonkeyPatch, kind: str, variant: str
) -> None:
    monkeypatch.setenv(loader.ENV_VARIANT, variant)
    q, k, v, eta, ln_w, ln_b, state = make_inputs(kind, 2, 1, 64 * 5, seed=1)
    out, final, ckpt = cuda_backend.scan_forward(kind, q, k, v, eta, ln_w, ln_b, state, checkpoint_every=2)
    ref_out, ref_final = ttt_scan_reference(kind, q, k, v, eta, ln_w, ln_b, state, 64)
    assert rel_err(out, ref_out) < BF16_RTOL
    for got, want, init in zip(final.tensors(), ref_final.tensors(), state.tensors()):
        assert rel_err(got, want) < BF16_RTOL
        assert rel_err(got - init, want - init) < 2 * BF16_RTOL
    assert ckpt is not None and ckpt.state.w1.shape[2] == 3
    for c in range(3):
        stop = 64 * 2 * c
        want = (
            state.tensors()
            if stop == 0
            else ttt_scan_reference(
                kind, q[:, :, :stop], k[:, :, :stop], v[:, :, :stop], eta[:, :, :stop], ln_w, ln_b, state, 64
            )[1].tensors()
        )
        for got, ref in zip(ckpt.state.tensors(), want):
            assert rel_err(got[:, :, c], ref) < BF16_RTOL, f"checkpoint {c}"


def _grads_of(fn, kind, inputs, d_out, d_final):
    leaves = [t.detach().clone().requires_grad_() for t in inputs[:6]]
    init = [t.detach().clone().requires_grad_() for t in inputs[6].tensors()]
    cls = MLPState if kind == "mlp" else LinearState
    out, final = fn(*leaves, cls(*init))
    loss = (out.float() * d_out).sum() + sum((t * d).sum() for t, d in zip(final.tensors(), d_final))
    return out.detach(), torch.autograd.grad(loss, leaves + init)


NAMES = ["q", "k", "v", "eta", "ln_w", "ln_b", "w1", "b1", "w2", "b2"]
# (B, H, L, checkpoint group): padding, several groups with a partial last one, one group
BWD_CASES = [(1, 2, 200, 2), (2, 1, 64 * 5, 3), (1, 1, 64 * 3, 16)]


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("case", BWD_CASES, ids=[f"B{b}-H{h}-L{n}-g{g}" for b, h, n, g in BWD_CASES])
def test_backward_kernel_matches_reference_autograd(emulated, kind: str, case) -> None:
    b, h, length, group = case
    inputs = make_inputs(kind, b, h, length, seed=length + group)
    gen = torch.Generator().manual_seed(7)
    d_out = torch.randn(b, h, length, 64, generator=gen).bfloat16().float()
    d_final = [torch.randn(t.shape, generator=gen) for t in inputs[6].tensors()]

    def kernel(q, k, v, eta, ln_w, ln_b, state):
        if group == 16:  # through the public op (its default group)
            return ttt_scan(kind, q, k, v, eta, ln_w, ln_b, state, backend="cuda")
        pad = (-length) % 64
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        out, final = cuda_backend.run(
            kind, q, k, v, F.pad(eta, (0, pad)), ln_w, ln_b, state, 64, checkpoint_group=group
        )
        return out[:, :, :length], final

    def reference(q, k, v, eta, ln_w, ln_b, state):
        return padded_reference(kind, q.float(), k.float(), v.float(), eta, ln_w, ln_b, state)

    out, grads = _grads_of(kernel, kind, inputs, d_out, d_final)
    ref_out, ref_grads = _grads_of(reference, kind, inputs, d_out, d_final)
    assert rel_err(out, ref_out) < BF16_RTOL
    for name, got, want, leaf in zip(NAMES, grads, ref_grads, [*inputs[:6], *inputs[6].tensors()]):
        assert got.shape == want.shape and got.dtype == leaf.dtype, name
        assert torch.isfinite(got).all(), f"d{name} has NaN (unwritten)"
        assert rel_err(got, want) < BF16_RTOL, f"d{name}: rel err {rel_err(got, want):.2e}"


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_backward_kernel_is_schedule_independent(emulated, kind: str) -> None:
    """Bitwise equal gradients under different warp schedules: no race, a fixed summation order."""
    q, k, v, eta, ln_w, ln_b, state = make_inputs(kind, 1, 1, 64 * 4, seed=3)
    _, _, ckpt = cuda_backend.scan_forward(kind, q, k, v, eta, ln_w, ln_b, state, checkpoint_every=2)
    d_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    lib = emulated.load_kernel(kind, torch.bfloat16, q.device, backward=True).lib
    runs = []
    for seed in (1, 2, 3):
        lib.seed(seed)
        runs.append(cuda_backend.scan_backward(kind, q, k, v, eta, ln_w, ln_b, ckpt, d_out))
    for other in runs[1:]:
        for name, a, b in zip(NAMES, runs[0], other):
            assert torch.equal(a, b), f"d{name} depends on the warp schedule"


def test_emulator_catches_a_missing_barrier(emulated) -> None:
    """The harness is not vacuous: the forward kernel without one of its __syncthreads fails."""
    source = loader.kernel_source("ttt_linear_fwd.cu")
    barrier = "    if (!has_grad) break;\n    __syncthreads();  // U\n"
    assert barrier in source
    lib = kernel_emu.build("ttt_linear_fwd_broken.cu", source.replace(barrier, "    if (!has_grad) break;\n"))
    q, k, v, eta, ln_w, ln_b, state = make_inputs("linear", 1, 2, 64 * 3, seed=2)
    ref_out, _ = ttt_scan_reference("linear", q, k, v, eta, ln_w, ln_b, state, 64)
    out = torch.full_like(q, float("nan"))
    final = [torch.full_like(t, float("nan")) for t in state.tensors()]
    unused = [torch.zeros(1), torch.zeros(1)]
    lib.launch(
        "ttt_linear_fwd_bf16",
        2,
        256,
        1,
        [q, k, v, eta, ln_w, ln_b, *state.tensors(), out, *final, *unused, 2, 3, 0, 0],
    )
    err = rel_err(out, ref_out)
    assert not err < BF16_RTOL, f"a kernel with a missing barrier passed (rel err {err:.2e})"


# ---- the no-cluster TTT-MLP forward (ttt_mlp_fwd_sm80.cu: sm_80 / sm_86 / sm_89) ----------------------

NO_CLUSTER_SOURCE = "ttt_mlp_fwd_sm80.cu"
NO_CLUSTER_KERNEL = "ttt_mlp_fwd_sm80_bf16"
# (B, H, L): one mini-batch; lengths that are not multiples of 64 with several heads and batches
NO_CLUSTER_CASES = [(1, 1, 64), (2, 3, 200), (3, 2, 64 * 2 + 17)]


@pytest.fixture
def no_cluster(emulated, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.setenv(loader.ENV_VARIANT, "sm80")
    return emulated


@pytest.mark.parametrize("case", NO_CLUSTER_CASES, ids=[f"B{b}-H{h}-L{n}" for b, h, n in NO_CLUSTER_CASES])
def test_no_cluster_mlp_forward_matches_reference(no_cluster, case) -> None:
    b, h, length = case
    inputs = make_inputs("mlp", b, h, length, seed=length + h)
    with torch.no_grad():
        out, final = ttt_scan("mlp", *inputs, backend="cuda")
    ref_out, ref_final = padded_reference("mlp", *inputs)
    assert list(no_cluster.libs) == [NO_CLUSTER_SOURCE]  # the variant ran, not the cluster kernel
    assert out.shape == ref_out.shape and out.dtype == torch.bfloat16
    assert rel_err(out, ref_out) < BF16_RTOL
    for got, want, init in zip(final.tensors(), ref_final.tensors(), inputs[6].tensors()):
        assert rel_err(got, want) < BF16_RTOL
        assert rel_err(got - init, want - init) < 2 * BF16_RTOL  # the update itself, not just W0


def test_no_cluster_mlp_forward_is_schedule_independent(no_cluster) -> None:
    """Bitwise equal outputs under different warp schedules: no race between the warps."""
    q, k, v, eta, ln_w, ln_b, state = make_inputs("mlp", 1, 2, 64 * 3, seed=4)
    lib = no_cluster.load_kernel("mlp", torch.bfloat16, q.device).lib
    runs = []
    for seed in (1, 2, 3):
        lib.seed(seed)
        out, final, _ = cuda_backend.scan_forward("mlp", q, k, v, eta, ln_w, ln_b, state)
        runs.append((out, *final.tensors()))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def _run_no_cluster(lib: kernel_emu.Library, inputs) -> list[torch.Tensor]:
    """Launch the kernel directly on NaN-filled outputs: [out, w1, b1, w2, b2]."""
    q, k, v, eta, ln_w, ln_b, state = inputs
    b, h, length, _ = q.shape
    out = torch.full_like(q, float("nan"))
    final = [torch.full_like(t, float("nan")) for t in state.tensors()]
    unused = [torch.zeros(1) for _ in range(4)]  # checkpoints off
    args = [q, k, v, eta, ln_w, ln_b, *state.tensors(), out, *final, *unused, h, length // 64, 0, 0]
    lib.launch(NO_CLUSTER_KERNEL, b * h, 256, 1, args)
    return [out, *final]


# planted bugs, each a one-line change of the kernel's source (or of the header it inlines)
MUTATIONS = {
    "inner-gradient-sign": (
        "neg_eg1[mt][2 * nt + h] = pack_bf16(-e0 * g10, -e1 * g11);",
        "neg_eg1[mt][2 * nt + h] = pack_bf16(e0 * g10, e1 * g11);",
    ),
    "skipped-prefetch-wait": ("    cp_async_wait<0>();  // Q_i landed\n", "\n"),
    # (without S2 every warp still runs the same sequence of collectives, so the emulator's schedule
    # does not separate the Z1 stores from the reads: racecheck on a GPU covers that one)
    "missing-barrier-before-prefetch": (
        "    __syncthreads();     // S4: K, V/g2, eta free; new b2 and W2 shadow visible\n",
        "\n",
    ),
    "unswizzled-tile-copy": (
        "cp_async16(smem_u32(dst + sw64(row, col)), src + row * HD + col);",
        "cp_async16(smem_u32(dst + row * HD + col), src + row * HD + col);",
    ),
    "final-b2-not-written": (
        "  if (tid < HD) b2_out[static_cast<size_t>(bh) * HD + tid] = s.b2[tid];\n",
        "\n",
    ),
}


def test_no_cluster_unmutated_passes_the_mutation_check() -> None:
    """The yardstick of the mutation test below accepts the real kernel."""
    inputs = make_inputs("mlp", 1, 2, 64 * 2, seed=6)
    got = _run_no_cluster(kernel_emu.build(NO_CLUSTER_SOURCE), inputs)
    ref_out, ref_final = ttt_scan_reference("mlp", *inputs, 64)
    assert max(rel_err(a, b) for a, b in zip(got, [ref_out, *ref_final.tensors()])) < BF16_RTOL


@pytest.mark.slow  # one g++ build of the mutated kernel each (about 10 s on a shared 2-core CPU)
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_no_cluster_mutations_fail(name: str) -> None:
    """Each planted bug makes the emulated kernel fail (wrong numbers, NaN left in an output, or an
    emulator error): the equality tests above can fail."""
    old, new = MUTATIONS[name]
    source = loader.kernel_source(NO_CLUSTER_SOURCE)
    assert source.count(old) == 1, f"mutation {name}: the line to change is not in the source"
    lib = kernel_emu.build(f"ttt_mlp_fwd_sm80_{name.replace('-', '_')}.cu", source.replace(old, new))
    inputs = make_inputs("mlp", 1, 2, 64 * 2, seed=6)
    ref_out, ref_final = ttt_scan_reference("mlp", *inputs, 64)
    try:
        got = _run_no_cluster(lib, inputs)
    except RuntimeError:
        return  # the emulator caught it (deadlock, bad address)
    errors = [rel_err(a, b) for a, b in zip(got, [ref_out, *ref_final.tensors()])]
    assert not all(e < BF16_RTOL for e in errors), f"mutation {name} passed: rel errors {errors}"


# ---- the no-cluster TTT-MLP backward (ttt_mlp_bwd_sm80.cu: sm_80 / sm_86 / sm_89) ----------------------

NO_CLUSTER_BWD_SOURCE = "ttt_mlp_bwd_sm80.cu"
# (B, H, L, checkpoint group): lengths that are not multiples of 64, several heads and batches, several
# groups with a partial last one, one group through the public op
NO_CLUSTER_BWD_CASES = [(1, 2, 200, 2), (2, 1, 64 * 2 + 17, 16), (1, 1, 64 * 3, 2)]


@pytest.mark.parametrize(
    "case", NO_CLUSTER_BWD_CASES, ids=[f"B{b}-H{h}-L{n}-g{g}" for b, h, n, g in NO_CLUSTER_BWD_CASES]
)
def test_no_cluster_mlp_backward_matches_reference_autograd(no_cluster, case) -> None:
    b, h, length, group = case
    inputs = make_inputs("mlp", b, h, length, seed=length + group)
    gen = torch.Generator().manual_seed(7)
    d_out = torch.randn(b, h, length, 64, generator=gen).bfloat16().float()
    d_final = [torch.randn(t.shape, generator=gen) for t in inputs[6].tensors()]

    def kernel(q, k, v, eta, ln_w, ln_b, state):
        if group == 16:  # through the public op (its default group)
            return ttt_scan("mlp", q, k, v, eta, ln_w, ln_b, state, backend="cuda")
        pad = (-length) % 64
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        out, final = cuda_backend.run(
            "mlp", q, k, v, F.pad(eta, (0, pad)), ln_w, ln_b, state, 64, checkpoint_group=group
        )
        return out[:, :, :length], final

    def reference(q, k, v, eta, ln_w, ln_b, state):
        return padded_reference("mlp", q.float(), k.float(), v.float(), eta, ln_w, ln_b, state)

    out, grads = _grads_of(kernel, "mlp", inputs, d_out, d_final)
    ref_out, ref_grads = _grads_of(reference, "mlp", inputs, d_out, d_final)
    assert sorted(no_cluster.libs) == sorted([NO_CLUSTER_SOURCE, NO_CLUSTER_BWD_SOURCE])  # both variants ran
    assert rel_err(out, ref_out) < BF16_RTOL
    for name, got, want, leaf in zip(NAMES, grads, ref_grads, [*inputs[:6], *inputs[6].tensors()]):
        assert got.shape == want.shape and got.dtype == leaf.dtype, name
        assert torch.isfinite(got).all(), f"d{name} has NaN (unwritten)"
        assert rel_err(got, want) < BF16_RTOL, f"d{name}: rel err {rel_err(got, want):.2e}"


def test_no_cluster_mlp_backward_is_schedule_independent(no_cluster) -> None:
    """Bitwise equal gradients under different warp schedules: no race, a fixed summation order."""
    q, k, v, eta, ln_w, ln_b, state = make_inputs("mlp", 1, 1, 64 * 3, seed=3)
    _, _, ckpt = cuda_backend.scan_forward("mlp", q, k, v, eta, ln_w, ln_b, state, checkpoint_every=2)
    d_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    lib = no_cluster.load_kernel("mlp", torch.bfloat16, q.device, backward=True).lib
    runs = []
    for seed in (1, 2, 3):
        lib.seed(seed)
        runs.append(cuda_backend.scan_backward("mlp", q, k, v, eta, ln_w, ln_b, ckpt, d_out))
    assert list(no_cluster.libs) == [NO_CLUSTER_SOURCE, NO_CLUSTER_BWD_SOURCE]
    for other in runs[1:]:
        for name, a, b in zip(NAMES, runs[0], other):
            assert torch.equal(a, b), f"d{name} depends on the warp schedule"


# planted bugs in the no-cluster backward, each a one-line change of its source
BWD_MUTATIONS = {
    "deta-sign": ("dep[nt][e] += dp1 * g1;", "dep[nt][e] -= dp1 * g1;"),
    "skipped-table-wait": (
        "    cp_async_commit();\n    cp_async_wait<0>();\n    __syncthreads();\n  };",
        "    cp_async_commit();\n    __syncthreads();\n  };",
    ),
    "missing-barrier-before-contraction": ("          __syncthreads();  // opa complete\n", "\n"),
    "db1-not-accumulated": ("      s.db1[tid] += s2.acc_db1[tid];\n", "\n"),
    "dq-without-dO": (
        "          if (h == 0) add_rows_bf16(acc, gdoj, HD, 16 * rb, 32 * ch, lane);  // + dO\n",
        "\n",
    ),
    "deta-not-stored": ("        (deta + tok0() + static_cast<size_t>(j) * MBS)[utid] = d;\n", "\n"),
}


def _no_cluster_backward_errors(inputs, d_out, d_final) -> list[float]:
    """Relative errors of the ten gradients of a 2-group scan against the reference's autograd."""

    def kernel(q, k, v, eta, ln_w, ln_b, state):
        return cuda_backend.run("mlp", q, k, v, eta, ln_w, ln_b, state, 64, checkpoint_group=1)

    def reference(q, k, v, eta, ln_w, ln_b, state):
        return ttt_scan_reference("mlp", q.float(), k.float(), v.float(), eta, ln_w, ln_b, state, 64)

    _, grads = _grads_of(kernel, "mlp", inputs, d_out, d_final)
    _, ref_grads = _grads_of(reference, "mlp", inputs, d_out, d_final)
    return [
        rel_err(got, want) if torch.isfinite(got).all() else float("inf")
        for got, want in zip(grads, ref_grads)
    ]


def _mutation_inputs():
    inputs = make_inputs("mlp", 1, 1, 64 * 2, seed=9)
    gen = torch.Generator().manual_seed(5)
    d_out = torch.randn(1, 1, 64 * 2, 64, generator=gen).bfloat16().float()
    d_final = [torch.randn(t.shape, generator=gen) for t in inputs[6].tensors()]
    return inputs, d_out, d_final


def test_no_cluster_backward_unmutated_passes_the_mutation_check(no_cluster) -> None:
    """The yardstick of the mutation test below accepts the real kernel."""
    errors = _no_cluster_backward_errors(*_mutation_inputs())
    assert max(errors) < BF16_RTOL, errors


@pytest.mark.slow  # one g++ build of the mutated kernel each (about 15 s on a shared 2-core CPU)
@pytest.mark.parametrize("name", sorted(BWD_MUTATIONS))
def test_no_cluster_backward_mutations_fail(no_cluster, name: str) -> None:
    """Each planted bug makes a gradient of the emulated kernel wrong or NaN (or the emulator stop)."""
    old, new = BWD_MUTATIONS[name]
    source = loader.kernel_source(NO_CLUSTER_BWD_SOURCE)
    assert source.count(old) == 1, f"mutation {name}: the line to change is not in the source"
    mutated = f"ttt_mlp_bwd_sm80_{name.replace('-', '_')}.cu"
    no_cluster.libs[NO_CLUSTER_BWD_SOURCE] = kernel_emu.build(mutated, source.replace(old, new))
    try:
        errors = _no_cluster_backward_errors(*_mutation_inputs())
    except RuntimeError:
        return  # the emulator caught it (deadlock, bad address)
    assert not max(errors) < BF16_RTOL, f"mutation {name} passed: rel errors {errors}"
