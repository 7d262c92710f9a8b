"""Operations without a layer kind: the hint that says how to proceed, and which rules a user's layer_map may
give one in its place. A stand-in rule must map the node's output relevance onto its input's shape: Pass only
where the output has the input's shape (element-wise and normalising layers), Norm (a proportional split along
the operation's gradient) where the operation returns one tensor; layers returning several tensors (recurrent
layers, attention) have none."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import Node
from lrptext.rules import Norm, Pass

# Modules whose output has their input's shape, element by element: Pass keeps relevance where it was.
_SHAPE_KEEPING_PACKAGES = ("torch.nn.modules.activation", "torch.nn.modules.normalization",
                           "torch.nn.modules.instancenorm", "torch.nn.modules.batchnorm", "torch.nn.modules.dropout")
_SHAPE_CHANGING = (nn.GLU, nn.MultiheadAttention)
# Modules that return several tensors: neither stand-in can route relevance through them.
_SEVERAL_OUTPUTS = (nn.RNNBase, nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder,
                    nn.TransformerDecoder, nn.AdaptiveLogSoftmaxWithLoss)
# Functions and Tensor methods that keep each value in place: element-wise ones and normalisations.
_SHAPE_KEEPING_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.exp, torch.log,
                            torch.abs, torch.sqrt, torch.square, torch.clamp, torch.clip, F.normalize, F.layer_norm,
                            F.group_norm, torch.sigmoid, torch.erf, F.softsign, F.softshrink, F.hardshrink,
                            F.tanhshrink, F.threshold, F.logsigmoid, F.rrelu, F.hardsigmoid, F.silu, F.mish}
_SHAPE_KEEPING_METHODS = {"softmax", "log_softmax", "exp", "log", "abs", "sqrt", "square", "clamp", "clip", "erf",
                          "sigmoid", "exp2", "log1p", "expm1"}


def stand_ins(node: Node) -> tuple[type, ...]:
    """The rules a layer_map or name_map may give this unsupported node."""
    module = node.module_type
    if module is not None:
        if issubclass(module, _SEVERAL_OUTPUTS):
            return ()
        keeps_shape = module.__module__ in _SHAPE_KEEPING_PACKAGES and not issubclass(module, _SHAPE_CHANGING)
        return (Pass, Norm) if keeps_shape else (Norm,)
    if node.call in _SHAPE_KEEPING_FUNCTIONS or node.op.removeprefix("Tensor.").rstrip("_") in _SHAPE_KEEPING_METHODS:
        return (Pass, Norm)
    return (Norm,)


def hint(node: Node, target: Any) -> str:
    """Why lrptext has no rule here, where something specific can be said."""
    if isinstance(target, nn.LogSoftmax) or target in (F.log_softmax, torch.log_softmax, "log_softmax"):
        return "explain the logits: drop the softmax from the model's forward"
    if isinstance(target, nn.RNNBase):
        return "nn.RNN (Elman) has no LRP rule in lrptext yet; nn.LSTM and nn.GRU have one"
    if isinstance(target, (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder)):
        return "attention layers have no LRP rule in lrptext yet"
    return ""


def method_name(key: Any) -> str | None:
    """"cumsum" for torch.Tensor.cumsum, the way a layer_map names a Tensor method; None for anything else."""
    if getattr(key, "__objclass__", None) is torch.Tensor or getattr(torch.Tensor, getattr(key, "__name__", ""),
                                                                     None) is key:
        return key.__name__.rstrip("_")
    return None


def _map_key(node: Node) -> str:
    """How a layer_map names the node's operation."""
    if node.module_type is not None:
        return f"nn.{node.op.removeprefix('nn.')}"
    if node.op.startswith("Tensor."):
        return f"torch.Tensor.{node.op.removeprefix('Tensor.').rstrip('_')}"
    return node.op


def unsupported_error(node: Node) -> UnsupportedLayerError:
    """The error for an unsupported node, with only the stand-ins that map its relevance onto its input's shape."""
    allowed = stand_ins(node)
    key = _map_key(node)
    if Pass in allowed:
        way = (f"or pass layer_map={{{key}: Pass()}} (relevance passes through unchanged; it keeps each value in "
               "place) or Norm() (split in proportion to the input's contribution)")
    elif allowed:
        way = (f"or pass layer_map={{{key}: Norm()}} (split in proportion to each input's contribution along its "
               "gradient); Pass() cannot stand in, as lrptext does not know it to keep each value in place")
    else:
        way = "no stand-in rule can route relevance through it, as it returns several tensors"
    reason = f"{node.hint}; " if node.hint else ""
    return UnsupportedLayerError(f"no rule for {node.op} at '{node.qualified_name}'; {reason}{way}; "
                                 "see lrptext.support_table(model)")
