"""Convolutions: nn.Conv1d/2d and F.conv1d/2d with zero padding. They take the composite's "conv" rule."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node
from lrptext.kernels import dispatch
from lrptext.layers import linear
from lrptext.rules import LINEAR_RULES

ZERO_PADDING_HINT = ("lrptext's convolution kernels pad with zeros and symmetrically; use padding_mode='zeros' and an "
                     "explicit padding")


def _module_padding(conv: nn.Module) -> tuple[int, ...] | None:
    """nn.Conv padding as integers; None for 'same' with an odd total padding (asymmetric in torch)."""
    padding = conv.padding
    if padding == "valid":
        return (0,) * (conv.weight.dim() - 2)
    if padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.weight.shape[2:])]
        return None if any(t % 2 for t in totals) else tuple(t // 2 for t in totals)
    return tuple(padding)


class Conv(LayerKind):
    name = "conv"
    modules = (nn.Conv1d, nn.Conv2d)
    functions = frozenset({F.conv1d, F.conv2d})
    slot = "conv"
    rules = LINEAR_RULES

    def capture_module(self, node: Node, module: Any) -> None:
        padding = _module_padding(module)
        if module.padding_mode != "zeros" or padding is None:
            node.kind, node.hint = UNSUPPORTED, ZERO_PADDING_HINT
            return
        node.params = {"weight": module.weight, "bias": module.bias, "stride": tuple(module.stride),
                       "padding": padding, "dilation": tuple(module.dilation), "groups": module.groups}

    def capture_call(self, node: Node) -> LayerKind:
        bound = linear.bind_functional(node, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"))
        if bound is None:
            return node.kind
        dims = bound["weight"].dim() - 2

        def per_axis(v: Any, default: int) -> tuple[int, ...]:
            v = default if v is None else v
            return (int(v),) * dims if isinstance(v, int) else tuple(int(x) for x in v)

        padding = bound.get("padding", 0)
        if isinstance(padding, str):
            node.hint = "pass an explicit integer padding to the functional convolution"
            return UNSUPPORTED
        node.params = {"weight": bound["weight"], "bias": bound["bias"], "stride": per_axis(bound.get("stride"), 1),
                       "padding": per_axis(padding, 0), "dilation": per_axis(bound.get("dilation"), 1),
                       "groups": int(bound.get("groups") or 1)}
        return self

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        layer, x, p = state.layer(node), linear.contiguous_input(node, args[0], state.values), node.params
        if state.core and (y := linear.core_forward(layer, x, node)) is not None:
            return y
        conv = F.conv1d if layer.weight.dim() == 3 else F.conv2d
        return conv(x, layer.weight, layer.bias, p["stride"], p["padding"], p["dilation"], p["groups"])

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        layer, p = state.layer(node), node.params
        emb = linear.embedding_source(state, node)
        x, activation, z = linear.relevance_arguments(state, node, rule)
        relu_input = activation is not None  # "relu": the only one a convolution's kernels read
        extra = linear.bias_share(state, node, rule, x.clamp_min(0) if relu_input else x, z, r, emb is not None)
        rel = dispatch.conv(state.implementation, x, layer.weight, layer.bias, r, stride=p["stride"],
                            padding=p["padding"], dilation=p["dilation"], groups=p["groups"], rule=rule, z=z,
                            prepared=layer.prepared, reduce_channels=emb is not None, check_finite=False,
                            relevance_writable=True, relu_input=relu_input)
        rel = rel if extra is None else rel + extra
        return linear.to_tokens(state, emb, rel) if emb is not None else [(node.args[0], rel)]


CONV = Conv()
