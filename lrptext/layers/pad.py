"""Padding (F.pad and the nn pad modules): each output value is an input value or the fill constant, so the
relevance is routed back to the input values it came from (reflected and replicated copies add up at their
source); relevance at constant fill positions stays there, as a bias's does."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from lrptext.graph.ir import LayerKind, Node


class Pad(LayerKind):
    name = "pad"
    modules = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ReflectionPad1d,
               nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d, nn.CircularPad1d, nn.CircularPad2d)
    functions = frozenset({F.pad})
    keeps_input = True

    def default_rule(self, node: Node) -> Any:
        return "routed back (padding removed)"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        return state.routed(node, lambda y: r)


PAD = Pad()
