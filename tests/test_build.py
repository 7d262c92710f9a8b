"""The extension as built: what build_info reports, threads, zero-copy interop and the torch fallback."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lrptext
from core_settings import core_blas, core_threads
from lrptext import _core, _native, kernels as K
from lrptext.rules import Gamma
from tolerances import assert_matches


def test_build_info_reports_blas_threads_and_cuda():
    info = lrptext.build_info()
    assert info["extension"] is True
    assert ("torch's" if info["core_blas"] == "torch" else "OpenBLAS") in info["blas"]
    assert info["openmp"] >= 201511 and info["threads"] >= 1
    assert isinstance(info["cuda"], bool)


def test_cuda_kernels_are_compiled_where_nvcc_is_found():
    if os.environ.get("LRPTEXT_CUDA") == "OFF" or shutil.which("nvcc") is None:
        pytest.skip("no nvcc on PATH (or LRPTEXT_CUDA=OFF): CUDA kernels are not expected")
    assert lrptext.build_info()["cuda"] is True


def test_set_num_threads_changes_the_pool_and_not_the_result():
    x, w, r = torch.randn(64, 300), torch.randn(200, 300), torch.randn(64, 200)
    with core_threads(1):
        assert lrptext.get_num_threads() == 1
        one = K.dense_relevance(x, w, None, r, rule=Gamma())
    with core_threads(2):
        assert lrptext.get_num_threads() == 2
        two = K.dense_relevance(x, w, None, r, rule=Gamma())
    torch.testing.assert_close(one, two)


def test_large_workspaces_are_kept_for_the_next_call_and_released_on_request():
    """Workspaces of 4 MiB and more are kept between calls (up to 64 MiB) and handed back by release_workspaces();
    a kept one, reused by a smaller problem with its old contents, gives the same result as a fresh one."""
    g = torch.Generator().manual_seed(0)
    def tensors(batch):  # an output of [batch, 32, 128, 128] doubles: workspaces of batch x 4 MiB
        shapes = ((batch, 32, 128, 128), (32, 32, 3, 3), (batch, 32, 128, 128))
        return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]

    big, small = tensors(2), tensors(1)
    lrptext.release_workspaces()
    fresh = K.conv2d_relevance(small[0], small[1], None, small[2], padding=1, rule=Gamma())
    assert lrptext.release_workspaces() >= 4 << 20
    K.conv2d_relevance(big[0], big[1], None, big[2], padding=1, rule=Gamma())  # keeps mappings of 8 MiB
    reused = K.conv2d_relevance(small[0], small[1], None, small[2], padding=1, rule=Gamma())
    torch.testing.assert_close(reused, fresh, rtol=0, atol=0)
    assert lrptext.release_workspaces() > 0
    assert lrptext.release_workspaces() == 0


def test_numpy_and_torch_pass_without_copies():
    a = np.ones((3, 4))
    t = torch.ones(3, 4)
    assert _core.data_address(a) == a.ctypes.data
    assert _core.data_address(t) == t.data_ptr()
    view = t[1:]  # a contiguous view with an offset
    assert _core.data_address(view) == view.data_ptr()


def test_outputs_are_written_in_place_in_the_callers_buffer():
    out = torch.full((2, 4), float("nan"), dtype=torch.float64)
    _core.dense_relevance(torch.ones(2, 4, dtype=torch.float64), torch.ones(3, 4, dtype=torch.float64), None,
                          torch.ones(2, 3, dtype=torch.float64), out)
    torch.testing.assert_close(out, torch.full((2, 4), 0.75, dtype=torch.float64), rtol=1e-5, atol=0)


def test_the_torch_backend_takes_over_without_the_extension(monkeypatch):
    g = torch.Generator().manual_seed(0)  # positive inputs and weights: z far from 0, so the backends agree closely
    x, w, r = torch.rand(2, 4, generator=g), torch.rand(3, 4, generator=g), torch.randn(2, 3, generator=g)
    expected = K.dense_relevance(x, w, None, r, backend="cpp")
    monkeypatch.setattr(_native, "core", None)
    monkeypatch.setattr(_native, "import_error", ImportError("simulated"))
    torch.testing.assert_close(K.dense_relevance(x, w, None, r), expected)
    with pytest.raises(ImportError, match="pass backend='torch'"):
        K.dense_relevance(x, w, None, r, backend="cpp")
    assert lrptext.build_info()["extension"] is False


def test_the_highest_cpu_level_the_cpu_runs_is_loaded():
    """On x86-64 the build makes a second module for AVX2 + FMA CPUs (x86-64-v3); lrptext imports it where the CPU
    has them, and LRPTEXT_CPU_LEVEL=baseline picks the portable one."""
    import platform
    import subprocess
    import sys
    if platform.machine() not in ("x86_64", "AMD64") or not _core.cpu_supports_x86_64_v3():
        assert lrptext.build_info()["cpu_level"] == "baseline"
        return
    assert _native.core.__name__ == "lrptext._core_x86_64_v3" and lrptext.build_info()["cpu_level"] == "x86-64-v3"
    assert _core.build_info()["cpu_level"] == "baseline"
    script = "import lrptext; print(lrptext.build_info()['cpu_level'])"
    env = {**os.environ, "LRPTEXT_CPU_LEVEL": "baseline"}
    # -P: the installed package, not the source tree in the working directory
    assert subprocess.run([sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "baseline"


def test_the_dense_product_blas_is_chosen_by_the_cpu_or_the_environment():
    """Explanations run their dense epsilon products in torch's BLAS on Intel CPUs where torch has MKL, in the core's
    OpenBLAS elsewhere; LRPTEXT_DENSE_PRODUCT=core or =torch chooses (an unknown value: a warning, then the CPU)."""
    import subprocess
    import sys
    intel = torch.backends.mkl.is_available() and _native._cpu_vendor() == "GenuineIntel"
    if "LRPTEXT_DENSE_PRODUCT" not in os.environ:
        assert lrptext.build_info()["dense_product"] == ("torch" if intel else "core")
    script = "import lrptext; print(lrptext.build_info()['dense_product'])"
    for value, expected in (("core", "core"), ("torch", "torch"), ("Torch", "torch"),
                            ("mkl", "torch" if intel else "core")):
        run = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, check=True,
                             env={**os.environ, "LRPTEXT_DENSE_PRODUCT": value})
        assert run.stdout.strip() == expected
        assert ("LRPTEXT_DENSE_PRODUCT must be 'core' or 'torch', got 'mkl'" in run.stderr) == (value == "mkl")


def test_the_cores_products_run_in_torchs_blas_where_the_dense_products_do():
    """The core's own matrix products (attention's, convolutions') go to torch's BLAS with the dense products
    (LRPTEXT_DENSE_PRODUCT=torch, the default on Intel CPUs with MKL), where torch's library carries MKL's sgemm_
    and dgemm_ and they compute right; else, and with LRPTEXT_DENSE_PRODUCT=core, they stay in the core's OpenBLAS."""
    import subprocess
    import sys
    script = "import lrptext; i = lrptext.build_info(); print(i['core_blas'], '|', i['blas'])"
    for value in ("core", "torch"):
        run = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, check=True,
                             env={**os.environ, "LRPTEXT_DENSE_PRODUCT": value})
        chosen, blas = run.stdout.strip().split(" | ")
        assert chosen in ("openblas", "torch") and ("torch's" if chosen == "torch" else "OpenBLAS") in blas
        if value == "core" or _native.torch_blas_library() is None:
            assert chosen == "openblas"
        elif torch.backends.mkl.is_available():  # (torch's x86 Linux wheels: MKL inside libtorch_cpu)
            assert chosen == "torch"


