"""The attribution methods lrptext compares LRP with, computed by lrptext itself on the same inputs.

Each works on a differentiable input x of shape [B, F, ...] (token embeddings [B, T, D], pixels [B, C, H, W]) and
a forward function x -> logits, and returns one score per feature position after summing over the `over` axis
(the embedding dimension, the colour channels):

- sensitivity analysis (sa): the squared gradient, Σ (∂f_c/∂x)² (Simonyan et al. 2014; Arras et al. 2017),
- gradient × input (gi): Σ x ∂f_c/∂x,
- integrated gradients (ig): Σ x · mean over α of ∂f_c/∂x at αx, from the zero baseline (Sundararajan et al.
  2017), with `steps` points of the midpoint rule.

Occlusion and random orders need the perturbation itself and live with it (words.py, pixels.py). Every method
reports its model evaluations (a forward and a backward count as one)."""

from __future__ import annotations

from collections.abc import Callable

import torch

GRADIENT_METHODS = ("sa", "gi", "ig")


def _target_gradient(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    logits = forward(x)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    return grad


def gradient_attribution(method: str, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                         target: torch.Tensor, *, over: int, steps: int = 32) -> tuple[torch.Tensor, int]:
    """(scores with the `over` axis summed away, model evaluations per example)."""
    if method == "sa":
        return _target_gradient(forward, x, target).pow(2).sum(over), 1
    if method == "gi":
        return (x * _target_gradient(forward, x, target)).sum(over), 1
    if method == "ig":
        if steps < 1:
            raise ValueError(f"integrated gradients needs steps >= 1, got {steps}")
        total = torch.zeros_like(x)
        for k in range(steps):
            total += _target_gradient(forward, x * ((k + 0.5) / steps), target)
        return (x * total / steps).sum(over), steps
    raise ValueError(f"unknown gradient method {method!r}; choose one of {', '.join(GRADIENT_METHODS)}")
