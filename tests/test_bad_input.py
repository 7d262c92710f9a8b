"""Bad input gets a clear error that names the argument, what was expected and what was received; never a crash,
a silent NaN or a wrong answer. Checked through the public API and at the C++ boundary itself."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import lrptext
from lrptext import _core, kernels as K
from lrptext.rules import Epsilon, Gamma


def f64(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def test_weight_of_the_wrong_rank(backend):
    with pytest.raises(ValueError, match=re.escape("dense_relevance: 'weight' must be 2-D (out, in), got 3-D")):
        K.dense_relevance(f64(2, 4), f64(3, 4, 1), None, f64(2, 3), backend=backend)
    with pytest.raises(ValueError,
                       match=r"dense_relevance: 'weight' must be 2-D \(out_features, in_features\), got 3-D"):
        _core.dense_relevance(f64(2, 4), f64(3, 4, 1), None, f64(2, 3), f64(2, 4))


def test_mismatched_shapes(backend):
    with pytest.raises(ValueError, match=r"'input' must have shape \(\.\.\., 4\)"):
        K.dense_relevance(f64(2, 5), f64(3, 4), None, f64(2, 3), backend=backend)
    with pytest.raises(ValueError, match=r"'relevance' must have shape \(2, 3\), got \(2, 4\)"):
        K.dense_relevance(f64(2, 4), f64(3, 4), None, f64(2, 4), backend=backend)
    with pytest.raises(ValueError, match=r"'bias' must have shape \(out_channels,\) = \(3,\), got \(4,\)"):
        _core.dense_relevance(f64(2, 4), f64(3, 4), f64(4), f64(2, 3), f64(2, 4))
    with pytest.raises(ValueError,
                       match=r"'relevance' must have shape \(batch, out_channels, out_h, out_w\) = \(1, 2, 3, 3\)"):
        K.conv2d_relevance(f64(1, 3, 5, 5), f64(2, 3, 3, 3), None, f64(1, 2, 4, 4), backend="cpp")


@pytest.mark.parametrize("bad", [torch.float16, torch.bfloat16, torch.int32])
def test_unsupported_dtypes(bad, backend):
    w = f64(3, 4).to(bad)
    with pytest.raises(ValueError, match=r"'weight' has dtype .*float32 or float64 \(lrptext.explain\(\) promotes"):
        K.dense_relevance(f64(2, 4), w, None, f64(2, 3), backend=backend)
    with pytest.raises(ValueError, match="'weight' has dtype"):
        _core.dense_relevance(f64(2, 4), w, None, f64(2, 3), f64(2, 4))


def test_mixed_dtypes_at_the_boundary():
    with pytest.raises(ValueError,
                       match="'weight' has dtype float32 but 'input' has float64; convert them to one dtype"):
        _core.dense_relevance(f64(2, 4), torch.randn(3, 4), None, f64(2, 3), f64(2, 4))


def test_non_finite_input_is_an_error_unless_asked_to_propagate(backend):
    x = f64(2, 4)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"'input' holds NaN or infinity \(first at flat index 6\)"):
        K.dense_relevance(x, f64(3, 4), None, f64(2, 3), backend=backend)
    r = f64(1, 2, 3, 3)
    r[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="'relevance' holds NaN or infinity"):
        K.conv2d_relevance(f64(1, 3, 5, 5), f64(2, 3, 3, 3), None, r, backend=backend)
    with pytest.raises(ValueError, match="'relevance' holds NaN or infinity"):
        K.embedding_relevance(torch.tensor([1]), torch.full((1, 3), float("nan"), dtype=torch.float64),
                              num_embeddings=3, backend=backend)
    with pytest.raises(ValueError, match="'input' holds NaN or infinity"):
        K.max_pool1d_relevance(torch.full((1, 1, 4), float("inf"), dtype=torch.float64), f64(1, 1, 2),
                               kernel_size=2, backend=backend)
    out = K.dense_relevance(x, f64(3, 4), None, f64(2, 3), check_finite=False, backend=backend)
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()  # IEEE propagation, row by row


@pytest.mark.parametrize("bad_id", [10, -1, 2**40])
def test_token_ids_out_of_range(bad_id, backend):
    ids = torch.tensor([[1, 2], [bad_id, 3]])
    with pytest.raises(ValueError, match=r"'ids' holds a token id outside \[0, 10\) at position 2 \(value -?\d+\)"):
        K.embedding_relevance(ids, f64(2, 2, 4), num_embeddings=10, backend=backend)
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        K.embedding_bag_relevance(ids, f64(10, 4), f64(2, 4), backend=backend)


@pytest.mark.parametrize("offsets", [[0, 5, 3], [1, 2, 3], [0, 2, 9]])
def test_bad_offsets(offsets, backend):
    with pytest.raises(ValueError, match="'offsets' must start at 0, never decrease and stay <= the number of ids"):
        K.embedding_bag_relevance(torch.arange(6), f64(10, 4), f64(3, 4), offsets=torch.tensor(offsets),
                                  backend=backend)


@pytest.mark.parametrize("output, got", [(f64(3, 4), r"\(3, 4\) torch.float64"),
                                         (f64(2, 4).float(), r"\(2, 4\) torch.float32")])
def test_embedding_bag_output_of_another_shape_or_dtype(output, got, backend):
    with pytest.raises(ValueError, match=r"'output' \(the bag output\) must have the shape and dtype of 'relevance', "
                                         r"\(2, 4\) torch.float64, got " + got):
        K.embedding_bag_relevance(torch.tensor([[1, 2], [3, 4]]), f64(10, 4), f64(2, 4), output=output,
                                  backend=backend)


def test_the_boundary_refuses_non_contiguous_and_read_only_arrays():
    x = f64(4, 6)[:, ::2]
    with pytest.raises(ValueError, match="'input' must be C-contiguous .* call .contiguous"):
        _core.dense_relevance(x, f64(3, 3), None, f64(4, 3), f64(4, 3))
    out = np.zeros((2, 4))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="'out' is read-only"):
        _core.dense_relevance(np.ones((2, 4)), np.ones((3, 4)), None, np.ones((2, 3)), out)


def test_the_output_may_not_share_memory_with_an_input():
    x, r = f64(4, 3), f64(4, 3)
    with pytest.raises(ValueError, match="'out' shares memory with 'input'; pass a separate output array"):
        _core.dense_relevance(x, f64(3, 3), None, r, x)
    both = f64(2, 4, 3)  # the output overlapping the tail of the relevance
    with pytest.raises(ValueError, match="'out' shares memory with 'relevance'"):
        _core.conv_relevance(f64(1, 1, 4, 3), f64(1, 1, 1, 1), None, both[0].reshape(1, 1, 4, 3),
                             both.reshape(-1)[6:18].reshape(1, 1, 4, 3), stride=(1, 1), padding=(0, 0),
                             dilation=(1, 1), groups=1)


def test_the_dense_forward_checks_its_arguments():
    """The engine's forward pass of a wide dense layer for one sample (the C++ core's matrix-vector product)."""
    with pytest.raises(ValueError, match=re.escape("dense_forward: 'input' must have shape (rows, in_features) = "
                                                   "(1, 3), got (1, 4)")):
        _core.dense_forward(f64(1, 4), f64(2, 3), None, f64(1, 2))
    with pytest.raises(ValueError, match=re.escape("'out' must have shape (rows, out_features) = (1, 2)")):
        _core.dense_forward(f64(1, 3), f64(2, 3), None, f64(1, 3))
    with pytest.raises(ValueError, match=re.escape("'bias' must have shape (out_features,) = (2,)")):
        _core.dense_forward(f64(1, 3), f64(2, 3), f64(3), f64(1, 2))
    with pytest.raises(ValueError, match="'weight' has dtype float32 but 'input' has float64"):
        _core.dense_forward(f64(1, 3), torch.randn(2, 3), None, f64(1, 2))
    x = f64(2, 3)
    with pytest.raises(ValueError, match="'out' shares memory with 'input'"):
        _core.dense_forward(x, f64(3, 3), None, x)


def test_the_conv_and_max_pool_forwards_check_their_arguments():
    """The engine's forward pass of small convolutions and of max pooling (C++ core, CPU)."""
    conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
    with pytest.raises(ValueError, match=re.escape("conv_forward: 'out' must have shape (batch, out_channels, out_h, "
                                                   "out_w) = (1, 2, 3, 3)")):
        _core.conv_forward(f64(1, 3, 5, 5), f64(2, 3, 3, 3), None, f64(1, 2, 5, 5), **conv)
    with pytest.raises(ValueError, match="'weight' must have shape"):
        _core.conv_forward(f64(1, 3, 5, 5), f64(2, 2, 3, 3), None, f64(1, 2, 3, 3), **conv)
    with pytest.raises(ValueError, match=re.escape("'bias' must have shape (out_channels,) = (2,)")):
        _core.conv_forward(f64(1, 3, 5, 5), f64(2, 3, 3, 3), f64(3), f64(1, 2, 3, 3), **conv)
    with pytest.raises(ValueError, match="does not fit the padded input"):
        _core.conv_forward(f64(1, 3, 2, 2), f64(2, 3, 3, 3), None, f64(1, 2, 1, 1), **conv)
    with pytest.raises(ValueError, match="'stride' must be >= 1, got 0"):
        _core.conv_forward(f64(1, 3, 5, 5), f64(2, 3, 3, 3), None, f64(1, 2, 3, 3), **(conv | {"stride": (0, 1)}))
    with pytest.raises(ValueError, match="'weight' has dtype float32 but 'input' has float64"):
        _core.conv_forward(f64(1, 3, 5, 5), torch.randn(2, 3, 3, 3), None, f64(1, 2, 3, 3), **conv)
    with pytest.raises(ValueError, match=re.escape("max_pool_forward: 'out' must have shape (planes, out_h, out_w) = "
                                                   "(2, 2, 2)")):
        _core.max_pool_forward(f64(2, 5, 4), f64(2, 2, 3), kernel=(2, 2), stride=(2, 2))
    with pytest.raises(ValueError, match=re.escape("'kernel' and 'stride' must be >= 1, got kernel=(2, 0)")):
        _core.max_pool_forward(f64(2, 5, 4), f64(2, 2, 2), kernel=(2, 0), stride=(2, 2))
    with pytest.raises(ValueError, match=re.escape("the kernel (6, 2) does not fit the input")):
        _core.max_pool_forward(f64(2, 5, 4), f64(2, 1, 1), kernel=(6, 2), stride=(2, 2))
    x = f64(2, 4, 4)
    with pytest.raises(ValueError, match="'out' shares memory with 'input'"):
        _core.max_pool_forward(x, x.reshape(-1)[:8].reshape(2, 2, 2), kernel=(2, 2), stride=(2, 2))


