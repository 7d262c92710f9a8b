"""A transformer's query, key and value projections folded into its attention's relevance step.

Attention reads Q, K and V as views (heads split off by a reshape and a transpose) of dense layers' outputs
z_p = x W_pᵀ + b_p over one input x, and under AttnLRP and CP-LRP each of those layers takes the epsilon rule:
R_x = x ⊙ Σ_p (R_p / st(z_p)) W_p. In gradient form attention's C++ kernel writes R_p / p; it writes the quotient
R_p / st(p) instead at no cost (it reads p anyway), and the products then add into the relevance pending at x in
torch's BLAS: the projections' passes over their outputs and the Python steps of the projections and their
reshapes (nine of a BERT layer's nodes) are left out. The result is what those steps compute: to the bit where
each product is a layer's own, to the rounding of a sum taken in another order where one product takes a stack's
three (below).

Taken only where that holds: each operand that receives relevance is a view of all of a dense layer's output,
every element once and its rows whole, through reshapes and transposes alone, with nothing else reading the layer
or the views on the way; the layers share their input and take Epsilon with one ε; their products would run in
torch's BLAS (dispatch.epsilon_in_torch); the relevance already pending at the input is one the products can add
to as the layers' steps would (RelevancePass.accumulator), and no other reader of the input lies between the
layers and attention (its share would be added in another order); and the pass records no per-layer relevance,
redistributes no bias share and is not locating a NaN (each of those reads every node's own step). Elsewhere
the layers take their own steps.

The forward pass computes the three projections as one product over their weights stacked (`Stack`): a product
three times as wide runs faster than three, and their outputs are column blocks of it (views whose rows lie the
stacked width apart). The kernel then writes the quotients into blocks of one buffer laid out alike, and where
all three receive relevance (AttnLRP; CP-LRP's value projection alone does) one product over the stacked weights
adds Σ_p (R_p / st(z_p)) W_p to the input's relevance. Products that the C++ core computes (small ones over rows),
and tensors off the CPU, are left to each layer."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lrptext.graph.ir import Graph, LayerKind, Node
from lrptext.kernels import dispatch
from lrptext.layers import linear
from lrptext.layers.dense import DENSE
from lrptext.layers.move import MOVE
from lrptext.layers.reshape import RELAID, RESHAPE
from lrptext.rules import Epsilon


@dataclass(frozen=True)
class Projection:
    layer: Node  # the dense layer whose output the operand views
    views: tuple[Node, ...]  # the reshapes and transposes from its output to the operand


class Stack:
    """Dense layers over one input whose products the forward pass computes as one, over their weights stacked
    (in graph order; all with a bias or none): each layer's output is its block of the stacked output's columns."""

    def __init__(self, layers: tuple[Node, ...]):
        self.layers = layers
        widths = [n.params["weight"].shape[0] for n in layers]
        starts = [sum(widths[:i]) for i in range(len(widths))]
        self.columns = {n.name: (a, a + w) for n, a, w in zip(layers, starts, widths)}  # in the layers' order
        # by compute dtype: the layers' prepared weights, and their weights and biases stacked
        self._kept: dict[torch.dtype, tuple[tuple[Any, ...], torch.Tensor, torch.Tensor | None]] = {}

    def forward(self, node: Node, x: torch.Tensor, state: Any) -> torch.Tensor | None:
        """The layer's output as its block of the stacked product, which the first layer computes; None where the
        layers compute their own (products the C++ core computes, tensors off the CPU)."""
        first = self.layers[0]
        key = ("stacked", first.name)
        if node is first:
            if not x.is_cpu or x.dim() < 2 or (state.core and linear.dense_in_core(state.layer(first).weight, x)):
                return None
            state.saved[key] = y = F.linear(x, *self.weights(state))
            state.saved.setdefault(RELAID, set()).add(y.untyped_storage().data_ptr())
        y = state.saved.get(key)
        if y is None:
            return None
        if node is self.layers[-1]:
            del state.saved[key]
        start, end = self.columns[node.name]
        return y[..., start:end]

    def weights(self, state: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layers' weights (in the compute dtype) and biases stacked, kept for the layers' prepared weights
        they were stacked from (stacking them anew at each explanation took half of what the stacked products
        save); the Explainer prepares its layers again when the parameters change."""
        key = ("stacked weights", self.layers[0].name)
        if key not in state.saved:
            layers = tuple(state.layer(n) for n in self.layers)
            kept = self._kept.get(layers[0].weight.dtype)
            if kept is None or any(a is not b for a, b in zip(kept[0], layers)):
                bias = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
                kept = self._kept[layers[0].weight.dtype] = layers, torch.cat([layer.weight for layer in layers]), bias
            state.saved[key] = kept[1:]
        return state.saved[key]


@dataclass(frozen=True)
class _Layout:
    """What the graph alone says, worked out once per graph: each attention node's projections, and the stacks of
    the projections that share an input."""

    projections: dict[str, tuple[Projection | None, ...]]
    stacks: dict[str, Stack]  # by layer name


