"""Matrix products (torch.matmul, @, bmm): of two computed tensors, as attention's Q Kᵀ and A·V in eager
attention, they take the composite's "attention" rule; by a constant matrix, the Norm rule (the ε-rule of a linear
map without a bias).

- AttnLRP: the uniform rule, each operand half of every term's share and no stabiliser:
  R(a) = ½ a ⊙ (G bᵀ), R(b) = ½ b ⊙ (aᵀ G) with G = R / (a b) (0 where R = 0).
- CP-LRP: an operand computed by a softmax (the attention probabilities, through dropout) is a constant, and the
  other takes all: R(b) = b ⊙ (aᵀ G); without one, the uniform rule.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import CONSTANT, LayerKind, Node
from lrptext.rules import CPLRP, AttnLRP, Norm


def quotient(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the numerator is 0 (no relevance to divide)."""
    return torch.where(numerator == 0, torch.zeros_like(numerator), numerator / denominator)


def _computed(a: Any) -> bool:
    return isinstance(a, Node) and a.kind is not CONSTANT


def from_softmax(a: Node) -> bool:
    """The operand is a softmax's output, possibly through dropout or a dtype conversion."""
    from lrptext.layers.identity import IDENTITY
    from lrptext.layers.softmax import SOFTMAX

    while a.kind is IDENTITY and a.args and isinstance(a.args[0], Node):
        a = a.args[0]
    return a.kind is SOFTMAX


class Product(LayerKind):
    name = "product"
    functions = frozenset({torch.matmul, operator.matmul, torch.bmm, aten.matmul.default, aten.bmm.default})
    methods = frozenset({"matmul", "bmm"})
    slot = "attention"
    rules = (AttnLRP, CPLRP)

    def capture_call(self, node: Node) -> LayerKind:
        if len(node.args) != 2 or node.kwargs:
            return self
        return self if all(_computed(a) for a in node.args) else CONSTANT_PRODUCT

    def attention_output(self, node: Node) -> bool:
        return any(isinstance(a, Node) and from_softmax(a) for a in node.args)  # A·V in eager attention

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        (a, b), _ = state.arguments(node)
        g = quotient(r, a @ b)
        left, right = node.args
        carrying = state.carrying_inputs(node)
        if len(carrying) == 1:  # the other operand is a mask or a weight: a linear map, all relevance to this one
            if carrying[0] is left:
                return [(left, a * (g @ b.transpose(-2, -1)))]
            return [(right, b * (a.transpose(-2, -1) @ g))]
        if isinstance(rule, CPLRP) and (from_softmax(left) or from_softmax(right)):
            if from_softmax(left):
                return [(left, torch.zeros_like(a)), (right, b * (a.transpose(-2, -1) @ g))]
            return [(left, a * (g @ b.transpose(-2, -1))), (right, torch.zeros_like(b))]
        return [(left, 0.5 * a * (g @ b.transpose(-2, -1))), (right, 0.5 * b * (a.transpose(-2, -1) @ g))]


class ConstantProduct(LayerKind):
    """A product with a constant matrix: a linear map without a bias."""

    name = "constant_product"
    rules = (Norm,)

    def default_rule(self, node: Node) -> Any:
        return Norm()


PRODUCT = Product()
CONSTANT_PRODUCT = ConstantProduct()