def test_the_boundary_takes_a_cpu_capsule_once():
    """lrptext.kernels hands CPU tensors over as DLPack capsules; a capsule already consumed is refused by name."""
    from torch.utils.dlpack import to_dlpack

    x, w, r = f64(2, 4), f64(3, 4), f64(2, 3)
    out, via_capsules = f64(2, 4), f64(2, 4)
    _core.dense_relevance(x, w, None, r, out)
    _core.dense_relevance(to_dlpack(x), to_dlpack(w), None, to_dlpack(r), to_dlpack(via_capsules))
    torch.testing.assert_close(via_capsules, out)
    used = to_dlpack(w)
    torch.from_dlpack(used)
    with pytest.raises(ValueError, match="'weight' is a used or foreign capsule; pass the array itself"):
        _core.dense_relevance(x, used, None, r, out)


def test_not_an_array(backend):
    with pytest.raises(TypeError, match="'input' must be a torch.Tensor or numpy.ndarray, got list"):
        K.dense_relevance([[1.0, 2.0]], f64(3, 2), None, f64(1, 3), backend=backend)
    with pytest.raises(TypeError, match="'input' must be an array with DLPack support .* got list"):
        _core.dense_relevance([[1.0]], f64(3, 2), None, f64(1, 3), f64(1, 2))


