"""BatchNorm1d/2d in eval semantics, y = scale·x + shift per channel. Folded into the dense/conv layer before it
by default (the canonizer `fold`, on copies of the weights); one that cannot be folded takes Pass, as zennit's
composites give it (Epsilon or Norm on request: a diagonal linear layer)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrptext.graph.ir import LINEAR_SLOTS, UNSUPPORTED, Graph, LayerKind, Node
from lrptext.kernels.torch_backend import stabilize
from lrptext.rules import Epsilon, Norm, Pass


def affine(node: Node, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) broadcast over the channel axis (1)."""
    p = node.params
    scale = (p["var"].to(x) + p["eps"]).rsqrt()
    if p["weight"] is not None:
        scale = scale * p["weight"].to(x)
    shift = -p["mean"].to(x) * scale + (p["bias"].to(x) if p["bias"] is not None else 0)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return scale.reshape(shape), shift.reshape(shape)


class BatchNorm(LayerKind):
    name = "batchnorm"
    modules = (nn.BatchNorm1d, nn.BatchNorm2d)
    rules = (Pass, Epsilon, Norm)

    def capture_module(self, node: Node, module: Any) -> None:
        if not module.track_running_stats or module.running_mean is None:
            node.kind = UNSUPPORTED
            node.hint = "BatchNorm without running statistics cannot be explained in eval semantics"
            return
        node.params = {"weight": module.weight, "bias": module.bias, "mean": module.running_mean,
                       "var": module.running_var, "eps": module.eps}

    def default_rule(self, node: Node) -> Any:
        return Pass()

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        scale, shift = affine(node, args[0])
        return args[0] * scale + shift

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        """Epsilon or Norm: x·scale·R / st(y), the epsilon rule of a diagonal linear layer."""
        x, y = state.values[node.args[0].name], state.values[node.name]
        scale, _ = affine(node, x)
        epsilon = rule.epsilon if isinstance(rule, Epsilon) else rule.stabilizer
        return [(node.args[0], x * scale * r / stabilize(y, epsilon))]


BATCHNORM = BatchNorm()


def _fold_into(layer: Node, bn: Node) -> None:
    """y = γ (Wx + b − μ) / √(σ² + ε) + β  =  W'x + b' with W' = s·W (per output channel), b' = s·(b − μ) + β."""
    p = bn.params
    with torch.no_grad():
        scale = p["var"].add(p["eps"]).rsqrt()
        if p["weight"] is not None:
            scale = scale * p["weight"]
        weight = layer.params["weight"]
        bias = layer.params["bias"] if layer.params["bias"] is not None else torch.zeros_like(p["mean"])
        shift = (bias - p["mean"]) * scale + (p["bias"] if p["bias"] is not None else 0)
        folded = weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
    layer.params = {**layer.params, "weight": folded.detach().clone(), "bias": shift.detach().clone()}
    layer.note = f"BatchNorm '{bn.qualified_name}' folded in"


def fold(graph: Graph) -> Graph:
    """The canonizer "batchnorm": every BatchNorm whose input is a dense/conv layer read by it alone is folded into
    that layer's (copied) weights and removed from the graph."""
    users = graph.consumers()
    removed: dict[str, Node] = {}  # folded BatchNorm node name -> the layer that now produces its output
    for bn in graph.nodes:
        if bn.kind is not BATCHNORM:
            continue
        source = bn.args[0] if bn.args else None
        if (isinstance(source, Node) and source.kind.slot in LINEAR_SLOTS and len(users[source.name]) == 1
                and source.params["weight"].shape[0] == bn.params["mean"].shape[0]):
            _fold_into(source, bn)
            removed[bn.name] = source
    if not removed:
        return graph

    def redirect(a: Any) -> Any:
        if isinstance(a, Node):
            return removed.get(a.name, a)
        if isinstance(a, (list, tuple)):
            return type(a)(redirect(x) for x in a)
        if isinstance(a, dict):
            return {k: redirect(v) for k, v in a.items()}
        return a

    kept = [n for n in graph.nodes if n.name not in removed]
    for n in kept:
        n.args = redirect(n.args)
        n.kwargs = redirect(n.kwargs)
    return Graph(nodes=kept, inputs=graph.inputs, output=graph.output)
