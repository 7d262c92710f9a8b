"""The backward sweep over time of a recurrent layer (LSTM, GRU; Arras et al. 2017): one direction of one layer.

Both cells end in the same update, a state s_t = d_t ⊙ s_{t-1} + n_t (LSTM: the cell c_t = f ⊙ c_{t-1} + i ⊙ g;
GRU: the hidden state h_t = z ⊙ h_{t-1} + (1 - z) ⊙ n), whose "new" term n_t is a gate (a constant) times the
tanh of a pre-activation a_t linear in the layer input x_t and the previous output h_{t-1}:
a_t = W_x x_t + (r_t ⊙ W_h) h_{t-1} + b_t (LSTM: r = 1, b = b_ig + b_hg; GRU: r the reset gate, b = b_in + r ⊙ b_hn).

Going back from the last step, with S the relevance of s_t (LSTM: that of c_t plus all of h_t's, which the output
gate passes on unchanged; GRU: that of h_t), st(v) = v + ε sign(v) and β the bias factor:

    R(s_{t-1}) += (d ⊙ s_{t-1} + β ε sign(s_t) / 2) / st(s_t) · S       the proportional split of the update
    R(a_t)      = (n_t         + β ε sign(s_t) / 2) / st(s_t) · S       (the gate is a constant, tanh passes R on)
    q_t         = R(a_t) / st(a_t)                                      the epsilon rule of the linear map:
    R(h_{t-1}) += h_{t-1} ⊙ ((r_t ⊙ q_t) W_h) + β Σ_j (b_j + ε sign(a_j)) q_j / N,   N = inputs of the map
    R(x_t)      = x_t ⊙ (q_t W_x)             + β Σ_j (b_j + ε sign(a_j)) q_j / N    (computed after the sweep)

At a sequence's first step there is no previous state (zero initial states): the update's and the map's previous
terms are absent, n_t takes the whole split and N counts x_t alone. β = 1 conserves relevance exactly; β = 0 lets
biases and stabilisers absorb their share. The sweep returns q_t for every step (0 beyond a sequence's length);
R(x_t) for all steps at once is one matrix product, left to the caller.

Sequences of different lengths run side by side: at sweep step k each sequence is k steps from its own end,
so padding is never read. Arguments are [batch, time, hidden] in one float dtype, lengths int64 [batch].
"""

from __future__ import annotations

from typing import Any

import torch

from lrptext.kernels import dispatch, native
from lrptext.kernels.arrays import stream

__all__ = ["recurrent_sweep"]


