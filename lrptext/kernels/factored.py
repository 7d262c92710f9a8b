"""Relevance held as two factors not yet multiplied: R = act(input) ⊙ gradient.

A dense layer's epsilon rule ends in a product with its input, R_in = x ⊙ (s W); the next layer's begins with a
quotient by its own output, R / st(z). Where an activation with the identity rule lies between the two (Linear ->
GELU -> Linear), x = act(z) of that next layer's z: the first layer hands over the factors (z, s W, "gelu") and
the second divides act(z) ⊙ (s W) by st(z) in one pass over the wide intermediate instead of two
(lrptext.kernels.dispatch.dense). Anything else that receives factored relevance multiplies it out first."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lrptext.kernels import native


@dataclass(frozen=True)
class Factored:
    """R = act(input) ⊙ gradient on the CPU. input: a value of the forward pass (read, never written); gradient:
    this relevance's own buffer; activation: "identity" or a name of multiply's activation_a."""

    input: torch.Tensor
    gradient: torch.Tensor
    activation: str = "identity"

    @property
    def shape(self) -> torch.Size:
        return self.gradient.shape

    def reshape(self, *shape: int) -> Factored:
        return Factored(self.input.reshape(*shape), self.gradient.reshape(*shape), self.activation)

    def tensor(self) -> torch.Tensor:
        """R, multiplied out into the gradient's buffer."""
        native.multiply(self.input, self.gradient, self.gradient, activation_a=self.activation)
        return self.gradient
