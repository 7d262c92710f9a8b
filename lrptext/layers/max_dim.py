"""torch.max(x, dim) and amax over one dimension (max over time in a text CNN): winner-take-all. Ties go where the
operation's own gradient sends them, so that LRP-0 stays gradient × input on ReLU/max networks: amax shares a tie
equally among the tied maxima (a phrase repeated in a document produces them); torch.max(x, dim), which returns
the index of one maximum, gives it all to that one, the first. `.values` or `[0]` of torch.max's result is an item
of it: relevance passes to it unchanged."""

from __future__ import annotations

from typing import Any

import torch
from torch.ops import aten

from lrptext import kernels
from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind


def _max_dim_signature(input, dim=None, keepdim=False):  # torch.max / amax / Tensor.max
    pass


class MaxDim(LayerKind):
    name = "max_dim"
    functions = frozenset({torch.max, torch.amax, aten.max.dim, aten.amax.default})
    methods = frozenset({"max", "amax"})
    tuple_output = True

    def capture_call(self, node: Node) -> LayerKind:
        bound = bind(node, _max_dim_signature)
        if bound is None:
            node.hint = f"{node.op} with these arguments has no rule; take the maximum over one dimension (dim=)"
            return UNSUPPORTED
        dim, keepdim = bound["dim"], bound["keepdim"]
        if isinstance(dim, (tuple, list)) and len(dim) == 1:
            dim = dim[0]
        if isinstance(dim, Node) or isinstance(keepdim, Node):
            node.hint = f"{node.op} of two tensors (an element-wise maximum) has no rule"
            return UNSUPPORTED
        if not isinstance(dim, int):
            node.hint = (f"{node.op} without one dimension (a maximum over all elements, or over several dimensions) "
                         "has no rule; take the maximum over one dimension at a time with dim=")
            return UNSUPPORTED
        shared = node.call in (torch.amax, aten.amax.default) or node.op in ("Tensor.amax",)
        node.params = {"dim": dim, "keepdim": bool(keepdim), "shared_ties": shared}
        return self

    def default_rule(self, node: Node) -> Any:
        return f"winner-take-all (ties: {'shared' if node.params.get('shared_ties') else 'first maximum'})"

    def item(self, node: Node) -> LayerKind | None:
        from lrptext.layers.meta import META

        return ITEM if node.args[1] == 0 else META  # [0] of torch.max(x, dim) is its values, [1] its indices

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        dim = node.params["dim"]
        if node.params["keepdim"]:
            r = r.squeeze(dim)
        x = state.values[node.args[0].name]
        if node.params["shared_ties"]:
            tied = x == x.amax(dim, keepdim=True)
            share = r.unsqueeze(dim) / tied.sum(dim, keepdim=True)
            return [(node.args[0], torch.where(tied, share, torch.zeros_like(share)))]
        return [(node.args[0], kernels.global_max_relevance(x, r, dim=dim, **state.kernel_options))]


class Item(LayerKind):
    name = "item"

    def default_rule(self, node: Node) -> Any:
        return "routed back"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        return [(node.args[0], r)]


MAX_DIM = MaxDim()
ITEM = Item()