def _layout(graph: Graph, attention: LayerKind) -> _Layout:
    return graph.kept("_projections", lambda: _find_layout(graph, attention))


def _find_layout(graph: Graph, attention: LayerKind) -> _Layout:
    layout = _Layout({}, {})
    for n in graph.nodes:
        if n.kind is attention:
            found = layout.projections[n.name] = tuple(_projection(a, graph.readers) for a in n.args[:3])
            layers = sorted({p.layer.name: p.layer for p in found if p is not None}.values(),
                            key=lambda m: graph.positions[m.name])
            if len(layers) == 3 and _stackable(layers) and not any(m.name in layout.stacks for m in layers):
                stack = Stack(tuple(layers))
                layout.stacks.update({m.name: stack for m in layers})
    return layout


def stacks(graph: Graph, attention: LayerKind) -> dict[str, Stack]:
    """The stacks of projections the forward pass computes as one product, by layer name."""
    return _layout(graph, attention).stacks


def _stackable(layers: list[Node]) -> bool:
    """Dense layers over one input whose weights stack: one dtype and device, as many inputs, a bias each or none."""
    weights = [n.params["weight"] for n in layers]
    biases = [n.params.get("bias") for n in layers]
    return (all(n.args and n.args[0] is layers[0].args[0] for n in layers)
            and all(isinstance(w, torch.Tensor) and w.dim() == 2 for w in weights)
            and len({(w.dtype, w.device, w.shape[1]) for w in weights}) == 1
            and (all(b is None for b in biases) or all(isinstance(b, torch.Tensor) for b in biases)))


def _projection(operand: Any, readers: dict[str, list[Node]]) -> Projection | None:
    views: list[Node] = []
    n = operand
    while isinstance(n, Node) and n.kind in (RESHAPE, MOVE) and n.args and isinstance(n.args[0], Node):
        views.append(n)
        n = n.args[0]
    if not isinstance(n, Node) or n.kind is not DENSE or any(len(readers[m.name]) != 1 for m in (n, *views)):
        return None
    return Projection(n, tuple(views))


