"""Sums and means over dimensions: the Norm rule splits the relevance in proportion to each term."""

from __future__ import annotations

from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node
from lrptext.rules import Norm


class Reduce(LayerKind):
    name = "reduce"
    rules = (Norm,)
    functions = frozenset({torch.mean, torch.sum, aten.sum.dim_IntList, aten.sum.default, aten.mean.dim,
                           aten.mean.default})
    methods = frozenset({"mean", "sum"})

    def default_rule(self, node: Node) -> Any:
        return Norm()


REDUCE = Reduce()
