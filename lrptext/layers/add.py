"""Additions and subtractions (residual connections, bias additions): the Norm rule splits the relevance in
proportion to each summand's contribution, R_i = c_i R / st(y) for y = Σ c_i with c = (a, α·b) (−α·b for a
subtraction), summed over the axes a summand was broadcast along. A constant summand's share is absorbed (`delta`
reports it)."""

from __future__ import annotations

import operator
from numbers import Number
from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node, bind
from lrptext.kernels import native
from lrptext.kernels.torch_backend import stabilize
from lrptext.rules import Norm

_SUBTRACTIONS = frozenset({operator.sub, torch.sub, aten.sub.Tensor, aten.sub.Scalar})


def _signature(input, other, alpha=1):
    pass


class Add(LayerKind):
    name = "add"
    rules = (Norm,)
    functions = frozenset({operator.add, torch.add, operator.sub, torch.sub, aten.add.Tensor, aten.sub.Tensor,
                           aten.add.Scalar, aten.sub.Scalar})
    methods = frozenset({"add", "sub"})
    keeps_input = True  # a shift by a constant; a sum of two computed values mixes them (Graph.first_layers)

    def capture_call(self, node: Node) -> LayerKind:
        # The summands' factors, known at capture: the relevance step reads them instead of differentiating the
        # call (the engine's generic Norm, which runs it again under autograd, remains for other forms).
        a = bind(node, _signature)
        if a is not None and len(node.args) == 2 and set(node.kwargs) <= {"alpha"} and isinstance(a["alpha"], Number):
            sign = -1 if node.call in _SUBTRACTIONS or node.op in ("Tensor.sub", "Tensor.sub_") else 1
            node.params = {"factors": (1, sign * a["alpha"])}
        return self

    def default_rule(self, node: Node) -> Any:
        return Norm()

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        factors = (node.params or {}).get("factors")
        if factors is None:
            return state.norm(node, r, rule.stabilizer)
        (a, b), _ = state.arguments(node)
        carrying = {n.name for n in state.carrying_inputs(node)}
        summands = [(summand, value, factor) for summand, value, factor in zip(node.args, (a, b), factors)
                    if isinstance(summand, Node) and summand.name in carrying]
        y = state.values[node.name]
        # the pass's relevance is its own (RelevancePass.run): a residual's is divided and multiplied in place,
        # one new tensor instead of three
        own = r.is_contiguous() and r.shape == y.shape and r.dtype == y.dtype
        if own and state.implementation is native and r.is_cpu and all(
                v.shape == y.shape and v.dtype == y.dtype and v.is_contiguous() for _, v, _ in summands):
            return _in_core(state, summands, r, y, rule.stabilizer)
        denominator = stabilize(y, rule.stabilizer) if rule.stabilizer else y
        share = r.div_(denominator) if own else r / denominator
        out = []
        for i, (summand, value, factor) in enumerate(summands):
            if factor != 1:
                value = factor * value
            last = i == len(summands) - 1
            part = share.mul_(value) if own and last and value.shape == share.shape else value * share
            out.append((summand, part.sum_to_size(value.shape)))  # undo broadcasting
        return out


def _in_core(state: Any, summands: list, r: torch.Tensor, y: torch.Tensor,
             stabilizer: float) -> list[tuple[Node, torch.Tensor]]:
    """The same in the core's element-wise steps, on the CPU, for summands shaped like the sum: each share is added
    to the relevance already pending at its summand where there is some (torch's steps would each wake its thread
    pool, and allocate)."""
    native.divide_stabilized(r, y, r, stabilizer)  # st(y, 0) = y
    out = []
    for i, (summand, value, factor) in enumerate(summands):
        pending = state.accumulator(summand, value, r)
        if pending is not None:
            native.multiply(value, r, pending, scale=factor, accumulate=True)
            part = pending
        elif i == len(summands) - 1:
            native.multiply(value, r, r, scale=factor)
            part = r
        else:
            part = torch.empty_like(r)
            native.multiply(value, r, part, scale=factor)
        out.append((summand, part))
    return out


ADD = Add()
