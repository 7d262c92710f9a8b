"""The C++ backend: contiguous inputs in, outputs allocated here in the caller's framework, lrptext._core called.

Shapes arrive normalised by lrptext.kernels (dense: 2-D, convolution and pooling: 4-D / planes)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.dlpack import to_dlpack

from lrptext._native import require_core
from lrptext.kernels.arrays import Array, empty, empty_like_rows, full_like_channels, stream
from lrptext.rules import LinearRule


def _call(function: str, /, *args: Any, **kwargs: Any) -> None:
    """Calls a _core function with CPU tensors exported here by torch's C exporter: the __dlpack__ protocol methods
    the boundary otherwise calls were most of a small layer's time at batch 1 (docs/performance.md).
    CUDA tensors (whose export orders work on our stream) and numpy arrays go through the protocol."""
    getattr(require_core(), function)(
        *[to_dlpack(a) if isinstance(a, torch.Tensor) and a.is_cpu else a for a in args],
        **{k: to_dlpack(a) if isinstance(a, torch.Tensor) and a.is_cpu else a for k, a in kwargs.items()})


def rule_args(rule: LinearRule) -> dict[str, Any]:
    """The rule's name and scalar parameters as the core's bindings take them."""
    return {"rule": rule.kernel, **rule.kernel_args()}


def bounds(rule: LinearRule, like: Array, channels: int) -> dict[str, Array]:
    per_channel = rule.bounds(channels)
    if per_channel is None:
        return {}
    return {"low": full_like_channels(like, per_channel[0]), "high": full_like_channels(like, per_channel[1])}


def prepare_weights(rule: LinearRule, weight: Array) -> tuple[Array | None, Array | None]:
    """The rule's modified weights computed by the core, in fresh buffers shaped like the weight."""
    out_a = empty(weight, tuple(weight.shape)) if rule.modified_weights >= 1 else None
    out_b = empty(weight, tuple(weight.shape)) if rule.modified_weights == 2 else None
    if out_a is not None:
        _call("prepare_rule_weights", weight, out_a, out_b, stream=stream(weight), **rule_args(rule))
    return out_a, out_b


def dense(x: Array, weight: Array, bias: Array | None, relevance: Array, *, rule: LinearRule, z: Array | None,
          prepared: tuple[Array | None, Array | None], reduce_channels: bool, check_finite: bool,
          relevance_writable: bool = False, relu_input: bool = False, add_to: Array | None = None) -> Array:
    """relevance_writable: the kernel may overwrite `relevance` (the engine's own, dead after the layer).
    relu_input (epsilon, gamma, alpha-beta): `x` is a ReLU's pre-activation and the rule reads relu(x).
    add_to: a contiguous array shaped like `x` that the relevance is added to, and returned."""
    out = empty(x, (x.shape[0],) if reduce_channels else tuple(x.shape)) if add_to is None else add_to
    _call(
        "dense_relevance", x, weight, bias, relevance, out, z=z, weight_a=prepared[0], weight_b=prepared[1],
        reduce_channels=reduce_channels, check_finite=check_finite, relevance_writable=relevance_writable,
        relu_input=relu_input, accumulate=add_to is not None, stream=stream(x),
        **bounds(rule, x, x.shape[1]), **rule_args(rule),
    )
    return out


def divide_stabilized(numerator: torch.Tensor, denominator: torch.Tensor, out: torch.Tensor, epsilon: float,
                      factor: torch.Tensor | None = None, activation_factor: str = "identity") -> None:
    """out = numerator / st(denominator, epsilon) on the CPU, times act(factor) where a factor is given; out may be
    an input itself."""
    _call("divide_stabilized", numerator, denominator, out, epsilon=epsilon, factor=factor,
          activation_factor=activation_factor)


def multiply(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, scale: float = 1.0, accumulate: bool = False,
             activation_a: str = "identity") -> None:
    """out = scale act(a) b, or out += scale act(a) b, on the CPU; act: activation_a, one of INPUT_ACTIVATIONS or
    "identity"; out may be a or b itself."""
    _call("multiply", a, b, out, scale=scale, accumulate=accumulate, activation_a=activation_a)


def dense_forward(x: Array, weight: Array, bias: Array | None) -> Array:
    """x @ weight.T + bias on the CPU, its matrix-vector products split over the threads (the engine's forward
    pass of a wide dense layer for one sample)."""
    out = empty(x, (x.shape[0], weight.shape[0]))
    _call("dense_forward", x, weight, bias, out)
    return out


