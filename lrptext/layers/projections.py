"""A transformer's query, key and value projections folded into its attention's relevance step.

Attention reads Q, K and V as views (heads split off by a reshape and a transpose) of dense layers' outputs
z_p = x W_pᵀ + b_p over one input x, and under AttnLRP and CP-LRP each of those layers takes the epsilon rule:
R_x = x ⊙ Σ_p (R_p / st(z_p)) W_p. In gradient form attention's C++ kernel writes R_p / p; it writes the quotient
R_p / st(p) instead at no cost (it reads p anyway), and the products then add into the relevance pending at x in
torch's BLAS: the projections' passes over their outputs and the Python steps of the projections and their
reshapes (nine of a BERT layer's nodes) are left out. The result is what those steps compute, to the bit.

Taken only where that holds: each operand that receives relevance is a view of all of a dense layer's output,
every element once and its rows whole, through reshapes and transposes alone, with nothing else reading the layer
or the views on the way; the layers share their input and take Epsilon with one ε; their products would run in
torch's BLAS (dispatch.epsilon_in_torch); the relevance already pending at the input is one the products can add
to as the layers' steps would (RelevancePass.accumulator), and no other reader of the input lies between the
layers and attention (its share would be added in another order); and the pass records no per-layer relevance,
redistributes no bias share and is not locating a NaN (each of those reads every node's own step). Elsewhere
the layers take their own steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from lrptext.graph.ir import Graph, Node
from lrptext.kernels import dispatch
from lrptext.layers import linear
from lrptext.layers.dense import DENSE
from lrptext.layers.move import MOVE
from lrptext.layers.reshape import RESHAPE
from lrptext.rules import Epsilon


@dataclass(frozen=True)
class Projection:
    layer: Node  # the dense layer whose output the operand views
    views: tuple[Node, ...]  # the reshapes and transposes from its output to the operand


@dataclass(frozen=True)
class _Layout:
    """What the graph alone says, worked out once per graph: each attention node's projections, the nodes that
    read each node's value (not only its shape) and each node's place in the graph."""

    projections: dict[str, tuple[Projection | None, ...]]
    readers: dict[str, list[Node]]
    positions: dict[str, int]


def _layout(graph: Graph, attention: Node) -> _Layout:
    layout = graph.__dict__.get("_projections")
    if layout is None:
        readers: dict[str, list[Node]] = {n.name: [] for n in graph.nodes}
        for n in graph.nodes:
            for name in dict.fromkeys(a.name for a in n.kind.data_inputs(n)):
                readers[name].append(n)
        layout = _Layout({}, readers, {n.name: i for i, n in enumerate(graph.nodes)})
        for n in graph.nodes:
            if n.kind is attention.kind:
                layout.projections[n.name] = tuple(_projection(a, readers) for a in n.args[:3])
        graph.__dict__["_projections"] = layout
    return layout


def _projection(operand: Any, readers: dict[str, list[Node]]) -> Projection | None:
    views: list[Node] = []
    n = operand
    while isinstance(n, Node) and n.kind in (RESHAPE, MOVE) and n.args and isinstance(n.args[0], Node):
        views.append(n)
        n = n.args[0]
    if not isinstance(n, Node) or n.kind is not DENSE or any(len(readers[m.name]) != 1 for m in (n, *views)):
        return None
    return Projection(n, tuple(views))


def _whole_view(operand: torch.Tensor, z: torch.Tensor) -> bool:
    """Whether `operand` is a rearranging view of all of the contiguous `z`, every element once, with rows whole
    (the kernel writes rows): the same memory from the same place, strides that order a dense block (a
    permutation of a contiguous layout), the last one 1."""
    if (not z.is_contiguous() or operand.numel() != z.numel() or operand.storage_offset() != z.storage_offset()
            or operand.untyped_storage().data_ptr() != z.untyped_storage().data_ptr()
            or (operand.shape[-1] != 1 and operand.stride(-1) != 1)):
        return False
    expected = 1
    for size, stride in sorted(zip(operand.shape, operand.stride()), key=lambda p: p[1]):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


@dataclass
class Folded:
    """The projections of the operands that receive relevance, ready to take attention's quotients."""

    input: Node
    pending: Any  # the relevance pending at the input that the products add to (RelevancePass.accumulator)
    epsilon: float
    parts: list[tuple[Projection, torch.Tensor]]  # each with the buffer that takes its quotients, shaped like z
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # what the kernel writes: views of those buffers

    def relevance(self, state: Any) -> list[tuple[Node, Any]]:
        """R at the shared input, added to what is pending there (in place where the pass owns it)."""
        x = state.values[self.input.name]
        rows = x.reshape(-1, x.shape[-1])
        pending = self.pending
        rel = pending.view(rows.shape) if isinstance(pending, torch.Tensor) else pending
        for projection, quotients in self.parts:
            weight = state.layer(projection.layer).weight
            rel = dispatch.from_quotient(rows, weight, quotients.view(rows.shape[0], -1), add_to=rel, factored=True)
            for n in (projection.layer, *projection.views):  # never reached by the pass: freed here
                state.values.discard(n.name)
        if isinstance(pending, torch.Tensor):  # relevance multiplied out before: added to in place
            rel = pending
        elif rel.input is not x:
            rel = dataclasses.replace(rel, input=x, gradient=rel.gradient.view(x.shape))
        if pending is not None:
            state.pending[self.input.name] = rel
        return [(self.input, rel)]


