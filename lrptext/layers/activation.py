"""Element-wise activations (ReLU, tanh, GELU, ...): relevance passes through unchanged (the Pass rule). The
forward pass drops the larger ones after their last reader and computes them again when asked, and the C++
kernels read a dropped ReLU's output as relu(z) from its kept input."""

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


def is_relu(node: Node) -> bool:
    """nn.ReLU, F.relu, torch.relu, Tensor.relu (and their in-place spellings) of one tensor, nothing else."""
    return (node.kind is ACTIVATION and ACTIVATION.recomputable(node) and _name(node) == "relu"
            and len(node.args) == 1 and not node.kwargs.keys() - {"inplace"})


def dropped_relu(state: Any, source: Any) -> Node | None:
    """`source` when it is a ReLU whose output the forward pass dropped and whose kept input z is a tensor the C++
    kernels read (CPU or CUDA): they read relu(z) themselves, so the activation is not computed again."""
    if (state.implementation is not native or not isinstance(source, Node) or source.name not in state.values.dropped
            or not is_relu(source)):
        return None
    z = state.values[source.args[0].name]
    return source if isinstance(z, torch.Tensor) else None


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

    def default_rule(self, node: Node) -> Any:
        return Pass()

    def recomputable(self, node: Node) -> bool:
        return len(node.inputs()) == 1 and _name(node) in _RECOMPUTED


ACTIVATION = Activation()
