"""nn.EmbeddingBag in mode "sum" or "mean": a bag's relevance goes to its tokens in proportion to their
contributions (the Norm rule). With 1-D ids and offsets, each token's relevance is summed into its bag's sample."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrptext import kernels
from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind
from lrptext.rules import Norm


def _bag_signature(input, offsets=None, per_sample_weights=None):  # nn.EmbeddingBag.forward
    pass


class EmbeddingBag(LayerKind):
    name = "embedding_bag"
    rules = (Norm,)
    modules = (nn.EmbeddingBag,)
    reads_ids = True

    def capture_module(self, node: Node, module: Any) -> None:
        if module.mode == "max" or module.max_norm is not None:
            node.kind, node.hint = UNSUPPORTED, "EmbeddingBag is supported with mode 'sum' or 'mean' and max_norm=None"
            return
        bound = bind(node, _bag_signature)
        if bound is None:
            node.kind, node.hint = UNSUPPORTED, "EmbeddingBag called with arguments lrptext does not know"
            return
        node.args, node.kwargs = tuple(bound.values()), {}  # (input, offsets, per_sample_weights)
        node.params = {"weight": module.weight, "mode": module.mode, "padding_idx": module.padding_idx,
                       "include_last_offset": module.include_last_offset}

    def default_rule(self, node: Node) -> Any:
        return Norm()

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        p = node.params
        ids, offsets, per_sample_weights = args
        return F.embedding_bag(ids, state.layer(node).weight, offsets, mode=p["mode"],
                               per_sample_weights=per_sample_weights, padding_idx=p["padding_idx"],
                               include_last_offset=p["include_last_offset"])

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        p = node.params
        (ids, offsets, per_sample_weights), _ = state.arguments(node)
        if p["include_last_offset"] and offsets is not None:
            offsets = offsets[:-1]
        # the bag output kept from the forward pass: the kernel reads each token's row once, not twice
        rel = kernels.embedding_bag_relevance(ids, state.layer(node).weight, r, offsets=offsets, mode=p["mode"],
                                              per_sample_weights=per_sample_weights, output=state.values[node.name],
                                              padding_idx=p["padding_idx"], stabilizer=rule.stabilizer,
                                              **state.kernel_options)
        ids_node = node.args[0]
        if ids.dim() == 1 and offsets is not None:
            lengths = torch.diff(offsets, append=offsets.new_tensor([ids.shape[0]]))
            state.segments[ids_node.name] = torch.repeat_interleave(torch.arange(len(offsets), device=ids.device),
                                                                    lengths)
        return [(ids_node, rel)]


EMBEDDING_BAG = EmbeddingBag()
