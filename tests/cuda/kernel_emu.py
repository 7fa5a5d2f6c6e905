"""Build this project's CUDA kernels as host code against kernel_emu.h and launch them on CPU tensors.

`build(source)` takes the text the NVRTC loader compiles (cuda/loader.kernel_source: the .cu with its
headers inlined), preprocesses it as for sm_90 (g++ -E -D__CUDA_ARCH__=900), deletes every function
whose body is inline PTX (kernel_emu.h defines the emulated versions under the same names), turns the
dynamic shared-memory declaration into a pointer to the emulated CTA's shared memory, adds one C
launcher per kernel, and compiles a shared library (cached in the system temp dir by source hash).
`Library.launch(kernel, grid, block, cluster, args)` runs it: tensors pass by pointer (CPU, contiguous),
ints as C int. Only the tests use this; it needs g++ on x86-64, nothing from CUDA.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from cuda import loader

HERE = Path(__file__).resolve().parent
HEADER = HERE / "kernel_emu.h"
GXX = shutil.which("g++")
AVAILABLE = GXX is not None and platform.machine() in ("x86_64", "AMD64")

_SMEM_DECL = re.compile(
    r"extern\s+__shared__\s+__align__\s*\(\s*16\s*\)\s+unsigned\s+char\s+(\w+)\s*\[\s*\]\s*;"
)
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+')


def _skip_literal(text: str, i: int) -> int:
    """Index just past the string or char literal starting at text[i]."""
    quote = text[i]
    i += 1
    while text[i] != quote:
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _match_close(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at text[i], skipping literals."""
    depth = 0
    while True:
        ch = text[i]
        if ch in "\"'":
            i = _skip_literal(text, i)
            continue
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1


def _statement_start(text: str, brace: int) -> int:
    """Start of the declaration whose body opens at text[brace]: just after the previous ; { or }."""
    j = brace - 1
    while j >= 0 and text[j] not in ";{}":
        if text[j] == ")":  # skip parenthesised groups (parameter lists, attributes)
            depth = 0
            while True:
                if text[j] == ")":
                    depth += 1
                elif text[j] == "(":
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
        j -= 1
    return j + 1


def _function_bodies(text: str) -> list[tuple[int, int, int]]:
    """(declaration start, body open, body close) of every function defined outside a function."""
    found = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            i = _skip_literal(text, i)
            continue
        if ch == "{":
            head = text[_statement_start(text, i) : i].strip()
            is_function = bool(re.search(r"\)\s*(const)?\s*$", head)) and not head.startswith(
                ("namespace", "struct", "class", "union", "enum")
            )
            if is_function:
                close = _match_close(text, i, "{", "}")
                found.append((_statement_start(text, i), i, close))
                i = close + 1
                continue
        i += 1
    return found


