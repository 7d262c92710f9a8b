"""Multiplication or division by a constant (or by a statistic held constant, as F.normalize divides by a norm),
and negation: relevance passes to the operand that carries it."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch.ops import aten

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import LayerKind, Node

_DIVISIONS = frozenset({operator.truediv, torch.div, aten.div.Tensor, aten.div.Scalar})


class Scale(LayerKind):
    name = "scale"
    functions = frozenset({operator.mul, torch.mul, operator.neg, torch.neg, aten.mul.Tensor, aten.mul.Scalar,
                           aten.neg.default, F.normalize}) | _DIVISIONS
    methods = frozenset({"mul", "div", "neg"})
    keeps_input = True

    def default_rule(self, node: Node) -> Any:
        return "passes to the non-constant operand"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        carrying = state.carrying_inputs(node)
        divides = node.call in _DIVISIONS or node.op.rstrip("_") == "Tensor.div"
        if len(carrying) != 1 or (divides and node.args[0] is not carrying[0]):
            raise UnsupportedLayerError(
                f"{node.op} at '{node.qualified_name}' multiplies or divides relevance-carrying tensors; lrptext "
                "passes relevance through multiplication by constants only (gating and attention need their own rule)")
        return [(carrying[0], r.sum_to_size(state.shape(carrying[0])))]  # undo broadcasting


SCALE = Scale()
