"""Softmax inside a model (eager attention's probabilities), which takes the composite's "attention" rule:

- AttnLRP: R_in = x ⊙ (R_out − s ⊙ Σ R_out) along the softmax's dimension (gradient × input through it; it keeps
  back a bias-like share, which `delta` reports). Where x is −inf or very negative (a masked score), R_out is 0.
- CP-LRP: the probabilities are constants; no relevance reaches the scores.

A softmax at the end of a classifier has no place in an explanation: explain the logits instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.ops import aten

from lrptext import kernels
from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind
from lrptext.rules import CPLRP, AttnLRP, Norm, Pass


def _signature(input, dim=None, _stacklevel=3, dtype=None):  # F.softmax
    pass


def _aten_signature(input, dim, half_to_float=False):  # aten._softmax, aten.softmax.int
    pass


class Softmax(LayerKind):
    name = "softmax"
    modules = (nn.Softmax,)
    functions = frozenset({F.softmax, torch.softmax, aten.softmax.int, aten._softmax.default})
    methods = frozenset({"softmax"})
    slot = "attention"
    rules = (AttnLRP, CPLRP, Pass, Norm)
    without_rule = ("explain the logits: drop the softmax from the model's forward (a softmax inside attention takes "
                    "composite='attnlrp' or 'cp_lrp')")

    def capture_module(self, node: Node, module: Any) -> None:
        node.params = {"dim": module.dim}

    def capture_call(self, node: Node) -> LayerKind:
        signature = _aten_signature if isinstance(node.call, torch._ops.OpOverload) else _signature
        bound = bind(node, signature)
        if bound is None:
            node.hint = f"{node.op} called with arguments lrptext does not know"
            return UNSUPPORTED
        if not isinstance(bound["dim"], int):
            node.hint = "give the softmax's dimension as a constant (dim=-1)"
            return UNSUPPORTED
        node.params = {"dim": bound["dim"]}
        return self

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        if isinstance(rule, Norm):  # a stand-in from a layer_map
            return state.norm(node, r, rule.stabilizer)
        x = state.values[node.args[0].name]
        if isinstance(rule, CPLRP):
            return [(node.args[0], torch.zeros_like(x))]
        rel = kernels.softmax_relevance(x, state.values[node.name], r, dim=node.params["dim"], **state.kernel_options)
        return [(node.args[0], rel)]


SOFTMAX = Softmax()
