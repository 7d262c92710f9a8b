"""Coverage-guided fuzzing (atheris) of lrptext._core's bindings: every call gets arrays of fuzzed rank, shape,
dtype, contiguity and contents (NaN, infinities, huge and negative token ids included) and fuzzed parameters; the
kernels of several operands (rows, attention, the recurrent sweep) mostly get shapes that agree, so that fuzzed
contents and parameters reach their loops. A call may return or raise ValueError / TypeError; anything else
(another exception, a crash, a sanitizer report) is a finding. atheris guides by the coverage of the Python it
instruments; the C++ is exercised, and runs under AddressSanitizer when started as scripts/sanitize.sh starts the
tests.

    pip install atheris
    python scripts/fuzz_bindings.py -runs=50000        # or -max_total_time=120
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from lrptext import _core

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64]
# the element-wise steps' activations (multiply's of a, divide_stabilized's of its factor), and one they refuse
ACTIVATIONS = ["identity", "relu", "gelu", "gelu_tanh", "silu", "tanh"]
RULES = ["epsilon", "gamma", "alpha_beta", "zbox", "wsquare", "flat", "bogus"]


def array(fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    shape = [fdp.ConsumeIntInRange(0, 5) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    size = int(np.prod(shape)) if shape else 1
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    if np.issubdtype(dtype, np.integer):
        values = [fdp.ConsumeIntInRange(-(2**40), 2**40) for _ in range(size)]
        a = np.array(values, dtype=np.int64).astype(dtype).reshape(shape)
    else:
        values = [fdp.ConsumeFloat() for _ in range(size)]
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
    if a.ndim >= 2 and fdp.ConsumeBool():
        a = a.swapaxes(0, 1)  # not C-contiguous
    return a


def shaped(fdp: atheris.FuzzedDataProvider, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Mostly an array of this shape and dtype (fuzzed contents, sometimes not contiguous), sometimes any array: the
    multi-operand kernels reject unrelated shapes before their loops, so most calls must agree to get there."""
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return array(fdp)
    size = int(np.prod(shape))
    if np.issubdtype(dtype, np.integer):
        a = np.array([fdp.ConsumeIntInRange(-2, 8) for _ in range(size)], dtype=dtype).reshape(shape)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            values = [fdp.ConsumeFloat() if fdp.ConsumeIntInRange(0, 15) == 0 else fdp.ConsumeFloatInRange(-10.0, 10.0)
                      for _ in range(size)]  # mostly finite and moderate, sometimes anything
            a = np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
    if a.ndim >= 2 and fdp.ConsumeIntInRange(0, 7) == 0:
        a = np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)  # same shape, not C-contiguous
    return a


def parameter(fdp: atheris.FuzzedDataProvider) -> float:
    """Mostly a valid positive parameter (epsilon, scale, bias factor in [0, 1]), sometimes any float."""
    return fdp.ConsumeFloat() if fdp.ConsumeIntInRange(0, 7) == 0 else fdp.ConsumeFloatInRange(0.0, 1.0)


def maybe(fdp: atheris.FuzzedDataProvider) -> np.ndarray | None:
    return array(fdp) if fdp.ConsumeBool() else None


