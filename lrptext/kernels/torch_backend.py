"""The vectorised torch backend: the same rules as the C++ kernels in torch operations, used when the
extension is missing and with backend="torch". Shapes arrive normalised by lrptext.kernels."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lrptext.rules import LinearRule

Linear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """st(z, ε) = z + ε·sign(z) with sign(0) = +1 (also for -0.0); mirrors csrc/include/lrptext/stabilizer.h."""
    return torch.where(z >= 0, z + eps, z - eps)


def require_finite(fn: str, **named: torch.Tensor | None) -> None:
    """The C++ boundary's finiteness check, with the same message."""
    for name, t in named.items():
        if t is None or t.numel() == 0:
            continue
        bad = ~torch.isfinite(t.reshape(-1))
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{fn}: '{name}' holds NaN or infinity (first at flat index {first}); relevance of non-finite values "
                "is undefined, so clean the input or pass check_finite=False"
            )


def prepare_weights(rule: LinearRule, weight: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return rule.modify_weights(weight)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relevance: torch.Tensor, *,
           forward: Linear, backward: Linear, rule: LinearRule, z: torch.Tensor | None,
           prepared: tuple[torch.Tensor | None, torch.Tensor | None], reduce_channels: bool) -> torch.Tensor:
    """Relevance at the input of a linear map y = forward(x, W) + b with transpose backward(s, W).
    Channels are dimension 1 of x and y (dense: features)."""
    if prepared[0] is None:
        prepared = prepare_weights(rule, weight)
    wa, wb = prepared

    def channel(v: torch.Tensor, ndim: int) -> torch.Tensor:
        return v.view((1, -1) + (1,) * (ndim - 2))

    b = None if bias is None else channel(bias, relevance.dim())
    R = relevance
    kind = rule.kernel
    if kind == "epsilon":
        if z is None:
            z = forward(x, weight) + (0 if b is None else b)
        out = x * backward(R / stabilize(z, rule.epsilon), weight)
    elif kind == "alpha_beta":
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        a = forward(xp, wa) + forward(xn, wb) + (0 if b is None else b.clamp(min=0))
        n = forward(xp, wb) + forward(xn, wa) + (0 if b is None else b.clamp(max=0))
        sa = rule.alpha * R / stabilize(a, rule.stabilizer)
        sn = rule.beta * R / stabilize(n, rule.stabilizer)
        out = xp * (backward(sa, wa) - backward(sn, wb)) + xn * (backward(sa, wb) - backward(sn, wa))
    elif kind == "gamma":
        if z is None:
            z = forward(x, weight) + (0 if b is None else b)
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        bp = 0 if b is None else b + rule.gamma * b.clamp(min=0)
        bn = 0 if b is None else b + rule.gamma * b.clamp(max=0)
        p = forward(xp, wa) + forward(xn, wb) + bp
        n = forward(xp, wb) + forward(xn, wa) + bn
        sp = torch.where(z > 0, R / stabilize(p, rule.stabilizer), torch.zeros_like(R))
        sn = torch.where(z < 0, R / stabilize(n, rule.stabilizer), torch.zeros_like(R))
        out = xp * (backward(sp, wa) + backward(sn, wb)) + xn * (backward(sp, wb) + backward(sn, wa))
    elif kind == "zbox":
        lows, highs = rule.bounds(x.shape[1])
        ones = torch.ones_like(x[:1])
        low = ones * channel(torch.tensor(lows, dtype=x.dtype, device=x.device), x.dim())
        high = ones * channel(torch.tensor(highs, dtype=x.dtype, device=x.device), x.dim())
        zb = forward(x, weight) - forward(low, wa) - forward(high, wb)
        s = R / stabilize(zb, rule.stabilizer)
        out = x * backward(s, weight) - low * backward(s, wa) - high * backward(s, wb)
    elif kind in ("wsquare", "flat"):
        d = forward(torch.ones_like(x[:1]), wa)
        if kind == "wsquare" and rule.zero_params != "bias" and b is not None:
            d = d + b * b
        out = backward(R / stabilize(d, rule.stabilizer), wa)
    else:
        raise TypeError(f"no kernel implements {rule!r}")
    return out.sum(dim=1) if reduce_channels else out


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relevance: torch.Tensor, *,
          rule: LinearRule, z: torch.Tensor | None, prepared: tuple[torch.Tensor | None, torch.Tensor | None],
          reduce_channels: bool, check_finite: bool) -> torch.Tensor:
    if check_finite:
        require_finite("dense_relevance", input=x, relevance=relevance, z=z)
    return linear(x, weight, bias, relevance, forward=lambda v, w: v @ w.T, backward=lambda s, w: s @ w,
                  rule=rule, z=z, prepared=prepared, reduce_channels=reduce_channels)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relevance: torch.Tensor, *,
           stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
           rule: LinearRule, z: torch.Tensor | None, prepared: tuple[torch.Tensor | None, torch.Tensor | None],
           reduce_channels: bool, check_finite: bool) -> torch.Tensor:
    if check_finite:
        require_finite("conv_relevance", input=x, relevance=relevance, z=z)

    def forward(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(v, w, None, stride, padding, dilation, groups)

    def backward(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        shape = (s.shape[0],) + tuple(x.shape[1:])
        return torch.nn.grad.conv2d_input(shape, w, s, stride, padding, dilation, groups)

    return linear(x, weight, bias, relevance, forward=forward, backward=backward, rule=rule, z=z,
                  prepared=prepared, reduce_channels=reduce_channels)


def check_ids(fn: str, ids: torch.Tensor, num_embeddings: int) -> None:
    bad = (ids < 0) | (ids >= num_embeddings)
    if bool(bad.any()):
        position = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{fn}: 'ids' holds a token id outside [0, {num_embeddings}) at position {position} "
            f"(value {int(ids[position])}); map unknown words to an in-vocabulary id (e.g. an <unk> token) before "
            "explaining"
        )


def embedding(ids: torch.Tensor, relevance: torch.Tensor, *, num_embeddings: int, padding_idx: int | None,
              reduce: bool, check_finite: bool) -> torch.Tensor:
    check_ids("embedding_relevance", ids, num_embeddings)
    if check_finite:
        require_finite("embedding_relevance", relevance=relevance)
    keep = torch.ones_like(ids, dtype=torch.bool) if padding_idx is None else ids != padding_idx
    out = relevance * keep.unsqueeze(-1).to(relevance.dtype)
    return out.sum(-1) if reduce else out


def embedding_bag(ids: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, *,
                  per_sample_weights: torch.Tensor | None, output: torch.Tensor | None, mode: str,
                  padding_idx: int | None, stabilizer: float, check_finite: bool) -> torch.Tensor:
    fn = "embedding_bag_relevance"
    check_ids(fn, ids, weight.shape[0])
    if check_finite:
        require_finite(fn, relevance=relevance)
    n, bags = ids.shape[0], offsets.shape[0]
    if bags == 0:  # no bag holds any token: none gets relevance (as in the C++ kernel)
        return torch.zeros(n, dtype=weight.dtype, device=weight.device)
    ends = torch.cat([offsets[1:], offsets.new_tensor([n])])
    if bags and (int(offsets[0]) != 0 or bool((ends < offsets).any()) or int(offsets[-1]) > n):
        raise ValueError(f"{fn}: 'offsets' must start at 0, never decrease and stay <= the number of ids ({n})")
    bag = torch.repeat_interleave(torch.arange(bags, device=ids.device), ends - offsets)
    keep = torch.ones(n, dtype=weight.dtype, device=ids.device)
    if padding_idx is not None:
        keep = (ids != padding_idx).to(weight.dtype)
    if mode == "mean":
        count = torch.zeros(bags, dtype=weight.dtype, device=ids.device).index_add_(0, bag, keep)
        factor = keep / count[bag].clamp(min=1)
    else:
        factor = keep * (per_sample_weights if per_sample_weights is not None else 1)
    rows = weight[ids] * factor.unsqueeze(1)
    y = output
    if y is None:
        y = torch.zeros(bags, weight.shape[1], dtype=weight.dtype, device=weight.device).index_add_(0, bag, rows)
    share = relevance / stabilize(y, stabilizer)
    return (rows * share[bag]).sum(1)


def pool(planes: torch.Tensor, relevance: torch.Tensor, *, mode: str, kernel: tuple[int, int],
         stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], adaptive: bool,
         count_include_pad: bool, divisor_override: int, stabilizer: float, check_finite: bool,
         relu_input: bool = False) -> torch.Tensor:
    """Max: the gradient with R as the output gradient goes to torch's argmax (first maximum).
    Average: the Norm rule R_i = x_i Σ_j (∂y_j/∂x_i) R_j / st(y_j), as one vector-Jacobian product.
    relu_input: `planes` holds z and the windows pool relu(z)."""
    if check_finite:
        require_finite("pool_relevance", input=planes, relevance=relevance)
    if relu_input:
        planes = planes.relu()
    size = tuple(relevance.shape[1:])
    if mode == "max":
        pool_fn = (lambda v: F.adaptive_max_pool2d(v, size)) if adaptive else (
            lambda v: F.max_pool2d(v, kernel, stride, padding, dilation))
    else:
        pool_fn = (lambda v: F.adaptive_avg_pool2d(v, size)) if adaptive else (
            lambda v: F.avg_pool2d(v, kernel, stride, padding, False, count_include_pad, divisor_override or None))
    with torch.enable_grad():
        x = planes.detach().unsqueeze(1).requires_grad_(True)
        y = pool_fn(x)
        grad_out = relevance.unsqueeze(1)
        if mode == "avg":
            grad_out = grad_out / stabilize(y.detach(), stabilizer)
        (grad,) = torch.autograd.grad(y, x, grad_out)
    out = grad if mode == "max" else x.detach() * grad
    return out.squeeze(1)


