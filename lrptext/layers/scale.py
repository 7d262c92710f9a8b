"""Multiplication or division by a constant (or by a statistic held constant, as F.normalize divides by a norm),
and negation: relevance passes to the operand that carries it.

A product of two relevance-carrying tensors (a gated unit: GLU's act(a) ⊙ b) takes the transformer composites'
attention rule, which they name for this kind: AttnLRP's uniform rule for multiplications (Achtibat et al. 2024)
gives each operand half of the product's relevance, R(a) = R(b) = R / 2, without a stabiliser; CP-LRP treats an
operand computed by a softmax as a constant, as in its attention products. The other composites refuse it."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch.ops import aten

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import LayerKind, Node
from lrptext.layers.product import from_softmax
from lrptext.rules import CPLRP, AttnLRP

_DIVISIONS = frozenset({operator.truediv, torch.div, aten.div.Tensor, aten.div.Scalar})


class Scale(LayerKind):
    name = "scale"
    functions = frozenset({operator.mul, torch.mul, operator.neg, torch.neg, aten.mul.Tensor, aten.mul.Scalar,
                           aten.neg.default, F.normalize}) | _DIVISIONS
    methods = frozenset({"mul", "div", "neg"})
    keeps_input = True
    rules = (AttnLRP, CPLRP)  # for products of two carrying tensors, where a composite names one

    def default_rule(self, node: Node) -> Any:
        return "passes to the non-constant operand"

    def rule_text(self, node: Node, rule: Any, carrying: set[str]) -> str:
        how = _treatment(node, [a for a in self.data_inputs(node) if a.name in carrying], rule)
        if how == "refused":
            return ("REFUSED: a division by a relevance-carrying tensor has no rule in lrptext" if _divides(node) else
                    "REFUSED: a product of two relevance-carrying operands (a gate) takes attnlrp's or cp_lrp's "
                    "uniform rule")
        return {"passes": self.default_rule(node),
                "held": f"{rule!r}: all to the other operand (the first computed by a softmax held constant)",
                "uniform": f"{rule!r}: half to each relevance-carrying operand"}[how]

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        carrying = state.carrying_inputs(node)
        how = _treatment(node, carrying, rule)
        if how == "refused":
            raise UnsupportedLayerError(
                f"{node.op} at '{node.qualified_name}' multiplies or divides relevance-carrying tensors; lrptext "
                "passes relevance through multiplication by constants only; a product of two (a gated unit) takes "
                "the uniform rule of the transformer composites (attnlrp, cp_lrp)")
        if how == "passes":
            return [(carrying[0], r.sum_to_size(state.shape(carrying[0])))]  # undo broadcasting
        if how == "held":  # a constant (the first from a softmax, as product.py's): all to the other
            held = next(i for i, a in enumerate(carrying) if from_softmax(a))
            return [(a, torch.zeros(state.shape(a), dtype=r.dtype, device=r.device) if i == held
                     else r.sum_to_size(state.shape(a))) for i, a in enumerate(carrying)]
        # each operand its own tensor: the pass lets a layer's kernel overwrite the relevance it takes
        return [(a, (0.5 * r).sum_to_size(state.shape(a))) for a in carrying]


def _treatment(node: Node, operands: list[Node], rule: Any) -> str:
    """What the node's step does with its relevance-carrying operands under `rule`, for the step itself and for
    the support table alike: "passes" (a scaling by constants, a division of one by constants), "uniform" (a gate
    under the transformer composites), "held" (CP-LRP's gate with an operand computed by a softmax) or
    "refused"."""
    divides = _divides(node)
    if len(operands) == 2 and not divides and isinstance(rule, (AttnLRP, CPLRP)):
        return "held" if isinstance(rule, CPLRP) and any(from_softmax(a) for a in operands) else "uniform"
    if len(operands) != 1 or (divides and node.args[0] is not operands[0]):
        return "refused"
    return "passes"


def _divides(node: Node) -> bool:
    return node.call in _DIVISIONS or node.op.rstrip("_") == "Tensor.div"


SCALE = Scale()
