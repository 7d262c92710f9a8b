"""Recurrent layers: nn.LSTM and nn.GRU (any number of layers, bidirectional, batch_first either way, packed
sequences), by the rules of Arras et al. (2017, "Explaining Recurrent Neural Network Predictions in Sentiment
Analysis"):

- linear parts (input-to-hidden and hidden-to-hidden products) by the epsilon rule (Epsilon(0.01), the named
  composites' `recurrent_epsilon`, unless a composite names `recurrent=` or a layer_map gives another);
- multiplicative gates by signal-take-all: a gate (sigmoid output) is a constant, the signal gets all the relevance
  (LSTM: h_t = o ⊙ tanh(c_t) passes R(h_t) to c_t; i ⊙ g passes its share to g; GRU: (1 - z) ⊙ n to n, and the
  reset gate r is a constant in r ⊙ (W_hn h + b_hn), so the candidate's pre-activation is linear in x_t and h_{t-1});
- the state update (LSTM c_t = f ⊙ c_{t-1} + i ⊙ g, GRU h_t = z ⊙ h_{t-1} + (1 - z) ⊙ n) split between its two terms
  in proportion, ε-stabilised;
- the explanation's bias_factor β: 0 lets biases and stabilisers absorb their share, 1 redistributes it over the
  inputs, which conserves relevance exactly.

The equations of the backward sweep over time are in lrptext/kernels/recurrent.py (C++ core or torch). The layer's
outputs are a tuple (output, h_n) or (output, (h_n, c_n)): indexing them gives `item` nodes that route the
relevance of each part back here in one `Parts` value. Initial states other than zeros are refused.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node
from lrptext.kernels import native, recurrent
from lrptext.layers.parts import Parts
from lrptext.rules import Epsilon
from lrptext.rules.composites import RECURRENT_EPSILON


class Item(LayerKind):
    """`out[0]`, `out[1]`, `out[1][0]`... of a recurrent layer's or a packing's tuple output: relevance goes back to
    the tuple as one of its parts, by path: (0,) the output sequence, (1,) h_n or the pair (h_n, c_n), (1, 0) h_n,
    (1, 1) c_n. A PackedSequence's relevance is its padded tensor, batch first."""

    name = "recurrent_item"
    tuple_output = True  # (h_n, c_n) is an item too

    def default_rule(self, node: Node) -> Any:
        return "routed back"

    def item(self, node: Node) -> LayerKind | None:
        return _item_of(node) if _is_tuple(node.args[0]) else None

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        path = node.params["path"]
        if isinstance(r, Parts):  # an item holding a tuple: its parts' paths start from the tuple's source
            return [(node.params["source"], r)]
        return [(node.params["source"], Parts({path: r}))]


def _is_tuple(node: Node) -> bool:
    """The item holds a tuple: (h_n, c_n) of an LSTM."""
    source = node.params["source"]
    return source.kind is RECURRENT and source.params["mode"] == "LSTM" and node.params["path"] == (1,)


def _item_of(node: Node) -> LayerKind:
    parent = node.args[0]
    index = node.args[1]
    if not isinstance(index, int) or node.kwargs:
        node.hint = "index a recurrent layer's output tuple with a constant (out, (h_n, c_n) = lstm(x))"
        return UNSUPPORTED
    index %= 2  # every tuple here is a pair: (output, state), (h_n, c_n), (padded, lengths)
    if parent.kind is ITEM:
        node.params = {"source": parent.params["source"], "path": parent.params["path"] + (index,)}
    else:
        node.params = {"source": parent, "path": (index,)}
    return ITEM


