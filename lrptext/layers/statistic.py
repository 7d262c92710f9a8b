"""Statistics of a tensor that a rule holds constant: vector norms (the divisor of an L2 normalisation, as in a
sentence encoder's pooled output). No relevance flows into one, so dividing by it passes relevance unchanged (the
identity rule on 1/norm, as LayerNorm's on 1/σ)."""

from __future__ import annotations

from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node


class Statistic(LayerKind):
    name = "statistic"
    functions = frozenset({torch.norm, torch.linalg.vector_norm, torch.linalg.norm, aten.linalg_vector_norm.default,
                           aten.norm.ScalarOpt_dim})
    methods = frozenset({"norm"})
    carries = False
    holds_constant = True

    def default_rule(self, node: Node) -> Any:
        return "held constant (no relevance flows into it)"


STATISTIC = Statistic()
