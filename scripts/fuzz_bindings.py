"""Coverage-guided fuzzing (atheris) of lrptext._core's bindings: every call gets arrays of fuzzed rank, shape,
dtype, contiguity and contents (NaN, infinities, huge and negative token ids included) and fuzzed parameters. A
call may return or raise ValueError / TypeError; anything else (another exception, a crash, a sanitizer report)
is a finding. atheris guides by the coverage of the Python it instruments; the C++ is exercised, and runs under
AddressSanitizer when started as scripts/sanitize.sh starts the tests.

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


def maybe(fdp: atheris.FuzzedDataProvider) -> np.ndarray | None:
    return array(fdp) if fdp.ConsumeBool() else None


def pair(fdp: atheris.FuzzedDataProvider, low: int, high: int) -> tuple[int, int]:
    return fdp.ConsumeIntInRange(low, high), fdp.ConsumeIntInRange(low, high)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    _core.set_winograd(["auto", "always", "never"][fdp.ConsumeIntInRange(0, 2)])  # 'always' for small convolutions
    kind = fdp.ConsumeIntInRange(0, 6)
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
        else:
            _core.conv_forward(array(fdp), array(fdp), maybe(fdp), array(fdp), stride=pair(fdp, -1, 4),
                               padding=pair(fdp, -1, 4), dilation=pair(fdp, -1, 3), groups=fdp.ConsumeIntInRange(-1, 4))
    except (ValueError, TypeError):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
