"""LayerNorm (nn.LayerNorm, F.layer_norm and torch.export's aten.layer_norm), as AttnLRP and CP-LRP treat it:
y = γ ⊙ (x − mean(x)) / σ + β with the standard deviation σ a constant.

- γ and 1/σ scale element-wise: relevance passes them unchanged; β keeps its share:
  R_z = R_y ⊙ (1 − β / st(y)) = R_y ⊙ (γ ⊙ z / σ + ε sign(y)) / st(y), computed in the second form (the first
  cancels digits in float32 where y is close to β).
- The centring z = x − mean(x) is a linear map, taken by the epsilon rule: R_x = x ⊙ (s − mean(s)) with
  s = R_z / st(z), mean over the normalised dimensions.
st is the stabiliser of the node's Epsilon rule (ε = 1e-6 by default); with β = 0 relevance is conserved up to it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.ops import aten

from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind
from lrptext.kernels import dispatch
from lrptext.kernels.factored import Factored, multiplied
from lrptext.layers import linear
from lrptext.layers.add import dense_summand
from lrptext.layers.dense import QUOTIENT
from lrptext.rules import Epsilon


def _aten_signature(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):  # aten.layer_norm
    pass


def _functional_signature(input, normalized_shape, weight=None, bias=None, eps=1e-5):  # F.layer_norm
    pass


class LayerNorm(LayerKind):
    name = "layer_norm"
    modules = (nn.LayerNorm,)
    functions = frozenset({F.layer_norm, aten.layer_norm.default})
    rules = (Epsilon,)
    takes_factored = True  # in gradient form where the relevance is y ⊙ g

    def capture_module(self, node: Node, module: Any) -> None:
        node.params = {"weight": module.weight, "bias": module.bias, "dims": len(module.normalized_shape),
                       "eps": module.eps}

    def capture_call(self, node: Node) -> LayerKind:
        signature = _aten_signature if node.call is aten.layer_norm.default else _functional_signature
        bound = bind(node, signature)
        if bound is None:
            node.hint = f"{node.op} called with arguments lrptext does not know"
            return UNSUPPORTED
        weight, bias = linear.constant(bound["weight"]), linear.constant(bound["bias"])
        if isinstance(weight, Node) or isinstance(bias, Node):
            node.hint = "LayerNorm's weight and bias must be attributes of the model (nn.Parameter or buffer)"
            return UNSUPPORTED
        node.args, node.kwargs = (bound["input"],), {}
        node.params = {"weight": weight, "bias": bias, "dims": len(bound["normalized_shape"]),
                       "eps": float(bound["eps"])}
        return self

    def default_rule(self, node: Node) -> Any:
        return Epsilon(1e-6)

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        x, p = args[0], node.params
        return F.layer_norm(x, x.shape[-p["dims"]:], _like(p["weight"], x), _like(p["bias"], x), p["eps"])

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        x, y, p = state.values[node.args[0].name], state.values[node.name], node.params
        bias, weight = _like(p["bias"], x), _like(p["weight"], x)
        # relevance y ⊙ g in, x ⊙ gradient out, where the C++ CPU kernel runs: a residual sum before and the dense
        # layers after then take the gradient as it is (lrptext.kernels.factored)
        gradient = r.gradient_of(y) if isinstance(r, Factored) else None
        if gradient is None:
            r = multiplied(r)
        # a residual sum before it whose branch is a dense layer: its epsilon quotient written by this kernel from
        # the rows in cache, instead of in a pass of the dense layer's own (add.dense_summand)
        branch = dense_summand(state, node.args[0]) if gradient is not None else None
        quotient = None if branch is None else (branch[1], torch.empty_like(branch[1]), branch[2])
        # past kernels.layer_norm_relevance's argument checks (about a third of the call at 128 tokens): the
        # arguments are the pass's own tensors
        rel = dispatch.layer_norm(state.implementation, x, y, r if gradient is None else gradient,
                                  normalized_dims=p["dims"], bias=bias, weight=weight, epsilon=rule.epsilon,
                                  variance_epsilon=p["eps"], check_finite=False, gradient_form=gradient is not None,
                                  quotient=quotient)
        if quotient is not None:  # for the dense layer's step, which takes it where its relevance is rel's
            state.saved[(QUOTIENT, branch[0].name)] = rel, quotient[1]
        return [(node.args[0], rel if gradient is None else Factored(x, rel, at_output=True))]


def _like(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A weight or bias in x's dtype and on its device (the call to .to(x) only where it is not: 2-3 µs each)."""
    return t if t is None or (t.dtype == x.dtype and t.device == x.device) else t.to(x)


LAYER_NORM = LayerNorm()
