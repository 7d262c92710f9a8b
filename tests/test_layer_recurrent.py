"""Recurrent layers (nn.LSTM, nn.GRU) by the rules of Arras et al. (2017). The oracle below is written here from
the equations, one sequence, one step and one unit at a time in float64 numpy: the cell's forward equations as
torch documents them, then going back in time the epsilon rule of every linear map (with the bias factor β:
R_i = Σ_j (w_ji x_i + β (b_j + ε sign(z_j)) / N) / (z_j + ε sign(z_j)) R_j over the map's N inputs), gates held
constant (signal-take-all) and the state update split between its terms by the same rule with unit weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lrptext
from layer_totals import assert_each_samples_own
from lrptext import _native
from lrptext.errors import UnsupportedLayerError
from lrptext.kernels.recurrent import recurrent_sweep
from lrptext.rules import Composite, Epsilon, Norm
from lrptext.rules.composites import RECURRENT_EPSILON

EPS = 1e-6


# ----------------------------------------------------------------------------------------------- the oracle


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def lrp_linear(x, w, b, r_out, eps, beta):
    """The epsilon rule of z = w x + b (w [out, in]) with bias factor beta: relevance of x."""
    z = w @ x + b
    s = np.where(z >= 0, eps, -eps)
    numer = w * x[None, :] + beta * (b + s)[:, None] / len(x)
    return (numer / (z + s)[:, None] * r_out[:, None]).sum(0)


def cell_forward(mode, p, x, h, c):
    """One step of torch's LSTM (gates i, f, g, o) or GRU (r, z, n); returns h, c and what the rules read."""
    H = len(h)
    if mode == "LSTM":
        z = p["w_ih"] @ x + p["b_ih"] + p["w_hh"] @ h + p["b_hh"]
        i, f, g, o = sigmoid(z[:H]), sigmoid(z[H:2 * H]), np.tanh(z[2 * H:3 * H]), sigmoid(z[3 * H:])
        c_new = f * c + i * g
        return o * np.tanh(c_new), c_new, {"i": i, "f": f, "g": g}
    gi, gh = p["w_ih"] @ x + p["b_ih"], p["w_hh"] @ h + p["b_hh"]
    r, u = sigmoid(gi[:H] + gh[:H]), sigmoid(gi[H:2 * H] + gh[H:2 * H])
    n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
    return (1 - u) * n + u * h, None, {"r": r, "z": u, "n": n}


def direction_relevance(mode, p, xs, r_hs, r_h_last, r_c_last, eps, beta, reverse):
    """Relevance of the inputs xs [T, F] of one direction of one layer, given the relevance of its outputs
    r_hs [T, H] and of its last output (h_n, c_n)."""
    T, H = len(xs), p["w_hh"].shape[1]
    order = list(range(T))[::-1] if reverse else list(range(T))
    h, c = np.zeros(H), np.zeros(H)
    steps = []
    for t in order:  # forward, recording each step
        h_new, c_new, gates = cell_forward(mode, p, xs[t], h, c)
        steps.append((t, h, c, h_new, c_new, gates))
        h, c = h_new, c_new
    r_x = np.zeros_like(xs)
    carry_h, carry_c = r_h_last.copy(), (r_c_last.copy() if mode == "LSTM" else None)
    for k in range(T - 1, -1, -1):  # backward in time
        t, h_prev, c_prev, h_t, c_t, g8 = steps[k]
        first = k == 0
        r_h = carry_h + r_hs[t]
        r_new = np.zeros(H)
        r_prev_state = np.zeros(H)
        for j in range(H):
            if mode == "LSTM":  # h = o tanh(c): o a constant, c takes R(h); c = f c_prev + i g
                total_r = r_h[j] + carry_c[j]
                terms = [g8["i"][j] * g8["g"][j]] + ([] if first else [g8["f"][j] * c_prev[j]])
            else:  # h = (1 - z) n + z h_prev
                total_r = r_h[j]
                terms = [(1 - g8["z"][j]) * g8["n"][j]] + ([] if first else [g8["z"][j] * h_prev[j]])
            shares = lrp_linear(np.array(terms), np.ones((1, len(terms))), np.zeros(1), np.array([total_r]), eps,
                                beta)
            r_new[j] = shares[0]  # the gate is a constant: the signal (g, or n) takes the term's share
            if not first:
                r_prev_state[j] = shares[1]
        # the signal's pre-activation (tanh passes relevance on), linear in x_t and h_prev
        if mode == "LSTM":
            w_x, w_h = p["w_ih"][2 * H:3 * H], p["w_hh"][2 * H:3 * H]
            b = p["b_ih"][2 * H:3 * H] + p["b_hh"][2 * H:3 * H]
        else:  # the reset gate r is a constant in r (W_hn h + b_hn)
            r = g8["r"]
            w_x, w_h = p["w_ih"][2 * H:], r[:, None] * p["w_hh"][2 * H:]
            b = p["b_ih"][2 * H:] + r * p["b_hh"][2 * H:]
        if first:  # no previous state: the map reads x_t alone
            r_x[t] = lrp_linear(xs[t], w_x, b, r_new, eps, beta)
            continue
        r_both = lrp_linear(np.concatenate([xs[t], h_prev]), np.concatenate([w_x, w_h], 1), b, r_new, eps, beta)
        r_x[t] = r_both[:len(xs[t])]
        if mode == "LSTM":  # the relevance of h_prev goes to c_prev with that of the kept cell
            carry_h, carry_c = np.zeros(H), r_prev_state + r_both[len(xs[t]):]
        else:
            carry_h = r_prev_state + r_both[len(xs[t]):]
    return r_x


