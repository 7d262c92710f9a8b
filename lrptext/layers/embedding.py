"""Embedding lookups (nn.Embedding, F.embedding): token ids in, vectors out. A token's relevance is the sum of its
vector's relevance over the embedding axis; the padding token gets none."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn
from torch.ops import aten

from lrptext import kernels
from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node
from lrptext.layers import linear


class Embedding(LayerKind):
    name = "embedding"
    modules = (nn.Embedding,)
    functions = frozenset({F.embedding, aten.embedding.default})
    reads_ids = True

    def capture_module(self, node: Node, module: Any) -> None:
        if module.max_norm is not None:
            node.kind = UNSUPPORTED
            node.hint = "Embedding(max_norm=...) renormalises its weights during forward; set max_norm=None"
            return
        node.params = {"weight": module.weight, "padding_idx": module.padding_idx}

    def capture_call(self, node: Node) -> LayerKind:
        aten_order = node.call is aten.embedding.default  # (weight, indices, padding_idx=-1): -1 is none
        names = ("weight", "input", "padding_idx") if aten_order else ("input", "weight", "padding_idx")
        bound = linear.bind_functional(node, names)
        if bound is None:
            return node.kind
        padding_idx = bound.get("padding_idx")
        if aten_order and padding_idx == -1:
            padding_idx = None
        elif padding_idx is not None and padding_idx < 0:
            padding_idx += bound["weight"].shape[0]
        node.params = {"weight": bound["weight"], "padding_idx": padding_idx}
        return self

    def default_rule(self, node: Node) -> Any:
        return "embedding: relevance summed over the embedding axis per token"

    def recomputable(self, node: Node) -> bool:
        return True  # a text CNN's lookup is read once, through a transpose whose contiguous copy the convolutions take

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        return F.embedding(args[0], state.layer(node).weight, node.params["padding_idx"])

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        ids = state.values[node.args[0].name]
        rel = kernels.embedding_relevance(ids, r, num_embeddings=state.layer(node).weight.shape[0],
                                          padding_idx=node.params["padding_idx"], **state.kernel_options)
        return [(node.args[0], rel)]


EMBEDDING = Embedding()
