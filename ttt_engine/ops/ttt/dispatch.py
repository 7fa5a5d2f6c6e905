"""Backend choice for the TTT scan: the reference always works; fast kernels register themselves.

A backend says whether it can run a given call and, if not, why. `TTT_STUDIO_TTT_BACKEND=reference`
(or `backend="reference"`) forces the reference; `backend="cuda"` demands the kernel and raises with
the reason when it cannot run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .reference import ttt_scan_reference
from .state import LinearState, MLPState

log = logging.getLogger(__name__)

ENV_BACKEND = "TTT_STUDIO_TTT_BACKEND"


@dataclass(frozen=True)
class ScanCall:
    """What a backend needs to know to accept or refuse a call."""

    kind: str
    device: torch.device
    dtype: torch.dtype
    head_dim: int
    hidden: int
    mini_batch_size: int
    requires_grad: bool


@dataclass(frozen=True)
class Backend:
    name: str
    # returns None when the call is supported, else the reason it is not
    unsupported_reason: Callable[[ScanCall], str | None]
    run: Callable[..., tuple[torch.Tensor, MLPState | LinearState]]


def _reference_run(kind, q, k, v, eta, ln_w, ln_b, state, mini_batch_size, **kw):
    return ttt_scan_reference(kind, q, k, v, eta, ln_w, ln_b, state, mini_batch_size, **kw)


REFERENCE = Backend("reference", lambda call: None, _reference_run)
_fast_backends: list[Backend] = []
_probed = False


def register_backend(backend: Backend) -> None:
    _fast_backends.append(backend)


def _probe_fast_backends() -> None:
    """Import the CUDA kernels lazily, once, and only when a CUDA tensor asks for them."""
    global _probed
    if _probed:
        return
    _probed = True
    try:
        from cuda import backend as cuda_backend  # noqa: PLC0415
    except ImportError as err:  # cupy not installed: the reference serves
        log.info("TTT CUDA kernels unavailable (%s); using the PyTorch reference", err)
        return
    register_backend(cuda_backend.BACKEND)


def choose_backend(call: ScanCall, requested: str = "auto") -> Backend:
    requested = os.environ.get(ENV_BACKEND, requested)
    if requested == "reference":
        return REFERENCE
    if requested not in ("auto", "cuda"):
        raise ValueError(f"backend: expected 'auto', 'reference' or 'cuda', got {requested!r}")
    if call.device.type == "cuda":
        _probe_fast_backends()
    reasons = []
    for backend in _fast_backends:
        reason = backend.unsupported_reason(call)
        if reason is None:
            return backend
        reasons.append(f"{backend.name}: {reason}")
    if requested == "cuda":
        raise ValueError(
            f"backend='cuda' requested but no kernel supports this call ({'; '.join(reasons) or 'none loaded'})"
        )
    if reasons:
        log.debug("TTT scan falls back to the reference: %s", "; ".join(reasons))
    return REFERENCE