def conv2d_forward(x: Array, weight: Array, bias: Array | None, *, stride: tuple[int, int], padding: tuple[int, int],
                   dilation: tuple[int, int], groups: int) -> Array:
    """conv2d(x, weight, bias) on the CPU (the engine's forward pass of a small convolution: one thread, where
    torch's wakes its pool for each step)."""
    b, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = empty(x, (b, weight.shape[0], max(ho, 0), max(wo, 0)))
    _call("conv_forward", x, weight, bias, out, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return out


def max_pool_forward(planes: Array, *, kernel: tuple[int, int], stride: tuple[int, int]) -> Array:
    """Max pooling of [planes, h, w] on the CPU, windows without padding or dilation."""
    n, h, w = planes.shape
    out = empty(planes, (n, max(h - kernel[0], -1) // stride[0] + 1, max(w - kernel[1], -1) // stride[1] + 1))
    _call("max_pool_forward", planes, out, kernel=kernel, stride=stride)
    return out


def conv2d(x: Array, weight: Array, bias: Array | None, relevance: Array, *, stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int], groups: int, rule: LinearRule, z: Array | None,
           prepared: tuple[Array | None, Array | None], reduce_channels: bool, check_finite: bool,
           relevance_writable: bool = False, relu_input: bool = False) -> Array:
    b, c, h, w = x.shape
    out = empty(x, (b, h, w) if reduce_channels else (b, c, h, w))
    _call(
        "conv_relevance", x, weight, bias, relevance, out, z=z, weight_a=prepared[0], weight_b=prepared[1],
        stride=stride, padding=padding, dilation=dilation, groups=groups, reduce_channels=reduce_channels,
        check_finite=check_finite, relevance_writable=relevance_writable, relu_input=relu_input, stream=stream(x),
        **bounds(rule, x, c), **rule_args(rule),
    )
    return out


def embedding(ids: Array, relevance: Array, *, num_embeddings: int, padding_idx: int | None, reduce: bool,
              check_finite: bool) -> Array:
    out = empty(relevance, (ids.shape[0],) if reduce else tuple(relevance.shape))
    _call("embedding_relevance", ids, relevance, out, num_embeddings=num_embeddings, padding_idx=padding_idx,
          check_finite=check_finite, stream=stream(relevance))
    return out


def embedding_bag(ids: Array, offsets: Array, weight: Array, relevance: Array, *, per_sample_weights: Array | None,
                  output: Array | None, mode: str, padding_idx: int | None, stabilizer: float,
                  check_finite: bool) -> Array:
    out = empty(weight, (ids.shape[0],))
    _call(
        "embedding_bag_relevance", ids, offsets, weight, relevance, out, per_sample_weights=per_sample_weights,
        output=output, mode=mode, padding_idx=padding_idx, stabilizer=stabilizer, check_finite=check_finite,
        stream=stream(weight),
    )
    return out


def pool(planes: Array, relevance: Array, *, mode: str, kernel: tuple[int, int], stride: tuple[int, int],
         padding: tuple[int, int], dilation: tuple[int, int], adaptive: bool, count_include_pad: bool,
         divisor_override: int, stabilizer: float, check_finite: bool, relu_input: bool = False) -> Array:
    """relu_input: `planes` holds z and the windows pool relu(z) (plain max windows)."""
    out = empty(planes, tuple(planes.shape))
    _call(
        "pool_relevance", planes, relevance, out, mode=mode, kernel=kernel, stride=stride, padding=padding,
        dilation=dilation, adaptive=adaptive, count_include_pad=count_include_pad, divisor_override=divisor_override,
        stabilizer=stabilizer, check_finite=check_finite, relu_input=relu_input, stream=stream(planes),
    )
    return out


def rows(x: Array, y: Array, relevance: Array, *, rule: str, bias: Array | None, epsilon: float,
         check_finite: bool, weight: Array | None = None, variance_epsilon: float | None = None,
         gradient_form: bool = False, quotient: tuple[Array, Array, float] | None = None) -> Array:
    """LayerNorm or softmax relevance along the rows of [rows, width]. gradient_form (LayerNorm): `relevance` is g
    with R = y ⊙ g, and the result R_x / x; with quotient (z, out, ε) (CPU), out also receives z ⊙ (R_x / x) /
    st(z, ε), the epsilon quotient of a dense layer whose output z is summed into x."""
    out = empty(x, tuple(x.shape))
    z, q, q_epsilon = quotient if quotient is not None else (None, None, None)
    _call("row_relevance", x, y, relevance, out, bias=bias, weight=weight, rule=rule, epsilon=epsilon,
          variance_epsilon=variance_epsilon, check_finite=check_finite, gradient_form=gradient_form, quotient_of=z,
          quotient_out=q, quotient_epsilon=q_epsilon, stream=stream(x))
    return out


def attention(q: Array, k: Array, v: Array, relevance: Array, mask: Array | None, *, rule: str, scale: float,
              causal: bool, check_finite: bool, output: Array | None = None, logsumexp: Array | None = None,
              gradient_form: bool = False, quotient_epsilon: float | None = None,
              out: tuple[Array, Array, Array] | None = None) -> tuple[Array, Array, Array]:
    """Scaled dot-product attention relevance per head, [batch, heads, tokens, dim]; on the CPU the operands may
    be strided heads, and each output is laid out like its operand (or written into `out`). gradient_form (CPU):
    `relevance` is G with R_O = O ⊙ G, and the results R_Q / Q, R_K / K, R_V / V; with quotient_epsilon ε,
    R_Q / st(Q), R_K / st(K), R_V / st(V)."""
    out = out or (empty_like_rows(q), empty_like_rows(k), empty_like_rows(v))
    _call("attention_relevance", q, k, v, relevance, mask, *out, rule=rule, scale=scale, causal=causal,
          check_finite=check_finite, output=output, logsumexp=logsumexp, gradient_form=gradient_form,
          quotient_epsilon=quotient_epsilon, stream=stream(q))
    return out
