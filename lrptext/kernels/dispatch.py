"""The kernels past their argument checks: shapes normalised to what the implementations take (dense: rows,
convolutions: 2-d, pooling: planes) and the chosen implementation called, its result in the caller's framework.

lrptext.kernels checks a caller's arguments and comes here; the engine, whose arguments are its own forward pass's
contiguous tensors, comes here directly: the checks cost a fifth of a small layer's time at batch 1
(docs/performance.md)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lrptext import _native
from lrptext.kernels import native, torch_backend
from lrptext.kernels.arrays import Array, contiguous, contiguous_rows, like_input, strided, to_torch
from lrptext.kernels.factored import QUOTIENT_APART, Factored
from lrptext.rules import Epsilon, LinearRule

BACKENDS = ("auto", "cpp", "torch")
Prepared = tuple[Array | None, Array | None]


def implementation(fn: str, backend: str, *arrays: Array | None) -> ModuleType:
    """The module that runs `backend` for these arrays: "auto" is the C++ core where it can run, else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"{fn}: 'backend' must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return torch_backend
    if backend == "cpp":
        _native.require_core()
        return native
    cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in arrays)
    if _native.core is None or (cuda and not _native.build_info()["cuda"]):
        return torch_backend
    return native


def call(impl: ModuleType, name: str, like: Array, *args: Array | None, **kwargs: Any) -> Array:
    """Runs impl.name; the torch backend gets tensors and the result returns in the caller's framework."""
    if impl is torch_backend and isinstance(like, np.ndarray):
        converted = [to_torch(a) for a in args]
        kwargs = {k: to_torch(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        if "prepared" in kwargs:
            kwargs["prepared"] = tuple(to_torch(a) for a in kwargs["prepared"])
        return like_input(getattr(impl, name)(*converted, **kwargs), like)
    return getattr(impl, name)(*args, **kwargs)


def _core_options(impl: ModuleType, relevance_writable: bool, relu_input: bool) -> dict[str, bool]:
    """The engine's options for the C++ kernels: they may divide a relevance buffer the caller hands over in place
    (torch's allocate anyway), and read relu(input) from a ReLU's pre-activation (asked for only of them)."""
    if impl is not native:
        if relu_input:
            raise ValueError("relu_input is an option of the C++ kernels only")
        return {}
    return {k: True for k, v in (("relevance_writable", relevance_writable), ("relu_input", relu_input)) if v}


# Products from this many multiply-adds on go to torch's BLAS where _native.dense_product says so; smaller ones stay in
# one call to the core, which runs them on one thread.
_TORCH_PRODUCT_FROM = 1 << 21


# The activations a dense layer's relevance can read from their kept pre-activation x (input_activation): the
# core's element-wise product computes them itself; elsewhere they are computed here.
INPUT_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu, "gelu": F.gelu, "gelu_tanh": functools.partial(F.gelu, approximate="tanh"), "silu": F.silu}


def epsilon_in_torch(impl: ModuleType, rule: Any, rows: Array, weight: Array) -> bool:
    """Whether a dense layer's epsilon rule over these input rows [N, in] takes its product in torch's BLAS
    (_epsilon_torch_product) rather than in one call to the core."""
    return (impl is native and _native.dense_product == "torch" and type(rule) is Epsilon
            and isinstance(rows, torch.Tensor) and rows.is_cpu
            and rows.shape[0] * weight.shape[0] * weight.shape[1] >= _TORCH_PRODUCT_FROM)


def _epsilon_torch_product(x: torch.Tensor, weight: torch.Tensor, r: torch.Tensor | Factored, z: torch.Tensor,
                           epsilon: float, writable: bool, input_activation: str | None,
                           add_to: torch.Tensor | Factored | None, factored: bool,
                           quotient: torch.Tensor | None = None) -> torch.Tensor | Factored:
    """The epsilon rule on rows, R_in = x (s W) with s = R / st(z), its product in torch's BLAS and its element-wise
    steps in the core (torch's would each wake its thread pool); act(x) for x with input_activation. Factored
    relevance is divided in one pass, act(input) gradient / st(z), unless the step before computed that quotient
    already (`quotient`, rows like r). With `factored`, the result stays factored, (x, s W, activation); added to
    factored relevance pending at x (add_to), s W is added to its gradient inside the product."""
    if quotient is not None:
        s = quotient.view(r.shape)
    elif isinstance(r, Factored):  # (moved as views: contiguous copies first, a copied gradient this call's own)
        gradient, factor = r.gradient.contiguous(), r.input.contiguous()
        own = r.owned or gradient is not r.gradient
        s = gradient if own and r.activation not in QUOTIENT_APART else torch.empty_like(gradient)
        native.divide_stabilized(gradient, z, s, epsilon, factor=factor, activation_factor=r.activation)
    else:
        s = r if writable else torch.empty_like(r)
        native.divide_stabilized(r, z, s, epsilon)
    return from_quotient(x, weight, s, input_activation, add_to, factored)


def from_quotient(x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor, input_activation: str | None = None,
                  add_to: torch.Tensor | Factored | None = None, factored: bool = False) -> torch.Tensor | Factored:
    """The epsilon rule on rows from its quotient s = R / st(z): R_in = act(x) ⊙ (s W), the product in torch's
    BLAS; add_to and factored as in _epsilon_torch_product."""
    if isinstance(add_to, Factored):  # x ⊙ g + x ⊙ (s W) = x ⊙ (g + s W)
        g = add_to.gradient.view(x.shape)
        if add_to.owned:
            g.addmm_(s, weight)
            return add_to
        return dataclasses.replace(add_to, gradient=torch.addmm(g, s, weight).view(add_to.shape), owned=True)
    c = torch.mm(s, weight)
    activation = input_activation or "identity"
    if add_to is not None:
        native.multiply(x, c, add_to, accumulate=True, activation_a=activation)
        return add_to
    if factored:
        return Factored(x, c, activation, at_output=input_activation is None)
    native.multiply(x, c, c, activation_a=activation)
    return c


def dense(impl: ModuleType, input: Array, weight: Array, bias: Array | None, relevance: Array | Factored, *,
          rule: LinearRule, z: Array | None, prepared: Prepared, reduce_channels: bool, check_finite: bool,
          relevance_writable: bool = False, input_activation: str | None = None,
          add_to: torch.Tensor | Factored | None = None, factored: bool = False,
          quotient: torch.Tensor | None = None) -> Array | Factored:
    """input [..., in] as rows [N, in]; the result back in input's leading shape. relevance_writable: the caller
    hands `relevance` over (it is not read after this call; Factored relevance always is). input_activation (C++
    kernels): `input` is the kept pre-activation of a dropped activation (INPUT_ACTIVATIONS) whose output the layer
    read. add_to (C++ kernels, not with reduce_channels): a contiguous tensor shaped like input that the relevance
    is added to in place and returned, instead of a new one; or factored relevance input ⊙ g pending at the input,
    whose g the product adds to where the product is torch's (the sum returned; else the relevance alone).
    factored: the caller takes the result as Factored, (input, gradient), where the product is torch's. quotient:
    the epsilon quotient R / st(z) of factored relevance, computed by the step before (LayerNorm's kernel), shaped
    like z; read where the product is torch's (the caller checks that it belongs to this relevance)."""
    lead = tuple(input.shape[:-1])
    out_features, in_features = weight.shape
    rows = math.prod(lead)
    if len(lead) == 1:  # already rows: no reshape per tensor
        x, zz = contiguous(input), contiguous(z)
    else:
        x = contiguous(input).reshape(rows, in_features)
        zz = None if z is None else contiguous(z).reshape(rows, out_features)
    options: dict[str, Any] = _core_options(impl, relevance_writable, input_activation == "relu")
    torch_product = (epsilon_in_torch(impl, rule, x, weight) and zz is not None
                     and not (reduce_channels or check_finite) and prepared[0] is None)
    if isinstance(add_to, Factored):  # gradients add in the torch product only; else run() adds the two
        if torch_product and input_activation is None:
            options["add_to"] = add_to
        add_to = None
    elif add_to is not None:
        if impl is not native or reduce_channels or not add_to.is_contiguous() or add_to.shape != input.shape:
            raise ValueError("add_to is an option of the C++ kernels for a contiguous tensor shaped like the input")
        options["add_to"] = add_to.view(x.shape)
    if isinstance(relevance, Factored) and not torch_product:
        relevance = relevance.tensor()
    r: Any = relevance if isinstance(relevance, Factored) else contiguous(relevance)
    if len(lead) != 1:
        r = r.reshape(rows, out_features)
    if torch_product:
        out = _epsilon_torch_product(x, weight, r, zz, rule.epsilon, relevance_writable, input_activation,
                                     options.get("add_to"), factored, quotient)
    else:
        if input_activation not in (None, "relu"):  # the dense kernel reads relu(x) only
            x = INPUT_ACTIVATIONS[input_activation](x)
        out = call(impl, "dense", input, x, contiguous(weight), contiguous(bias), r, rule=rule, z=zz,
                   prepared=prepared, reduce_channels=reduce_channels, check_finite=check_finite, **options)
    if add_to is not None:
        return add_to
    if isinstance(out, Factored):  # in the input's shape, with the input itself (not a view of it) as the factor
        return out if out.input is input else dataclasses.replace(out, input=input,
                                                                  gradient=out.gradient.view(input.shape))
    return out if len(lead) == 1 else out.reshape(lead if reduce_channels else lead + (in_features,))


def conv(impl: ModuleType, input: Array, weight: Array, bias: Array | None, relevance: Array, *,
         stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...], groups: int, rule: LinearRule,
         z: Array | None, prepared: Prepared, reduce_channels: bool, check_finite: bool,
         relevance_writable: bool = False, relu_input: bool = False) -> Array:
    """A 1-d convolution (3-D input, 1-tuples) runs as a 2-d one of height 1, through views."""
    x, w, r, zz = contiguous(input), contiguous(weight), contiguous(relevance), contiguous(z)
    spatial = x.ndim - 2
    if spatial == 1:
        x, w, r = x[:, :, None], w[:, :, None], r[:, :, None]
        zz = None if zz is None else zz[:, :, None]
        prepared = tuple(None if p is None else p[:, :, None] for p in prepared)
        stride, padding, dilation = (1,) + tuple(stride), (0,) + tuple(padding), (1,) + tuple(dilation)
    out = call(impl, "conv2d", input, x, w, contiguous(bias), r, stride=tuple(stride), padding=tuple(padding),
               dilation=tuple(dilation), groups=groups, rule=rule, z=zz, prepared=prepared,
               reduce_channels=reduce_channels, check_finite=check_finite,
               **_core_options(impl, relevance_writable, relu_input))
    if spatial == 1:
        out = out[:, 0] if reduce_channels else out[:, :, 0]
    return out