def oracle(module, x, r_out, r_hn, r_cn, eps=EPS, beta=0.0):
    """Relevance of one sequence x [T, F] through a whole nn.LSTM/nn.GRU; r_out [T, D*H], r_hn and r_cn
    [L*D, H] (r_cn for an LSTM only)."""
    D, H, L = 2 if module.bidirectional else 1, module.hidden_size, module.num_layers
    params = []
    for layer in range(L):
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
            params.append({k: getattr(module, name + sfx).detach().double().numpy() for k, name in names.items()})
    inputs = [x]
    for layer in range(L):  # every layer's input, from the per-step forward
        outs = []
        for d in range(D):
            p = params[layer * D + d]
            T = len(inputs[-1])
            order = list(range(T))[::-1] if d else list(range(T))
            h, c, hs = np.zeros(H), np.zeros(H), np.zeros((T, H))
            for t in order:
                h, c, _ = cell_forward(module.mode, p, inputs[-1][t], h, c)
                hs[t] = h
            outs.append(hs)
        inputs.append(np.concatenate(outs, 1))
    r = r_out
    for layer in range(L - 1, -1, -1):
        r_in = np.zeros_like(inputs[layer])
        for d in range(D):
            k = layer * D + d
            r_c = r_cn[k] if r_cn is not None else None
            r_in += direction_relevance(module.mode, params[k], inputs[layer], r[:, d * H:(d + 1) * H], r_hn[k], r_c,
                                        eps, beta, reverse=d == 1)
        r = r_in
    return r


# ------------------------------------------------------------------------------------------------ models


class Outputs(nn.Module):
    """Everything a recurrent layer returns, flattened into the 'logits': relevance enters at every output."""

    def __init__(self, mode, layers, bidirectional, batch_first, features=4, hidden=3):
        super().__init__()
        self.rnn = getattr(nn, mode)(features, hidden, num_layers=layers, bidirectional=bidirectional,
                                     batch_first=batch_first)
        self.lstm = mode == "LSTM"

    def forward(self, x):
        out, state = self.rnn(x)
        if not self.rnn.batch_first:
            out = out.transpose(0, 1)
        if self.lstm:
            h, c = state
            return torch.cat([out.flatten(1), h.transpose(0, 1).flatten(1), c.transpose(0, 1).flatten(1)], 1)
        return torch.cat([out.flatten(1), state.transpose(0, 1).flatten(1)], 1)


