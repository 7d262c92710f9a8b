"""Scaled dot-product attention (F.scaled_dot_product_attention and torch.export's aten operator, which Hugging Face
encoders call by default): O = A V with A = softmax(S), S = scale · Q Kᵀ where the mask allows, −inf elsewhere.
It takes the composite's "attention" rule:

- AttnLRP (Achtibat et al. 2024): A·V and Q Kᵀ by the uniform rule, each operand half of every term's share and
  no stabiliser: R(A) = ½ A ⊙ (G Vᵀ), R(V) = ½ V ⊙ (Aᵀ G) with G = R_O / O; the softmax by
  R(S) = S ⊙ (R(A) − A Σ_k R(A)) (its kept-back share shows in `delta`); R(Q) = ½ Q ⊙ (H K), R(K) = ½ K ⊙ (Hᵀ Q)
  with H = scale · R(S) / S.
- CP-LRP (Ali et al. 2022): A is a constant: R(V) = V ⊙ (Aᵀ G), and Q and K get none.
Masked keys get exactly 0; quotients whose numerator is 0 are 0, and so is the relevance of a query that may attend
to no key. Between torch's dense products the C++ CPU kernel works in gradient form (lrptext.kernels.factored): it
takes G itself (R_O = O ⊙ G) and returns R(Q) / Q, R(K) / K, R(V) / V, and H = scale A ⊙ (½ G Vᵀ − Σ_k R(A)) with
Σ_k R(A) = ½ Σ_c G_c O_c, the gradient of the scores (no exception where S = 0).
`lrptext.kernels.attention_relevance` computes it per head (C++ on the CPU and CUDA), never holding the
[batch, heads, tokens, tokens] matrices of the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.ops import aten

from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind
from lrptext.kernels import broadcast_mask, dispatch, native
from lrptext.kernels.factored import Factored, multiplied
from lrptext.layers import projections
from lrptext.rules import CPLRP, AttnLRP


def _signature(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    pass


class Attention(LayerKind):
    name = "attention"
    functions = frozenset({F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default})
    slot = "attention"
    rules = (AttnLRP, CPLRP)
    takes_factored = True  # in gradient form where the relevance is O ⊙ G

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

    def attention_output(self, node: Node) -> bool:
        return True

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        q, k, v, mask = args  # dropout off: eval semantics
        causal, scale = node.params["is_causal"], node.params["scale"]
        if _flash_on_cpu(q, k, v, mask):
            # what F.scaled_dot_product_attention runs on the CPU, called directly for its log-sum-exp per query:
            # the relevance kernel then reads A and O instead of computing them again
            additive = _once(node, state, ("additive", q.dtype),
                             lambda: _additive(mask, q.dtype, _allows_all(node, mask, state)))
            out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=additive,
                                                                        scale=scale)
            state.saved[node.name] = lse
            return out
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=causal, scale=scale)

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        (q, k, v, mask), _ = state.arguments(node)
        # [batch, tokens, dim] operands without a head axis (torch takes them): one head, its relevance multiplied
        headless = q.dim() == k.dim() == v.dim() == 3
        if headless:
            q, k, v = (t.unsqueeze(1) for t in (q, k, v))
            mask = mask.unsqueeze(1) if mask is not None and mask.dim() == 3 else mask
            r = multiplied(r).unsqueeze(1)
        given = (q, k, v)
        # operands the batch or the heads share (a learned memory, multi-query attention's keys and values)
        broadcast = all(t.dim() == 4 for t in given) and len({t.shape[:2] for t in given}) > 1
        if broadcast:
            heads = torch.broadcast_shapes(q.shape[:2], k.shape[:2], v.shape[:2])
            q, k, v = (t.expand(*heads, *t.shape[2:]) for t in given)
        scale = node.params["scale"] if node.params["scale"] is not None else 1 / math.sqrt(q.shape[-1])
        allowed = _once(node, state, ("allowed", q.shape, k.shape),
                        lambda: None if mask is None else _allowed(node, mask, q, k, _allows_all(node, mask, state)))
        impl = dispatch.implementation("attention_relevance", state.backend, q)
        lse = state.saved.get(node.name)
        saved = {} if lse is None else {"output": state.values[node.name], "logsumexp": lse}
        # O ⊙ G in, Q ⊙ G_Q (and K, V) out, in the C++ CPU kernel: the projections around it then divide by their
        # output in the pass they make anyway (lrptext.kernels.factored)
        gradient = (r.gradient_of(state.values[node.name]) if isinstance(r, Factored) and impl is native
                    and not broadcast else None)
        if gradient is None:
            r = multiplied(r)
        receiving = (2,) if isinstance(rule, CPLRP) else (0, 1, 2)
        # the Q, K and V projections' epsilon rule taken into this step where it can be (lrptext/layers/projections.py)
        folded = projections.fold(node, state, (q, k, v), receiving) if gradient is not None else None
        out = dispatch.attention(impl, q, k, v, r if gradient is None else gradient, allowed,
                                 rule="cp_lrp" if isinstance(rule, CPLRP) else "attnlrp", scale=scale,
                                 causal=node.params["is_causal"], check_finite=False,
                                 gradient_form=gradient is not None,
                                 quotient_epsilon=None if folded is None else folded.epsilon,
                                 out=None if folded is None else folded.outputs, **saved)
        if folded is not None:
            return folded.relevance(state)
        if gradient is not None:
            out = tuple(Factored(x, g, at_output=True) for x, g in zip((q, k, v), out))
        if broadcast:  # each shared operand's relevance summed over what shared it
            out = tuple(o.sum_to_size(t.shape) for o, t in zip(out, given))
        if headless:
            out = tuple(o.squeeze(1) for o in out)
        return [(node.args[i], out[i]) for i in receiving]


def _flash_on_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether torch's CPU flash attention takes these operands, as F.scaled_dot_product_attention checks before
    it picks it (called directly it checks less, torch 2.13: rows that are not contiguous, as heads split off as the
    last factor of the width 'b t (d h) -> b h t d', and keys and values of one batch for several queries' gave
    garbage, an empty sequence a floating-point exception): 4-D float32/float64 CPU tensors of one dtype, batch,
    heads and head size, as many keys as values, no empty axis, each row contiguous, and a 2-D or 4-D mask,
    boolean or additive of their dtype."""
    return (q.device.type == "cpu" and q.dim() == k.dim() == v.dim() == 4 and q.dtype in (torch.float32, torch.float64)
            and k.dtype == v.dtype == q.dtype and q.shape[-1] == k.shape[-1] == v.shape[-1]
            and q.shape[:2] == k.shape[:2] == v.shape[:2] and k.shape[2] == v.shape[2]
            and q.numel() > 0 and k.numel() > 0
            and all(t.stride(-1) == 1 or t.shape[-1] == 1 for t in (q, k, v))
            and (mask is None or (mask.dim() in (2, 4) and mask.dtype in (torch.bool, q.dtype))))


