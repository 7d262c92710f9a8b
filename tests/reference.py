"""A slow, obviously-correct float64 LRP oracle written straight from the equations, sharing no code with
lrptext: explicit per-connection messages in numpy loops. A convolution is treated as the dense layer of its
Jacobian (the matrix of input-to-output connections), as zennit's tests do.

Equations: docs/conventions.md, i.e. Bach et al. 2015 (PLoS ONE 10(7), eqs. 56-60: ε and αβ), Montavon et al. 2019
("Layer-Wise Relevance Propagation: An Overview", eqs. 3-5: LRP-0, ε, γ), Montavon et al. 2017 (Pattern
Recognition 65, eq. 10-12: z⁺, w², z^B), Lapuschkin et al. 2019 (flat).
"""

from __future__ import annotations

import numpy as np


def st(z: float, eps: float) -> float:
    """z + eps·sign(z) with sign(0) = +1."""
    return z + eps if z >= 0 else z - eps


def dense(x, w, b, r, rule: dict, *, mask=None, low=None, high=None):
    """Input relevance of one dense layer for one rule, sample by sample, neuron by neuron.

    x [B, I], w [J, I], b [J] or None, r [B, J]; mask [J, I] marks the receptive field (flat); low/high [I] (z^B).
    rule: {"name": "epsilon"|"gamma"|"alpha_beta"|"zbox"|"wsquare"|"flat", parameters...}.
    """
    x, w, r = (np.asarray(a, dtype=np.float64) for a in (x, w, r))
    n_out, n_in = w.shape
    b = np.zeros(n_out) if b is None else np.asarray(b, dtype=np.float64)
    mask = np.ones_like(w) if mask is None else np.asarray(mask, dtype=np.float64)
    name = rule["name"]
    stab = rule.get("stabilizer", 1e-6)
    out = np.zeros_like(x)
    pos = lambda v: np.maximum(v, 0.0)  # noqa: E731
    neg = lambda v: np.minimum(v, 0.0)  # noqa: E731
    for n in range(x.shape[0]):
        xs = x[n]
        for j in range(n_out):
            wj = w[j]
            z = float(wj @ xs + b[j])
            if name == "epsilon":
                messages = xs * wj / st(z, rule["epsilon"])
            elif name == "gamma":
                g = rule["gamma"]
                if z > 0:
                    num = pos(xs) * (wj + g * pos(wj)) + neg(xs) * (wj + g * neg(wj))
                    messages = num / st(num.sum() + b[j] + g * pos(b[j]), stab)
                elif z < 0:
                    num = pos(xs) * (wj + g * neg(wj)) + neg(xs) * (wj + g * pos(wj))
                    messages = num / st(num.sum() + b[j] + g * neg(b[j]), stab)
                else:
                    messages = np.zeros(n_in)
            elif name == "alpha_beta":
                a = pos(xs) * pos(wj) + neg(xs) * neg(wj)
                m = pos(xs) * neg(wj) + neg(xs) * pos(wj)
                messages = rule["alpha"] * a / st(a.sum() + pos(b[j]), stab)
                messages = messages - rule["beta"] * m / st(m.sum() + neg(b[j]), stab)
            elif name == "zbox":
                c = xs * wj - low * pos(wj) - high * neg(wj)
                messages = c / st(c.sum(), stab)
            elif name == "wsquare":
                bias2 = b[j] ** 2 if rule.get("use_bias", True) else 0.0
                messages = wj**2 / st((wj**2).sum() + bias2, stab)
            elif name == "flat":
                messages = mask[j] / st(mask[j].sum(), stab)
            else:
                raise ValueError(name)
            out[n] += messages * r[n, j]
    return out


def conv2d_matrix(w, in_shape, *, stride, padding, dilation, groups):
    """The Jacobian of a 2-d convolution without bias as a [Cout·Ho·Wo, Cin·H·W] matrix, and its receptive-field
    mask, from the definition y[co, oh, ow] = Σ w[co, ci, ki, kj] x[g·Cin_g + ci, oh·s - p + ki·d, ...]."""
    cin, h, wd = in_shape
    cout, cin_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    matrix = np.zeros((cout * ho * wo, cin * h * wd))
    mask = np.zeros_like(matrix)
    cout_g = cout // groups
    for co in range(cout):
        g = co // cout_g
        for oh in range(ho):
            for ow in range(wo):
                j = (co * ho + oh) * wo + ow
                for ci in range(cin_g):
                    for ki in range(kh):
                        for kj in range(kw):
                            ih, iw = oh * sh - ph + ki * dh, ow * sw - pw + kj * dw
                            if 0 <= ih < h and 0 <= iw < wd:
                                i = ((g * cin_g + ci) * h + ih) * wd + iw
                                matrix[j, i] = w[co, ci, ki, kj]
                                mask[j, i] = 1.0
    return matrix, mask, (ho, wo)


