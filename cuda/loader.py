"""Compile the TTT CUDA kernels with NVRTC (through CuPy) and launch them on torch's current stream.

Each (kind, dtype) has one forward kernel per variant: the sm_90 one (KERNELS; the TTT-MLP forward uses
2-CTA thread-block clusters) and, where that needs Hopper, a no-cluster one for sm_80 / sm_86 / sm_89
(NO_CLUSTER_KERNELS). `select_spec` picks by the device's compute capability, or as
TTT_STUDIO_TTT_CUDA_VARIANT forces ("sm80": the no-cluster kernels, also on Hopper, which runs them from
the same source; "sm90": the cluster kernels; "auto", the default: by compute capability).

Each kernel is compiled from its .cu text, with the shared headers of this folder inlined so that
CuPy's on-disk cache key covers them, once per (device arch, dtype, kernel) and device. Tensors pass
to CuPy by DLPack (zero copy; bf16 travels as int16 since CuPy has no bfloat16) inside
`cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)`, so a launch is ordered with the
torch work around it and no synchronisation is added.

Importing this module does not import cupy; `load_kernel` and `launch` do.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parent
ENV_VARIANT = "TTT_STUDIO_TTT_CUDA_VARIANT"
VARIANTS = ("auto", "sm80", "sm90")
NVRTC_OPTIONS = ("--std=c++17",)
_INCLUDE = re.compile(r'^[ \t]*#include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#pragma[ \t]+once[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class KernelSpec:
    """One compiled kernel: where its source is and how it is launched."""

    kind: str  # 'mlp' or 'linear'
    source: str  # .cu file in this folder
    function: str  # extern "C" kernel name
    smem_query: str  # extern "C" kernel writing sizeof(its shared-memory layout)
    smem_bytes: int  # that size, mirrored here so backends can refuse a device without compiling
    threads: int  # threads per CTA
    ctas_per_head: int  # CTAs (a cluster) per (batch, head)
    min_arch: int  # lowest compute capability, as 10 * major + minor
    hidden: int  # hidden units of the inner model (== head dim for 'linear')


# Shared-memory sizes: the byte counts of `struct Smem` in each .cu (checked against the kernel's own
# query in tests/cuda/test_kernel_gpu.py).
_MLP_SMEM = 2 * (128 * 72) * 2 + (128 * 136) * 2 + 2 * (64 * 72) * 2 + 5 * (64 * 72) * 2
_MLP_SMEM += (2 * 64 + 128 + 3 * 64 + 4 * 64 + 2 * 128 + 8 * 8 * 32 * 4) * 4
# ttt_mlp_fwd_sm80.cu: W2 copy + Z1^T [256][64] bf16, K, Q, V/g2 [64][64] bf16 (swizzled, unpadded),
# eta, b1 [256], b2, ln_w, ln_b, 4 column partials [64], 4 x 2 row-sum halves [64] fp32
_MLP_SM80_SMEM = 2 * (256 * 64) * 2 + 3 * (64 * 64) * 2 + (4 * 64 + 256 + 4 * 64 + 8 * 64) * 4
_LINEAR_SMEM = (64 * 72) * 2 * 8 + (2 * 64 + 3 * 64 + 4 * 64) * 4
# backward kernels (ttt_mlp_bwd.cu, ttt_linear_bwd.cu)
_MLP_BWD_SMEM = 4 * (128 * 72) * 2 + 4 * (64 * 72) * 2 + 4 * (64 * 136) * 2 + 2 * (64 * 72) * 2 + 64 * 64 * 4
_MLP_BWD_SMEM += (192 + 3 * 64 + 128 + 3 * 64 + 6 * 4 * 64 + 2 * 2 * 128 + 4 * 64 + 2 * 64) * 4
# ttt_mlp_bwd_sm80.cu: the larger of phase 1 (the no-cluster forward's layout) and phase 2 (two table
# slots + the contraction operand [128][64] bf16, K, Q, g2, dZ [64][64] bf16, fp32 vectors), plus db1, db2,
# dln_w, dln_b kept across groups
_MLP_BWD_SM80_PHASE2 = 3 * (128 * 64) * 2 + 4 * (64 * 64) * 2
_MLP_BWD_SM80_PHASE2 += (64 + 256 + 3 * 64 + 3 * 4 * 64 + 256 + 64 + 8 * 64 + 2 * 64) * 4
_MLP_BWD_SM80_SMEM = max(_MLP_SM80_SMEM, _MLP_BWD_SM80_PHASE2) + (256 + 3 * 64) * 4
_LINEAR_BWD_SMEM = 3 * (64 * 72) * 2 + 8 * (64 * 72) * 2 + 3 * (64 * 72) * 2 + 64 * 64 * 4
_LINEAR_BWD_SMEM += (2 * 64 + 64 + 2 * 64 + 2 * 64 + 3 * 64 + 3 * 8 * 64) * 4

KERNELS: dict[tuple[str, torch.dtype], KernelSpec] = {
    ("mlp", torch.bfloat16): KernelSpec(
        "mlp", "ttt_mlp_fwd.cu", "ttt_mlp_fwd_bf16", "ttt_mlp_fwd_smem_bytes", _MLP_SMEM, 256, 2, 90, 256
    ),
    ("linear", torch.bfloat16): KernelSpec(
        "linear",
        "ttt_linear_fwd.cu",
        "ttt_linear_fwd_bf16",
        "ttt_linear_fwd_smem_bytes",
        _LINEAR_SMEM,
        256,
        1,
        80,
        64,
    ),
}


# forward kernels without thread-block clusters, for GPUs before Hopper (sm_80 A100: 163 KB of shared
# memory per block; sm_86 / sm_89 RTX 30xx / 40xx, A40, L40S: 99 KB); the linear kernels need no variant
NO_CLUSTER_KERNELS: dict[tuple[str, torch.dtype], KernelSpec] = {
    ("mlp", torch.bfloat16): KernelSpec(
        "mlp",
        "ttt_mlp_fwd_sm80.cu",
        "ttt_mlp_fwd_sm80_bf16",
        "ttt_mlp_fwd_sm80_smem_bytes",
        _MLP_SM80_SMEM,
        256,
        1,
        80,
        256,
    ),
}


def forced_variant() -> str:
    """The kernel variant TTT_STUDIO_TTT_CUDA_VARIANT asks for ('auto' when unset)."""
    value = os.environ.get(ENV_VARIANT, "auto").strip().lower() or "auto"
    if value not in VARIANTS:
        raise ValueError(f"{ENV_VARIANT}={value!r}: expected one of {', '.join(VARIANTS)}")
    return value


def select_spec(kind: str, dtype: torch.dtype, arch: int, *, backward: bool = False) -> KernelSpec:
    """The kernel for (kind, dtype) on a device of compute capability `arch` (10 * major + minor).

    The no-cluster variant below its sm_90 sibling's min_arch, or wherever ENV_VARIANT says 'sm80'; the
    sm_90 kernel otherwise (ENV_VARIANT 'sm90' keeps it even where it cannot run: the backend then refuses
    with the reason). backward=True picks among the backward kernels by the same rule.
    """
    table = BACKWARD_KERNELS if backward else KERNELS
    if (kind, dtype) not in table:
        raise ValueError(f"no CUDA kernel for kind={kind!r}, dtype={dtype}; have {sorted(table)}")
    spec = table[(kind, dtype)]
    variant = forced_variant()
    alternative = (NO_CLUSTER_BACKWARD_KERNELS if backward else NO_CLUSTER_KERNELS).get((kind, dtype))
    if alternative is not None and (variant == "sm80" or (variant == "auto" and arch < spec.min_arch)):
        return alternative
    return spec


# the backward scans, launched by cuda/backend.py's autograd function (same grid as the forward)
BACKWARD_KERNELS: dict[tuple[str, torch.dtype], KernelSpec] = {
    ("mlp", torch.bfloat16): KernelSpec(
        "mlp", "ttt_mlp_bwd.cu", "ttt_mlp_bwd_bf16", "ttt_mlp_bwd_smem_bytes", _MLP_BWD_SMEM, 256, 2, 90, 256
    ),
    ("linear", torch.bfloat16): KernelSpec(
        "linear",
        "ttt_linear_bwd.cu",
        "ttt_linear_bwd_bf16",
        "ttt_linear_bwd_smem_bytes",
        _LINEAR_BWD_SMEM,
        256,
        1,
        80,
        64,
    ),
}


# the TTT-MLP backward without clusters (sm_80 / sm_86 / sm_89): dS in registers, S_j streamed from L2
NO_CLUSTER_BACKWARD_KERNELS: dict[tuple[str, torch.dtype], KernelSpec] = {
    ("mlp", torch.bfloat16): KernelSpec(
        "mlp",
        "ttt_mlp_bwd_sm80.cu",
        "ttt_mlp_bwd_sm80_bf16",
        "ttt_mlp_bwd_sm80_smem_bytes",
        _MLP_BWD_SM80_SMEM,
        256,
        1,
        80,
        256,
    ),
}


def kernel_source(filename: str) -> str:
    """The text of a .cu file of this folder with its local `#include "x.cuh"` lines inlined (once each)."""
    seen: set[str] = set()

    def expand(name: str) -> str:
        path = KERNEL_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"CUDA source {name!r} not found in {KERNEL_DIR}")
        text = _PRAGMA_ONCE.sub("", path.read_text())

        def inline(match: re.Match[str]) -> str:
            header = match.group(1)
            if header in seen:
                return f"// {header} already inlined"
            seen.add(header)
            return f"// ---- begin {header}\n{expand(header)}\n// ---- end {header}"

        return _INCLUDE.sub(inline, text)

    return expand(filename)


def device_arch(device: torch.device) -> int:
    """Compute capability of a CUDA device as 10 * major + minor (sm_90 -> 90)."""
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@dataclass(frozen=True)
class LoadedKernel:
    spec: KernelSpec
    function: Any  # cupy.RawKernel
    smem_bytes: int
    device_index: int


@functools.cache
def _load(spec: KernelSpec, arch: int, device_index: int) -> LoadedKernel:
    import cupy  # noqa: PLC0415  (heavy, optional: only when a kernel is needed)

    log.info("compiling %s for sm_%d with NVRTC (cached by CuPy after the first time)", spec.function, arch)
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=kernel_source(spec.source), options=NVRTC_OPTIONS)
        function = module.get_function(spec.function)
        query = module.get_function(spec.smem_query)
        size = cupy.zeros(1, dtype=cupy.uint32)
        query((1,), (1,), (size,))
        smem = int(size.get()[0])
        if smem != spec.smem_bytes:
            raise RuntimeError(
                f"{spec.function}: the kernel needs {smem} B of shared memory but loader.KERNELS says "
                f"{spec.smem_bytes} B; update KernelSpec.smem_bytes"
            )
        function.max_dynamic_shared_size_bytes = smem
    return LoadedKernel(spec, function, smem, device_index)


def load_kernel(
    kind: str, dtype: torch.dtype, device: torch.device, *, backward: bool = False
) -> LoadedKernel:
    """The compiled kernel for (kind, dtype) on `device`, the variant `select_spec` picks (compiled on
    first use, then cached); backward=True gives the backward scan."""
    arch = device_arch(device)
    return _load(select_spec(kind, dtype, arch, backward=backward), arch, _device_index(device))


def _as_cupy(t: torch.Tensor) -> Any:
    import cupy  # noqa: PLC0415

    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # same bytes; CuPy has no bfloat16
    return cupy.from_dlpack(t)


def launch(kernel: LoadedKernel, grid: int, args: Sequence[torch.Tensor | int]) -> None:
    """Launch on torch's current stream: tensors go by DLPack, ints as C int (int32)."""
    import cupy  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    stream = torch.cuda.current_stream(kernel.device_index)
    with cupy.cuda.Device(kernel.device_index), cupy.cuda.ExternalStream(stream.cuda_stream):
        converted = []
        for a in args:
            if isinstance(a, torch.Tensor):
                converted.append(_as_cupy(a))
            elif isinstance(a, int):
                if not -(2**31) <= a < 2**31:
                    raise ValueError(f"kernel int argument {a} does not fit a C int")
                converted.append(np.int32(a))
            else:
                raise TypeError(f"kernel argument must be a tensor or an int, got {type(a).__name__}")
        kernel.function((grid,), (kernel.spec.threads,), tuple(converted), shared_mem=kernel.smem_bytes)
