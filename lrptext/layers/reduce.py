"""Sums and means over dimensions: the Norm rule splits the relevance in proportion to each term,
R_i = x_i (∂y/∂x_i) R / st(y) with ∂y/∂x_i = 1 for a sum and 1/n for a mean of n terms."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node, bind
from lrptext.kernels.torch_backend import stabilize
from lrptext.rules import Norm

_MEANS = frozenset({torch.mean, aten.mean.dim, aten.mean.default})


def _signature(input, dim=None, keepdim=False, *, dtype=None):
    pass


class Reduce(LayerKind):
    name = "reduce"
    rules = (Norm,)
    functions = frozenset({torch.mean, torch.sum, aten.sum.dim_IntList, aten.sum.default, aten.mean.dim,
                           aten.mean.default})
    methods = frozenset({"mean", "sum"})

    def capture_call(self, node: Node) -> LayerKind:
        # The reduced dimensions, known at capture: the relevance step spreads the relevance back over them instead
        # of differentiating the call (the engine's generic Norm, which runs it again under autograd, remains for
        # forms that do not fit, e.g. a dtype given).
        a = bind(node, _signature)
        dim = None if a is None else a["dim"]
        if a is not None and a["dtype"] is None and isinstance(a["keepdim"], bool) and (
                dim is None or isinstance(dim, int) or (isinstance(dim, (list, tuple))
                                                        and all(isinstance(d, int) for d in dim))):
            mean = node.call in _MEANS or node.op == "Tensor.mean"
            node.params = {"dim": (dim,) if isinstance(dim, int) else dim, "keepdim": a["keepdim"], "mean": mean}
        return self

    def default_rule(self, node: Node) -> Any:
        return Norm()

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        p = node.params or {}
        source = node.args[0]
        if "dim" not in p or not isinstance(source, Node) or source.name not in state.carries:
            return state.norm(node, r, rule.stabilizer)
        x, y = state.values[source.name], state.values[node.name]
        # no dims (None, or aten's empty list) reduce over all of them
        dims = sorted({d % x.ndim for d in p["dim"]}) if p["dim"] else list(range(x.ndim))
        share = r / (stabilize(y, rule.stabilizer) if rule.stabilizer else y)
        if not p["keepdim"]:
            for d in dims:
                share = share.unsqueeze(d)
        if p["mean"]:
            share = share / math.prod(x.shape[d] for d in dims)
        return [(source, x * share)]


REDUCE = Reduce()
