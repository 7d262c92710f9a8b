"""Shapes, sizes, comparisons and masks: values that carry no relevance. Relevance that would have to cross one
is an error, as lrptext treats it as metadata."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node


class Meta(LayerKind):
    name = "meta"
    functions = frozenset({getattr, len, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
                           torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge, torch.arange, torch.zeros_like,
                           torch.ones_like, torch.full_like, torch.logical_not, operator.invert, operator.floordiv,
                           aten.sym_size.int, aten.arange.default, aten.arange.start, aten.arange.start_step,
                           aten.ge.Scalar, aten.gt.Scalar, aten.le.Scalar, aten.lt.Scalar, aten.eq.Scalar,
                           aten.ne.Scalar, aten.ge.Tensor, aten.eq.Tensor, aten.ne.Tensor, aten.__and__.Tensor,
                           aten.__or__.Tensor, aten.bitwise_not.default, aten.logical_not.default,
                           aten.new_ones.default, aten.new_zeros.default, aten.full.default,
                           aten.zeros_like.default, aten.ones_like.default, aten.cumsum.default,
                           aten._assert_tensor_metadata.default, aten.scalar_tensor.default})
    methods = frozenset({"size", "dim", "numel", "eq", "ne", "lt", "le", "gt", "ge", "long", "int", "bool",
                         "new_zeros", "new_ones", "new_full", "logical_not"})
    carries = False

    def data_inputs(self, node: Node) -> list[Node]:
        # a tensor made like another (zeros_like, new_ones) reads its shape, dtype and device, not its values: a
        # constant, through which no relevance would have to pass (torch.ones_like(h) * h scales h)
        if node.call in _MADE_LIKE or node.method in ("new_zeros", "new_ones", "new_full"):
            return [a for a in super().data_inputs(node) if a is not node.args[0]]
        return super().data_inputs(node)

    def capture_call(self, node: Node) -> LayerKind:
        from lrptext.layers.max_dim import ITEM, MAX_DIM

        source = node.args[0] if node.args else None
        if node.call is getattr and isinstance(source, Node) and source.kind is MAX_DIM and node.args[1] == "values":
            return ITEM
        return self

    def default_rule(self, node: Node) -> Any:
        return "-"


_MADE_LIKE = frozenset({torch.zeros_like, torch.ones_like, torch.full_like, aten.zeros_like.default,
                        aten.ones_like.default, aten.new_ones.default, aten.new_zeros.default})

META = Meta()
