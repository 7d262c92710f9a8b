"""view, reshape, flatten, squeeze, unsqueeze (and nn.Flatten/Unflatten): relevance is reshaped back."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node

# state.saved's key of the memory of the values an explanation lays out otherwise than the model does (projections
# computed as one product, lrptext/layers/projections.py): a view that no view of them can take copies them
RELAID = "relaid values"


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

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        try:
            return node.call(*args, **kwargs)
        except RuntimeError:
            # a view of a value that lrptext lays out otherwise than the model (a column block of projections
            # computed as one product) and no view can rearrange: the same values from a contiguous copy, as the
            # model's own contiguous output is viewed (any other failing view fails as in the model)
            x = args[0] if args else None
            if not (isinstance(x, torch.Tensor) and x.untyped_storage().data_ptr()
                    in state.saved.get(RELAID, ())):
                raise
            return node.call(x.contiguous(), *args[1:], **kwargs)

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        return [(node.args[0], r.reshape(state.shape(node.args[0])))]


RESHAPE = Reshape()