def pool(impl: ModuleType, input: Array, relevance: Array, *, mode: str, kernel: tuple[int, ...],
         stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...], adaptive: bool,
         count_include_pad: bool, divisor_override: int, stabilizer: float, check_finite: bool,
         relu_input: bool = False) -> Array:
    """Pooling over (B, C, *spatial) as B*C planes; 1-d windows (1-tuples) as planes of height 1. relu_input:
    `input` is z and max windows pool relu(z)."""
    spatial = input.ndim - 2
    b, c = input.shape[:2]
    height = (1,) if spatial == 1 else ()
    planes = contiguous(input).reshape((b * c,) + height + tuple(input.shape[2:]))
    rel = contiguous(relevance).reshape((b * c,) + height + tuple(relevance.shape[2:]))
    if spatial == 1:
        kernel, stride, padding, dilation = (1,) + kernel, (1,) + stride, (0,) + padding, (1,) + dilation
    out = call(impl, "pool", input, planes, rel, mode=mode, kernel=kernel, stride=stride, padding=padding,
               dilation=dilation, adaptive=adaptive, count_include_pad=count_include_pad,
               divisor_override=divisor_override, stabilizer=stabilizer, check_finite=check_finite,
               **({"relu_input": True} if relu_input else {}))
    return out.reshape(tuple(input.shape))


