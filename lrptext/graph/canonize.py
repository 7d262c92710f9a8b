"""Canonization on copies: BatchNorm folded into the dense/conv layer before it (new weight tensors; the model's
own parameters are never written)."""

from __future__ import annotations

import torch

from lrptext.graph.ir import Graph, Kind, Node


def _fold(layer: Node, bn: Node) -> None:
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


def canonize(graph: Graph) -> Graph:
    users = graph.consumers()
    removed: dict[str, Node] = {}  # folded BatchNorm node name -> the layer that now produces its output
    for bn in graph.nodes:
        if bn.kind != Kind.BATCHNORM:
            continue
        source = bn.args[0] if bn.args else None
        if (isinstance(source, Node) and source.kind in (Kind.DENSE, Kind.CONV) and len(users[source.name]) == 1
                and source.params["weight"].shape[0] == bn.params["mean"].shape[0]):
            _fold(source, bn)
            removed[bn.name] = source
    if not removed:
        return graph

    def redirect(a):
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