def pair(fdp: atheris.FuzzedDataProvider, low: int, high: int) -> tuple[int, int]:
    return fdp.ConsumeIntInRange(low, high), fdp.ConsumeIntInRange(low, high)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    _core.set_winograd(["auto", "always", "never"][fdp.ConsumeIntInRange(0, 2)])  # 'always' for small convolutions
    kind = fdp.ConsumeIntInRange(0, 10)
    rule = dict(rule=RULES[fdp.ConsumeIntInRange(0, len(RULES) - 1)], alpha=fdp.ConsumeFloat(),
                beta=fdp.ConsumeFloat(), epsilon=fdp.ConsumeFloat(), gamma=fdp.ConsumeFloat())
    try:
        if kind == 0:
            _core.dense_relevance(array(fdp), array(fdp), maybe(fdp), array(fdp), array(fdp), z=maybe(fdp),
                                  low=maybe(fdp), high=maybe(fdp), reduce_channels=fdp.ConsumeBool(),
                                  check_finite=fdp.ConsumeBool(), **rule)
        elif kind == 1:
            _core.conv_relevance(array(fdp), array(fdp), maybe(fdp), array(fdp), array(fdp), z=maybe(fdp),
                                 stride=pair(fdp, -1, 4), padding=pair(fdp, -1, 4), dilation=pair(fdp, -1, 3),
                                 groups=fdp.ConsumeIntInRange(-1, 4), reduce_channels=fdp.ConsumeBool(),
                                 check_finite=fdp.ConsumeBool(), **rule)
        elif kind == 2:
            _core.embedding_relevance(array(fdp), array(fdp), array(fdp), num_embeddings=fdp.ConsumeIntInRange(-2, 50),
                                      padding_idx=fdp.ConsumeIntInRange(-3, 60) if fdp.ConsumeBool() else None)
        elif kind == 3:
            _core.embedding_bag_relevance(array(fdp), array(fdp), array(fdp), array(fdp), array(fdp),
                                          per_sample_weights=maybe(fdp),
                                          mode=["sum", "mean", "max"][fdp.ConsumeIntInRange(0, 2)],
                                          padding_idx=fdp.ConsumeIntInRange(-3, 60) if fdp.ConsumeBool() else None)
        elif kind == 4:
            _core.pool_relevance(array(fdp), array(fdp), array(fdp),
                                 mode=["max", "avg", "min"][fdp.ConsumeIntInRange(0, 2)],
                                 kernel=pair(fdp, -1, 5), stride=pair(fdp, -1, 4), padding=pair(fdp, -1, 3),
                                 dilation=pair(fdp, -1, 3), adaptive=fdp.ConsumeBool(),
                                 count_include_pad=fdp.ConsumeBool(), divisor_override=fdp.ConsumeIntInRange(-1, 5))
        elif kind == 5:
            _core.prepare_rule_weights(array(fdp), maybe(fdp), maybe(fdp), **rule)
        elif kind == 6:
            _core.conv_forward(array(fdp), array(fdp), maybe(fdp), array(fdp), stride=pair(fdp, -1, 4),
                               padding=pair(fdp, -1, 4), dilation=pair(fdp, -1, 3), groups=fdp.ConsumeIntInRange(-1, 4))
        elif kind == 7:
            rows, width = pair(fdp, 0, 5)
            dtype = DTYPES[fdp.ConsumeIntInRange(0, 1)]
            _core.row_relevance(*(shaped(fdp, (rows, width), dtype) for _ in range(4)),
                                bias=shaped(fdp, (width,), dtype) if fdp.ConsumeBool() else None,
                                weight=shaped(fdp, (width,), dtype) if fdp.ConsumeBool() else None,
                                rule=["layer_norm", "softmax", "bogus"][fdp.ConsumeIntInRange(0, 2)],
                                epsilon=parameter(fdp), variance_epsilon=parameter(fdp) if fdp.ConsumeBool() else None,
                                check_finite=fdp.ConsumeBool(), gradient_form=fdp.ConsumeBool())
        elif kind == 8:
            b, h = pair(fdp, 0, 3)
            nq, nk = pair(fdp, 0, 40)
            d, dv = pair(fdp, 0, 5)
            dtype = DTYPES[fdp.ConsumeIntInRange(0, 1)]
            q, k = shaped(fdp, (b, h, nq, d), dtype), shaped(fdp, (b, h, nk, d), dtype)
            v, r = shaped(fdp, (b, h, nk, dv), dtype), shaped(fdp, (b, h, nq, dv), dtype)
            mask = (shaped(fdp, (b if fdp.ConsumeBool() else 1, 1, nq if fdp.ConsumeBool() else 1, nk), np.int64) > 0
                    if fdp.ConsumeBool() else None)
            outs = [shaped(fdp, a.shape, dtype) for a in (q, k, v)]
            saved = {}  # the forward pass's O and log-sum-exp (any values: the kernel must not trust them)
            if fdp.ConsumeBool():
                saved = {"output": shaped(fdp, (b, h, nq, dv), dtype), "logsumexp": shaped(fdp, (b, h, nq), dtype)}
            _core.attention_relevance(q, k, v, r, mask, *outs,
                                      rule=["attnlrp", "cp_lrp", "bogus"][fdp.ConsumeIntInRange(0, 2)],
                                      scale=parameter(fdp), causal=fdp.ConsumeBool(),
                                      check_finite=fdp.ConsumeBool(), gradient_form=fdp.ConsumeBool(), **saved)
        elif kind == 9:  # the element-wise steps: mostly one shape, an output that may be an input itself
            dtype = DTYPES[fdp.ConsumeIntInRange(0, 1)]
            shape = tuple(fdp.ConsumeIntInRange(0, 5) for _ in range(fdp.ConsumeIntInRange(0, 3)))
            a, b = (shaped(fdp, shape, dtype) if fdp.ConsumeIntInRange(0, 7) else array(fdp) for _ in range(2))
            out = [a, b, shaped(fdp, shape, dtype), array(fdp)][fdp.ConsumeIntInRange(0, 3)]
            if fdp.ConsumeBool():
                factor = [None, shaped(fdp, shape, dtype), out, array(fdp)][fdp.ConsumeIntInRange(0, 3)]
                _core.divide_stabilized(a, b, out, epsilon=parameter(fdp), factor=factor,
                                        activation_factor=fdp.PickValueInList(ACTIVATIONS))
            else:
                _core.multiply(a, b, out, scale=parameter(fdp), accumulate=fdp.ConsumeBool(),
                               activation_a=fdp.PickValueInList(ACTIVATIONS))
        else:
            b, t = pair(fdp, 0, 4)
            hidden, inputs = pair(fdp, 0, 4)
            dtype = DTYPES[fdp.ConsumeIntInRange(0, 1)]
            steps = [shaped(fdp, (b, t, hidden), dtype) for _ in range(4)]  # decay, fresh, pre, hidden
            weight = shaped(fdp, (hidden, hidden), dtype)
            relevance, last = shaped(fdp, (b, t, hidden), dtype), shaped(fdp, (b, hidden), dtype)
            lengths = (np.array([fdp.ConsumeIntInRange(1, max(t, 1)) for _ in range(b)], dtype=np.int64)
                       if fdp.ConsumeIntInRange(0, 7) else array(fdp))  # mostly valid, [1, steps]
            out = shaped(fdp, (b, t, hidden), dtype)
            _core.recurrent_sweep(*steps, weight, relevance, last, lengths, out,
                                  scale=shaped(fdp, (b, t, hidden), dtype) if fdp.ConsumeBool() else None,
                                  bias=shaped(fdp, (b, t, hidden), dtype) if fdp.ConsumeBool() else None,
                                  epsilon=parameter(fdp), bias_factor=parameter(fdp) if fdp.ConsumeBool() else 0.0,
                                  inputs=fdp.ConsumeIntInRange(-2, 2 * inputs + 2), reverse=fdp.ConsumeBool())
    except (ValueError, TypeError):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