class Recurrent(LayerKind):
    name = "recurrent"
    modules = (nn.LSTM, nn.GRU)
    rules = (Epsilon,)
    tuple_output = True

    def capture_module(self, node: Node, module: Any) -> None:
        why = ""
        if getattr(module, "proj_size", 0):
            why = "LSTM(proj_size=...) has no rule in lrptext; use proj_size=0"
        elif len(node.args) + len(node.kwargs) != 1:
            why = ("a recurrent layer is explained from zero initial states: call it with its input alone "
                   "(lstm(x), not lstm(x, (h0, c0)))")
        if why:
            node.kind, node.hint = UNSUPPORTED, why
            return
        node.params = {"weight": module.weight_ih_l0, "weights": tuple(module._flat_weights),
                       "mode": module.mode, "layers": module.num_layers, "directions": 2 if module.bidirectional else 1,
                       "hidden": module.hidden_size, "bias": module.bias, "batch_first": module.batch_first}

    def default_rule(self, node: Node) -> Any:
        return Epsilon(RECURRENT_EPSILON)

    def item(self, node: Node) -> LayerKind | None:
        return _item_of(node)

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        x = args[0]
        return _run(node, _weights(node, _data(x)), x, node.params["layers"])

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        p = node.params
        x = state.values[node.args[0].name]
        packed = isinstance(x, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(x, batch_first=True)
        elif x.dim() != 3:
            raise ValueError(f"'{node.qualified_name}' ({node.op}): lrptext explains batched input [batch, time, "
                             f"features] (or a PackedSequence), got shape {tuple(x.shape)}")
        elif not p["batch_first"]:
            x = x.transpose(0, 1)
        B, T = x.shape[:2]
        lengths = (lengths if packed else torch.full((B,), T)).to(torch.int64)
        parts = r if isinstance(r, Parts) else Parts({})
        weights = _weights(node, x)
        inputs = _layer_inputs(node, weights, x, lengths, _padded_output(node, state.values[node.name][0], T))
        D, H, L = p["directions"], p["hidden"], p["layers"]
        r_seq = parts.get((0,))
        if r_seq is not None and not packed and not p["batch_first"]:
            r_seq = r_seq.transpose(0, 1)
        if r_seq is None:
            r_seq = x.new_zeros(B, T, D * H)
        elif r_seq.shape[1] != T:  # pad_packed_sequence's own length (the longest sequence, or total_length)
            r_seq = torch.nn.functional.pad(r_seq[:, :T], (0, 0, 0, T - min(T, r_seq.shape[1])))
        r_last = _last_state_relevance(node, parts, x)
        device_lengths = lengths.to(x.device)
        bias_factor = float(getattr(state, "bias_factor", 0.0))
        core = state.implementation is native
        for layer in range(L - 1, -1, -1):
            layer_x = inputs[layer]
            r_in = torch.zeros_like(layer_x)
            for d in range(D):
                own = slice(d * H, (d + 1) * H)
                r_in += _direction(p["mode"], weights[layer * D + d], layer_x, inputs[layer + 1][..., own],
                                   r_seq[..., own], r_last[layer * D + d], device_lengths,
                                   epsilon=rule.epsilon, bias_factor=bias_factor, reverse=d == 1, core=core)
            r_seq = r_in
        if not packed and not p["batch_first"]:
            r_seq = r_seq.transpose(0, 1)
        return [(node.args[0], r_seq)]


def _data(x: Any) -> torch.Tensor:
    return x.data if isinstance(x, PackedSequence) else x


def _weights(node: Node, like: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """(w_ih, w_hh, b_ih, b_hh) per layer and direction in like's dtype and device (zero biases where there are
    none); cast once per dtype and device."""
    cache = node.params.setdefault("cast", {})
    key = (like.dtype, like.device)
    if key not in cache:
        flat = [w.detach().to(like.dtype) for w in node.params["weights"]]
        per = 4 if node.params["bias"] else 2
        groups = []
        for k in range(0, len(flat), per):
            w_ih, w_hh = flat[k], flat[k + 1]
            b_ih, b_hh = (flat[k + 2], flat[k + 3]) if per == 4 else (w_ih.new_zeros(w_ih.shape[0]),) * 2
            groups.append((w_ih, w_hh, b_ih, b_hh))
        cache[key] = groups
    return cache[key]


def _run(node: Node, weights: list[tuple[torch.Tensor, ...]], x: Any, layers: int) -> Any:
    """The layer's (or some of its layers') forward from zero states, as nn.LSTM/nn.GRU computes it in eval mode."""
    p = node.params
    D, H = p["directions"], p["hidden"]
    flat = [w for group in weights for w in group]
    lstm = p["mode"] == "LSTM"
    if isinstance(x, PackedSequence):
        data, batch_sizes, sorted_indices, unsorted_indices = x
        h0 = data.new_zeros(layers * D, int(batch_sizes[0]), H)
        hx = (h0, h0) if lstm else h0
        with _own_weights():
            result = (torch.lstm if lstm else torch.gru)(data, batch_sizes, hx, flat, True, layers, 0.0, False, D == 2)
        out = PackedSequence(result[0], batch_sizes, sorted_indices, unsorted_indices)
        states = tuple(s if unsorted_indices is None else s.index_select(1, unsorted_indices) for s in result[1:])
    else:
        if x.dim() != 3:
            raise ValueError(f"'{node.qualified_name}' ({node.op}): lrptext explains batched input [batch, time, "
                             f"features] (or a PackedSequence), got shape {tuple(x.shape)}")
        h0 = x.new_zeros(layers * D, x.shape[0 if p["batch_first"] else 1], H)
        hx = (h0, h0) if lstm else h0
        with _own_weights():
            result = (torch.lstm if lstm else torch.gru)(x, hx, flat, True, layers, 0.0, False, D == 2,
                                                         p["batch_first"])
        out, states = result[0], tuple(result[1:])
    return (out, states) if lstm else (out, states[0])


@contextlib.contextmanager
def _own_weights() -> Iterator[None]:
    """cuDNN warns, and copies them, where an RNN's weights are not one flat buffer in its layout, and tells the
    user to call flatten_parameters(): true of some weights lrptext passes (a lower layer's alone, zeros for absent
    biases, a cast copy), not of the user's module, so the advice would mislead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
        yield


def _padded_output(node: Node, out: Any, steps: int) -> torch.Tensor:
    """The forward pass's output sequence, [B, T, D * H] batch first, zero beyond each sequence's length."""
    if isinstance(out, PackedSequence):
        return pad_packed_sequence(out, batch_first=True, total_length=steps)[0]
    return out if node.params["batch_first"] else out.transpose(0, 1)


def _layer_inputs(node: Node, weights: list, x: torch.Tensor, lengths: torch.Tensor, output: torch.Tensor
                  ) -> list[torch.Tensor]:
    """The input of every layer and the last layer's output (the forward pass's `output`), [B, T, features] batch
    first, zero beyond each sequence's length: the layers below the last computed again."""
    D, T = node.params["directions"], x.shape[1]
    variable = bool((lengths != T).any())
    found = [x]
    for layer in range(node.params["layers"] - 1):
        group = weights[layer * D:(layer + 1) * D]
        h = found[-1]
        if variable:
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out = pad_packed_sequence(_run_batch_first(node, group, packed), batch_first=True, total_length=T)[0]
        else:
            out = _run_batch_first(node, group, h)
        found.append(out)
    return found + [output]


def _run_batch_first(node: Node, group: list, x: Any) -> Any:
    p = node.params
    if not isinstance(x, PackedSequence) and not p["batch_first"]:
        return _run(node, group, x.transpose(0, 1), 1)[0].transpose(0, 1)
    return _run(node, group, x, 1)[0]


def _last_state_relevance(node: Node, parts: Parts, x: torch.Tensor) -> torch.Tensor:
    """Relevance of every layer's and direction's last output, [layers * directions, B, H]: that of h_n plus, for an
    LSTM, that of c_n (the output gate passes the relevance of h_t to c_t unchanged)."""
    p = node.params
    shape = (p["layers"] * p["directions"], x.shape[0], p["hidden"])
    total = x.new_zeros(shape)
    paths = ((1, 0), (1, 1)) if p["mode"] == "LSTM" else ((1,),)
    for path in paths:
        r = parts.get(path)
        if r is not None:
            total = total + r
    return total


def _direction(mode: str, weights: tuple[torch.Tensor, ...], x: torch.Tensor, h: torch.Tensor, r_out: torch.Tensor,
               r_last: torch.Tensor, lengths: torch.Tensor, *, epsilon: float, bias_factor: float, reverse: bool,
               core: bool) -> torch.Tensor:
    """Relevance of the layer input x [B, T, F] from one direction, whose outputs are h [B, T, H]."""
    w_ih, w_hh, b_ih, b_hh = weights
    H = h.shape[2]
    zero = h.new_zeros(h.shape[0], 1, H)
    h_prev = torch.cat([h[:, 1:], zero], 1) if reverse else torch.cat([zero, h[:, :-1]], 1)  # 0 beyond the length
    if mode == "LSTM":  # gates i, f, g (the output gate, a constant, passes R(h_t) to c_t whole: not needed)
        z = torch.addmm(b_ih[:3 * H] + b_hh[:3 * H], x.reshape(-1, x.shape[2]), w_ih[:3 * H].T)
        z = z.addmm_(h_prev.reshape(-1, H), w_hh[:3 * H].T).reshape(*x.shape[:2], 3 * H)
        i, f = torch.sigmoid(z[..., :H]), torch.sigmoid(z[..., H:2 * H])
        pre = z[..., 2 * H:]
        decay, new, scale = f, i * torch.tanh(pre), None
        bias = (b_ih[2 * H:3 * H] + b_hh[2 * H:3 * H]).expand_as(pre)
    else:  # gates r, z, n
        gx = torch.nn.functional.linear(x, w_ih, b_ih)
        gh = torch.nn.functional.linear(h_prev, w_hh, b_hh)
        r = torch.sigmoid(gx[..., :H] + gh[..., :H])
        update = torch.sigmoid(gx[..., H:2 * H] + gh[..., H:2 * H])
        pre = gx[..., 2 * H:] + r * gh[..., 2 * H:]
        decay, new, scale = update, (1 - update) * torch.tanh(pre), r
        bias = b_ih[2 * H:] + r * b_hh[2 * H:]
    w_x, w_h = w_ih[2 * H:3 * H], w_hh[2 * H:3 * H]
    q = recurrent.sweep(core, decay.contiguous(), new.contiguous(), pre.contiguous(), h.contiguous(), w_h.contiguous(),
                        r_out.contiguous(), r_last.contiguous(), lengths, scale=scale,
                        bias=bias if bias_factor else None, epsilon=epsilon, bias_factor=bias_factor,
                        inputs=x.shape[2], reverse=reverse)
    r_x = x * (q @ w_x)
    if bias_factor:
        # β Σ_j (b_j + ε sign(a_j)) q_j shared over the map's inputs: x_t and h_{t-1}, or x_t alone at the first step
        shift = torch.where(pre >= 0, epsilon, -epsilon)
        share = bias_factor * ((bias + shift) * q).sum(2, keepdim=True)
        T = x.shape[1]
        t = torch.arange(T, device=x.device).unsqueeze(0)
        first = (t == lengths.unsqueeze(1) - 1) if reverse else (t == 0)
        counts = x.shape[2] + H * (~first).to(x.dtype)
        r_x = r_x + share / counts.unsqueeze(2)
    return r_x


RECURRENT = Recurrent()
ITEM = Item()
