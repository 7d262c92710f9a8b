"""The extension as built: what build_info reports, threads, zero-copy interop and the torch fallback."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import lrptext
from lrptext import _core, _native
from lrptext import kernels as K
from lrptext.rules import Gamma


def test_build_info_reports_blas_threads_and_cuda():
    info = lrptext.build_info()
    assert info["extension"] is True
    assert "OpenBLAS" in info["blas"]
    assert info["openmp"] >= 201511 and info["threads"] >= 1
    assert isinstance(info["cuda"], bool)


def test_cuda_kernels_are_compiled_where_nvcc_is_found():
    if os.environ.get("LRPTEXT_CUDA") == "OFF" or shutil.which("nvcc") is None:
        pytest.skip("no nvcc on PATH (or LRPTEXT_CUDA=OFF): CUDA kernels are not expected")
    assert lrptext.build_info()["cuda"] is True


def test_set_num_threads_changes_the_pool_and_not_the_result():
    previous = lrptext.get_num_threads()
    x, w, r = torch.randn(64, 300), torch.randn(200, 300), torch.randn(64, 200)
    try:
        lrptext.set_num_threads(1)
        assert lrptext.get_num_threads() == 1
        one = K.dense_relevance(x, w, None, r, rule=Gamma())
        lrptext.set_num_threads(2)
        assert lrptext.get_num_threads() == 2
        two = K.dense_relevance(x, w, None, r, rule=Gamma())
    finally:
        lrptext.set_num_threads(previous)
    torch.testing.assert_close(one, two)


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
    x, w, r = torch.randn(2, 4), torch.randn(3, 4), torch.randn(2, 3)
    expected = K.dense_relevance(x, w, None, r, backend="cpp")
    monkeypatch.setattr(_native, "core", None)
    monkeypatch.setattr(_native, "import_error", ImportError("simulated"))
    torch.testing.assert_close(K.dense_relevance(x, w, None, r), expected)
    with pytest.raises(ImportError, match="pass backend='torch'"):
        K.dense_relevance(x, w, None, r, backend="cpp")
    assert lrptext.build_info()["extension"] is False