def _torch_mkl_library() -> str:
    """The path of torch's library with MKL in it, which the core can take its products from; skips where none."""
    library = _native.torch_blas_library()
    if library is None or not torch.backends.mkl.is_available():
        pytest.skip("torch's library here carries no MKL to hand to the core")
    return library


def test_a_library_not_loaded_or_without_mkl_is_refused_and_openblas_runs_the_products():
    """set_blas takes only a library the process has loaded (never loads one) that has MKL's functions; a refused
    one leaves the products in OpenBLAS, also where torch's ran them before."""
    torch_lib = _torch_mkl_library()
    def loaded() -> str:  # the files mapped into this process
        with open("/proc/self/maps") as maps:
            return maps.read()

    lib_dir = os.path.dirname(torch_lib)
    c10 = os.path.join(lib_dir, "libc10.so")  # loaded with torch, and no BLAS in it
    mapped = loaded()
    assert c10 in mapped
    not_loaded = [os.path.join(lib_dir, f) for f in sorted(os.listdir(lib_dir))
                  if f.endswith(".so") and os.path.join(lib_dir, f) not in mapped]
    with core_blas(True):
        for refused in ["/nonexistent/libblas.so", c10, *not_loaded[:1]]:
            assert _native.core.set_blas(torch_lib) is True and "torch's" in lrptext.build_info()["blas"]
            assert _native.core.set_blas(refused) is False
            assert "OpenBLAS" in lrptext.build_info()["blas"]
        if not_loaded:  # (set_blas did not load it either)
            assert not_loaded[0] not in loaded()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_either_blas_computes_the_cores_products_alike(dtype):
    """Attention relevance (five products per block of queries; at 512 keys their inner sums differ in order
    between the two BLAS), convolution and dense relevance, with the core's products in torch's BLAS and in
    OpenBLAS: the same relevance up to rounding (the kernels' float64 oracle tolerances, relative to the largest
    relevance)."""
    _torch_mkl_library()
    g = torch.Generator().manual_seed(0)
    q, k, v, share = (torch.randn(1, 2, 512, 32, generator=g, dtype=torch.float64).to(dtype) for _ in range(4))
    ro = F.scaled_dot_product_attention(q, k, v) * share
    x, w = torch.randn(2, 8, 20, 20, generator=g, dtype=dtype), torch.randn(16, 8, 3, 3, generator=g, dtype=dtype)
    rc = torch.randn(2, 16, 20, 20, generator=g, dtype=dtype)
    xd, wd, rd = (torch.randn(s, generator=g, dtype=dtype) for s in ((64, 300), (200, 300), (64, 200)))

    def results():
        return [*K.attention_relevance(q, k, v, ro), K.conv2d_relevance(x, w, None, rc, padding=1, rule=Gamma()),
                K.dense_relevance(xd, wd, None, rd, rule=Gamma())]

    with core_blas(True):
        assert _native.core_blas == "torch"
        torch_blas = results()
    with core_blas(False):
        assert _native.core_blas == "openblas"
        openblas = results()
    for a, b in zip(torch_blas, openblas):
        assert_matches(a, b, dtype)
    # ... and they did run in two libraries: MKL and OpenBLAS sum a 512-long product's terms in other orders
    assert not torch.equal(torch_blas[0], openblas[0])


