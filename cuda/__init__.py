"""Fused CUDA kernels for the TTT scan (.cu sources, an NVRTC loader and the dispatch backend).

Importing this package is light: no cupy, no CUDA context. `cuda.backend` is what
ttt_engine/ops/ttt/dispatch.py registers; `cuda.loader` compiles and launches.

The name `cuda` is also NVIDIA's namespace package (cuda-pathfinder, cuda-bindings, cuda-core: CuPy 14
imports `cuda.pathfinder`). A regular package shadows a namespace package, so this one extends its
search path with every other `cuda` folder on sys.path; without that, `import cupy` fails wherever
this project is importable.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