def conv2d(x, w, b, r, rule: dict, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, low=None, high=None):
    """Input relevance of a 2-d convolution: the dense oracle on the convolution's Jacobian."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    batch, cin, h, wd = x.shape
    matrix, mask, (ho, wo) = conv2d_matrix(w, (cin, h, wd), stride=stride, padding=padding, dilation=dilation,
                                           groups=groups)
    b_full = None if b is None else np.repeat(np.asarray(b, dtype=np.float64), ho * wo)
    low_full = None if low is None else np.repeat(np.asarray(low, dtype=np.float64), h * wd)
    high_full = None if high is None else np.repeat(np.asarray(high, dtype=np.float64), h * wd)
    out = dense(x.reshape(batch, -1), matrix, b_full, np.asarray(r).reshape(batch, -1), rule, mask=mask,
                low=low_full, high=high_full)
    return out.reshape(x.shape)


def embedding(ids, r, padding_idx=None):
    """Per-token relevance: the relevance at the lookup's output, summed over the embedding axis."""
    ids, r = np.asarray(ids), np.asarray(r, dtype=np.float64)
    out = np.zeros(ids.shape)
    for t in np.ndindex(*ids.shape):
        if padding_idx is None or ids[t] != padding_idx:
            out[t] = r[t].sum()
    return out


def embedding_bag(ids, offsets, weight, r, *, mode, per_sample_weights=None, padding_idx=None, stabilizer=1e-6,
                  output=None):
    """y_b = Σ_t f_t E[id_t] (or output[b] where given); R_t = Σ_d f_t E[id_t, d] R_bd / st(y_bd)."""
    ids, weight, r = np.asarray(ids), np.asarray(weight, dtype=np.float64), np.asarray(r, dtype=np.float64)
    ends = list(offsets[1:]) + [len(ids)]
    out = np.zeros(len(ids))
    for bag, (lo, hi) in enumerate(zip(offsets, ends)):
        members = [t for t in range(lo, hi) if padding_idx is None or ids[t] != padding_idx]
        factor = {}
        for t in members:
            if mode == "mean":
                factor[t] = 1.0 / len(members)
            else:
                factor[t] = 1.0 if per_sample_weights is None else float(per_sample_weights[t])
        y = sum((factor[t] * weight[ids[t]] for t in members), np.zeros(weight.shape[1]))
        if output is not None:
            y = np.asarray(output[bag], dtype=np.float64)
        for t in members:
            out[t] = sum(factor[t] * weight[ids[t], d] * r[bag, d] / st(y[d], stabilizer)
                         for d in range(weight.shape[1]))
    return out


def _window(o, size_in, size_out, kernel, stride, pad, dilation, adaptive):
    if adaptive:
        start = (o * size_in) // size_out
        end = -((-(o + 1) * size_in) // size_out)
        return list(range(start, end))
    return [o * stride - pad + k * dilation for k in range(kernel)]


def pool2d(x, r, *, mode, kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), adaptive=False,
           count_include_pad=True, divisor_override=None, stabilizer=1e-6):
    """Pooling relevance over x [B, C, H, W]: max = all to the first maximum in row-major window order;
    avg = Norm rule. Returns (input relevance, the pooled output y the oracle computed)."""
    x, r = np.asarray(x, dtype=np.float64), np.asarray(r, dtype=np.float64)
    batch, chans, h, w = x.shape
    ho, wo = r.shape[2:]
    out, y = np.zeros_like(x), np.zeros_like(r)
    for n in range(batch):
        for c in range(chans):
            for oh in range(ho):
                for ow in range(wo):
                    rows = _window(oh, h, ho, kernel[0], stride[0], padding[0], dilation[0], adaptive)
                    cols = _window(ow, w, wo, kernel[1], stride[1], padding[1], dilation[1], adaptive)
                    taps = [(i, j) for i in rows for j in cols if 0 <= i < h and 0 <= j < w]
                    if mode == "max":
                        best = taps[0]
                        for t in taps:
                            if x[n, c][t] > x[n, c][best]:
                                best = t
                        y[n, c, oh, ow] = x[n, c][best]
                        out[n, c][best] += r[n, c, oh, ow]
                        continue
                    if divisor_override:
                        divisor = divisor_override
                    elif count_include_pad and not adaptive:  # the window clipped to the padded input (torch)
                        hs, ws = oh * stride[0] - padding[0], ow * stride[1] - padding[1]
                        divisor = ((min(hs + kernel[0], h + padding[0]) - hs)
                                   * (min(ws + kernel[1], w + padding[1]) - ws))
                    else:
                        divisor = len(taps)
                    total = sum(x[n, c][t] for t in taps) / divisor
                    y[n, c, oh, ow] = total
                    for t in taps:
                        out[n, c][t] += x[n, c][t] / divisor * r[n, c, oh, ow] / st(total, stabilizer)
    return out, y
