"""NVRTC through ctypes: compile a kernel's loader source for an architecture with no GPU, driver or CuPy.

cuda/loader.py compiles with CuPy's NVRTC at run time. CuPy 14 (cupy-cuda13x) needs numpy 2, which the
dev environment cannot have (bpy pins numpy < 2), so the tests call libnvrtc itself: it needs no driver.
The library comes from the nvidia-cuda-nvrtc wheel (site-packages/nvidia/cu13/lib; a dev dependency),
else from the system's library path. Only tests/cuda/test_compile.py uses this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Compiled:
    ok: bool
    log: str  # the compile log; with -Xptxas -v, ptxas's report per entry function
    cubin_bytes: int


def _candidates() -> list[str]:
    paths: list[str] = []
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        paths += sorted(str(p) for p in Path(root).glob("cu*/lib/libnvrtc.so*") if "builtins" not in p.name)
    found = ctypes.util.find_library("nvrtc")
    if found:
        paths.append(found)
    return paths


def load() -> ctypes.CDLL | None:
    """libnvrtc, or None when it is not installed."""
    for path in _candidates():
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def version(lib: ctypes.CDLL) -> tuple[int, int]:
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


def compile_source(lib: ctypes.CDLL, source: str, name: str, options: Sequence[str]) -> Compiled:
    """nvrtcCreateProgram + nvrtcCompileProgram; the log and the cubin size (0 when compilation failed)."""
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    if rc != 0:
        raise RuntimeError(f"nvrtcCreateProgram failed with status {rc}")
    try:
        opts = [o.encode() for o in options]
        ok = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts)) == 0
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        cubin = ctypes.c_size_t(0)
        if ok:
            lib.nvrtcGetCUBINSize(prog, ctypes.byref(cubin))
        return Compiled(ok, log.value.decode(errors="replace"), cubin.value)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
