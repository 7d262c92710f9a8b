"""The one table of tolerances for comparing kernels with the float64 oracle: the largest deviation relative to
the largest magnitude of the expected relevance.

float32: the kernels compute z in float32, and a neuron whose z lies near zero amplifies that rounding (seen: 3e-4
on seeded random layers), so the bound is 1e-3; a wrong equation misses it by orders of magnitude."""

from __future__ import annotations

import numpy as np
import torch

RELATIVE = {torch.float64: 1e-9, torch.float32: 1e-3}


def as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def relative_error(actual, expected) -> float:
    actual, expected = as_numpy(actual), as_numpy(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def assert_matches(actual, expected, dtype: torch.dtype) -> None:
    err = relative_error(actual, expected)
    assert err <= RELATIVE[dtype], f"relative error {err:.3e} exceeds {RELATIVE[dtype]:.0e} for {dtype}"


def assert_same_sums(got, want, same_order: bool) -> None:
    """Two float32 explanations of one model whose sums add the same terms: in the same order (same_order), bit for
    bit; in another (one product over stacked weights instead of one per layer), to float32's rounding."""
    if same_order:
        assert torch.equal(got.relevance, want.relevance) and torch.equal(got.delta, want.delta)
        return
    scale = want.relevance.abs().max().item()
    torch.testing.assert_close(got.relevance, want.relevance, rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(got.delta, want.delta, rtol=1e-5, atol=1e-6 * scale)