def global_max(impl: ModuleType, input: Array, relevance: Array, *, dim: int, check_finite: bool) -> Array:
    """Winner-take-all over one axis (dim >= 0) as one window of that axis's length."""
    shape = tuple(input.shape)
    outer, length, inner = math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:])
    planes = contiguous(input).reshape(outer, length, inner)
    rel = contiguous(relevance).reshape(outer, 1, inner)
    out = call(impl, "pool", input, planes, rel, mode="max", kernel=(length, 1), stride=(1, 1), padding=(0, 0),
               dilation=(1, 1), adaptive=False, count_include_pad=True, divisor_override=0, stabilizer=0.0,
               check_finite=check_finite)
    return out.reshape(shape)


def rows(impl: ModuleType, input: Array, output: Array, relevance: Array, *, rule: str, bias: Array | None,
         epsilon: float, check_finite: bool, weight: Array | None = None,
         variance_epsilon: float | None = None, gradient_form: bool = False,
         quotient: tuple[Array, Array, float] | None = None) -> Array:
    """An operation along the last axis of [..., width], as rows [N, width]. gradient_form and quotient (z and its
    output shaped like input, ε): the C++ kernels' LayerNorm in gradient form (native.rows)."""
    shape = tuple(input.shape)
    width = shape[-1] if shape else 1
    rows = math.prod(shape[:-1]) if shape else 1
    flat = [contiguous(a).reshape(rows, width) for a in (input, output, relevance)]
    extra = {} if variance_epsilon is None else {"weight": contiguous(weight),
                                                 "variance_epsilon": float(variance_epsilon)}
    if gradient_form:
        extra["gradient_form"] = True
    if quotient is not None:
        z, q, q_epsilon = quotient
        extra["quotient"] = (z.view(rows, width), q.view(rows, width), q_epsilon)
    out = call(impl, "rows", input, *flat, rule=rule, bias=contiguous(bias), epsilon=float(epsilon),
               check_finite=check_finite, **extra)
    return out.reshape(shape)