def test_convolution_geometry():
    with pytest.raises(ValueError,
                       match=r"in_channels \(3\) and out_channels \(4\) must both be divisible by groups \(2\)"):
        _core.conv_relevance(f64(1, 3, 5, 5), f64(4, 1, 3, 3), None, f64(1, 4, 3, 3), f64(1, 3, 5, 5),
                             stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=2)
    with pytest.raises(ValueError, match="does not fit the padded input"):
        K.conv2d_relevance(f64(1, 1, 2, 2), f64(1, 1, 3, 3), None, f64(1, 1, 1, 1), backend="cpp")
    with pytest.raises(ValueError, match="'stride' must be >= 1, got 0"):
        K.conv2d_relevance(f64(1, 1, 4, 4), f64(1, 1, 3, 3), None, f64(1, 1, 2, 2), stride=0, backend="cpp")
    with pytest.raises(ValueError, match="string paddings are resolved by lrptext.explain"):
        K.conv1d_relevance(f64(1, 1, 4), f64(1, 1, 3), None, f64(1, 1, 4), padding="same")


def test_pooling_geometry():
    with pytest.raises(ValueError, match=r"the window gives 2 \(ceil_mode is not supported\)"):
        K.max_pool2d_relevance(f64(1, 1, 5, 5), f64(1, 1, 3, 3), kernel_size=2, backend="cpp")
    with pytest.raises(ValueError, match="'relevance' must have shape"):
        K.global_max_relevance(f64(2, 3, 4), f64(2, 4), dim=-1)