def _once(node: Node, state: Any, form: tuple, compute: Callable[[], Any]) -> Any:
    """A form of the node's mask (`form`: what else it depends on), computed once per explanation when the mask is
    a node of the graph: every layer of an encoder reads the same one (Hugging Face's [batch, 1, tokens, tokens]
    mask is 1 MiB at 512 tokens)."""
    mask_node = node.args[3]
    if not isinstance(mask_node, Node):
        return compute()
    key = (mask_node.name, *form)
    if key not in state.saved:
        state.saved[key] = compute()
    return state.saved[key]


def _allows_all(node: Node, mask: torch.Tensor | None, state: Any) -> bool:
    """Whether a boolean mask is True, or an additive one 0, everywhere (the forward and relevance steps ask once).
    A contiguous boolean mask is read 8 bytes at a time: torch's all() over Hugging Face's [1, 1, 512, 512] mask took
    0.13 ms, three times this."""
    def check() -> bool:
        if mask is None:
            return True
        if mask.dtype != torch.bool:
            return not bool(mask.any())
        if mask.is_contiguous() and mask.numel() % 8 == 0 and mask.storage_offset() % 8 == 0:
            return bool(mask.reshape(-1).view(torch.uint8).view(torch.int64).eq(0x0101010101010101).all())
        return bool(mask.all())
    return _once(node, state, ("allows all",), check)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype, allows_all: bool) -> torch.Tensor | None:
    """The mask as torch's CPU flash attention takes it: additive (0 / −inf, as F.scaled_dot_product_attention turns
    a boolean one into), or None where it lets every query attend to every key (a batch without padding)."""
    if mask is None or allows_all:
        return None
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, float("-inf"))


def _allowed(node: Node, mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
             allows_all: bool) -> torch.Tensor | None:
    """Where a query may attend to a key, as the kernels read it (4-D, broadcast axes of size 1), or None where
    it may attend to every key."""
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == float("-inf"))).all()):
            raise ValueError(f"{node.op} at '{node.qualified_name}': an additive attention mask other than 0 / -inf "
                             "has no rule in lrptext (it would shift the scores like a bias); pass a boolean mask")
        mask = mask == 0
    if allows_all:
        return None
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return broadcast_mask(f"{node.op} at '{node.qualified_name}'", mask, shape)


ATTENTION = Attention()