def rows(x: torch.Tensor, y: torch.Tensor, relevance: torch.Tensor, *, rule: str, bias: torch.Tensor | None,
         epsilon: float, check_finite: bool, weight: torch.Tensor | None = None,
         variance_epsilon: float | None = None) -> torch.Tensor:
    """LayerNorm (identity on 1/σ, β's share kept, the centring by the ε-rule) or softmax (x ⊙ (R − s ΣR))
    relevance along the rows of [rows, width]; the equations of csrc/include/lrptext/row_rules.h."""
    if check_finite:
        require_finite("row_relevance", **({"input": x} if rule == "layer_norm" else {}), output=y,
                       relevance=relevance)
    r = relevance
    if rule == "softmax":
        out = x * (r - y * r.sum(-1, keepdim=True))
        return torch.where(y == 0, torch.zeros_like(out), out)
    z = x - x.mean(-1, keepdim=True)
    if bias is not None and variance_epsilon is not None:  # st(y) − β from z (row_rules.h says why)
        scaled = z * torch.rsqrt((z * z).mean(-1, keepdim=True) + variance_epsilon)
        sy = stabilize(y, epsilon)
        r = r * ((scaled if weight is None else weight * scaled) + torch.where(y >= 0, epsilon, -epsilon)) / sy
    elif bias is not None:
        r = r * (1 - bias / stabilize(y, epsilon))
    s = r / stabilize(z, epsilon)
    return x * (s - s.mean(-1, keepdim=True))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor | None,
              *, rule: str, scale: float, causal: bool, check_finite: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention relevance (AttnLRP or CP-LRP); the equations of csrc/cpu/attention.cpp."""
    if check_finite:
        require_finite("attention_relevance", query=q, key=k, value=v, relevance=relevance)
    s = scale * (q @ k.transpose(-2, -1))
    allowed = torch.ones_like(s, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
    if mask is not None:
        allowed = allowed & mask
    a = torch.nan_to_num(torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1))  # no key: attends to none
    o = a @ v
    g = torch.where((relevance == 0) | (o == 0), torch.zeros_like(relevance), relevance / o)  # O = 0: no key
    share = 1.0 if rule == "cp_lrp" else 0.5
    r_v = share * v * (a.transpose(-2, -1) @ g)
    if rule == "cp_lrp":
        return torch.zeros_like(q), torch.zeros_like(k), r_v
    r_a = 0.5 * a * (g @ v.transpose(-2, -1))
    h = scale * (r_a - a * r_a.sum(-1, keepdim=True))
    h = torch.where(allowed & (s != 0), h, torch.zeros_like(h))  # H = scale R_S / S, 0 where S = 0
    return 0.5 * q * (h @ k), 0.5 * k * (h.transpose(-2, -1) @ q), r_v
