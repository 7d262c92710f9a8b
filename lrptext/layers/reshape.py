"""view, reshape, flatten, squeeze, unsqueeze (and nn.Flatten/Unflatten): relevance is reshaped back."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node


class Reshape(LayerKind):
    name = "reshape"
    modules = (nn.Flatten, nn.Unflatten)
    functions = frozenset({torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, aten.view.default,
                           aten.reshape.default, aten._unsafe_view.default, aten.unsqueeze.default, aten.squeeze.dim,
                           aten.squeeze.default, aten.flatten.using_ints})
    methods = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"})
    keeps_input = True
    takes_factored = True  # both factors reshaped

    def default_rule(self, node: Node) -> Any:
        return "reshaped back"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        return [(node.args[0], r.reshape(state.shape(node.args[0])))]


RESHAPE = Reshape()
