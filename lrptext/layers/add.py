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
from lrptext.kernels import dispatch, native
from lrptext.kernels.factored import QUOTIENT_APART, Factored, multiplied
from lrptext.kernels.torch_backend import stabilize
from lrptext.layers import linear
from lrptext.layers.dense import DENSE
from lrptext.rules import Epsilon, LinearRule, Norm, Pass

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
    takes_factored = True  # y ⊙ g splits into a ⊙ g and b ⊙ g: nothing to compute

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
            return state.norm(node, multiplied(r), rule.stabilizer)
        summands = _summands(state, node, factors)
        y = state.values[node.name]
        if _in_core(state, y, summands):
            found = _share(r, y, rule.stabilizer)
            if found is not None:
                return _shares(state, node, summands, *found)
        r = multiplied(r)
        # the pass's relevance is its own (RelevancePass.run): divided and multiplied in place
        own = r.is_contiguous() and r.shape == y.shape and r.dtype == y.dtype
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


def _summands(state: Any, node: Node, factors: tuple) -> list[tuple[Node, torch.Tensor, Any]]:
    """(summand, its value, its factor) of each summand that carries relevance."""
    (a, b), _ = state.arguments(node)
    carrying = {n.name for n in state.carrying_inputs(node)}
    return [(summand, value, factor) for summand, value, factor in zip(node.args, (a, b), factors)
            if isinstance(summand, Node) and summand.name in carrying]


def _in_core(state: Any, y: torch.Tensor, summands: list) -> bool:
    """Whether the core's steps share the relevance out (_share): CPU values shaped and typed like the sum y."""
    return state.implementation is native and y.is_cpu and all(
        v.shape == y.shape and v.dtype == y.dtype and v.is_contiguous() for _, v, _ in summands)


def _passed_on(state: Any, summand: Node) -> tuple[Node, list[Node]]:
    """The node that takes the relevance a summand gets, through the steps that pass it on unchanged (dropout),
    and those steps (the summand first)."""
    chain, reader = [], summand
    while isinstance(state.rules.get(reader.name), Pass) and len(inputs := state.carrying_inputs(reader)) == 1:
        chain.append(reader)
        reader = inputs[0]
    return reader, chain


def _share(r: Any, y: torch.Tensor, stabilizer: float) -> tuple[torch.Tensor, bool] | None:
    """(g, owned): every summand's relevance is its value times g = R / st(y), computed in the core (torch's steps
    would each wake its thread pool, and allocate); owned where g is the pass's own buffer. Relevance that is
    y ⊙ gradient (factored at this output) has g = gradient without a stabiliser. None where the shapes do not
    allow it."""
    if isinstance(r, Factored):
        gradient = r.gradient_of(y)
        if gradient is not None and not stabilizer and gradient.is_contiguous() and gradient.dtype == y.dtype:
            return gradient, r.owned
        if not (r.gradient.is_contiguous() and r.input.is_contiguous() and r.shape == y.shape
                and r.gradient.dtype == y.dtype):
            return None
        in_place = r.owned and r.activation not in QUOTIENT_APART
        g = r.gradient if in_place else torch.empty_like(r.gradient)
        native.divide_stabilized(r.gradient, y, g, stabilizer, factor=r.input, activation_factor=r.activation)
        return g, True
    if not (r.is_contiguous() and r.shape == y.shape and r.dtype == y.dtype):
        return None
    native.divide_stabilized(r, y, r, stabilizer)  # st(y, 0) = y
    return r, True


def _shares(state: Any, node: Node, summands: list, g: torch.Tensor, owned: bool) -> list[tuple[Node, Any]]:
    """Each summand's relevance value ⊙ g, factored (one g shared by the summands, read only but by its keeper),
    or added to the relevance already pending at the summand where there is some."""
    keeper = _keeper(state, node, summands) if owned else None
    out = []
    for summand, value, factor in summands:
        pending = state.accumulator(summand, value, g)
        if pending is not None:
            native.multiply(value, g, pending, scale=factor, accumulate=True)
            out.append((summand, pending))
        elif factor == 1:
            mine = owned and (len(summands) == 1 or summand is keeper)
            out.append((summand, Factored(value, g, owned=mine, at_output=True)))
        else:
            part = torch.empty_like(g)
            native.multiply(value, g, part, scale=factor)
            out.append((summand, part))
    return out


