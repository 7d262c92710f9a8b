"""Grad-CAM (Selvaraju et al. 2017) and CAM (Zhou et al. 2016), computed on the captured graph.

Grad-CAM, for class c and the feature maps A^k (k = 1..K) of a convolution:

    α_k^c = (1 / Z) Σ_ij ∂y^c / ∂A^k_ij          (the spatial mean of the gradient; Z = h·w positions)
    L^c   = ReLU(Σ_k α_k^c A^k)                  [B, h, w]

and L^c upsampled to the input's H x W by bilinear interpolation (``F.interpolate(..., mode="bilinear",
align_corners=False)``, after the ReLU, as in the paper). y^c is the logit (before any softmax).

The feature maps A are those of the LAST convolution in the captured graph (topological order), taken after their
activation: the output of the element-wise activation (ReLU, ...) that alone reads the convolution, through a
BatchNorm that alone reads it if there is one, as the paper reads VGG-16 at relu5_3; where no such activation
follows (a convolution feeding a residual sum or a pooling), the convolution's output. ``activation=False`` reads
the convolution's output itself, before its activation: what a forward hook on the nn.Conv2d sees. ``layer=``
names another convolution (same rule), or any node whose output is a [B, K, h, w] map, read as it is, by its
qualified name (the module path, "features.7") or its node name (lrptext.support_table lists both). The choice
matters: on the bundled Fashion-MNIST CNN the last convolution's maps before its ReLU give an all-zero Grad-CAM
for 71% of 500 test images (Σ_k α_k A^k is negative everywhere), after it for 1.6% (docs/images.md).

CAM, for a model that ends in global average pooling and one linear layer, y^c = Σ_k w_ck mean_ij A^k_ij + b_c,
with A the maps the pooling reads:

    M^c = Σ_k w_ck A^k                           (ReLU'd like Grad-CAM unless relu=False)

Grad-CAM at those same maps has α_k^c = w_ck / Z, so CAM = Z · Grad-CAM: equal up to the positive scale Z (with
ReLU). Where the last convolution feeds the pooling through its activation, Grad-CAM's default maps are the
pooled maps; where the pooling reads something else (a residual sum, as in the ResNet-style model), name that
node as Grad-CAM's ``layer=`` to compare.

How it runs: the model is captured once (lrptext.graph.capture, which never modifies it) and the graph's nodes are
evaluated here, in eval semantics whatever ``model.training`` says: dropout is the identity, BatchNorm uses its
running statistics (F.batch_norm with training=False), and any other torch.nn module found in training mode runs as
an eval-mode copy of itself. The nodes up to the feature maps run without autograd; the maps become a leaf that
requires grad, the rest of the graph runs with autograd, and one torch.autograd.grad call gives ∂y^c/∂A: one forward
and one backward, no hooks, no parameter's .grad touched, no flag changed, the state_dict untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrptext.graph import Graph, Node, capture
from lrptext.graph.capture import forward_parameters
from lrptext.graph.ir import CONSTANT, INPUT, OUTPUT, UNSUPPORTED
from lrptext.layers import KINDS
from lrptext.layers.activation import ACTIVATION
from lrptext.layers.batchnorm import BATCHNORM
from lrptext.layers.identity import IDENTITY
from lrptext.layers.pool import POOL
from lrptext.layers.reduce import REDUCE
from lrptext.layers.reshape import RESHAPE

UPSAMPLING = "bilinear, align_corners=False"


@dataclass
class CamExplanation:
    """A class activation map per image."""

    maps: torch.Tensor        # [B, H, W] at the input's size (bilinear, align_corners=False)
    coarse: torch.Tensor      # [B, h, w] at the feature maps' size, before upsampling
    weights: torch.Tensor     # [B, K] channel weights: α (Grad-CAM) or the linear layer's row w_c (CAM)
    prediction: torch.Tensor  # [B, classes] the model's logits
    target: torch.Tensor      # [B] the explained class
    layer: str                # the feature maps' node: its qualified name, or its node name where that is shared
    method: str               # "gradcam" or "cam"


def _value(a: Any, values: dict[str, Any]) -> Any:
    if isinstance(a, Node):
        return values[a.name]
    if isinstance(a, (list, tuple)):
        return type(a)(_value(x, values) for x in a)
    if isinstance(a, dict):
        return {k: _value(x, values) for k, x in a.items()}
    return a


def _constant(a: Any) -> Any:
    """A captured setting: a tensor attribute of the model (a constant node) as its tensor."""
    return a.params["value"] if isinstance(a, Node) and a.kind is CONSTANT else a


def _images(images: Any) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if not x.is_floating_point():
        raise TypeError(f"images must hold floating-point values (what the model takes), got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(x.shape)}")
    return x.detach()


def targets(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """None: each sample's predicted class; an int: that class for every sample; a sequence or tensor: one per
    sample. Checked against the number of classes."""
    batch, classes = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    t = torch.as_tensor(target).long().to(logits.device).flatten()
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"give one target per image or one for all: {batch} images, {t.numel()} targets")
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise ValueError(f"target {int(t[bad][0])} is not a class of this model (0..{classes - 1})")
    return t.clone()


class _Graph:
    """The captured model and an evaluation of its nodes in eval semantics, with autograd from one node on."""

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Grad-CAM and CAM explain torch.nn.Module instances, got {type(model).__name__}")
        self.model = model
        images = forward_parameters(model)[:1]  # the images alone; arguments after them default to None
        self.graph: Graph = capture(model, KINDS, present=tuple(p.name for p in images))
        self.convolutions = [n for n in self.graph.nodes if n.kind.slot == "conv"]
        counts: dict[str, int] = {}
        for n in self.graph.nodes:
            counts[n.qualified_name] = counts.get(n.qualified_name, 0) + 1
        self._unique = {q for q, k in counts.items() if k == 1}

    def label(self, node: Node) -> str:
        """The name that finds the node again: its qualified name where no other node has it, else its node name."""
        return node.qualified_name if node.qualified_name in self._unique else node.name

    def find(self, layer: str | None) -> Node:
        """The convolution (or other node) `layer` names; the last convolution for None."""
        names = ", ".join(self.label(n) for n in self.convolutions)
        if layer is None:
            if not self.convolutions:
                raise ValueError(f"{type(self.model).__name__} has no convolution (nn.Conv1d/2d or F.conv1d/2d) for "
                                 "Grad-CAM to read; name a layer with a [B, K, h, w] output as layer=")
            return self.convolutions[-1]
        found = [n for n in self.graph.nodes if layer in (n.name, n.qualified_name)
                 and n.kind not in (INPUT, CONSTANT, OUTPUT)]
        if not found:
            listed = f"its convolutions are {names} (the last is the default)" if names else "it has no convolution"
            raise ValueError(f"unknown layer {layer!r} in {type(self.model).__name__}: {listed}; any node with a "
                             "[B, K, h, w] output may be named, by qualified name or node name "
                             "(lrptext.support_table(model) lists them)")
        if len({n.name for n in found}) > 1:
            raise ValueError(f"{layer!r} names {len(found)} nodes ({', '.join(n.name for n in found)}); name one of "
                             "them by its node name")
        return found[0]

    def activation_of(self, conv: Node) -> Node:
        """The element-wise activation that alone reads the convolution's output (through a BatchNorm that alone
        reads it, if any): the rectified feature maps; the convolution itself where there is none."""
        users = self.graph.consumers()
        node = conv
        if len(users[node.name]) == 1 and users[node.name][0].kind is BATCHNORM:
            node = users[node.name][0]
        after = users[node.name]
        return after[0] if len(after) == 1 and after[0].kind is ACTIVATION else conv

    def _evaluate(self, node: Node, args: tuple, kwargs: dict, copies: dict[str, nn.Module]) -> Any:
        call = node.call
        if node.kind is BATCHNORM:  # running statistics, never batch statistics or an update of them
            bn = call
            return F.batch_norm(args[0], bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False,
                                momentum=0.0, eps=bn.eps)
        if node.kind is UNSUPPORTED and isinstance(call, nn.Module) and call.training:
            if node.name not in copies:
                copies[node.name] = copy.deepcopy(call).eval()
            call = copies[node.name]
        return call(*args, **kwargs)

    def run(self, x: torch.Tensor, at: Node, *, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, the value of `at`); with grad, `at`'s value is a leaf the logits are differentiable by."""
        values: dict[str, Any] = {}
        copies: dict[str, nn.Module] = {}
        reached = False
        for node in self.graph.nodes:
            if node.kind is INPUT:
                value = x if node is self.graph.inputs[0] else None
            elif node.kind is CONSTANT:
                value = node.params["value"]
            else:
                args, kwargs = _value(node.args, values), _value(node.kwargs, values)
                if node.kind is OUTPUT:
                    value = args[0]
                else:
                    with torch.set_grad_enabled(grad and reached):
                        value = self._evaluate(node, args, kwargs, copies)
            if node is at:
                if not (isinstance(value, torch.Tensor) and value.dim() == 4 and value.is_floating_point()):
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(f"the feature maps at '{self.label(node)}' must be a [B, K, h, w] float "
                                     f"tensor, got {shape}")
                value = value.detach().requires_grad_(grad)
                reached = True
            values[node.name] = value
        logits = values[self.graph.output.name]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"{type(self.model).__name__} must return logits [B, classes], got {shape}")
        return logits, values[at.name]


