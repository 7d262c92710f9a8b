"""Scaled dot-product attention (F.scaled_dot_product_attention and torch.export's aten operator, which Hugging Face
encoders call by default): O = A V with A = softmax(S), S = scale · Q Kᵀ where the mask allows, −inf elsewhere.
It takes the composite's "attention" rule:

- AttnLRP (Achtibat et al. 2024): A·V and Q Kᵀ by the uniform rule, each operand half of every term's share and
  no stabiliser: R(A) = ½ A ⊙ (G Vᵀ), R(V) = ½ V ⊙ (Aᵀ G) with G = R_O / O; the softmax by
  R(S) = S ⊙ (R(A) − A Σ_k R(A)) (its kept-back share shows in `delta`); R(Q) = ½ Q ⊙ (H K), R(K) = ½ K ⊙ (Hᵀ Q)
  with H = scale · R(S) / S.
- CP-LRP (Ali et al. 2022): A is a constant: R(V) = V ⊙ (Aᵀ G), and Q and K get none.
Masked keys get exactly 0; quotients whose numerator is 0 are 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.ops import aten

from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind
from lrptext.layers.product import quotient
from lrptext.rules import CPLRP, AttnLRP


def _signature(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    pass


class Attention(LayerKind):
    name = "attention"
    functions = frozenset({F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default})
    slot = "attention"
    rules = (AttnLRP, CPLRP)

    def capture_call(self, node: Node) -> LayerKind:
        a = bind(node, _signature)
        if a is None:
            node.hint = f"{node.op} called with arguments lrptext does not know"
            return UNSUPPORTED
        if a["enable_gqa"] or isinstance(a["is_causal"], Node) or isinstance(a["scale"], Node):
            node.hint = "grouped-query attention and settings computed in forward() are not supported"
            return UNSUPPORTED
        node.args = (a["query"], a["key"], a["value"], a["attn_mask"])
        node.kwargs = {}
        node.params = {"is_causal": bool(a["is_causal"]), "scale": a["scale"]}
        return self

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        q, k, v, mask = args  # dropout off: eval semantics
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0,
                                              is_causal=node.params["is_causal"], scale=node.params["scale"])

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        (q, k, v, mask), _ = state.arguments(node)
        scale = node.params["scale"] if node.params["scale"] is not None else 1 / math.sqrt(q.shape[-1])
        product = scale * q @ k.transpose(-2, -1)
        allowed = _allowed(node, mask, product)
        a = torch.softmax(product.masked_fill(~allowed, float("-inf")), dim=-1)
        a = torch.nan_to_num(a)  # a query whose keys are all masked attends to nothing
        o = a @ v
        g = quotient(r, o)
        q_node, k_node, v_node = node.args[:3]
        if isinstance(rule, CPLRP):
            return [(v_node, v * (a.transpose(-2, -1) @ g))]
        r_v = 0.5 * v * (a.transpose(-2, -1) @ g)
        r_a = 0.5 * a * (g @ v.transpose(-2, -1))
        r_s = product * (r_a - a * r_a.sum(-1, keepdim=True))
        r_s = torch.where(allowed, r_s, torch.zeros_like(r_s))
        h = scale * quotient(r_s, product)
        return [(q_node, 0.5 * q * (h @ k)), (k_node, 0.5 * k * (h.transpose(-2, -1) @ q)), (v_node, r_v)]


def _allowed(node: Node, mask: Any, product: torch.Tensor) -> torch.Tensor:
    """Where a query may attend to a key, broadcast to the scores' shape."""
    allowed = torch.ones_like(product, dtype=torch.bool)
    if node.params["is_causal"]:
        allowed = allowed & torch.ones(product.shape[-2:], dtype=torch.bool, device=product.device).tril()
    if mask is None:
        return allowed
    if mask.dtype == torch.bool:
        return allowed & mask
    if not bool(((mask == 0) | (mask == float("-inf"))).all()):
        raise ValueError(f"{node.op} at '{node.qualified_name}': an additive attention mask other than 0 / -inf has no "
                         "rule in lrptext (it would shift the scores like a bias); pass a boolean mask")
    return allowed & (mask == 0)


ATTENTION = Attention()
