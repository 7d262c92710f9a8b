"""Additions and subtractions (residual connections, bias additions): the Norm rule splits the relevance in
proportion to each summand's contribution."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node
from lrptext.rules import Norm


class Add(LayerKind):
    name = "add"
    rules = (Norm,)
    functions = frozenset({operator.add, torch.add, operator.sub, torch.sub, aten.add.Tensor, aten.sub.Tensor,
                           aten.add.Scalar, aten.sub.Scalar})
    methods = frozenset({"add", "sub"})
    keeps_input = True  # a shift by a constant; a sum of two computed values mixes them (Graph.first_layers)

    def default_rule(self, node: Node) -> Any:
        return Norm()


ADD = Add()