def _order(lengths: torch.Tensor, steps: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(time index [B, steps], valid [B, steps]) of each sample at each sweep step (last time step first)."""
    k = torch.arange(steps, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    t = k if reverse else lengths - 1 - k
    return t.clamp(0, steps - 1), k < lengths


def torch_sweep(decay: torch.Tensor, new: torch.Tensor, pre: torch.Tensor, h: torch.Tensor, w_h: torch.Tensor,
                r_out: torch.Tensor, r_last: torch.Tensor, lengths: torch.Tensor, *, scale: torch.Tensor | None,
                bias: torch.Tensor | None, epsilon: float, bias_factor: float, inputs: int, reverse: bool
                ) -> torch.Tensor:
    """The sweep in torch, one step at a time (the fallback of the C++ kernel, same equations)."""
    B, T, H = decay.shape
    rows = torch.arange(B, device=decay.device)
    t_of, valid = _order(lengths.to(decay.device), T, reverse)
    # the state s_t by its recurrence, in the direction's own time order (the last sweep step first)
    states = torch.zeros_like(decay)
    s = torch.zeros(B, H, dtype=decay.dtype, device=decay.device)
    for k in range(T - 1, -1, -1):
        t, ok = t_of[:, k], valid[:, k].unsqueeze(1)
        s = torch.where(ok, decay[rows, t] * s + new[rows, t], s)
        states[rows, t] = torch.where(ok, s, states[rows, t])
    q_all = torch.zeros_like(decay)
    carry = torch.zeros(B, H, dtype=decay.dtype, device=decay.device)
    step = 1 if reverse else -1
    for k in range(T):
        t, ok = t_of[:, k], valid[:, k].unsqueeze(1)
        first = (lengths.to(decay.device) - 1 == k).unsqueeze(1)  # the sequence's first time step
        prev = (t + step).clamp(0, T - 1)
        S = carry + r_out[rows, t] + (r_last if k == 0 else 0)
        s_prev = torch.where(first, 0.0, states[rows, prev])
        keep = decay[rows, t] * s_prev
        total = states[rows, t]
        shift = torch.where(total >= 0, epsilon, -epsilon)
        half = bias_factor * shift / 2
        share = S / (total + shift)
        r_pre = torch.where(first, new[rows, t] + 2 * half, new[rows, t] + half) * share
        a = pre[rows, t]
        a_shift = torch.where(a >= 0, epsilon, -epsilon)
        q = torch.where(ok, r_pre / (a + a_shift), 0.0)
        q_all[rows, t] = torch.where(ok, q, q_all[rows, t])
        qs = q if scale is None else q * scale[rows, t]
        r_prev = h[rows, prev] * (qs @ w_h)
        if bias is not None and bias_factor != 0:
            r_prev = r_prev + bias_factor * ((bias[rows, t] + a_shift) * q).sum(1, keepdim=True) / (inputs + H)
        carry = torch.where(ok & ~first, (keep + half) * share + r_prev, 0.0)
    return q_all


def recurrent_sweep(decay: torch.Tensor, new: torch.Tensor, pre: torch.Tensor, h: torch.Tensor, w_h: torch.Tensor,
                    r_out: torch.Tensor, r_last: torch.Tensor, lengths: torch.Tensor, *,
                    scale: torch.Tensor | None = None, bias: torch.Tensor | None = None, epsilon: float = 1e-6,
                    bias_factor: float = 0.0, inputs: int, reverse: bool = False, backend: str = "auto"
                    ) -> torch.Tensor:
    """q_t of every step of one direction of a recurrent layer (see the module's docstring), [B, T, H].

    decay, new, pre, h, r_out (and scale, bias where given): [B, T, H]; w_h: [H, H] (the candidate's rows of the
    hidden-to-hidden weights); r_last: [B, H], relevance of the sequence's last output (h_n, c_n); lengths: int64
    [B], 1 <= length <= T; inputs: the size of x_t; reverse: the direction runs from the end of the sequence."""
    fn = "recurrent_sweep"
    tensors = {"decay": decay, "new": new, "pre": pre, "h": h, "r_out": r_out}
    if scale is not None:
        tensors["scale"] = scale
    if bias is not None:
        tensors["bias"] = bias
    for name, t in {**tensors, "w_h": w_h, "r_last": r_last, "lengths": lengths}.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if decay.dim() != 3:
        raise ValueError(f"{fn}: 'decay' must be [batch, time, hidden], got shape {tuple(decay.shape)}")
    B, T, H = decay.shape
    for name, t in tensors.items():
        if t.shape != decay.shape:
            raise ValueError(f"{fn}: '{name}' must have the shape of 'decay' {tuple(decay.shape)}, got "
                             f"{tuple(t.shape)}")
    if w_h.shape != (H, H):
        raise ValueError(f"{fn}: 'w_h' must be [{H}, {H}], got {tuple(w_h.shape)}")
    if r_last.shape != (B, H):
        raise ValueError(f"{fn}: 'r_last' must be [{B}, {H}], got {tuple(r_last.shape)}")
    if lengths.shape != (B,) or lengths.dtype != torch.int64:
        raise ValueError(f"{fn}: 'lengths' must be int64 [{B}], got {lengths.dtype} {tuple(lengths.shape)}")
    if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
        raise ValueError(f"{fn}: 'lengths' must lie in [1, {T}], got [{int(lengths.min())}, {int(lengths.max())}]")
    if decay.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{fn}: the arguments must be float32 or float64, got {decay.dtype}")
    for name, t in {**tensors, "w_h": w_h, "r_last": r_last}.items():
        if t.dtype != decay.dtype or t.device != decay.device:
            raise ValueError(f"{fn}: '{name}' is {t.dtype} on {t.device}; every argument must be {decay.dtype} on "
                             f"{decay.device}")
    if not (epsilon >= 0 and bias_factor >= 0):
        raise ValueError(f"{fn}: 'epsilon' and 'bias_factor' must be >= 0, got {epsilon} and {bias_factor}")
    if bias_factor != 0 and bias is None:
        raise ValueError(f"{fn}: bias_factor {bias_factor} redistributes the biases' share: pass 'bias'")
    impl = dispatch.implementation(fn, backend, decay)
    return sweep(impl is not dispatch.torch_backend, decay, new, pre, h, w_h, r_out, r_last, lengths, scale=scale,
                 bias=bias, epsilon=epsilon, bias_factor=bias_factor, inputs=inputs, reverse=reverse)


def sweep(core: bool, decay: torch.Tensor, new: torch.Tensor, pre: torch.Tensor, h: torch.Tensor, w_h: torch.Tensor,
          r_out: torch.Tensor, r_last: torch.Tensor, lengths: torch.Tensor, **options: Any) -> torch.Tensor:
    """The sweep past the argument checks: the C++ core (core=True) or torch."""
    if not core:
        return torch_sweep(decay, new, pre, h, w_h, r_out, r_last, lengths, **options)
    arrays = [a.contiguous() for a in (decay, new, pre, h, w_h, r_out, r_last)]
    scale, bias = options.pop("scale"), options.pop("bias")
    out = torch.empty_like(arrays[0])
    native._call("recurrent_sweep", *arrays, lengths.cpu().contiguous(), out,
                 scale=None if scale is None else scale.contiguous(),
                 bias=None if bias is None or options["bias_factor"] == 0 else bias.contiguous(),
                 stream=stream(decay), **options)
    return out