@functools.lru_cache(maxsize=256)
def _axes(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The (size, stride) of a view's axes by stride, axes of size 1 left out and each axis that continues the one
    before it merged into it: two views with the same axes from the same place read the same elements. (Kept by
    layout: an explanation asks for the same few at every layer.)"""
    axes: list[tuple[int, int]] = []
    for size, stride in sorted(((n, s) for n, s in zip(shape, strides) if n != 1), key=lambda a: a[1]):
        if axes and axes[-1][0] * axes[-1][1] == stride:
            axes[-1] = (axes[-1][0] * size, axes[-1][1])
        else:
            axes.append((size, stride))
    return tuple(axes)


def _whole_view(operand: torch.Tensor, z: torch.Tensor) -> bool:
    """Whether `operand` is a rearranging view of all of `z` (contiguous, or a stacked product's block of columns),
    every element once, with rows whole (the kernel writes rows): the same memory from the same place, the same
    axes up to their order and splitting, the last stride 1."""
    return (operand.numel() == z.numel() and operand.storage_offset() == z.storage_offset()
            and operand.untyped_storage().data_ptr() == z.untyped_storage().data_ptr()
            and (operand.shape[-1] == 1 or operand.stride(-1) == 1)
            and _axes(operand.shape, operand.stride()) == _axes(z.shape, z.stride()))


@functools.lru_cache(maxsize=256)
def _stacked_shape(shape: tuple[int, ...], strides: tuple[int, ...], start: int) -> tuple[int, ...] | None:
    """The shape of the contiguous stacked output whose columns from `start` on a view of `shape` and `strides`
    are, or None where they are not."""
    if len(shape) < 2:
        return None
    whole = (*shape[:-1], strides[-2])
    contiguous = [1] * len(whole)
    for i in range(len(whole) - 2, -1, -1):
        contiguous[i] = contiguous[i + 1] * whole[i + 1]
    return whole if tuple(strides) == tuple(contiguous) and start + shape[-1] <= whole[-1] else None


@dataclass
class Folded:
    """The projections of the operands that receive relevance, ready to take attention's quotients."""

    input: Node
    pending: Any  # the relevance pending at the input that the products add to (RelevancePass.accumulator)
    epsilon: float
    parts: list[tuple[Projection, torch.Tensor]]  # each with the buffer that takes its quotients, laid out like z
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # what the kernel writes: views of those buffers

    # a stack's quotients in one buffer with its stacked weights, where the parts are the whole stack: one product
    stacked: tuple[torch.Tensor, Stack] | None = None

    def relevance(self, state: Any) -> list[tuple[Node, Any]]:
        """R at the shared input, added to what is pending there (in place where the pass owns it)."""
        x = state.values[self.input.name]
        rows = x.reshape(-1, x.shape[-1])
        pending = self.pending
        rel = pending.view(rows.shape) if isinstance(pending, torch.Tensor) else pending
        if self.stacked is not None:
            quotients, stack = self.stacked
            products = [(quotients, stack.weights(state)[0])]
        else:
            products = [(quotients, state.layer(p.layer).weight) for p, quotients in self.parts]
        for quotients, weight in products:
            rel = dispatch.from_quotient(rows, weight, quotients.view(rows.shape[0], -1), add_to=rel, factored=True)
        for projection, _ in self.parts:  # never reached by the pass: freed here
            for n in (projection.layer, *projection.views):
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
    planned = state.planned(("fold", node.name, receiving), lambda: _foldable(node, state, receiving))
    if planned is None:
        return None
    chosen, order, epsilon = planned
    for p in chosen:  # (whether the layer's input activation was dropped depends on its size)
        if linear.activation_read_by_rule(state, p.layer, state.rules[p.layer.name],
                                          tuple(dispatch.INPUT_ACTIVATIONS)) is not None:
            return None
    layout = _layout(state.graph, node.kind)
    source = chosen[0].layer.args[0]
    x = state.values[source.name]
    if not x.is_contiguous() or x.dim() < 2:
        return None
    rows = x.reshape(-1, x.shape[-1])
    # where each z lies: its own contiguous tensor, or columns from `start` of a stacked output of `shape`
    places: dict[str, tuple[int, tuple[int, ...] | None]] = {}
    for i, p in zip(receiving, chosen):
        z = state.values[p.layer.name]
        if (not dispatch.epsilon_in_torch(state.implementation, state.rules[p.layer.name], rows,
                                          state.layer(p.layer).weight)
                or z.dtype != x.dtype or not _whole_view(operands[i], z)):
            return None
        if z.is_contiguous():
            places[p.layer.name] = 0, None
        elif (stack := layout.stacks.get(p.layer.name)) is not None and (
                shape := _stacked_shape(z.shape, z.stride(), start := stack.columns[p.layer.name][0])) is not None:
            places[p.layer.name] = start, shape
        else:
            return None
    pending = state.accumulator(source, x, x, factored=True)
    if pending is None and source.name in state.pending:
        return None  # (multiplied out and summed by the pass, after the products added up: another rounding)
    # what the kernel writes: rows of buffers laid out like z, a stack's in one laid out like its output (the
    # others, zeros of CP-LRP's Q and K, anywhere)
    outputs: list[torch.Tensor | None] = [None if i in receiving else torch.empty(a.shape, dtype=a.dtype)
                                          for i, a in enumerate(operands)]  # (the receiving ones' below)
    stacked: dict[int, torch.Tensor] = {}  # by the stacked output's memory
    parts = []
    for j in order:
        i, p = receiving[j], chosen[j]
        z = state.values[p.layer.name]
        start, shape = places[p.layer.name]
        if shape is None:
            whole = torch.empty_like(z)
        elif (whole := stacked.get(z.untyped_storage().data_ptr())) is None:
            whole = stacked[z.untyped_storage().data_ptr()] = torch.empty(shape, dtype=z.dtype)
        outputs[i] = whole.as_strided(operands[i].shape, operands[i].stride(), start)
        parts.append((p, whole.as_strided(z.shape, z.stride(), start)))
    folded = Folded(source, pending, epsilon, parts, tuple(outputs))
    stack = layout.stacks.get(chosen[0].layer.name)
    if len(stacked) == 1 and stack is not None and {p.layer.name for p in chosen} == set(stack.columns):
        folded.stacked = next(iter(stacked.values())), stack
    return folded


def _foldable(node: Node, state: Any, receiving: tuple[int, ...]) -> tuple[list[Projection], list[int], float] | None:
    """What fold() takes from the graph and the rules alone: the projections of the receiving operands, in the
    pass's order, and their one ε; None where those do not allow the fold."""
    chosen = [_layout(state.graph, node.kind).projections[node.name][i] for i in receiving]
    if any(p is None for p in chosen):
        return None
    # in the pass's order (later layers first), so that the products add up as the layers' own steps would
    positions = state.graph.positions
    order = sorted(range(len(chosen)), key=lambda j: -positions[chosen[j].layer.name])
    source = chosen[0].layer.args[0]
    if (not isinstance(source, Node) or any(p.layer.args[0] is not source for p in chosen)
            or len({p.layer.name for p in chosen}) != len(chosen)):
        return None
    first, last = positions[chosen[order[-1]].layer.name], positions[node.name]
    layers = {p.layer.name for p in chosen}
    if any(first < positions[r.name] < last and r.name not in layers for r in state.graph.readers[source.name]):
        return None  # another reader's share would reach the input between the projections' in the pass
    epsilons = set()
    for p in chosen:
        rule = state.rules.get(p.layer.name)
        if type(rule) is not Epsilon or linear.embedding_source(state, p.layer) is not None:
            return None
        epsilons.add(rule.epsilon)
    return (chosen, order, epsilons.pop()) if len(epsilons) == 1 else None
