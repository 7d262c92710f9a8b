"""Dense layers: nn.Linear and F.linear, y = x Wᵀ + b. They take the composite's "dense" rule."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn
from torch.ops import aten

from lrptext.graph.ir import LayerKind, Node
from lrptext.kernels import dispatch
from lrptext.kernels.factored import Factored, multiplied
from lrptext.layers import linear
from lrptext.rules import LINEAR_RULES

# state.saved's key of an epsilon quotient computed for a dense layer by an earlier step: (QUOTIENT, layer name)
QUOTIENT = "epsilon quotient"


class Dense(LayerKind):
    name = "dense"
    modules = (nn.Linear,)
    functions = frozenset({F.linear, aten.linear.default})
    slot = "dense"
    rules = LINEAR_RULES
    takes_factored = True  # the epsilon rule divides act(z) ⊙ gradient by st(z) in one pass

    def capture_module(self, node: Node, module: Any) -> None:
        node.params = {"weight": module.weight, "bias": module.bias}

    def capture_call(self, node: Node) -> LayerKind:
        bound = linear.bind_functional(node, ("input", "weight", "bias"))
        if bound is not None:
            node.params = {"weight": bound["weight"], "bias": bound["bias"]}
        return node.kind

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        layer, x = state.layer(node), linear.contiguous_input(node, args[0], state.values)
        stack = state.stacks.get(node.name)  # projections computed as one product (lrptext/layers/projections.py)
        if stack is not None and (y := stack.forward(node, x, state)) is not None:
            return y
        if state.core and (y := linear.core_forward(layer, x, node)) is not None:
            return y
        return F.linear(x, layer.weight, layer.bias)

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        layer = state.layer(node)
        emb = linear.embedding_source(state, node)
        x, activation, z = linear.relevance_arguments(state, node, rule, tuple(dispatch.INPUT_ACTIVATIONS))
        extra = None
        if state.bias_factor:  # (reads the activation's output and the relevance multiplied out: computed here)
            r = multiplied(r)
            activated = x if activation is None else dispatch.INPUT_ACTIVATIONS[activation](x)
            extra = linear.bias_share(state, node, rule, activated, z, r, emb is not None)
        # where other layers' relevance has reached the input already (a transformer's Q, K and V projections
        # and its residual share theirs), the kernel adds to it (to its gradient where it is factored); else the
        # relevance stays factored, (input, gradient), for the layer before it
        plain = emb is None and extra is None
        add_to = state.accumulator(node.args[0], x, r.gradient if isinstance(r, Factored) else r,
                                   factored=activation is None) if plain else None
        # the quotient z ⊙ g / st(z), where the step before computed it from this very gradient (a LayerNorm after
        # the residual sum this layer's output goes into: add.dense_summand)
        given = state.saved.pop((QUOTIENT, node.name), None)
        quotient = (given[1] if given is not None and isinstance(r, Factored) and r.gradient is given[0]
                    and r.input is z and r.activation == "identity" else None)
        rel = dispatch.dense(state.implementation, x, layer.weight, layer.bias, r, rule=rule, z=z,
                             prepared=layer.prepared, reduce_channels=emb is not None, check_finite=False,
                             relevance_writable=True, input_activation=activation, add_to=add_to, factored=plain,
                             quotient=quotient)
        if isinstance(add_to, Factored) and isinstance(rel, Factored) and rel.input is add_to.input:
            state.pending[node.args[0].name] = rel  # the sum, a new gradient where the pending one was shared
        rel = rel if extra is None else rel + extra
        return linear.to_tokens(state, emb, rel) if emb is not None else [(node.args[0], rel)]


DENSE = Dense()