def emulation_source(source: str) -> str:
    """Host C++ for kernel_emu.h from a kernel's NVRTC source text (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cu"
        path.write_text(source)
        pre = subprocess.run(
            [GXX, "-E", "-P", "-x", "c++", "-D__CUDA_ARCH__=900", "-DTTT_HOST_EMULATION=1", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    pieces, last = [], 0
    for start, body, close in _function_bodies(pre):
        if not re.search(r"\basm\b", pre[body:close]):
            continue
        if _KERNEL.search(pre[start:body]):
            raise ValueError(f"kernel with inline PTX in its body cannot be emulated: {pre[start:body]!r}")
        pieces.append(pre[last:start])
        pieces.append("/* PTX helper removed: kernel_emu.h emulates it */\n")
        last = close + 1
    pieces.append(pre[last:])
    text = "".join(pieces)
    text = _SMEM_DECL.sub(r"unsigned char* \1 = ::emu::rt().ctas[::emu::cur()->cta].smem;", text)
    # asm remaining outside functions (global asm) would not compile: refuse early and clearly
    if re.search(r"\basm\b", text):
        raise ValueError("inline PTX left outside the removable helpers")
    launchers = []
    for match in _KERNEL.finditer(text):
        pos = match.end()
        while True:  # skip __launch_bounds__(...) / __cluster_dims__(...) between 'void' and the name
            attr = re.match(r"\s*(__launch_bounds__|__cluster_dims__)\s*", text[pos:])
            if not attr:
                break
            pos = _match_close(text, pos + attr.end(), "(", ")") + 1
        name_match = re.match(r"\s*(\w+)\s*\(", text[pos:])
        if not name_match:
            raise ValueError(f"cannot parse the kernel declaration at {text[match.start() : pos + 80]!r}")
        name = name_match.group(1)
        open_paren = pos + name_match.end() - 1
        close = _match_close(text, open_paren, "(", ")")
        params = " ".join(text[open_paren + 1 : close].split())
        names = [re.findall(r"\w+", p)[-1] for p in params.split(",")] if params else []
        launchers.append(
            f'extern "C" int emu_launch_{name}(int grid, int block, int cluster'
            + (f", {params}" if params else "")
            + f") {{ return ::emu::launch(grid, block, cluster, [=]() {{ {name}({', '.join(names)}); }}); }}"
        )
    return (
        '#include "kernel_emu.h"\n'
        + text
        + "\n"
        + "\n".join(launchers)
        + '\nextern "C" const char* emu_error() { return ::emu::last_error().c_str(); }\n'
        + 'extern "C" void emu_seed(unsigned s) { ::emu::rt().rng.seed(s); }\n'
    )


class Library:
    """A compiled emulation library of one .cu file."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.lib.emu_error.restype = ctypes.c_char_p

    def seed(self, value: int) -> None:
        """Seed the random order in which warps are scheduled between collectives."""
        self.lib.emu_seed(ctypes.c_uint(value))

    def launch(
        self, kernel: str, grid: int, block: int, cluster: int, args: Sequence[torch.Tensor | int]
    ) -> None:
        converted: list[object] = [ctypes.c_int(grid), ctypes.c_int(block), ctypes.c_int(cluster)]
        for a in args:
            if isinstance(a, torch.Tensor):
                if a.device.type != "cpu" or not a.is_contiguous():
                    raise ValueError("emulated kernels take contiguous CPU tensors")
                converted.append(ctypes.c_void_p(a.data_ptr()))
            else:
                converted.append(ctypes.c_int(int(a)))
        fn = getattr(self.lib, f"emu_launch_{kernel}")
        fn.restype = ctypes.c_int
        if fn(*converted) != 0:
            raise RuntimeError(f"{kernel} (emulated): {self.lib.emu_error().decode()}")


_built: dict[str, Library] = {}


def build(source_file: str, source: str | None = None) -> Library:
    """Compile (or reuse) the emulation library of cuda/<source_file> (or of `source`, its text)."""
    if not AVAILABLE:
        raise RuntimeError("kernel emulation needs g++ on x86-64")
    text = emulation_source(loader.kernel_source(source_file) if source is None else source)
    key = hashlib.sha256((text + HEADER.read_text()).encode()).hexdigest()[:16]
    if key in _built:
        return _built[key]
    cache = Path(tempfile.gettempdir()) / "ttt_kernel_emu"
    cache.mkdir(exist_ok=True)
    lib_path = cache / f"{Path(source_file).stem}-{key}.so"
    if not lib_path.exists():
        cpp = cache / f"{Path(source_file).stem}-{key}.cpp"
        cpp.write_text(text)
        tmp_lib = cache / f"{lib_path.name}.{os.getpid()}.tmp"
        cmd = [GXX, "-std=c++17", "-O1", "-fPIC", "-shared", "-w", f"-I{HERE}", "-o", str(tmp_lib), str(cpp)]
        built = subprocess.run(cmd, capture_output=True, text=True)
        if built.returncode != 0:
            raise RuntimeError(f"emulation build of {source_file} failed:\n{built.stderr[-4000:]}")
        tmp_lib.replace(lib_path)
    _built[key] = Library(lib_path)
    return _built[key]
