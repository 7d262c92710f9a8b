"""Operations that return their input's values: dropout (the identity in eval semantics), nn.Identity,
contiguous/clone/detach, and dtype or device conversions. Relevance passes through unchanged (Pass)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node
from lrptext.rules import Norm, Pass

_IDENTITY_FUNCTIONS = frozenset({F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, aten.dropout.default,
                                 aten.clone.default, aten.contiguous.default, aten.alias.default})
_IDENTITY_METHODS = frozenset({"contiguous", "clone", "detach"})


def identity(x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


class Identity(LayerKind):
    name = "identity"
    rules = (Pass, Norm)
    modules = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
    functions = _IDENTITY_FUNCTIONS | {aten.to.dtype, aten.to.device, aten.to.dtype_layout, aten.type_as.default,
                                       aten._to_copy.default}
    methods = _IDENTITY_METHODS | {"float", "double", "to", "type_as"}
    keeps_input = True

    def capture_module(self, node: Node, module: Any) -> None:
        node.call = identity

    def capture_call(self, node: Node) -> LayerKind:
        if node.call in _IDENTITY_FUNCTIONS or node.op.removeprefix("Tensor.").rstrip("_") in _IDENTITY_METHODS:
            node.call = identity
        return self

    def default_rule(self, node: Node) -> Any:
        return Pass()


IDENTITY = Identity()