def _keeper(state: Any, node: Node, summands: list) -> Node | None:
    """The summand of two whose relevance may own the gradient they share (a residual sum's skip connection): the
    earlier in the graph, where the later one is a dense layer under a rule of its own, or passes its relevance on
    unchanged to one (dropout), whose step reads the gradient once and keeps nothing of it, and that step is the
    next to touch it: the dense layer comes after the earlier summand (whose own step would overwrite it), no
    step runs between the sum's and the dense layer's but those passing the relevance on (attention's folded
    projections add to their input's relevance at attention's step), and no other reader of the earlier summand
    comes after the dense layer (the dense layer itself may read it: it adds there after reading the gradient).
    The layers that read the earlier one then add to the gradient in place instead of copying it first."""
    if len(summands) != 2 or state.on_relevance is not None or any(factor != 1 for *_, factor in summands):
        return None
    (a, *_), (b, *_) = summands
    return state.planned(("keeper", node.name), lambda: _earlier_keeps(state, node, a, b))


def _earlier_keeps(state: Any, node: Node, a: Node, b: Node) -> Node | None:
    """_keeper's answer for the carrying summands a and b, from the graph and the rules alone."""
    positions = state.graph.positions
    if a.name == b.name:
        return None
    later, earlier = (a, b) if positions[a.name] > positions[b.name] else (b, a)
    reader, passes = _passed_on(state, later)
    chain = {n.name for n in passes}
    if (reader.kind is not DENSE or not isinstance(state.rules.get(reader.name), LinearRule)
            or positions[reader.name] <= positions[earlier.name]):
        return None
    between = state.graph.nodes[positions[reader.name] + 1:positions[node.name]]
    if any(n.name in state.carries and n.name not in chain for n in between):
        return None
    others = [r for r in state.graph.readers[earlier.name] if r is not node]
    return earlier if all(positions[r.name] <= positions[reader.name] for r in others) else None


def dense_summand(state: Any, node: Any) -> tuple[Node, torch.Tensor, float] | None:
    """(the dense layer, its output z, its ε) where `node` is a sum that hands the gradient at its output on to its
    summands as it is (_share) and one summand is, through steps passing relevance on unchanged (dropout), a dense
    layer whose epsilon rule divides that gradient by st(z) before torch's product (dispatch._epsilon_torch_product):
    the step before the sum (LayerNorm's kernel, gradient in cache) may compute the quotient z ⊙ g / st(z) for it.
    The sum is the only reader of that layer's output (and of the steps between), so its relevance is the sum's
    share alone; nothing writes into the gradient before that layer reads it: only the other summand may own it
    (_keeper), and adds to it in place only after that layer's step. None where any of this does not hold."""
    if not isinstance(node, Node) or not state.fuse or state.bias_factor or state.on_relevance is not None:
        return None
    candidates = state.planned(("dense summands", node.name), lambda: _dense_branches(state, node))
    if not candidates:
        return None
    y, summands = state.values[node.name], _summands(state, node, (1, 1))
    if not _in_core(state, y, summands):
        return None
    for summand, reader, epsilon in candidates:
        z, layer = state.values[reader.name], state.layer(reader)
        if (z is not state.values[summand.name] or not z.is_contiguous()
                or linear.embedding_source(state, reader) is not None or layer.prepared[0] is not None
                or not dispatch.epsilon_in_torch(native, state.rules[reader.name], z.reshape(-1, z.shape[-1]),
                                                 layer.weight)):
            continue
        return reader, z, epsilon
    return None


def _dense_branches(state: Any, node: Node) -> list[tuple[Node, Node, float]]:
    """dense_summand's candidates from the graph and the rules alone: (summand, the dense layer it is, or passes
    its relevance on to unchanged, that layer's ε) for a sum under Norm without a stabiliser."""
    rule = state.rules.get(node.name)
    if (node.kind is not ADD or (node.params or {}).get("factors") != (1, 1) or not isinstance(rule, Norm)
            or rule.stabilizer):
        return []
    readers, found = state.graph.readers, []
    for summand in state.carrying_inputs(node):
        reader, passes = _passed_on(state, summand)
        layer_rule = state.rules.get(reader.name)
        if (all(len(readers[n.name]) == 1 for n in (*passes, reader)) and reader.kind is DENSE
                and type(layer_rule) is Epsilon):
            found.append((summand, reader, layer_rule.epsilon))
    return found


ADD = Add()