def layer_norm(impl: ModuleType, input: Array, output: Array, relevance: Array, *, normalized_dims: int,
               bias: Array | None, weight: Array | None, epsilon: float, variance_epsilon: float | None,
               check_finite: bool, gradient_form: bool = False,
               quotient: tuple[Array, Array, float] | None = None) -> Array:
    """LayerNorm over the last `normalized_dims` axes, as rows of their product; bias and weight shaped like them.
    gradient_form (C++ kernels): relevance is g with R = output ⊙ g, and the result R_input / input; quotient (z,
    out, ε), z and out contiguous and shaped like input: out also receives z ⊙ result / st(z, ε) (native.rows)."""
    if normalized_dims == 1:  # rows already (the common case: no reshapes on the way)
        return rows(impl, input, output, relevance, rule="layer_norm", bias=bias, epsilon=epsilon,
                    check_finite=check_finite, weight=weight, variance_epsilon=variance_epsilon,
                    gradient_form=gradient_form, quotient=quotient)
    shape = tuple(input.shape)
    lead = shape[:len(shape) - normalized_dims]
    width = math.prod(shape[len(shape) - normalized_dims:])
    flat = [contiguous(a).reshape(lead + (width,)) for a in (input, output, relevance)]
    out = rows(impl, *flat, rule="layer_norm", bias=None if bias is None else contiguous(bias).reshape(width),
               epsilon=epsilon, check_finite=check_finite,
               weight=None if weight is None else contiguous(weight).reshape(width), variance_epsilon=variance_epsilon,
               gradient_form=gradient_form, quotient=quotient)
    return out.reshape(shape)


def attention(impl: ModuleType, q: Array, k: Array, v: Array, relevance: Array, mask: Array | None, *, rule: str,
              scale: float, causal: bool, check_finite: bool, output: Array | None = None,
              logsumexp: Array | None = None, gradient_form: bool = False, quotient_epsilon: float | None = None,
              out: tuple[Array, Array, Array] | None = None) -> tuple[Array, Array, Array]:
    """[batch, heads, tokens, dim] operands; mask: bool [batch or 1, heads or 1, queries or 1, keys] or None;
    output, logsumexp: the forward pass's O and log-sum-exp per query, or None (only the C++ CPU kernel reads
    them; the others compute them again). gradient_form, quotient_epsilon and out: the C++ CPU kernel's
    (native.attention)."""
    # the C++ CPU kernel reads strided heads in place; CUDA's batched products take contiguous ones
    on_cpu = isinstance(q, np.ndarray) or not q.is_cuda
    args = [contiguous_rows(a) if impl is native and on_cpu else contiguous(a) for a in (q, k, v, relevance)]
    if impl is torch_backend and isinstance(q, np.ndarray):
        args, mask = [to_torch(a) for a in args], None if mask is None else to_torch(mask)
        results = torch_backend.attention(*args, mask, rule=rule, scale=scale, causal=causal,
                                          check_finite=check_finite)
        return tuple(like_input(r, q) for r in results)
    saved: dict[str, Any] = {}
    if gradient_form:
        saved.update(gradient_form=True, quotient_epsilon=quotient_epsilon, out=out)
    if impl is native and on_cpu and output is not None:
        saved.update(output=contiguous_rows(output), logsumexp=strided(logsumexp))
    return impl.attention(*args, contiguous(mask), rule=rule, scale=scale, causal=causal, check_finite=check_finite,
                          **saved)