class Classifier(nn.Module):
    """Token ids -> embedding -> LSTM/GRU -> a head without bias: the last hidden state, or the maximum over time."""

    def __init__(self, mode, layers=1, bidirectional=False, head="last", packed=False):
        super().__init__()
        self.emb = nn.Embedding(30, 5)
        self.rnn = getattr(nn, mode)(5, 4, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.fc = nn.Linear(4 * (2 if bidirectional else 1), 3, bias=False)
        self.head, self.lstm, self.two = head, mode == "LSTM", bidirectional

    def forward(self, ids):
        out, state = self.rnn(self.emb(ids))
        h = state[0] if self.lstm else state
        if self.head == "last":
            return self.fc(torch.cat([h[-2], h[-1]], 1) if self.two else h[-1])
        return self.fc(out.max(1)[0])


class Packed(nn.Module):
    """Padded token ids and their lengths, packed around the recurrent layer."""

    def __init__(self, mode, head):
        super().__init__()
        self.emb = nn.Embedding(30, 5, padding_idx=0)
        self.rnn = getattr(nn, mode)(5, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(8, 3)
        self.head, self.lstm = head, mode == "LSTM"

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.head == "last":
            h = state[0] if self.lstm else state
            return self.fc(torch.cat([h[-2], h[-1]], 1))
        padded, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return padded.flatten(1) if self.head == "outputs" else self.fc(padded.sum(1))


def _composite(eps=EPS):
    return Composite("test", dense=Epsilon(0.0), conv=Epsilon(0.0), recurrent=Epsilon(eps))


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (2, True)], ids=["1", "1bi", "2bi"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_first"])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_relevance_matches_the_step_by_step_oracle(mode, layers, bidirectional, batch_first, beta, backend):
    torch.manual_seed(1)
    model = Outputs(mode, layers, bidirectional, batch_first).double()
    B, T = 2, 5
    x = torch.randn(B, T, 4, dtype=torch.float64)
    given = x if batch_first else x.transpose(0, 1).contiguous()
    width = model(given).shape[1]
    r = torch.randn(B, width, dtype=torch.float64)
    e = lrptext.explain(model, given, composite=_composite(), output_relevance=r.clone(), backend=backend,
                        bias_factor=beta)
    got = e.relevance if batch_first else e.relevance.transpose(0, 1)
    D, H = 2 if bidirectional else 1, 3
    for b in range(B):
        rb = r[b].numpy()
        r_out = rb[:T * D * H].reshape(T, D * H)
        r_hn = rb[T * D * H:T * D * H + layers * D * H].reshape(layers * D, H)
        r_cn = rb[T * D * H + layers * D * H:].reshape(layers * D, H) if mode == "LSTM" else None
        want = oracle(model.rnn, x[b].numpy(), r_out, r_hn, r_cn, beta=beta)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_kernel_on_every_device_and_dtype_matches_the_oracle(mode, beta, device, dtype, backend):
    """The C++ sweep (CPU, CUDA) and its torch fallback in float32 and float64; float32 to float32's precision."""
    torch.manual_seed(6)
    model = Outputs(mode, 2, True, True).double()
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    r = torch.randn(3, model(x).shape[1], dtype=torch.float64)
    e = lrptext.explain(model.to(device, dtype), x.to(device, dtype), composite=_composite(),
                        output_relevance=r.to(device, dtype), backend=backend, bias_factor=beta)
    model.to("cpu", torch.float64)
    # float32: the rounding of the forward pass, amplified where the sweep divides by a small state or pre-activation
    scale = 1e-11 if dtype == torch.float64 else 5e-4
    for b in range(3):
        rb = r[b].numpy()
        n_out, n_h = 6 * 2 * 3, 2 * 2 * 3
        r_cn = rb[n_out + n_h:].reshape(4, 3) if mode == "LSTM" else None
        want = oracle(model.rnn, x[b].numpy(), rb[:n_out].reshape(6, 6), rb[n_out:n_out + n_h].reshape(4, 3), r_cn,
                      beta=beta)
        np.testing.assert_allclose(e.relevance[b].cpu().double().numpy(), want,
                                   rtol=1e-9 if dtype == torch.float64 else 1e-3, atol=scale * np.abs(want).max())


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)],
                         ids=["1", "1bi", "2", "2bi"])
@pytest.mark.parametrize("head", ["last", "max"])
def test_bias_factor_one_conserves_relevance(mode, layers, bidirectional, head, backend):
    torch.manual_seed(2)
    model = Classifier(mode, layers, bidirectional, head).double()
    ids = torch.randint(1, 30, (3, 9))
    e = lrptext.explain(model, ids, composite=_composite(), backend=backend, bias_factor=1.0)
    assert e.initial.abs().min() > 1e-3  # a logit worth conserving
    assert e.delta.abs().max() < 1e-6, e.delta
    absorbed = lrptext.explain(model, ids, composite=_composite(), backend=backend).delta
    assert absorbed.abs().max() > 1e-3  # with bias_factor 0 the biases keep a visible share