def fold(node: Node, state: Any, operands: tuple[torch.Tensor, ...], receiving: tuple[int, ...]) -> Folded | None:
    """The attention node's projections folded into its step (module docstring), or None where it does not hold."""
    if not state.fuse or state.bias_factor or state.on_relevance is not None:
        return None
    layout = _layout(state.graph, node)
    chosen = [layout.projections[node.name][i] for i in receiving]
    if any(p is None for p in chosen):
        return None
    # in the pass's order (later layers first), so that the products add up as the layers' own steps would
    order = sorted(range(len(chosen)), key=lambda j: -layout.positions[chosen[j].layer.name])
    source = chosen[0].layer.args[0]
    if (not isinstance(source, Node) or any(p.layer.args[0] is not source for p in chosen)
            or len({p.layer.name for p in chosen}) != len(chosen)):
        return None
    first, last = layout.positions[chosen[order[-1]].layer.name], layout.positions[node.name]
    layers = {p.layer.name for p in chosen}
    if any(first < layout.positions[r.name] < last and r.name not in layers for r in layout.readers[source.name]):
        return None  # another reader's share would reach the input between the projections' in the pass
    epsilons = set()
    for p in chosen:
        rule = state.rules.get(p.layer.name)
        if (type(rule) is not Epsilon or linear.embedding_source(state, p.layer) is not None
                or linear.activation_read_by_rule(state, p.layer, rule, tuple(dispatch.INPUT_ACTIVATIONS)) is not None):
            return None
        epsilons.add(rule.epsilon)
    if len(epsilons) != 1:
        return None
    x = state.values[source.name]
    if not x.is_contiguous() or x.dim() < 2:
        return None
    rows = x.reshape(-1, x.shape[-1])
    for i, p in zip(receiving, chosen):
        z = state.values[p.layer.name]
        if (not dispatch.epsilon_in_torch(state.implementation, state.rules[p.layer.name], rows,
                                          state.layer(p.layer).weight)
                or z.dtype != x.dtype or not _whole_view(operands[i], z)):
            return None
    pending = state.accumulator(source, x, x, factored=True)
    if pending is None and source.name in state.pending:
        return None  # (multiplied out and summed by the pass, after the products added up: another rounding)
    # what the kernel writes: rows of the buffers laid out like z (the others, zeros of CP-LRP's Q and K, anywhere)
    outputs: list[torch.Tensor] = [torch.empty(a.shape, dtype=a.dtype) for a in operands]
    parts = []
    for j in order:
        i, p = receiving[j], chosen[j]
        buffer = torch.empty_like(state.values[p.layer.name])
        outputs[i] = buffer.as_strided(operands[i].shape, operands[i].stride())
        parts.append((p, buffer))
    return Folded(source, pending, epsilons.pop(), parts, tuple(outputs))