def test_unknown_names():
    with pytest.raises(ValueError, match="'backend' must be one of auto, cpp, torch, got 'cuda'"):
        K.dense_relevance(f64(1, 2), f64(1, 2), None, f64(1, 1), backend="cuda")
    with pytest.raises(TypeError, match="'rule' must be one of Epsilon, Gamma, AlphaBeta, ZBox, Flat, WSquare"):
        K.dense_relevance(f64(1, 2), f64(1, 2), None, f64(1, 1), rule="epsilon")
    with pytest.raises(ValueError, match="unknown rule 'lrp0'; expected one of epsilon, gamma"):
        _core.dense_relevance(f64(1, 2), f64(1, 2), None, f64(1, 1), f64(1, 2), rule="lrp0")
    with pytest.raises(ValueError, match="alpha-beta needs alpha - beta = 1"):
        _core.dense_relevance(f64(1, 2), f64(1, 2), None, f64(1, 1), f64(1, 2), rule="alpha_beta", alpha=1, beta=1)
    with pytest.raises(ValueError, match="the zbox rule needs 'low' and 'high'"):
        _core.dense_relevance(f64(1, 2), f64(1, 2), None, f64(1, 1), f64(1, 2), rule="zbox")
    with pytest.raises(ValueError, match="'n' must be >= 1"):
        _core.set_num_threads(0)
    with pytest.raises(ValueError, match="set_winograd: 'mode' must be 'auto', 'always' or 'never', got 'on'"):
        lrptext.set_winograd("on")
    assert lrptext.get_winograd() == "auto"


def test_errors_leave_no_partial_state():
    """A failed call changes nothing: the next valid call gives the right answer."""
    x, w, r = f64(2, 4), f64(3, 4), f64(2, 3)
    before = K.dense_relevance(x, w, None, r, rule=Gamma())
    with pytest.raises(ValueError):
        K.dense_relevance(x, w, None, f64(2, 5), rule=Gamma())
    torch.testing.assert_close(K.dense_relevance(x, w, None, r, rule=Gamma()), before)
    assert K.dense_relevance(x, w, None, r, rule=Epsilon()).shape == (2, 4)
