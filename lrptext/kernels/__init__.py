"""Relevance kernels, one function per layer kind: relevance at a layer's output in, relevance at its input out.

Arguments are torch tensors or numpy arrays (results come back in the same framework, on the same device).
``backend`` picks the implementation: ``"cpp"`` (lrptext._core: OpenMP + OpenBLAS on CPU, CUDA kernels when
built), ``"torch"`` (vectorised torch), or ``"auto"`` (cpp where it can run, else torch). Kernels take float32
and float64 and refuse other dtypes; ``lrptext.explain()`` promotes float16/bfloat16 for you. Non-finite input
or relevance raises unless ``check_finite=False`` (then NaN/inf propagate by IEEE rules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from lrptext.kernels import dispatch, torch_backend
from lrptext.kernels.arrays import Array, check_array, contiguous, to_torch
from lrptext.rules import LINEAR_RULES, Epsilon, LinearRule

Backend = Literal["auto", "cpp", "torch"]
BACKENDS = dispatch.BACKENDS

__all__ = [
    "PreparedWeights", "adaptive_avg_pool1d_relevance", "adaptive_avg_pool2d_relevance",
    "adaptive_max_pool1d_relevance", "adaptive_max_pool2d_relevance", "attention_relevance", "avg_pool1d_relevance",
    "avg_pool2d_relevance", "conv1d_relevance", "conv2d_relevance", "dense_relevance", "embedding_bag_relevance",
    "embedding_relevance", "global_max_relevance", "layer_norm_relevance", "max_pool1d_relevance",
    "max_pool2d_relevance", "prepare_weights", "softmax_relevance",
]


@dataclass(frozen=True)
class PreparedWeights:
    """Rule-modified weights (e.g. w + γw⁺ and w + γw⁻ for Gamma), computed once and reused across calls."""

    rule: LinearRule
    weight_a: Array | None
    weight_b: Array | None


def _check_float(fn: str, name: str, a: Array | None) -> None:
    if a is None:
        return
    if a.dtype not in (torch.float32, torch.float64, np.float32, np.float64):
        raise ValueError(
            f"{fn}: '{name}' has dtype {a.dtype}; the kernels take float32 or float64 "
            "(lrptext.explain() promotes float16/bfloat16 for you)"
        )


def _check_ids(fn: str, name: str, a: Array) -> None:
    if a.dtype not in (torch.int32, torch.int64, np.int32, np.int64):
        raise ValueError(f"{fn}: '{name}' must hold integer token ids (int32 or int64), got {a.dtype}")


def _padding_index(fn: str, padding_idx: int | None, num_embeddings: int) -> int | None:
    """torch's convention: negative indices count from the end; anything outside the table is an error."""
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"{fn}: 'padding_idx' must lie in [-{num_embeddings}, {num_embeddings}) for a table of "
                         f"{num_embeddings} embeddings, got {padding_idx}")
    return padding_idx % num_embeddings


def _check_rule(fn: str, rule: Any) -> None:
    if not isinstance(rule, LINEAR_RULES):
        names = ", ".join(r.__name__ for r in LINEAR_RULES)
        raise TypeError(f"{fn}: 'rule' must be one of {names} (from lrptext.rules), got {rule!r}")


def _prepared(fn: str, rule: LinearRule, prepared: PreparedWeights | None) -> tuple[Array | None, Array | None]:
    if prepared is None:
        return None, None
    if not isinstance(prepared, PreparedWeights):
        raise TypeError(f"{fn}: 'prepared' must come from lrptext.kernels.prepare_weights, got "
                        f"{type(prepared).__name__}")
    if prepared.rule != rule:
        raise ValueError(f"{fn}: 'prepared' was made for {prepared.rule!r} but the rule is {rule!r}; prepare it again")
    return contiguous(prepared.weight_a), contiguous(prepared.weight_b)


def prepare_weights(rule: LinearRule, weight: Array, *, backend: Backend = "auto") -> PreparedWeights:
    """The modified weights `rule` needs, to pass as ``prepared=`` to dense/conv kernels across many calls."""
    fn = "prepare_weights"
    _check_rule(fn, rule)
    check_array(fn, "weight", weight)
    _check_float(fn, "weight", weight)
    impl = dispatch.implementation(fn, backend, weight)
    weight = contiguous(weight)
    if impl is torch_backend and isinstance(weight, np.ndarray):
        a, b = torch_backend.prepare_weights(rule, to_torch(weight))
        return PreparedWeights(rule, None if a is None else a.numpy(), None if b is None else b.numpy())
    a, b = impl.prepare_weights(rule, weight)
    return PreparedWeights(rule, a, b)


