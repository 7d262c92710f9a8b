"""Element-wise activations (ReLU, tanh, GELU, ...): relevance passes through unchanged (the Pass rule). The
forward pass drops the larger ones after their last reader and computes them again when asked, and the C++
kernels read a dropped ReLU's output as relu(z) from its kept input (the dense epsilon rule's product with its
input also GELU's and SiLU's)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node
from lrptext.kernels import native
from lrptext.rules import Norm, Pass

# Deterministic ones only, by name ("nn.ReLU", "F.relu", "Tensor.relu_"): RReLU, for one, samples in training mode.
_RECOMPUTED = {"relu", "leakyrelu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softplus"}


def _name(node: Node) -> str:
    """The operation's name in lower case without the module or in-place mark: nn.ReLU, F.relu, Tensor.relu_: relu."""
    return node.op.rsplit(".", 1)[-1].lower().rstrip("_")


def kernel_form(node: Node) -> str | None:
    """The name under which the C++ kernels compute this activation from its input themselves ("relu", "gelu",
    "gelu_tanh", "silu": lrptext.kernels.dispatch.INPUT_ACTIVATIONS), or None."""
    if node.kind is not ACTIVATION or not ACTIVATION.recomputable(node) or len(node.args) != 1:
        return None
    name, settings = _name(node), node.kwargs.keys() - {"inplace"}
    if name in ("relu", "silu"):
        return None if settings else name
    if name == "gelu" and not settings - {"approximate"}:
        approximate = node.kwargs.get("approximate", node.params.get("approximate", "none"))
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)
    return None


def dropped_activation(state: Any, source: Any) -> tuple[Node, str] | None:
    """(source, its kernel form) when `source` is an activation whose output the forward pass dropped, whose kept
    input z is a tensor, and which the C++ kernels compute from z themselves: they read act(z), so the activation
    is not computed again."""
    if state.implementation is not native or not isinstance(source, Node) or source.name not in state.values.dropped:
        return None
    form = kernel_form(source)
    if form is None or not isinstance(state.values[source.args[0].name], torch.Tensor):
        return None
    return source, form


def dropped_relu(state: Any, source: Any) -> Node | None:
    """`source` when it is a ReLU whose output the forward pass dropped and whose kept input z is a tensor the C++
    kernels read (CPU or CUDA): they read relu(z) themselves."""
    found = dropped_activation(state, source)
    return found[0] if found is not None and found[1] == "relu" else None


class Activation(LayerKind):
    name = "activation"
    rules = (Pass, Norm)
    modules = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh,
               nn.ReLU6, nn.Mish, nn.SELU, nn.CELU, nn.Hardswish, nn.Hardsigmoid, nn.PReLU)
    functions = frozenset({F.relu, torch.relu, F.leaky_relu, F.elu, F.gelu, F.silu, F.tanh, torch.tanh, F.sigmoid,
                           torch.sigmoid, F.softplus, F.hardtanh, F.relu6, F.mish, F.selu, F.celu, F.hardswish,
                           aten.relu.default, aten.gelu.default, aten.tanh.default, aten.silu.default,
                           aten.sigmoid.default})
    methods = frozenset({"relu", "tanh", "sigmoid"})

    def capture_module(self, node: Node, module: Any) -> None:
        if getattr(module, "inplace", False):  # keep the recorded input intact
            node.call = lambda x, *a, **k: module(x.clone(), *a, **k)
        if isinstance(module, nn.GELU):
            node.params = {"approximate": module.approximate}

    def default_rule(self, node: Node) -> Any:
        return Pass()

    def recomputable(self, node: Node) -> bool:
        return len(node.inputs()) == 1 and _name(node) in _RECOMPUTED


ACTIVATION = Activation()
