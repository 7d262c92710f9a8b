"""Shared fixtures: devices (CUDA cases skip visibly, or fail with LRPTEXT_REQUIRE_CUDA=1) and backends."""

from __future__ import annotations

import os

import pytest
import torch

import lrptext

# On a GPU torch's convolutions default to TF32 (10-bit mantissa); the tolerances here are float32's, for the
# kernels' arithmetic, so torch's side of every comparison computes in full float32.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def cuda_unavailable_reason() -> str | None:
    if not lrptext.build_info()["cuda"]:
        return "lrptext was built without CUDA kernels"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


def require_cuda() -> str:
    """"cuda", or the case skipped visibly (failed under LRPTEXT_REQUIRE_CUDA=1) where it cannot run."""
    reason = cuda_unavailable_reason()
    if reason:
        if os.environ.get("LRPTEXT_REQUIRE_CUDA") == "1":
            pytest.fail(f"LRPTEXT_REQUIRE_CUDA=1 but {reason}")
        pytest.skip(f"CUDA case: {reason}")
    return "cuda"


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    return require_cuda() if request.param == "cuda" else request.param


@pytest.fixture
def cuda_device() -> str:
    """For CUDA-only cases."""
    return require_cuda()


@pytest.fixture(params=["cpp", "torch"])
def backend(request) -> str:
    return request.param


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param
