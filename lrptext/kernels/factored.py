"""Relevance held as two factors not yet multiplied: R = act(input) ⊙ gradient.

Most of AttnLRP is gradient × input: residual sums (no stabiliser), attention's products and its softmax pass on the
gradient of what reaches them; only the epsilon rule (dense layers, LayerNorm's centring) divides by a stabilised
output. Relevance therefore travels as (value, gradient) wherever that spares a pass over a tensor:

- a dense layer's epsilon rule ends in a product with its input, R_in = x ⊙ (s W), and the next layer's begins with
  a quotient by its own output, R / st(z): the first hands over (x, s W) and the second divides act(x) ⊙ (s W) by
  st(z) in one pass (lrptext.kernels.dispatch.dense), also through an activation with the identity rule
  (Linear -> GELU -> Linear: (z, s W, "gelu"));
- a sum y = a + b whose relevance is y ⊙ g hands a ⊙ g and b ⊙ g on without computing either, and dense layers that
  share an input (a transformer's Q, K and V projections, and the residual around them) add their s W to the
  gradient pending there inside the product (β = 1);
- reshapes and transposes move both factors as views.

Anything else that receives factored relevance multiplies it out first."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lrptext.kernels import native

# The activations whose quotient act(input) gradient / st(z) the core writes into a buffer of its own rather than
# over the gradient it reads: with GELU that loop ran at about half speed storing where it loads (the
# feed-forward quotient at batch 32 x 128: 9 ms in place, 5 apart; docs/performance.md). SiLU measured faster in
# place on warm buffers and slower on cold ones, so it stays in place.
QUOTIENT_APART = frozenset({"gelu"})


@dataclass(slots=True)
class Factored:
    """R = act(input) ⊙ gradient on the CPU. input: a value of the forward pass (read, never written); activation:
    "identity" or a name of multiply's activation_a. A step that takes one hands on a new one (never changes it).

    owned: the gradient is this relevance's own buffer, which the step that takes it may overwrite; False where
    other relevance shares it (a sum hands one gradient to each summand): it is then read only.
    at_output: input is the value of the node at which the relevance is pending (or equal to it: a reshaped or
    contiguous copy), with the identity activation: R = y ⊙ gradient for the node's own output y, so a rule that
    divides by y (attention's G = R_O / O, a sum's R / y) may take the gradient as it is."""

    input: torch.Tensor
    gradient: torch.Tensor
    activation: str = "identity"
    owned: bool = True
    at_output: bool = False

    @property
    def shape(self) -> torch.Size:
        return self.gradient.shape

    def map(self, view: Callable[[torch.Tensor], torch.Tensor]) -> Factored:
        """Both factors through the same rearrangement (a reshape, a transpose)."""
        return Factored(view(self.input), view(self.gradient), self.activation, self.owned, self.at_output)

    def reshape(self, *shape: int) -> Factored:
        return self.map(lambda t: t.reshape(*shape))

    def gradient_of(self, value: torch.Tensor) -> torch.Tensor | None:
        """The gradient when this is R = value ⊙ gradient (at the node whose output is `value`), else None."""
        if self.activation != "identity" or not (self.at_output or self.input is value):
            return None
        return self.gradient

    def tensor(self) -> torch.Tensor:
        """R, multiplied out: into the gradient's buffer where it is this relevance's own, else into a new one."""
        if not (self.input.is_contiguous() and self.gradient.is_contiguous()):  # moved as views
            if self.activation == "identity":
                return self.input * self.gradient
            out = torch.empty(self.gradient.shape, dtype=self.gradient.dtype)
            native.multiply(self.input.contiguous(), self.gradient.contiguous(), out, activation_a=self.activation)
            return out
        out = self.gradient if self.owned else torch.empty_like(self.gradient)
        native.multiply(self.input, self.gradient, out, activation_a=self.activation)
        return out


def multiplied(r: Any) -> Any:
    """Relevance as a tensor: factored relevance multiplied out, anything else as it is."""
    return r.tensor() if isinstance(r, Factored) else r


def summed(a: Factored, b: Factored) -> Factored | None:
    """a + b as one Factored where both have the same input and activation (the gradients added), else None."""
    if a.input is not b.input or a.activation != b.activation or a.gradient.shape != b.gradient.shape:
        return None
    at_output = a.at_output and b.at_output
    for own, other in ((a, b), (b, a)):
        if own.owned and own.gradient.is_contiguous():
            own.gradient.add_(other.gradient)
            return dataclasses.replace(own, at_output=at_output)
    return dataclasses.replace(a, gradient=a.gradient + b.gradient, owned=True, at_output=at_output)