def test_both_cpu_levels_compute_the_same_relevance(monkeypatch):
    """The x86-64-v3 module (vectorised with FMA) and the portable one on the kernels with the most element-wise
    work: dense epsilon, LayerNorm, softmax and attention relevance, float32 and float64 (the kernels' oracles are
    checked on the module in use; this keeps the other one honest). Both with the products in OpenBLAS, which the
    portable module keeps: an epsilon quotient near z = 0 makes the products' rounding show."""
    if _native.core is _core:
        pytest.skip("only the portable module is built or runnable here")
    with core_blas(False):
        _compare_cpu_levels(monkeypatch)


def _compare_cpu_levels(monkeypatch):
    g = torch.Generator().manual_seed(0)

    def results(dtype):
        x, w, r, r_x = (torch.randn(s, generator=g, dtype=torch.float64).to(dtype)
                        for s in ((9, 40), (30, 40), (9, 30), (9, 40)))
        q, k, v, share = (torch.randn(2, 3, 70, 8, generator=g, dtype=torch.float64).to(dtype) for _ in range(4))
        ro = F.scaled_dot_product_attention(q, k, v) * share  # as relevance arrives: proportional to the output
        return [K.dense_relevance(x, w, None, r), K.layer_norm_relevance(x, F.layer_norm(x, (40,)), r_x),
                K.softmax_relevance(x, torch.softmax(x, -1), r_x), *K.attention_relevance(q, k, v, ro)]

    for dtype in (torch.float32, torch.float64):
        state = g.get_state()
        fast = results(dtype)
        g.set_state(state)
        monkeypatch.setattr(_native, "core", _core)
        portable = results(dtype)
        monkeypatch.undo()
        for a, b in zip(fast, portable):
            single = dtype == torch.float32
            torch.testing.assert_close(a, b, rtol=1e-4 if single else 1e-10, atol=1e-5 if single else 1e-12)