def _linear_args(fn: str, rule: Any, named: dict[str, Array | None], optional: tuple[str, ...]) -> None:
    _check_rule(fn, rule)
    for name, a in named.items():
        check_array(fn, name, a, optional=name in optional)
        if name != "ids":
            _check_float(fn, name, a)


def dense_relevance(input: Array, weight: Array, bias: Array | None, relevance: Array, *,
                    rule: LinearRule = Epsilon(), z: Array | None = None, prepared: PreparedWeights | None = None,
                    reduce_channels: bool = False, check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Relevance at the input of ``y = input @ weight.T + bias``.

    input: Tensor[..., in]; weight: Tensor[out, in]; bias: Tensor[out] or None; relevance: Tensor[..., out];
    z (optional): the forward pre-activation Tensor[..., out], reused by Epsilon and Gamma instead of recomputed.
    Returns Tensor[..., in], or Tensor[...] summed over ``in`` with ``reduce_channels=True``.
    """
    fn = "dense_relevance"
    _linear_args(fn, rule, {"input": input, "weight": weight, "bias": bias, "relevance": relevance, "z": z},
                 ("bias", "z"))
    if weight.ndim != 2:
        raise ValueError(f"{fn}: 'weight' must be 2-D (out, in), got {weight.ndim}-D")
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"{fn}: 'input' must have shape (..., {weight.shape[1]}) to match 'weight' "
                         f"{tuple(weight.shape)}, got {tuple(input.shape)}")
    lead = tuple(input.shape[:-1])
    if tuple(relevance.shape) != lead + (weight.shape[0],):
        raise ValueError(f"{fn}: 'relevance' must have shape {lead + (weight.shape[0],)}, got {tuple(relevance.shape)}")
    return dispatch.dense(dispatch.implementation(fn, backend, input, weight, relevance), input, weight, bias,
                          relevance, rule=rule, z=z, prepared=_prepared(fn, rule, prepared),
                          reduce_channels=reduce_channels, check_finite=check_finite)


def _tuple(fn: str, name: str, value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    if isinstance(value, str):
        raise ValueError(f"{fn}: '{name}' must be an int or a tuple of {n} ints, got {value!r} "
                         "(string paddings are resolved by lrptext.explain())")
    values = (int(value),) * n if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(values) != n:
        raise ValueError(f"{fn}: '{name}' must be an int or a tuple of {n} ints, got {value!r}")
    return values


def _conv(fn: str, input: Array, weight: Array, bias: Array | None, relevance: Array, *, spatial: int,
          stride: Any, padding: Any, dilation: Any, groups: int, rule: LinearRule, z: Array | None,
          prepared: PreparedWeights | None, reduce_channels: bool, check_finite: bool, backend: str) -> Array:
    _linear_args(fn, rule, {"input": input, "weight": weight, "bias": bias, "relevance": relevance, "z": z},
                 ("bias", "z"))
    layout = "(batch, channels, length)" if spatial == 1 else "(batch, channels, height, width)"
    for name, a, nd in (("input", input, spatial + 2), ("weight", weight, spatial + 2),
                        ("relevance", relevance, spatial + 2)):
        if a.ndim != nd:
            raise ValueError(f"{fn}: '{name}' must be {nd}-D {layout if name != 'weight' else ''}".rstrip()
                             + f", got {a.ndim}-D with shape {tuple(a.shape)}")
    stride, padding, dilation = (_tuple(fn, n, v, spatial) for n, v in
                                 (("stride", stride), ("padding", padding), ("dilation", dilation)))
    return dispatch.conv(dispatch.implementation(fn, backend, input, weight, relevance), input, weight, bias,
                         relevance, stride=stride, padding=padding, dilation=dilation, groups=int(groups), rule=rule,
                         z=z, prepared=_prepared(fn, rule, prepared), reduce_channels=reduce_channels,
                         check_finite=check_finite)


def conv1d_relevance(input: Array, weight: Array, bias: Array | None, relevance: Array, *,
                     stride: int | tuple[int] = 1, padding: int | tuple[int] = 0, dilation: int | tuple[int] = 1,
                     groups: int = 1, rule: LinearRule = Epsilon(), z: Array | None = None,
                     prepared: PreparedWeights | None = None, reduce_channels: bool = False,
                     check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Relevance at the input of a 1-d convolution (torch.nn.Conv1d semantics, zero padding).

    input: Tensor[B, C, L]; weight: Tensor[O, C / groups, K]; relevance: Tensor[B, O, L_out].
    Returns Tensor[B, C, L], or Tensor[B, L] with ``reduce_channels=True`` (per-position relevance, e.g. per
    token when the channels are an embedding, without materialising Tensor[B, C, L]).
    """
    return _conv("conv1d_relevance", input, weight, bias, relevance, spatial=1, stride=stride, padding=padding,
                 dilation=dilation, groups=groups, rule=rule, z=z, prepared=prepared,
                 reduce_channels=reduce_channels, check_finite=check_finite, backend=backend)


def conv2d_relevance(input: Array, weight: Array, bias: Array | None, relevance: Array, *,
                     stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                     dilation: int | tuple[int, int] = 1, groups: int = 1, rule: LinearRule = Epsilon(),
                     z: Array | None = None, prepared: PreparedWeights | None = None, reduce_channels: bool = False,
                     check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Relevance at the input of a 2-d convolution (torch.nn.Conv2d semantics, zero padding).

    input: Tensor[B, C, H, W]; weight: Tensor[O, C / groups, KH, KW]; relevance: Tensor[B, O, H_out, W_out].
    Returns Tensor[B, C, H, W], or Tensor[B, H, W] with ``reduce_channels=True`` (a heatmap summed over channels).
    """
    return _conv("conv2d_relevance", input, weight, bias, relevance, spatial=2, stride=stride, padding=padding,
                 dilation=dilation, groups=groups, rule=rule, z=z, prepared=prepared,
                 reduce_channels=reduce_channels, check_finite=check_finite, backend=backend)


def embedding_relevance(ids: Array, relevance: Array, *, num_embeddings: int, padding_idx: int | None = None,
                        reduce: bool = True, check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Per-token relevance of an embedding lookup.

    ids: integer Tensor[*]; relevance: Tensor[*, D], the relevance at the embedding's output.
    Returns Tensor[*] (summed over D) or, with ``reduce=False``, Tensor[*, D]. Tokens equal to ``padding_idx``
    get zero. Ids outside [0, num_embeddings) raise ValueError.
    """
    fn = "embedding_relevance"
    check_array(fn, "ids", ids)
    check_array(fn, "relevance", relevance)
    _check_ids(fn, "ids", ids)
    _check_float(fn, "relevance", relevance)
    if tuple(relevance.shape[:-1]) != tuple(ids.shape) or relevance.ndim != ids.ndim + 1:
        raise ValueError(f"{fn}: 'relevance' must have shape {tuple(ids.shape)} + (embedding_dim,), got "
                         f"{tuple(relevance.shape)}")
    if num_embeddings < 1:
        raise ValueError(f"{fn}: 'num_embeddings' must be >= 1, got {num_embeddings}")
    padding_idx = _padding_index(fn, padding_idx, num_embeddings)
    impl = dispatch.implementation(fn, backend, ids, relevance)
    n = math.prod(ids.shape)
    dim = relevance.shape[-1]
    out = dispatch.call(impl, "embedding", relevance, contiguous(ids).reshape(n), contiguous(relevance).reshape(n, dim),
                        num_embeddings=int(num_embeddings), padding_idx=padding_idx, reduce=reduce,
                        check_finite=check_finite)
    return out.reshape(tuple(ids.shape) if reduce else tuple(relevance.shape))


def embedding_bag_relevance(ids: Array, weight: Array, relevance: Array, *, offsets: Array | None = None,
                            mode: str = "mean", per_sample_weights: Array | None = None,
                            output: Array | None = None, padding_idx: int | None = None, stabilizer: float = 1e-6,
                            check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Per-token relevance of torch.nn.EmbeddingBag (mode "sum" or "mean").

    ids: Tensor[N] with offsets: Tensor[B] (bag starts), or Tensor[B, L] of fixed-size bags with offsets=None;
    weight: Tensor[V, D]; relevance: Tensor[B, D] at the bag output. Each bag's relevance is split over its tokens
    in proportion to their contributions f_t·E[id_t] (Norm rule; f_t = 1, the per-sample weight, or 1/len):
    R_t = f_t Σ_d E[id_t, d] R_bd / st(y_bd). output: Tensor[B, D], the bag output y of the forward pass; given,
    y is taken from it instead of being summed again, and each token's row is read once instead of twice.
    Returns per-token relevance shaped like ``ids``.
    """
    fn = "embedding_bag_relevance"
    for name, a in (("ids", ids), ("weight", weight), ("relevance", relevance)):
        check_array(fn, name, a)
    for name, a in (("offsets", offsets), ("per_sample_weights", per_sample_weights), ("output", output)):
        check_array(fn, name, a, optional=True)
    _check_ids(fn, "ids", ids)
    for name, a in (("weight", weight), ("relevance", relevance), ("per_sample_weights", per_sample_weights),
                    ("output", output)):
        _check_float(fn, name, a)
    if mode not in ("sum", "mean"):
        raise ValueError(f"{fn}: 'mode' must be 'sum' or 'mean', got {mode!r} (max bags are not supported)")
    if ids.ndim == 2:
        if offsets is not None:
            raise ValueError(f"{fn}: 'offsets' must be None when 'ids' is 2-D (one bag per row), as in torch")
        bags, length = ids.shape
        offsets = (torch.arange(bags, dtype=ids.dtype, device=ids.device) * length if isinstance(ids, torch.Tensor)
                   else np.arange(bags, dtype=ids.dtype) * length)
    elif ids.ndim == 1:
        if offsets is None:
            raise ValueError(f"{fn}: 1-D 'ids' needs 'offsets' (the start of each bag)")
        _check_ids(fn, "offsets", offsets)
        if offsets.dtype != ids.dtype:
            offsets = offsets.astype(ids.dtype) if isinstance(offsets, np.ndarray) else offsets.to(ids.dtype)
    else:
        raise ValueError(f"{fn}: 'ids' must be 1-D (with offsets) or 2-D (bags of equal size), got {ids.ndim}-D")
    if output is not None and (tuple(output.shape) != tuple(relevance.shape) or output.dtype != relevance.dtype):
        raise ValueError(f"{fn}: 'output' (the bag output) must have the shape and dtype of 'relevance', "
                         f"{tuple(relevance.shape)} {relevance.dtype}, got {tuple(output.shape)} {output.dtype}; "
                         "pass the EmbeddingBag's output for these ids, or None to sum the bags again")
    padding_idx = _padding_index(fn, padding_idx, weight.shape[0])
    impl = dispatch.implementation(fn, backend, ids, weight, relevance, output)
    flat = contiguous(ids).reshape(-1)
    psw = None if per_sample_weights is None else contiguous(per_sample_weights).reshape(-1)
    out = dispatch.call(impl, "embedding_bag", weight, flat, contiguous(offsets), contiguous(weight),
                        contiguous(relevance), per_sample_weights=psw, output=contiguous(output), mode=mode,
                        padding_idx=padding_idx, stabilizer=float(stabilizer), check_finite=check_finite)
    return out.reshape(tuple(ids.shape))


def _pool(fn: str, input: Array, relevance: Array, *, spatial: int, mode: str, kernel_size: Any = 1,
          stride: Any = None, padding: Any = 0, dilation: Any = 1, adaptive: bool = False,
          count_include_pad: bool = True, divisor_override: int | None = None, stabilizer: float = 1e-6,
          check_finite: bool = True, backend: str = "auto") -> Array:
    check_array(fn, "input", input)
    check_array(fn, "relevance", relevance)
    _check_float(fn, "input", input)
    _check_float(fn, "relevance", relevance)
    layout = "(batch, channels, length)" if spatial == 1 else "(batch, channels, height, width)"
    if (input.ndim != spatial + 2 or relevance.ndim != spatial + 2
            or tuple(relevance.shape[:2]) != tuple(input.shape[:2])):
        raise ValueError(f"{fn}: 'input' and 'relevance' must be {spatial + 2}-D {layout} with the same batch and "
                         f"channels, got {tuple(input.shape)} and {tuple(relevance.shape)}")
    kernel = _tuple(fn, "kernel_size", kernel_size, spatial)
    stride_t = kernel if stride is None else _tuple(fn, "stride", stride, spatial)
    pad, dil = _tuple(fn, "padding", padding, spatial), _tuple(fn, "dilation", dilation, spatial)
    if mode == "max" and not adaptive:
        _check_windows_reach_the_input(fn, tuple(input.shape[2:]), tuple(relevance.shape[2:]), kernel, stride_t, pad,
                                       dil)
    return dispatch.pool(dispatch.implementation(fn, backend, input, relevance), input, relevance, mode=mode,
                         kernel=kernel, stride=stride_t, padding=pad, dilation=dil, adaptive=adaptive,
                         count_include_pad=count_include_pad, divisor_override=int(divisor_override or 0),
                         stabilizer=float(stabilizer), check_finite=check_finite)


def _check_windows_reach_the_input(fn: str, size: tuple[int, ...], out: tuple[int, ...], kernel: tuple[int, ...],
                                   stride: tuple[int, ...], padding: tuple[int, ...],
                                   dilation: tuple[int, ...]) -> None:
    """With dilation, a max-pooling window can hold only padding: torch then outputs -inf and its backward writes
    out of bounds, so such a geometry is refused for every backend."""
    for axis, (n, n_out, k, s, p, d) in enumerate(zip(size, out, kernel, stride, padding, dilation)):
        for o in range(n_out):
            if not any(0 <= o * s - p + t * d < n for t in range(k)):
                raise ValueError(f"{fn}: the pooling window at output position {o} of spatial axis {axis} covers only "
                                 f"padding (input {n}, kernel {k}, stride {s}, padding {p}, dilation {d}); its maximum "
                                 "is -inf. Use less padding or dilation")


def max_pool1d_relevance(input: Array, relevance: Array, *, kernel_size: int, stride: int | None = None,
                         padding: int = 0, dilation: int = 1, check_finite: bool = True,
                         backend: Backend = "auto") -> Array:
    """Winner-take-all through torch.nn.MaxPool1d: each window's relevance goes to its maximum; on ties, to the
    first maximum in window order (torch's index). input: Tensor[B, C, L]; relevance: Tensor[B, C, L_out]."""
    return _pool("max_pool1d_relevance", input, relevance, spatial=1, mode="max", kernel_size=kernel_size,
                 stride=stride, padding=padding, dilation=dilation, check_finite=check_finite, backend=backend)


def max_pool2d_relevance(input: Array, relevance: Array, *, kernel_size: int | tuple[int, int],
                         stride: int | tuple[int, int] | None = None, padding: int | tuple[int, int] = 0,
                         dilation: int | tuple[int, int] = 1, check_finite: bool = True,
                         backend: Backend = "auto") -> Array:
    """Winner-take-all through torch.nn.MaxPool2d (ties: first maximum in row-major window order).
    input: Tensor[B, C, H, W]; relevance: Tensor[B, C, H_out, W_out]."""
    return _pool("max_pool2d_relevance", input, relevance, spatial=2, mode="max", kernel_size=kernel_size,
                 stride=stride, padding=padding, dilation=dilation, check_finite=check_finite, backend=backend)


def avg_pool1d_relevance(input: Array, relevance: Array, *, kernel_size: int, stride: int | None = None,
                         padding: int = 0, count_include_pad: bool = True, stabilizer: float = 1e-6,
                         check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Norm rule through torch.nn.AvgPool1d: R_i = Σ_j x_i (∂y_j/∂x_i) R_j / st(y_j)."""
    return _pool("avg_pool1d_relevance", input, relevance, spatial=1, mode="avg", kernel_size=kernel_size,
                 stride=stride, padding=padding, count_include_pad=count_include_pad, stabilizer=stabilizer,
                 check_finite=check_finite, backend=backend)


def avg_pool2d_relevance(input: Array, relevance: Array, *, kernel_size: int | tuple[int, int],
                         stride: int | tuple[int, int] | None = None, padding: int | tuple[int, int] = 0,
                         count_include_pad: bool = True, divisor_override: int | None = None,
                         stabilizer: float = 1e-6, check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Norm rule through torch.nn.AvgPool2d: R_i = Σ_j x_i (∂y_j/∂x_i) R_j / st(y_j)."""
    return _pool("avg_pool2d_relevance", input, relevance, spatial=2, mode="avg", kernel_size=kernel_size,
                 stride=stride, padding=padding, count_include_pad=count_include_pad,
                 divisor_override=divisor_override, stabilizer=stabilizer, check_finite=check_finite, backend=backend)


def adaptive_avg_pool1d_relevance(input: Array, relevance: Array, *, stabilizer: float = 1e-6,
                                  check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Norm rule through torch.nn.AdaptiveAvgPool1d; the output size is read from ``relevance``."""
    return _pool("adaptive_avg_pool1d_relevance", input, relevance, spatial=1, mode="avg", adaptive=True,
                 stabilizer=stabilizer, check_finite=check_finite, backend=backend)


def adaptive_avg_pool2d_relevance(input: Array, relevance: Array, *, stabilizer: float = 1e-6,
                                  check_finite: bool = True, backend: Backend = "auto") -> Array:
    """Norm rule through torch.nn.AdaptiveAvgPool2d; the output size is read from ``relevance``."""
    return _pool("adaptive_avg_pool2d_relevance", input, relevance, spatial=2, mode="avg", adaptive=True,
                 stabilizer=stabilizer, check_finite=check_finite, backend=backend)


def adaptive_max_pool1d_relevance(input: Array, relevance: Array, *, check_finite: bool = True,
                                  backend: Backend = "auto") -> Array:
    """Winner-take-all through torch.nn.AdaptiveMaxPool1d; the output size is read from ``relevance``."""
    return _pool("adaptive_max_pool1d_relevance", input, relevance, spatial=1, mode="max", adaptive=True,
                 check_finite=check_finite, backend=backend)


def adaptive_max_pool2d_relevance(input: Array, relevance: Array, *, check_finite: bool = True,
                                  backend: Backend = "auto") -> Array:
    """Winner-take-all through torch.nn.AdaptiveMaxPool2d; the output size is read from ``relevance``."""
    return _pool("adaptive_max_pool2d_relevance", input, relevance, spatial=2, mode="max", adaptive=True,
                 check_finite=check_finite, backend=backend)


def global_max_relevance(input: Array, relevance: Array, *, dim: int, check_finite: bool = True,
                         backend: Backend = "auto") -> Array:
    """Winner-take-all through ``input.max(dim)`` (e.g. max over time in a text CNN); ties go to the first maximum.

    relevance has ``input``'s shape without ``dim``; the result has ``input``'s shape.
    """
    fn = "global_max_relevance"
    check_array(fn, "input", input)
    check_array(fn, "relevance", relevance)
    _check_float(fn, "input", input)
    _check_float(fn, "relevance", relevance)
    if not -input.ndim <= dim < input.ndim:
        raise ValueError(f"{fn}: 'dim' must lie in [{-input.ndim}, {input.ndim}), got {dim}")
    dim %= input.ndim
    shape = tuple(input.shape)
    if tuple(relevance.shape) != shape[:dim] + shape[dim + 1:]:
        raise ValueError(f"{fn}: 'relevance' must have shape {shape[:dim] + shape[dim + 1:]} ('input' without "
                         f"dim {dim}), got {tuple(relevance.shape)}")
    return dispatch.global_max(dispatch.implementation(fn, backend, input, relevance), input, relevance, dim=dim,
                               check_finite=check_finite)


def _rows(fn: str, named: dict[str, Array | None], optional: tuple[str, ...]) -> None:
    for name, a in named.items():
        check_array(fn, name, a, optional=name in optional)
        _check_float(fn, name, a)
    shape = tuple(named["input"].shape)
    for name in ("output", "relevance"):
        if tuple(named[name].shape) != shape:
            raise ValueError(f"{fn}: '{name}' must have the shape of 'input' {shape}, got {tuple(named[name].shape)}")


def layer_norm_relevance(input: Array, output: Array, relevance: Array, *, bias: Array | None = None,
                         weight: Array | None = None, variance_epsilon: float | None = None,
                         normalized_dims: int = 1, epsilon: float = 1e-6, check_finite: bool = True,
                         backend: Backend = "auto") -> Array:
    """Relevance at the input of LayerNorm y = γ ⊙ (x − mean(x)) / σ + β as AttnLRP treats it: σ a constant, γ and
    1/σ pass relevance unchanged, β keeps its share R_y ⊙ β / st(y), the centring takes the ε-rule.

    input, output (the LayerNorm's y), relevance: Tensor[..., *normalized] alike; bias: β, the normalised
    dimensions' shape, or None. Returns Tensor like input. With the LayerNorm's own `variance_epsilon` (its eps)
    and `weight` (γ, or None for 1), the kernel computes y − β as γ (x − mean) / σ instead of reading it off y,
    which in float32 loses digits where y is close to β: pass them when you have them.
    """
    fn = "layer_norm_relevance"
    _rows(fn, {"input": input, "output": output, "relevance": relevance, "bias": bias, "weight": weight},
          ("bias", "weight"))
    if weight is not None and variance_epsilon is None:
        raise ValueError(f"{fn}: 'weight' is read with 'variance_epsilon' (the LayerNorm's eps); pass both")
    if variance_epsilon is not None and not (math.isfinite(variance_epsilon) and variance_epsilon >= 0):
        raise ValueError(f"{fn}: 'variance_epsilon' must be a finite number >= 0, got {variance_epsilon!r}")
    if not 1 <= normalized_dims <= input.ndim:
        raise ValueError(f"{fn}: 'normalized_dims' must lie in [1, {input.ndim}] for a {input.ndim}-D input, got "
                         f"{normalized_dims}")
    normalized = tuple(input.shape[input.ndim - normalized_dims:])
    for name, t in (("bias", bias), ("weight", weight)):
        if t is not None and tuple(t.shape) != normalized:
            raise ValueError(f"{fn}: '{name}' must have the normalised shape {normalized}, got {tuple(t.shape)}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"{fn}: 'epsilon' must be a finite number >= 0, got {epsilon!r}")
    return dispatch.layer_norm(dispatch.implementation(fn, backend, input, output, relevance), input, output,
                               relevance, normalized_dims=normalized_dims, bias=bias, weight=weight, epsilon=epsilon,
                               variance_epsilon=variance_epsilon, check_finite=check_finite)


def softmax_relevance(input: Array, output: Array, relevance: Array, *, dim: int = -1, check_finite: bool = True,
                      backend: Backend = "auto") -> Array:
    """Relevance at the input of s = softmax(x, dim) by AttnLRP's rule, R_x = x ⊙ (R_s − s Σ_dim R_s) (gradient ×
    input); positions of probability 0 (masked scores, also −inf) get 0.

    input (the scores), output (the probabilities), relevance: tensors alike. Returns Tensor like input.
    """
    fn = "softmax_relevance"
    _rows(fn, {"input": input, "output": output, "relevance": relevance}, ())
    if not -input.ndim <= dim < input.ndim:
        raise ValueError(f"{fn}: 'dim' must lie in [{-input.ndim}, {input.ndim}), got {dim}")
    dim %= input.ndim
    impl = dispatch.implementation(fn, backend, input, output, relevance)
    last = dim == input.ndim - 1
    moved = [a if last else (a.swapaxes(dim, -1) if isinstance(a, np.ndarray) else a.transpose(dim, -1))
             for a in (input, output, relevance)]
    out = dispatch.rows(impl, *moved, rule="softmax", bias=None, epsilon=0.0, check_finite=check_finite)
    return out if last else (out.swapaxes(dim, -1) if isinstance(out, np.ndarray) else out.transpose(dim, -1))


def attention_relevance(query: Array, key: Array, value: Array, relevance: Array, *, mask: Array | None = None,
                        scale: float | None = None, causal: bool = False,
                        rule: Literal["attnlrp", "cp_lrp"] = "attnlrp", check_finite: bool = True,
                        output: Array | None = None, logsumexp: Array | None = None,
                        backend: Backend = "auto") -> tuple[Array, Array, Array]:
    """Relevance at Q, K and V of scaled dot-product attention O = softmax(scale · Q Kᵀ, masked) V, per head.

    rule="attnlrp" (Achtibat et al. 2024): both products by the uniform rule (each operand half of every term's
    share, no stabiliser), the softmax by gradient × input, R_S = S ⊙ (R_A − A Σ_k R_A), which keeps back a
    bias-like share. rule="cp_lrp" (Ali et al. 2022): A a constant, all of R_O to V, none to Q and K.

    query [B, H, Tq, D], key [B, H, Tk, D], value [B, H, Tk, Dv], relevance (at O) [B, H, Tq, Dv]; mask: bool, True
    where a query may attend to a key, broadcastable to [B, H, Tq, Tk] (masked keys get 0); scale: 1/√D by default;
    causal: keys after the query are masked too. output [B, H, Tq, Dv] and logsumexp [B, H, Tq], both or neither:
    the forward pass's O and log Σ_k exp(scale · Q Kᵀ) over each query's allowed keys (−inf where it has none), as
    torch's CPU attention (`aten._scaled_dot_product_flash_attention_for_cpu`) returns them; the C++ CPU kernel
    then reads A = exp(scale · Q Kᵀ − logsumexp) and O instead of computing them again (the torch backend and CUDA
    ignore them). Returns (R_Q, R_K, R_V) shaped as the operands.
    """
    fn = "attention_relevance"
    named = {"query": query, "key": key, "value": value, "relevance": relevance}
    for name, a in named.items():
        check_array(fn, name, a)
        _check_float(fn, name, a)
        if a.ndim != 4:
            raise ValueError(f"{fn}: '{name}' must be 4-D (batch, heads, tokens, dim), got shape {tuple(a.shape)}")
    b, h, tq, d = query.shape
    tk, dv = key.shape[2], value.shape[3]
    expected = {"key": (b, h, tk, d), "value": (b, h, tk, dv), "relevance": (b, h, tq, dv)}
    for name, shape in expected.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"{fn}: '{name}' must have shape {shape} to match 'query' {tuple(query.shape)} and "
                             f"'key'/'value', got {tuple(named[name].shape)}")
    if rule not in ("attnlrp", "cp_lrp"):
        raise ValueError(f"{fn}: 'rule' must be 'attnlrp' or 'cp_lrp', got {rule!r}")
    if (output is None) != (logsumexp is None):
        raise ValueError(f"{fn}: 'output' and 'logsumexp' (the forward pass's O and log-sum-exp) go together; "
                         "pass both or neither")
    if output is not None:
        for name, a, shape in (("output", output, (b, h, tq, dv)), ("logsumexp", logsumexp, (b, h, tq))):
            check_array(fn, name, a)
            _check_float(fn, name, a)
            if tuple(a.shape) != shape:
                raise ValueError(f"{fn}: '{name}' must have shape {shape} to match 'query' and 'value', got "
                                 f"{tuple(a.shape)}")
        lse = to_torch(logsumexp)
        if bool((lse.isnan() | (lse == float("inf"))).any()):
            raise ValueError(f"{fn}: 'logsumexp' holds NaN or +inf; it is log Σ exp(scores) (−inf only for a query "
                             "with no allowed key)")
    scale = 1 / math.sqrt(d) if scale is None else float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{fn}: 'scale' must be a finite number > 0, got {scale!r}")
    if mask is not None:
        check_array(fn, "mask", mask)
        if mask.dtype not in (torch.bool, np.bool_):
            raise ValueError(f"{fn}: 'mask' must be boolean (True where a query may attend to a key), got "
                             f"{mask.dtype}; for an additive 0/-inf mask pass mask == 0")
        mask = broadcast_mask(fn, mask, (b, h, tq, tk))
    impl = dispatch.implementation(fn, backend, query, key, value, relevance)
    return dispatch.attention(impl, query, key, value, relevance, mask, rule=rule, scale=scale, causal=causal,
                              check_finite=check_finite, output=output, logsumexp=logsumexp)


def broadcast_mask(fn: str, mask: Array, shape: tuple[int, int, int, int]) -> Array:
    """A boolean attention mask as 4-D [batch or 1, heads or 1, queries or 1, keys], the form the kernels read."""
    if mask.ndim > 4 or any(m not in (1, n) for m, n in zip(tuple(mask.shape)[::-1], shape[::-1])):
        raise ValueError(f"{fn}: 'mask' of shape {tuple(mask.shape)} does not broadcast to the scores' shape {shape}")
    mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
    if mask.shape[3] != shape[3]:  # one value for every key
        mask = mask.expand(*mask.shape[:3], shape[3]) if isinstance(mask, torch.Tensor) else \
            np.broadcast_to(mask, tuple(mask.shape[:3]) + (shape[3],))
    return mask
