"""Access to the C++ extension, and what the package does when it is missing."""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

logger = logging.getLogger("lrptext")


def _best_core() -> ModuleType:
    """The extension built for the highest CPU level this CPU runs: _core_x86_64_v3 (AVX2, FMA) where it was built
    and the CPU has it, else _core (any CPU). LRPTEXT_CPU_LEVEL=baseline picks _core whatever the CPU."""
    from lrptext import _core
    if os.environ.get("LRPTEXT_CPU_LEVEL", "").lower() == "baseline" or not _core.cpu_supports_x86_64_v3():
        return _core
    try:
        from lrptext import _core_x86_64_v3
    except ImportError:  # not built: another architecture, or a compiler without -march=x86-64-v3
        return _core
    return _core_x86_64_v3


core: ModuleType | None
try:
    core = _best_core()
    import_error: ImportError | None = None
except ImportError as error:  # an install without the compiled extension: the torch backend still works
    core = None
    import_error = error
    logger.warning("lrptext._core did not import (%s); only backend='torch' is available", error)


def require_core() -> ModuleType:
    """The extension module, or an ImportError that says how to get it."""
    if core is None:
        raise ImportError(
            f"lrptext's C++ kernels are not available ({import_error}); reinstall with "
            "'pip install .' from a source checkout, or pass backend='torch'"
        )
    return core


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def _dense_product() -> str:
    """Which BLAS runs the engine's dense epsilon products on the CPU: "torch" (torch's own, MKL in its x86 wheels)
    on Intel CPUs, where MKL took 0.65-0.75x the time of the core's OpenBLAS; "core" elsewhere (on AMD CPUs the
    core's OpenBLAS was the faster; docs/performance.md). LRPTEXT_DENSE_PRODUCT=core or =torch chooses."""
    chosen = os.environ.get("LRPTEXT_DENSE_PRODUCT", "").lower()
    if chosen in ("core", "torch"):
        return chosen
    if chosen:
        logger.warning("LRPTEXT_DENSE_PRODUCT must be 'core' or 'torch', got %r; choosing by the CPU", chosen)
    import torch

    return "torch" if torch.backends.mkl.is_available() and _cpu_vendor() == "GenuineIntel" else "core"


dense_product = _dense_product() if core is not None else "torch"


def torch_blas_library() -> str | None:
    """The path of the shared library that carries torch's BLAS (libtorch_cpu, with MKL in torch's x86 wheels on
    Linux), or None where there is none to hand to the core."""
    import torch

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    return path if os.path.exists(path) else None


def use_torch_blas(use: bool) -> bool:
    """Runs the C++ kernels' own matrix products (attention's per head, convolutions', the dense rules' in the core;
    their matrix-vector products stay in OpenBLAS) in torch's BLAS (use=True) or in the core's OpenBLAS; whether
    torch's now runs them (False where its library carries no MKL whose sgemm_ and dgemm_ compute right, which the
    core checks)."""
    global core_blas
    library = torch_blas_library() if use else None
    taken = require_core().set_blas(library) and library is not None  # (None: OpenBLAS again)
    core_blas = "torch" if taken else "openblas"
    return taken


# Which BLAS runs the core's own matrix products: torch's where the dense products go to torch's too (Intel CPUs
# with MKL; MKL took 0.9x OpenBLAS's time for attention's products at 512 tokens, docs/performance.md), else
# the core's OpenBLAS. LRPTEXT_DENSE_PRODUCT chooses both.
core_blas = "openblas"
if core is not None and dense_product == "torch":
    use_torch_blas(True)


def build_info() -> dict[str, Any]:
    """How the kernels were built: BLAS, OpenMP threads, the CPU level of the module in use ("x86-64-v3" or
    "baseline"), whether CUDA kernels were compiled; and which BLAS runs the dense products of an explanation on
    the CPU ("dense_product": "core" or "torch", see LRPTEXT_DENSE_PRODUCT) and the core's own products
    ("core_blas": "openblas" or "torch")."""
    if core is None:
        return {"extension": False, "error": str(import_error), "cuda": False}
    return {"extension": True, **core.build_info(), "dense_product": dense_product, "core_blas": core_blas}


def set_num_threads(n: int) -> None:
    """Threads used by lrptext's CPU kernels (process-wide); torch's own pool is set by torch.set_num_threads."""
    require_core().set_num_threads(int(n))


def get_num_threads() -> int:
    return int(require_core().get_num_threads())


def set_winograd(mode: str) -> None:
    """When the CPU kernels compute a 3x3 convolution of stride 1 by Winograd's F(2x2, 3x3), 16 multiplications per
    2x2 outputs and channel pair instead of 36 (process-wide): the epsilon, gamma and z+ rules' passes. The
    engine's forward pass of such convolutions stays torch's, whose activations are rounded as the model's own.

    - ``"auto"`` (the default): with 64+ channels on either side, 128+ 2x2 output tiles in the batch and a
      transformed weight at most three times the input, where it is faster (VGG-16 at batch 4: 0.45-0.75x the time
      of direct sums per layer);
    - ``"always"``: every such convolution;
    - ``"never"``: direct sums over columns (im2col), as torch's own convolution.

    Its rounding is relative to the largest term in each 4x4 block of inputs, not in each output's own 3x3 window,
    so a quotient R_j / z_j far larger than its neighbours' leaks into their relevance (direct sums multiply it by
    exact zeros). Relevance from a network is proportional to each neuron's activation, which keeps these quotients
    bounded for the rules above; the other rules always take direct sums. Calling the kernels with relevance
    unrelated to z (a bias-free layer over an image with zero regions, say), prefer ``"never"``."""
    require_core().set_winograd(mode)


def get_winograd() -> str:
    return str(require_core().get_winograd())


def release_workspaces() -> int:
    """Hands the CPU kernels' large workspaces back to the system and returns their bytes. They are kept between
    calls (at most 64 MiB), as malloc keeps freed memory, because mapping them afresh costs a page fault per 4 KiB
    on first touch: about a third of a small CNN's explanation time."""
    return int(require_core().release_workspaces()) if core is not None else 0