def _upsample(coarse: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(coarse[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class GradCAM:
    """Grad-CAM for one model and one layer; the graph is captured once, here.

    >>> maps = GradCAM(model)(images)                     # Tensor[B, H, W], the predicted classes
    >>> e = GradCAM(model, layer="features.2").explain(images, target=3)   # with weights, logits, coarse maps
    """

    method = "gradcam"

    def __init__(self, model: nn.Module, layer: str | None = None, activation: bool = True):
        self._graph = _Graph(model)
        named = self._graph.find(layer)
        self.layer = self._graph.activation_of(named) if activation and named.kind.slot == "conv" else named

    def explain(self, images: Any, target: Any = None) -> CamExplanation:
        x = _images(images)
        logits, maps = self._graph.run(x, self.layer, grad=True)
        t = targets(target, logits)
        if not logits.requires_grad:
            raise ValueError(f"the logits do not depend on '{self._graph.label(self.layer)}': name a layer on the way "
                             "from the input to the output")
        (gradient,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), maps)
        with torch.no_grad():
            weights = gradient.mean(dim=(2, 3))                       # α_k^c, [B, K]
            coarse = torch.einsum("bk,bkhw->bhw", weights, maps).relu()
            full = _upsample(coarse, x.shape[2:])
        return CamExplanation(maps=full, coarse=coarse, weights=weights, prediction=logits.detach(), target=t,
                              layer=self._graph.label(self.layer), method=self.method)

    def __call__(self, images: Any, target: Any = None) -> torch.Tensor:
        return self.explain(images, target).maps


class CAM:
    """CAM (Zhou et al. 2016) for a model that ends in global average pooling (nn.AdaptiveAvgPool2d(1),
    F.adaptive_avg_pool2d(x, 1) or a mean over the two spatial axes), optional flatten/dropout, and one linear layer:
    M^c = Σ_k w_ck A^k over the maps A that the pooling reads (no bias), ReLU'd unless relu=False. One forward."""

    method = "cam"

    def __init__(self, model: nn.Module, relu: bool = True):
        self._graph = _Graph(model)
        self.relu = relu
        self.linear, self.layer = self._head()

    def _head(self) -> tuple[Node, Node]:
        refusal = (f"CAM needs a model that ends in global average pooling and one linear layer; "
                   f"{type(self._graph.model).__name__} does not (use Grad-CAM, which needs no such head)")

        def back(node: Any, through: tuple) -> Any:
            while isinstance(node, Node) and node.kind in through:
                node = node.args[0] if node.args else None
            return node

        linear = back(self._graph.graph.output.args[0], (IDENTITY,))
        if not isinstance(linear, Node) or linear.kind.slot != "dense":
            raise ValueError(refusal)
        pool = back(linear.args[0], (RESHAPE, IDENTITY))
        if not isinstance(pool, Node) or not (
                (pool.kind is POOL and pool.params.get("mode") == "adaptive_avg" and pool.params.get("dims") == 2)
                or pool.kind is REDUCE):
            raise ValueError(refusal)
        return linear, pool.args[0]

    def explain(self, images: Any, target: Any = None) -> CamExplanation:
        x = _images(images)
        with torch.no_grad():
            logits, maps = self._graph.run(x, self.layer, grad=False)
            t = targets(target, logits)
            weight, bias = (_constant(self.linear.params.get(k)) for k in ("weight", "bias"))
            if not isinstance(weight, torch.Tensor):
                raise ValueError("CAM reads the linear layer's weight: use nn.Linear, or F.linear with a parameter")
            pooled = maps.mean(dim=(2, 3))
            again = F.linear(pooled, weight.to(pooled), None if bias is None else bias.to(pooled))
            if again.shape != logits.shape or not torch.allclose(again, logits, rtol=1e-4, atol=1e-4 * float(
                    logits.abs().max())):
                raise ValueError(f"CAM: the logits of {type(self._graph.model).__name__} are not the linear layer "
                                 f"'{self._graph.label(self.linear)}' of the mean of "
                                 f"'{self._graph.label(self.layer)}' over its positions (is the pooling global?); "
                                 "use Grad-CAM")
            weights = weight.to(pooled)[t]                               # w_c, [B, K]
            coarse = torch.einsum("bk,bkhw->bhw", weights, maps)
            if self.relu:
                coarse = coarse.relu()
            full = _upsample(coarse, x.shape[2:])
        return CamExplanation(maps=full, coarse=coarse, weights=weights, prediction=logits, target=t,
                              layer=self._graph.label(self.layer), method=self.method)

    def __call__(self, images: Any, target: Any = None) -> torch.Tensor:
        return self.explain(images, target).maps


def grad_cam(model: nn.Module, images: Any, target: Any = None, layer: str | None = None, *,
             activation: bool = True) -> torch.Tensor:
    """Grad-CAM maps, Tensor[B, H, W] (non-negative, the input's size), of `model` on `images` [B, C, H, W] as the
    model takes them (normalised). target: None (each image's predicted class), an int, or one per image. layer:
    the convolution to read (qualified name; default the last), after its activation unless activation=False.
    One forward and one backward, in eval semantics; the model is not changed. See lrptext.image.cam for the
    equations; GradCAM captures the model once for many calls."""
    return GradCAM(model, layer, activation).explain(images, target).maps


def cam(model: nn.Module, images: Any, target: Any = None, relu: bool = True) -> torch.Tensor:
    """CAM maps, Tensor[B, H, W], for a model ending in global average pooling and one linear layer (equal to
    Grad-CAM at the pooled maps times the number of positions h·w)."""
    return CAM(model, relu).explain(images, target).maps


METHODS = {"gradcam": GradCAM, "cam": CAM}
