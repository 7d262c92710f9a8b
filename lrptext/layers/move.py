"""permute, transpose, indexing, expand, repeat, torch.cat and torch.stack: relevance is routed back to where each
value came from (the vector-Jacobian product); a concatenation splits it into its pieces' slices."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node, bind
from lrptext.kernels.factored import Factored, multiplied

_CONCATENATIONS = frozenset({torch.cat, torch.concat, torch.concatenate, aten.cat.default})


def _cat_signature(tensors, dim=0):  # torch.cat / torch.concat
    pass


_TRANSPOSES = frozenset({torch.transpose, torch.swapaxes, aten.transpose.int})
_PERMUTES = frozenset({torch.permute, aten.permute.default})


def _axes(node: Node) -> dict[str, Any]:
    """A transpose's two axes or a permutation's order, where they are constants: relevance then moves back by the
    inverse rearrangement itself, not by differentiating the call."""
    method = node.method
    rest = node.args[1:]
    if node.kwargs or not all(isinstance(a, int) or isinstance(a, (list, tuple)) and
                              all(isinstance(i, int) for i in a) for a in rest):
        return {}
    if (node.call in _TRANSPOSES or method in ("transpose", "swapaxes")) and len(rest) == 2:
        return {"transpose": tuple(rest)}
    if node.call in _PERMUTES or method == "permute":
        order = tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else tuple(rest)
        if order and all(isinstance(i, int) for i in order):
            return {"permute": order}
    return {}


class Move(LayerKind):
    name = "move"
    functions = frozenset({torch.permute, torch.transpose, torch.t, torch.swapaxes, torch.stack, operator.getitem,
                           aten.transpose.int, aten.permute.default, aten.t.default, aten.expand.default,
                           aten.slice.Tensor, aten.select.int, aten.index.Tensor, aten.gather.default,
                           aten.expand_as.default}
                          | _CONCATENATIONS)
    methods = frozenset({"permute", "transpose", "t", "swapaxes", "expand", "expand_as", "repeat"})
    keeps_input = True
    takes_factored = True  # transposes and permutations move both factors

    def capture_call(self, node: Node) -> LayerKind:
        from lrptext.layers.meta import META

        source = node.args[0] if node.args else None
        if node.call is operator.getitem and isinstance(source, Node):
            if (kind := source.kind.item(node)) is not None:  # an item of a tuple output
                return kind
            if source.kind is META:  # indexing a shape
                return META
        if node.call in _CONCATENATIONS:
            bound = bind(node, _cat_signature)
            if bound is not None and isinstance(bound["tensors"], (list, tuple)) and isinstance(bound["dim"], int):
                node.params = {"pieces": tuple(bound["tensors"]), "dim": bound["dim"]}
        elif isinstance(source, Node):
            node.params = _axes(node)
        return self

    def default_rule(self, node: Node) -> Any:
        return "routed back (vector-Jacobian product)"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        source = node.args[0]  # (a concatenation's is the list of its pieces)
        if isinstance(r, Factored) and r.activation == "identity" and isinstance(source, Node) and (
                source.name in state.carries):
            if "transpose" in node.params:  # both factors moved back
                return [(source, r.map(lambda t: t.transpose(*node.params["transpose"])))]
            if "permute" in node.params:
                return [(source, r.map(lambda t: _permuted_back(node, t)))]
        r = multiplied(r)
        if "pieces" in node.params and (parts := _cat_parts(node, r, state)) is not None:
            return parts
        if "transpose" in node.params and source.name in state.carries:  # (set only where the source is a node)
            return [(source, r.transpose(*node.params["transpose"]))]
        if "permute" in node.params and source.name in state.carries:
            return [(source, _permuted_back(node, r))]
        return state.routed(node, lambda y: r)


def _permuted_back(node: Node, r: torch.Tensor) -> torch.Tensor:
    order = [i % r.dim() for i in node.params["permute"]]
    return r.permute(*sorted(range(r.dim()), key=order.__getitem__))


def _cat_parts(node: Node, r: Any, state: Any) -> list[tuple[Node, Any]] | None:
    """Each piece's slice of r; None for what the general route handles (torch's legacy empty 1-D pieces)."""
    pieces, dim = node.params["pieces"], node.params["dim"]
    shapes = [state.shape(p) if isinstance(p, Node) else getattr(p, "shape", None) for p in pieces]
    if not all(s is not None and len(s) == r.dim() for s in shapes):
        return None
    parts = r.split([s[dim] for s in shapes], dim)
    return [(p, part) for p, part in zip(pieces, parts) if isinstance(p, Node) and p.name in state.carries]


MOVE = Move()
