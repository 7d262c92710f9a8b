"""What the dense and convolution kinds share: weights of functional calls, the forward pass in the C++ core, the
layer input read by the kernels, and the fused path from an embedding straight to per-token relevance."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from lrptext.graph.ir import CONSTANT, UNSUPPORTED, Node
from lrptext.kernels import native
from lrptext.layers.activation import dropped_activation
from lrptext.rules import Epsilon

# Multiply-adds below which the C++ core runs a product on one thread, and from which it splits a matrix-vector
# product over its threads (csrc/cpu/exec.h, kParallelFlops).
SPLIT_PRODUCTS = 1 << 21


def constant(value: Any) -> Any:
    return value.params["value"] if isinstance(value, Node) and value.kind is CONSTANT else value


def bind_functional(node: Node, names: tuple[str, ...]) -> dict[str, Any] | None:
    """A functional call's arguments by name, its weights resolved to tensors, its args reduced to the input; None
    (the node marked unsupported) when the weights are not attributes of the model."""
    bound = dict(zip(names, node.args))
    bound.update({k: v for k, v in node.kwargs.items() if k in names})
    bound["weight"], bound["bias"] = constant(bound.get("weight")), constant(bound.get("bias"))
    if not isinstance(bound["weight"], torch.Tensor) or isinstance(bound["bias"], Node):
        node.kind = UNSUPPORTED
        node.hint = "the weights of a functional layer must be attributes of the model (nn.Parameter or buffer)"
        return None
    node.args, node.kwargs = (bound["input"],), {}
    return bound


def contiguous_input(node: Node, x: Any, values: dict[str, Any]) -> Any:
    """A layer's input made contiguous once: the copy replaces the input node's value, so that the other layers
    reading it (a Kim CNN's parallel convolutions over one transposed embedding) and the relevance pass reuse it."""
    if not isinstance(x, torch.Tensor) or x.is_contiguous():
        return x
    x = x.contiguous()
    if isinstance(node.args[0], Node):
        values[node.args[0].name] = x
    return x


def core_forward(layer: Any, x: torch.Tensor, node: Node) -> torch.Tensor | None:
    """The layer's output computed by the C++ core where that is faster than torch, else None: small products
    (the core runs them on one thread, where torch wakes its thread pool for each), one sample through a wide dense
    layer (the core splits the matrix-vector product over its threads, torch does not) and 1-d convolutions of
    stride 1 (one GEMM per tap without a column matrix). 2-d convolutions of one image and strided 1-d ones stay
    with torch, as neither was faster throughout; so do 3x3 ones of stride 1, whose relevance the core computes by
    Winograd's algorithm: activations rounded otherwise than the model's own move an ill-conditioned network's
    relevance visibly. Measurements: docs/performance.md."""
    w = layer.weight
    if not x.is_cpu:
        return None
    if w.dim() == 2:
        return native.dense_forward(x.contiguous(), w, layer.bias) if dense_in_core(w, x) else None
    p = node.params
    if x.dim() != w.dim():
        return None
    shifted = w.dim() == 3 and tuple(p["stride"]) == (1,) and p["groups"] == 1
    if not shifted and x.numel() * w.numel() >= SPLIT_PRODUCTS * x.shape[1] * math.prod(p["stride"]):
        return None  # input positions x weights / in_channels / stride: the product's multiply-adds
    if w.dim() == 4:
        return native.conv2d_forward(x.contiguous(), w, layer.bias, stride=tuple(p["stride"]),
                                     padding=tuple(p["padding"]), dilation=tuple(p["dilation"]), groups=p["groups"])
    y = native.conv2d_forward(x.contiguous()[:, :, None], w[:, :, None], layer.bias, stride=(1,) + tuple(p["stride"]),
                              padding=(0,) + tuple(p["padding"]), dilation=(1,) + tuple(p["dilation"]),
                              groups=p["groups"])
    return y[:, :, 0]


def dense_in_core(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether core_forward computes a dense layer of this weight over these CPU rows."""
    return x.dim() == 2 and (x.shape[0] == 1 or x.shape[0] * weight.numel() < SPLIT_PRODUCTS)


def activation_read_by_rule(state: Any, node: Node, rule: Any, forms: tuple[str, ...]) -> tuple[Node, str] | None:
    """The dropped activation a layer reads (conv -> ReLU -> conv, dense -> GELU -> dense) under a rule whose C++
    kernels compute it from its pre-activation (a ReLU: rules that read relu inputs; among `forms`, the others:
    the epsilon rule), or None."""
    found = dropped_activation(state, node.args[0]) if node.args else None
    if found is None or found[1] not in forms:
        return None
    return found if (rule.reads_relu_input if found[1] == "relu" else type(rule) is Epsilon) else None


def relevance_arguments(state: Any, node: Node, rule: Any,
                        forms: tuple[str, ...] = ("relu",)) -> tuple[torch.Tensor, str | None, torch.Tensor | None]:
    """(x, activation, z): the layer's input made contiguous once, or the pre-activation of the dropped activation
    it reads (one of `forms`, named by activation); and the forward's z for rules that read it (for the others it
    is freed before the kernel takes its buffers)."""
    found = activation_read_by_rule(state, node, rule, forms)
    if found is not None:
        x = state.values[found[0].args[0].name]
    else:
        x = contiguous_input(node, state.values[node.args[0].name], state.values)
    if rule.reads_z:
        z = state.values[node.name]
    else:
        z = None
        state.values.discard(node.name)
    return x, None if found is None else found[1], z


def embedding_source(state: Any, node: Node) -> Node | None:
    """The embedding whose output this dense/conv node reads with the embedding axis as its input channels
    (directly, or through a transpose for a conv1d): its input relevance is then only needed per token. (The
    kinds by name: importing them here, where the modules import this one, cost 16 µs a call.)"""
    if not state.fuse:
        return None
    src = node.args[0]
    if node.kind.slot == "dense" and src.kind.name == "embedding":
        return src
    if node.kind.slot != "conv" or src.kind.name != "move" or not isinstance(src.args[0], Node):
        return None
    emb = src.args[0]
    if emb.kind.name != "embedding" or state.values[src.name].dim() != 3 or src.kwargs:  # the lookup may be dropped
        return None
    dims = tuple(d % 3 for d in src.args[1:] if isinstance(d, int))
    swaps = src.op.endswith("transpose") and sorted(dims) == [1, 2]
    permutes = src.op.endswith("permute") and dims in ((0, 2, 1),)
    return emb if swaps or permutes else None


def to_tokens(state: Any, emb: Node, rel: torch.Tensor) -> list[tuple[Node, torch.Tensor]]:
    """Per-token relevance delivered straight to the embedding's ids (padding tokens get none)."""
    padding_idx = emb.params["padding_idx"]
    if padding_idx is not None:
        rel = rel.masked_fill(state.values[emb.args[0].name] == padding_idx, 0.0)
    return [(emb.args[0], rel)]


def bias_share(state: Any, node: Node, rule: Any, x: torch.Tensor, z: torch.Tensor | None, r: torch.Tensor,
               reduce_channels: bool) -> torch.Tensor | None:
    """The bias factor β's part of the input relevance (Arras et al. 2017): the share β (b_j + s_j) R_j / st(z_j)
    that the epsilon rule leaves to output j's bias and stabiliser, spread evenly over the inputs output j reads
    (a convolution's real inputs in its window, not its padding); with β = 1 relevance is conserved. None where
    β = 0. Computed before the kernel, which may overwrite r."""
    beta = getattr(state, "bias_factor", 0.0)
    if not beta:
        return None
    from lrptext.rules import Epsilon

    if not isinstance(rule, Epsilon) or z is None:
        raise ValueError(f"bias_factor={beta} redistributes the share the epsilon rule leaves to biases; "
                         f"'{node.qualified_name}' ({node.op}) has {rule!r}: give it Epsilon (composite 'epsilon' or "
                         "'lrp0', or a layer_map) or leave bias_factor at 0")
    layer = state.layer(node)
    shift = torch.where(z >= 0, rule.epsilon, -rule.epsilon).to(z.dtype)
    bias = shift if layer.bias is None else shift + layer.bias.reshape((-1,) + (1,) * (z.dim() - 2 if
                                                                                      node.kind.slot == "conv" else 0))
    share = beta * bias * r / (z + shift)
    w = layer.weight
    if w.dim() == 2:  # dense: over the row's inputs
        total = share.sum(-1, keepdim=True)
        return total.squeeze(-1) if reduce_channels else (total / x.shape[-1]).expand(x.shape)
    p = node.params
    ones = torch.ones_like(w)
    conv, conv_input = ((F.conv1d, torch.nn.grad.conv1d_input) if w.dim() == 3
                        else (F.conv2d, torch.nn.grad.conv2d_input))
    settings = (p["stride"], p["padding"], p["dilation"], p["groups"])
    counts = conv(torch.ones_like(x[:1]), ones, None, *settings)  # real inputs in each output's window
    spread = conv_input(x.shape, ones, share / counts, *settings)
    return spread.sum(1) if reduce_channels else spread