class TimeFirst(nn.Module):
    """Token ids [B, T] -> embedding -> a recurrent layer (time-first, or batch-first with two layers) -> a head,
    every size (time steps, hidden, layers) equal to the batch's, so that no shape tells where the batch is."""

    def __init__(self, mode, head, size=4):
        super().__init__()
        self.head, self.lstm = head, mode == "LSTM"
        self.embedding = nn.Embedding(20, size)
        self.rnn = getattr(nn, mode)(size, size, num_layers=2 if head == "h_n[-1]" else 1,
                                     batch_first=head == "h_n[-1]")
        self.fc = nn.Linear(size, 2)

    def forward(self, ids):
        x = self.embedding(ids)
        out, state = self.rnn(x if self.rnn.batch_first else x.transpose(0, 1))
        h = state[0] if self.lstm else state  # (h_n, c_n) or h_n
        if self.head == "out[-1]":
            return self.fc(out[-1])
        if self.head == "out.mean(0)":
            return self.fc(out.mean(0))
        return self.fc(h[-1] if self.head == "h_n[-1]" else h.squeeze(0))


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("head", ["out[-1]", "out.mean(0)", "h_n.squeeze(0)", "h_n[-1]"])
def test_layer_totals_are_each_samples_own_wherever_the_batch_axis_is(mode, head):
    """layers=True where time steps, hidden size and layers all equal the batch: a time-first [T, B, H] output,
    h_n [layers, B, H] with layers == B, pooled over time: each total is the sample's own, the one it gets
    alone (shapes alone summed per time step or per layer here, as if batch-first)."""
    torch.manual_seed(7)
    model = TimeFirst(mode, head).double()
    assert_each_samples_own(lrptext.Explainer(model, composite="epsilon"), torch.randint(0, 20, (4, 4)))


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("head", ["last", "sum"])
def test_a_padded_batch_equals_one_sequence_at_a_time(mode, head, backend):
    torch.manual_seed(3)
    model = Packed(mode, head).double()
    lengths = torch.tensor([4, 7, 1, 5])
    ids = torch.randint(1, 30, (4, 7))
    ids[torch.arange(7) >= lengths[:, None]] = 0
    explainer = lrptext.Explainer(model, composite="epsilon", backend=backend)
    batch = explainer.explain((ids, lengths))
    for b, n in enumerate(lengths.tolist()):
        alone = explainer.explain((ids[b:b + 1, :n], lengths[b:b + 1]))
        torch.testing.assert_close(batch.relevance[0][b, :n], alone.relevance[0][0], rtol=1e-10, atol=1e-12)
        assert torch.equal(batch.relevance[0][b, n:], torch.zeros(7 - n, dtype=torch.float64))
        torch.testing.assert_close(batch.prediction[b], alone.prediction[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_packed_relevance_matches_the_oracle_per_sequence(mode, beta, backend):
    torch.manual_seed(4)
    model = Packed(mode, "outputs").double()
    lengths = torch.tensor([3, 6])
    ids = torch.randint(1, 30, (2, 6))
    ids[0, 3:] = 0
    r = torch.randn(2, 6 * 8, dtype=torch.float64)
    e = lrptext.explain(model, (ids, lengths), composite=_composite(), backend=backend, output_relevance=r.clone(),
                        bias_factor=beta)
    for b, n in enumerate(lengths.tolist()):
        x = model.emb(ids[b, :n]).detach().numpy()
        r_out = r[b].reshape(6, 8)[:n].numpy()  # beyond the length the output is padding: a constant
        none = np.zeros((4, 4))
        want = oracle(model.rnn, x, r_out, none, none if mode == "LSTM" else None, beta=beta).sum(1)
        np.testing.assert_allclose(e.relevance[0][b, :n].numpy(), want, rtol=1e-9, atol=1e-12)


def test_saturated_gates_reduce_an_lstm_to_the_linear_case(backend):
    """With input and forget gates saturated open (i = f = 1 exactly in float64) and no recurrent weights into the
    candidate, c_T = Σ_t g_t with g_t = tanh(W x_t + b): the cell's proportional split gives each step g_t / c_T of
    R(c_T) = R(h_T), and the epsilon rule of W x_t + b the inputs' share: LRP of the linear sum."""
    torch.manual_seed(5)
    H, F = 3, 4
    lstm = nn.LSTM(F, H, batch_first=True).double()
    with torch.no_grad():
        lstm.bias_ih_l0[:2 * H] = 100.0  # i, f: sigmoid(100) == 1.0 in float64
        lstm.weight_hh_l0[2 * H:3 * H] = 0.0

    class Last(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = lstm

        def forward(self, x):
            return self.rnn(x)[1][0][0]  # h_n [B, H]

    x = torch.randn(2, 6, F, dtype=torch.float64)
    r = torch.randn(2, H, dtype=torch.float64)
    got = lrptext.explain(Last(), x, composite=_composite(eps=0.0), output_relevance=r.clone(),
                          backend=backend).relevance
    w, b = lstm.weight_ih_l0.detach()[2 * H:3 * H], (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()[2 * H:3 * H]
    z = x @ w.T + b  # [B, T, H]
    g = torch.tanh(z)
    share = g / g.sum(1, keepdim=True) * r[:, None, :]  # R(g_t)
    want = torch.einsum("btj,ji,bti->bti", share / z, w, x)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_support_table_and_refusals():
    model = Classifier("LSTM", 2, True)
    table = str(lrptext.support_table(model))
    assert "recurrent" in table and "Epsilon(epsilon=0.01)" in table

    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 2, batch_first=True)

        def forward(self, x, h0):
            return self.rnn(x, h0)[0].sum(1)

    with pytest.raises(UnsupportedLayerError, match="zero initial states"):
        lrptext.Explainer(WithState())

    class Projected(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(3, 4, proj_size=2, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0].sum(1)

    with pytest.raises(UnsupportedLayerError, match="proj_size"):
        lrptext.Explainer(Projected())

    class Vanilla(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(3, 2, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0].sum(1)

    with pytest.raises(UnsupportedLayerError, match="nn.RNN"):
        lrptext.Explainer(Vanilla())
    with pytest.raises(ValueError, match="bias_factor"):
        lrptext.Explainer(model, bias_factor=2.0)
    with pytest.raises(ValueError, match="takes"):
        lrptext.Explainer(model, layer_map={nn.LSTM: Norm()})


def test_sweep_refuses_bad_arguments():
    t = torch.zeros(2, 3, 4)
    args = dict(decay=t, new=t, pre=t, h=t, w_h=torch.zeros(4, 4), r_out=t, r_last=torch.zeros(2, 4),
                lengths=torch.tensor([3, 2]), inputs=5)
    recurrent_sweep(**args)
    with pytest.raises(ValueError, match="'lengths' must lie in"):
        recurrent_sweep(**{**args, "lengths": torch.tensor([4, 2])})
    with pytest.raises(ValueError, match="'w_h' must be"):
        recurrent_sweep(**{**args, "w_h": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="'new' must have the shape"):
        recurrent_sweep(**{**args, "new": torch.zeros(2, 3, 5)})
    with pytest.raises(ValueError, match="pass 'bias'"):
        recurrent_sweep(**args, bias_factor=1.0)
    with pytest.raises(ValueError, match="float64"):
        recurrent_sweep(**{**args, "pre": t.double()})


def test_the_core_checks_its_own_arguments():
    """The C++ binding refuses what the Python wrapper would (lengths beyond the steps would read out of bounds)."""
    core = _native.require_core()
    t = torch.zeros(2, 3, 4)
    args = [t, t, t, t, torch.zeros(4, 4), t, torch.zeros(2, 4)]
    core.recurrent_sweep(*args, torch.tensor([3, 1]), torch.empty(2, 3, 4), inputs=5)
    with pytest.raises(ValueError, match="'lengths' must lie in \\[1, 3\\].*got 4 at index 0"):
        core.recurrent_sweep(*args, torch.tensor([4, 1]), torch.empty(2, 3, 4), inputs=5)
    with pytest.raises(ValueError, match="'lengths' must be an int64 array on the CPU"):
        core.recurrent_sweep(*args, torch.tensor([3, 1], dtype=torch.int32), torch.empty(2, 3, 4), inputs=5)
    with pytest.raises(ValueError, match="'weight' must have shape"):
        core.recurrent_sweep(*args[:4], torch.zeros(4, 3), *args[5:], torch.tensor([3, 1]), torch.empty(2, 3, 4),
                             inputs=5)
    with pytest.raises(ValueError, match="'out' shares memory with 'decay'"):
        core.recurrent_sweep(*args, torch.tensor([3, 1]), t, inputs=5)
    with pytest.raises(ValueError, match="pass the map's 'bias'"):
        core.recurrent_sweep(*args, torch.tensor([3, 1]), torch.empty(2, 3, 4), inputs=5, bias_factor=1.0)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("name", ["epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma",
                                  "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box"])
def test_named_composites_give_recurrent_layers_their_own_epsilon(name, mode):
    """A named composite's recurrent layers take Epsilon(recurrent_epsilon), 0.01 unless given, whatever the dense
    layers' epsilon: the same relevance as that rule named for the layer by a layer_map."""
    torch.manual_seed(5)
    model = Classifier(mode, bidirectional=True).double()
    cell = type(model.rnn)
    ids = torch.randint(1, 30, (2, 7))
    bounds = {"low": -1.0, "high": 1.0} if name.endswith("box") else {}

    def relevance(**options):
        return lrptext.explain(model, ids, composite=name, **bounds, **options).relevance

    torch.testing.assert_close(relevance(), relevance(layer_map={cell: Epsilon(0.01)}), rtol=0, atol=0)
    torch.testing.assert_close(relevance(epsilon=0.1), relevance(epsilon=0.1, layer_map={cell: Epsilon(0.01)}),
                               rtol=0, atol=0)  # the dense layers' epsilon does not reach them
    given = relevance(recurrent_epsilon=1e-6)
    torch.testing.assert_close(given, relevance(layer_map={cell: Epsilon(1e-6)}), rtol=0, atol=0)
    assert not torch.allclose(given, relevance())


def test_the_recurrent_default_outside_the_named_cnn_composites():
    """lrp0 is epsilon 0 everywhere; a Composite without a recurrent rule, and attnlrp, leave recurrent layers at
    the default Epsilon(0.01)."""
    torch.manual_seed(6)
    model = Classifier("GRU", bidirectional=True).double()
    ids = torch.randint(1, 30, (2, 7))
    assert RECURRENT_EPSILON == 0.01
    at = {eps: lrptext.explain(model, ids, composite=Composite("mine", dense=Epsilon(1e-6), recurrent=Epsilon(eps)))
          .relevance for eps in (0.0, 0.01)}
    torch.testing.assert_close(lrptext.explain(model, ids, composite="lrp0").relevance,
                               lrptext.explain(model, ids, composite=Composite("zero", dense=Epsilon(0.0),
                                                                                recurrent=Epsilon(0.0))).relevance)
    torch.testing.assert_close(lrptext.explain(model, ids, composite=Composite("mine", dense=Epsilon(1e-6)))
                               .relevance, at[0.01], rtol=0, atol=0)
    assert not torch.allclose(at[0.0], at[0.01])
    with pytest.raises(ValueError, match="recurrent_epsilon"):
        lrptext.explain(model, ids, composite="lrp0", recurrent_epsilon=0.1)
    assert "Epsilon(epsilon=0.01)" in str(lrptext.support_table(model, composite="attnlrp"))


def test_cudnns_weight_layout_warning_about_lrptexts_own_calls_is_not_passed_on(monkeypatch):
    """On CUDA, torch.lstm warns (and copies) where the weights are not one flat buffer in cuDNN's layout, telling
    the user to call flatten_parameters(): lrptext's calls pass such weights (a lower layer's alone, zeros for
    absent biases), the user's module is fine. Emulated on the CPU; the suite turns warnings into errors."""
    real = torch.lstm

    def warning_lstm(*args, **kwargs):
        warnings.warn("RNN module weights are not part of single contiguous chunk of memory. This means they need "
                      "to be compacted at every call, possibly greatly increasing memory usage. To compact weights "
                      "again call flatten_parameters().", UserWarning)
        return real(*args, **kwargs)

    torch.manual_seed(8)
    model = Classifier("LSTM", layers=2).double()
    monkeypatch.setattr(torch, "lstm", warning_lstm)
    e = lrptext.explain(model, torch.randint(1, 30, (2, 5)), composite=_composite())
    assert torch.isfinite(e.relevance).all()
