"""explain() end to end: conservation on bias-free models shaped like W1-W5, layer-by-layer agreement with the
float64 oracle, residual + BatchNorm models, token ids, targets, and the promise never to touch the user's model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrptext
import reference
from layer_totals import assert_each_samples_own
from lrptext import Contrast, Explainer, UnsupportedLayerError, explain
from lrptext.kernels import dispatch
from lrptext.rules import AlphaBeta, Composite, Epsilon, Flat, Gamma, Norm, Pass, ZBox, ZPlus
from models import BagOfEmbeddings, KimCNN, ResidualBlock, bow_mlp, digits_cnn, randomize_batchnorm, vgg_like
from tolerances import assert_matches


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model.double().eval()


def workload(name: str, bias: bool):
    g = torch.Generator().manual_seed(1)
    if name == "W1":
        return seeded(KimCNN(bias=bias)), (torch.randint(0, 500, (3, 30), generator=g),)
    if name == "W2":
        x = (torch.rand(4, 2000, generator=g) < 0.01).double() * torch.rand(4, 2000, generator=g, dtype=torch.float64)
        return seeded(bow_mlp(bias=bias)), (x,)
    if name == "W3":
        return seeded(vgg_like(bias=bias)), (torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64),)
    if name == "W4":
        return seeded(digits_cnn(bias=bias)), (torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64),)
    ids = torch.randint(0, 500, (40,), generator=g)
    return seeded(BagOfEmbeddings(bias=bias)), (ids, torch.tensor([0, 7, 19, 30]))


TINY = 1e-12
CONSERVING = {
    "epsilon(1e-9)": Composite("epsilon", dense=Epsilon(1e-9), conv=Epsilon(1e-9)),
    "zplus": Composite("zplus", dense=ZPlus(TINY), conv=ZPlus(TINY)),
    "epsilon_plus_flat": Composite("epsilon_plus_flat", dense=Epsilon(1e-9), conv=ZPlus(TINY), first=Flat(TINY)),
}


@pytest.mark.parametrize("composite", CONSERVING)
@pytest.mark.parametrize("name", ["W1", "W2", "W3", "W4", "W5"])
def test_conservation_on_bias_free_workloads(name, composite, backend):
    model, inputs = workload(name, bias=False)
    bag = any(isinstance(m, nn.EmbeddingBag) for m in model.modules())  # W5's
    e = explain(model, inputs, composite=CONSERVING[composite], backend=backend,
                layer_map={nn.EmbeddingBag: Norm(TINY)} if bag else None)
    relative = (e.delta.abs() / e.initial.abs()).max().item()
    assert relative < 1e-6, f"conservation delta {relative:.2e} relative"


def test_biases_absorb_relevance():
    """The suite can fail: with biases, relevance is not conserved."""
    model, inputs = workload("W4", bias=True)
    e = explain(model, inputs, composite=CONSERVING["epsilon(1e-9)"])
    assert (e.delta.abs() / e.initial.abs()).max().item() > 1e-3


# ---------------------------------------------------------------------------------- the oracle, layer by layer

ORACLE_SPEC = {
    Epsilon: lambda r: {"name": "epsilon", "epsilon": r.epsilon},
    Gamma: lambda r: {"name": "gamma", "gamma": r.gamma, "stabilizer": r.stabilizer},
    ZPlus: lambda r: {"name": "alpha_beta", "alpha": 1.0, "beta": 0.0, "stabilizer": r.stabilizer},
    ZBox: lambda r: {"name": "zbox", "stabilizer": r.stabilizer},
    Flat: lambda r: {"name": "flat", "stabilizer": r.stabilizer},
}


def oracle_sequential(model: nn.Sequential, x: torch.Tensor, target: int, rules: dict[int, object]):
    """Relevance through an nn.Sequential with the float64 oracle: (input relevance, relevance sum per layer)."""
    activations = [x.numpy()]
    with torch.no_grad():
        h = x
        for layer in model:
            h = layer(h)
            activations.append(h.numpy())
    r = np.zeros_like(activations[-1])
    r[:, target] = activations[-1][:, target]
    sums = []
    for i in reversed(range(len(model))):
        layer, a = model[i], activations[i]
        sums.append(r.reshape(r.shape[0], -1).sum(1))
        if isinstance(layer, nn.Linear):
            rule = rules[i]
            extra = {}
            if isinstance(rule, ZBox):
                low, high = rule.channels(a.shape[1])
                extra = {"low": np.array(low), "high": np.array(high)}
            r = reference.dense(a, layer.weight.detach().numpy(), layer.bias.detach().numpy(), r,
                                ORACLE_SPEC[type(rule)](rule), **extra)
        elif isinstance(layer, nn.Conv2d):
            rule = rules[i]
            extra = {}
            if isinstance(rule, ZBox):
                extra = dict(zip(("low", "high"), map(np.array, rule.channels(a.shape[1]))))
            r = reference.conv2d(a, layer.weight.detach().numpy(), layer.bias.detach().numpy(), r,
                                 ORACLE_SPEC[type(rule)](rule), stride=layer.stride, padding=layer.padding,
                                 dilation=layer.dilation, groups=layer.groups, **extra)
        elif isinstance(layer, nn.MaxPool2d):
            r, _ = reference.pool2d(a, r, mode="max", kernel=(2, 2), stride=(2, 2))
        elif isinstance(layer, nn.AvgPool2d):
            r, _ = reference.pool2d(a, r, mode="avg", kernel=(2, 2), stride=(2, 2))
        elif isinstance(layer, nn.Flatten):
            r = r.reshape(a.shape)
        # ReLU: relevance passes
    return r, list(reversed(sums))


def test_mlp_matches_the_oracle_layer_by_layer(backend):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).double()
    x = torch.randn(3, 10, dtype=torch.float64)
    comp = Composite("custom", dense=Epsilon(0.01), conv=ZPlus(), first=ZBox(-3.0, 3.0))
    e = explain(model, x, target=2, composite=comp, layers=True, backend=backend)
    expected, sums = oracle_sequential(model, x, 2, {0: ZBox(-3.0, 3.0), 2: Epsilon(0.01), 4: Epsilon(0.01)})
    assert_matches(e.relevance, expected, torch.float64)
    for i, s in enumerate(sums):  # relevance at each layer's output
        np.testing.assert_allclose(e.layer_relevance[str(i)].numpy(), s, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("product", ["core", "torch"])
@pytest.mark.parametrize("activation", [nn.ReLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU()],
                         ids=["relu", "gelu", "gelu_tanh", "silu"])
def test_mlp_with_either_blas_for_its_products_matches_the_oracle(product, activation, monkeypatch):
    """The dense epsilon products run in the core's BLAS or in torch's, by the CPU (build_info()["dense_product"]);
    here every product takes the one chosen, including those whose input is a dropped activation's
    pre-activation (torch's path reads act(z) in the core's product with the input, the core's kernel relu(z) or
    act(z) computed for it), and the test sees that it did."""
    from lrptext import _native
    from lrptext.kernels import dispatch

    calls = []
    torch_product = dispatch._epsilon_torch_product
    monkeypatch.setattr(_native, "dense_product", product)
    monkeypatch.setattr(dispatch, "_TORCH_PRODUCT_FROM", 0)
    monkeypatch.setattr(dispatch, "_epsilon_torch_product", lambda *a: calls.append(a[6]) or torch_product(*a))
    torch.manual_seed(5)  # activations of 64 x 256 and 64 x 128: dropped after the forward pass, read as act(z)
    model = nn.Sequential(nn.Linear(10, 256), activation, nn.Linear(256, 128), activation, nn.Linear(128, 4)).double()
    x = torch.randn(64, 10, dtype=torch.float64)
    comp = Composite("custom", dense=Epsilon(0.01), conv=ZPlus(), first=Epsilon(0.01))
    e = explain(model, x, target=2, composite=comp, backend="cpp")
    form = {"ReLU": "relu", "SiLU": "silu"}.get(type(activation).__name__) or (
        "gelu" if activation.approximate == "none" else "gelu_tanh")
    assert calls == ([form, form, None] if product == "torch" else [])  # from the output; the first reads x
    expected, _ = oracle_sequential(model, x, 2, {0: Epsilon(0.01), 2: Epsilon(0.01), 4: Epsilon(0.01)})
    assert_matches(e.relevance, expected, torch.float64)


def test_cnn_matches_the_oracle_layer_by_layer(backend):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                          nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 5)).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    rules = {0: Flat(), 3: Gamma(0.25), 7: Epsilon(1e-6)}
    comp = Composite("custom", dense=Epsilon(1e-6), conv=Gamma(0.25), first=Flat())
    e = explain(model, x, target=1, composite=comp, layers=True, backend=backend)
    expected, sums = oracle_sequential(model, x, 1, rules)
    assert_matches(e.relevance, expected, torch.float64)
    for i, s in enumerate(sums):
        np.testing.assert_allclose(e.layer_relevance[str(i)].numpy(), s, rtol=1e-8, atol=1e-12)


def test_a_wrong_composite_does_not_match_the_oracle():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    x = torch.randn(3, 10, dtype=torch.float64)
    e = explain(model, x, target=2, composite="epsilon")
    expected, _ = oracle_sequential(model, x, 2, {0: ZBox(-3.0, 3.0), 2: Epsilon(1e-6)})
    assert np.abs(e.relevance.numpy() - expected).max() > 1e-3


# ------------------------------------------------------------------------------------------ whole models


def test_residual_add_and_batchnorm_end_to_end(backend):
    model = seeded(ResidualBlock(), 5)
    randomize_batchnorm(model)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    explainer = Explainer(model, composite="epsilon_gamma_box", low=0.0, high=1.0, backend=backend)
    table = str(explainer.support_table())
    assert "BatchNorm 'bn0' folded in" in table and "BatchNorm 'bn2' folded in" in table
    e = explainer.explain(x)
    assert e.relevance.shape == x.shape and torch.isfinite(e.relevance).all()
    torch.testing.assert_close(e.prediction, model(x))
    unfolded = Explainer(model, composite="epsilon_gamma_box", low=0.0, high=1.0, canonizers=(), backend=backend)
    assert "batchnorm" in str(unfolded.support_table())
    torch.testing.assert_close(unfolded.explain(x).prediction, model(x))


@pytest.mark.parametrize("case", ["gamma rule", "float64 of a float32 model", "folded batchnorm"])
def test_an_edit_through_data_is_seen_by_the_next_explanation(case):
    """Edits through .data bump no version; the Explainer still sees them (samples of every parameter and buffer):
    rule-modified weights (gamma), weights converted to the compute dtype and BatchNorm folded into a
    convolution are prepared again, and the explanation is a fresh Explainer's."""
    if case == "folded batchnorm":
        model = seeded(ResidualBlock(), 5).float()
        randomize_batchnorm(model)
        x = torch.rand(2, 3, 8, 8)
        kwargs = {"composite": "epsilon_gamma_box", "low": 0.0, "high": 1.0}
    else:  # (seeded() makes a float64 model)
        model = seeded(nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))).float()
        x = torch.randn(3, 10, dtype=torch.float64 if case.startswith("float64") else torch.float32)
        kwargs = {"composite": "epsilon_gamma_box", "low": -3.0, "high": 3.0}
    explainer = Explainer(model, **kwargs)
    explainer.explain(x)
    for p in model.parameters():
        p.data.mul_(1.5)
    for b in model.buffers():
        if b.is_floating_point():
            b.data.add_(0.25)
    got, want = explainer.explain(x), Explainer(model, **kwargs).explain(x)
    assert torch.equal(got.relevance, want.relevance) and torch.equal(got.prediction, want.prediction)
    with torch.no_grad():
        torch.testing.assert_close(got.prediction, model(x.float()).to(got.prediction.dtype))


def test_residual_add_conserves_without_biases():
    """The Norm rule splits a residual sum in proportion to its summands and conserves relevance."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6, bias=False)
            self.b = nn.Linear(6, 6, bias=False)
            self.out = nn.Linear(6, 3, bias=False)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.out(h + F.relu(self.b(h)))

    model = seeded(Residual(), 6)
    x = torch.rand(4, 6, dtype=torch.float64)
    e = explain(model, x, composite=CONSERVING["epsilon(1e-9)"])
    assert (e.delta.abs() / e.initial.abs()).max() < 1e-5


def test_kim_cnn_on_token_ids_gives_first_layer_rule_to_every_parallel_conv(backend):
    model = seeded(KimCNN(padding_idx=0), 7)
    ids = torch.randint(1, 500, (2, 20))
    ids[:, -3:] = 0
    explainer = Explainer(model, composite="epsilon_plus_flat", backend=backend)
    rules = {row.name: row.rule for row in explainer.support_table().rows}
    assert all(rules[f"convs.{i}"].startswith("Flat") for i in range(3))  # zennit gives Flat to convs.0 only
    e = explainer.explain(ids)
    assert e.relevance.shape == ids.shape
    assert (e.relevance[:, -3:] == 0).all()  # the padding index gets no relevance
    torch.testing.assert_close(e.prediction, model(ids))


def test_embedding_bag_with_offsets():
    model, (ids, offsets) = workload("W5", bias=True)
    e = explain(model, (ids, offsets), target=1)
    assert isinstance(e.relevance, tuple) and e.relevance[1] is None
    assert e.relevance[0].shape == ids.shape
    torch.testing.assert_close(e.prediction, model(ids, offsets))


def test_bag_of_embeddings_matches_the_oracle(backend, monkeypatch):
    """W5 end to end in float64: epsilon at the linear layer, then the Norm rule of the bag, against the oracle; the
    engine hands the bag kernel the bag output kept from the forward pass (one read of each row, not two)."""
    model, (ids, offsets) = workload("W5", bias=True)
    given = []
    kernel = lrptext.kernels.embedding_bag_relevance

    def spy(*args, **kwargs):
        given.append(kwargs.get("output"))
        return kernel(*args, **kwargs)

    monkeypatch.setattr(lrptext.kernels, "embedding_bag_relevance", spy)
    e = explain(model, (ids, offsets), target=2, composite=Composite("eps", dense=Epsilon(1e-3)), backend=backend)
    with torch.no_grad():
        bags = model.bag(ids, offsets)
        logits = model.fc(bags)
    r = np.zeros(tuple(logits.shape))
    r[:, 2] = logits[:, 2].numpy()
    r = reference.dense(bags.numpy(), model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy(), r,
                        {"name": "epsilon", "epsilon": 1e-3})
    expected = reference.embedding_bag(ids.tolist(), offsets.tolist(), model.bag.weight.detach().numpy(), r,
                                       mode="mean")
    assert_matches(e.relevance[0], expected, torch.float64)
    assert len(given) == 1 and given[0] is not None
    torch.testing.assert_close(given[0], bags, rtol=0, atol=0)


def test_an_elman_rnn_is_refused_by_name():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(50, 8)
            self.encoder = nn.Module()
            self.encoder.rnn = nn.RNN(8, 8, batch_first=True)  # LSTM and GRU have rules (test_layer_recurrent)
            self.fc = nn.Linear(8, 2)

        def forward(self, ids):
            out, _ = self.encoder.rnn(self.embedding(ids))
            return self.fc(out[:, -1])

    with pytest.raises(UnsupportedLayerError, match=r"no rule for nn.RNN at 'encoder.rnn'; nn.RNN .* no "
                       r"stand-in rule can route relevance through it"):
        Explainer(Recurrent())
    for stand_in in (Pass(), Norm()):  # it returns several tensors: neither may stand in
        with pytest.raises(ValueError, match="returns several tensors, so no rule can stand in"):
            Explainer(Recurrent(), layer_map={nn.RNN: stand_in})
    table = lrptext.support_table(Recurrent())
    assert [r.name for r in table.unsupported] == ["encoder.rnn"]


def test_unsupported_functions_are_refused_when_relevance_reaches_them():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h * torch.sigmoid(h))  # a gate: the product of two relevance-carrying tensors

    with pytest.raises(UnsupportedLayerError, match="multiplies or divides relevance-carrying tensors"):
        explain(Gated(), torch.randn(2, 4))

    class Softmaxed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x):
            return torch.softmax(self.a(x), dim=1)

    with pytest.raises(UnsupportedLayerError, match="explain the logits"):
        explain(Softmaxed(), torch.randn(2, 4))


def test_what_the_inputs_dtypes_decide_is_decided_again_for_other_dtypes():
    """Which values carry relevance (and the errors where it would reach an operation that cannot take it) is
    worked out on an Explainer's first pass for each set of input dtypes and kept: an integer offset is
    arithmetic, a float one carries relevance into a cumulative sum that has no rule, refused every time."""
    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x, offset):
            return self.a(x) + offset.cumsum(-1)

    explainer = Explainer(seeded(Offset()))
    x = torch.randn(2, 4)
    whole = torch.ones(2, 3, dtype=torch.long)
    for _ in range(2):
        assert explainer.explain((x, whole)).relevance[0].shape == (2, 4)
        with pytest.raises(UnsupportedLayerError, match="cumsum"):
            explainer.explain((x, whole.float()))


def test_the_cycle_collector_is_off_during_a_pass_and_as_it_was_after(monkeypatch):
    import gc

    from lrptext.engine import explainer as engine

    seen, forward = [], engine.forward

    def recorded(*args, **kwargs):
        seen.append(gc.isenabled())
        if len(seen) == 3:
            raise RuntimeError("a pass that fails")
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine, "forward", recorded)
    explainer = Explainer(seeded(nn.Linear(4, 3)))
    assert gc.isenabled()
    explainer.explain(torch.randn(2, 4))
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        explainer.explain(torch.randn(2, 4))
        assert seen == [False, False] and not gc.isenabled()  # the caller's choice stays
    finally:
        gc.enable()
    with pytest.raises(RuntimeError, match="a pass that fails"):
        explainer.explain(torch.randn(2, 4))
    assert gc.isenabled()


def test_an_explanation_leaves_nothing_for_the_cycle_collector(monkeypatch):
    """Its passes' objects go by reference counting alone (the collector is paused while explanations run)."""
    import gc
    import weakref

    from lrptext.engine import propagate

    made, init = [], propagate.ForwardPass.__init__

    def recorded(self, *args, **kwargs):
        made.append(weakref.ref(self))
        init(self, *args, **kwargs)

    monkeypatch.setattr(propagate.ForwardPass, "__init__", recorded)
    explainer = Explainer(seeded(ResidualBlock(), 5))
    gc.collect()
    gc.disable()
    try:
        explainer.explain(torch.rand(2, 3, 8, 8, dtype=torch.float64), layers=True)  # (with the batch-axis probe)
        alive = [r for r in made if r() is not None]
    finally:
        gc.enable()
    assert len(made) == 2 and alive == []


def test_masks_from_token_ids_are_allowed():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(30, 6, padding_idx=0)
            self.fc = nn.Linear(6, 2)

        def forward(self, ids):
            mask = (ids != 0).float().unsqueeze(-1)
            return self.fc((self.embedding(ids) * mask).sum(1) / mask.sum(1))

    model = seeded(Masked(), 8)
    ids = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0]])
    e = explain(model, ids, composite="epsilon")
    assert e.relevance.shape == ids.shape and torch.isfinite(e.relevance).all()
    torch.testing.assert_close(e.prediction, model(ids))


def test_layer_map_can_pass_relevance_through_an_unsupported_module():
    class WithSoftsign(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Linear(4, 4), nn.Softsign(), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.act(self.a(x)))

    with pytest.raises(UnsupportedLayerError, match="nn.Softsign at 'act'"):
        Explainer(WithSoftsign())
    e = explain(WithSoftsign(), torch.randn(3, 4), layer_map={nn.Softsign: Pass()})
    assert e.relevance.shape == (3, 4)


# ----------------------------------------------------------------------------------------------- targets


def test_targets():
    model, (x,) = workload("W4", bias=True)
    logits = model(x)
    e = explain(model, x)
    assert e.target.tolist() == logits.argmax(1).tolist()
    torch.testing.assert_close(e.initial, logits.max(1).values)
    assert explain(model, x, target=3).target.tolist() == [3, 3, 3]
    per_sample = explain(model, x, target=[1, 2, 3])
    torch.testing.assert_close(per_sample.initial, logits[torch.arange(3), torch.tensor([1, 2, 3])])
    c = explain(model, x, target=Contrast(1, 2))
    torch.testing.assert_close(c.initial, logits[:, 1] - logits[:, 2])
    assert c.contrast.tolist() == [2, 2, 2]
    r = torch.zeros_like(logits)
    r[:, 4] = 1.0
    given = explain(model, x, output_relevance=r)
    assert given.target is None
    torch.testing.assert_close(given.initial, torch.ones(3, dtype=torch.float64))
    assert r.sum() == 3 and (r[:, 4] == 1).all()  # the kernels divide relevance in place, never the caller's


@pytest.mark.parametrize(("target", "message"), [
    (10, r"holds class 10, outside \[0, 10\)"),
    ([1, 2], r"one class index or one per sample \(3\)"),
    (1.5, "must hold class indices"),
])
def test_bad_targets(target, message):
    model, (x,) = workload("W4", bias=True)
    with pytest.raises(ValueError, match=message):
        explain(model, x, target=target)


def test_non_finite_inputs_and_results_are_refused_once(backend):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(2, 4)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"input 0 \('input'\) holds NaN or infinity"):
        explain(model, x, backend=backend)
    with torch.no_grad():  # finite inputs whose activations overflow float32
        model[0].weight.fill_(1e38)
    with pytest.raises(ValueError, match=r"NaN or infinite at nn.Linear \('\d'\) under Epsilon\(epsilon=1e-06\): "
                       r".*overflow "
                       r"in torch.float32: explain in float64"):
        explain(model, torch.ones(2, 4), backend=backend)
    in_float64 = explain(model.double(), torch.ones(2, 4, dtype=torch.float64), backend=backend)
    assert torch.isfinite(in_float64.relevance).all()


def test_finite_values_whose_sum_overflows_are_not_mistaken_for_infinity(backend):
    """explain() proves an input finite by its sum; a sum that overflows must fall back to the element check."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.full((2, 4), 3e38)  # finite float32 values summing to inf
    assert torch.isinf(x.sum())
    with torch.no_grad():
        model[0].weight.fill_(1e-39)
    explanation = explain(model, x, backend=backend)
    assert torch.isfinite(explanation.relevance).all()
    x[0, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"holds NaN or infinity"):
        explain(model, x, backend=backend)


def test_wrong_number_of_inputs_and_unknown_names():
    model, (x,) = workload("W4", bias=True)
    with pytest.raises(ValueError, match=r"takes 1 input\(s\)"):
        explain(model, (x, x))
    with pytest.raises(ValueError, match="unknown composite 'lrp'; choose one of epsilon, epsilon_plus"):
        explain(model, x, composite="lrp")
    with pytest.raises(ValueError, match="epsilon_gamma_box' needs the input's bounds"):
        explain(model, x, composite="epsilon_gamma_box")
    with pytest.raises(ValueError, match="name_map names no module of the model: \\['nope'\\]"):
        Explainer(model, name_map={"nope": Epsilon()})
    with pytest.raises(ValueError, match="takes one of Epsilon, Gamma"):
        Explainer(model, layer_map={nn.Linear: Pass()})
    # a key that names nothing in this model (misspelt, or a map shared across models) is said, not ignored
    unmatched = r"layer_map names no operation of the model: \['nn.LSTM', 'torch.Tensor.cumsum'\]"
    with pytest.warns(UserWarning, match=unmatched):
        Explainer(model, layer_map={nn.LSTM: Epsilon(), nn.Linear: Epsilon(), torch.Tensor.cumsum: Norm()})


# --------------------------------------------------------------------------------- the user's model is sacred


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training,
            [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def assert_unchanged(model, before):
    after = snapshot(model)
    assert before[0].keys() == after[0].keys()
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k
    assert before[1:] == after[1:]


@pytest.mark.parametrize("training", [True, False])
def test_the_model_is_never_mutated(training):
    model = seeded(ResidualBlock(), 9)
    randomize_batchnorm(model)
    model.train(training)
    before = snapshot(model)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    explain(model, x, composite="epsilon_gamma_box", low=0.0, high=1.0)
    assert_unchanged(model, before)
    with pytest.raises(ValueError):
        explain(model, x, target=99)
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_explainer_caches_weights_and_notices_parameter_changes():
    model = seeded(digits_cnn(), 10)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    explainer = Explainer(model, composite="epsilon_gamma_box", low=0.0, high=1.0)
    first = explainer.explain(x, target=0).relevance
    cached = dict(explainer._layers)
    assert cached and explainer.explain(x, target=0).relevance.equal(first)
    assert all(explainer._layers[k] is v for k, v in cached.items())  # prepared once, reused
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # an in-place change, like an optimizer step
    changed = explainer.explain(x, target=0)
    fresh = Explainer(model, composite="epsilon_gamma_box", low=0.0, high=1.0).explain(x, target=0)
    torch.testing.assert_close(changed.relevance, fresh.relevance)
    assert not torch.allclose(changed.relevance, first)
    model[0].weight = nn.Parameter(model[0].weight.detach() * 0.5)  # replaced, not changed in place
    replaced = explainer.explain(x, target=0)
    torch.testing.assert_close(replaced.relevance, first)


def test_dtype_policy():
    model = seeded(bow_mlp(features=50), 11).float()
    x = torch.rand(2, 50)
    assert explain(model, x).relevance.dtype == torch.float32
    assert explain(model, x.half()).relevance.dtype == torch.float32
    assert explain(model.half(), x.half()).relevance.dtype == torch.float32  # half models compute in float32
    assert explain(seeded(bow_mlp(features=50), 11), x.double()).relevance.dtype == torch.float64


def test_backends_agree():
    model, (ids,) = workload("W1", bias=True)
    a = explain(model, ids, backend="cpp", composite="epsilon_gamma")
    b = explain(model, ids, backend="torch", composite="epsilon_gamma")
    torch.testing.assert_close(a.relevance, b.relevance)


def _record_core_forwards(monkeypatch) -> list[tuple[str, tuple[int, ...]]]:
    """(function, weight or kernel shape) of every forward pass the engine hands to the C++ core."""
    from lrptext.kernels import native

    calls = []
    for name in ("dense_forward", "conv2d_forward", "max_pool_forward"):
        def recorded(*args, _name=name, _f=getattr(native, name), **kwargs):
            calls.append((_name, tuple(args[1].shape) if len(args) > 1 else kwargs["kernel"]))
            return _f(*args, **kwargs)
        monkeypatch.setattr(native, name, recorded)
    return calls


def _in_core(batch: int, weight_shape: tuple[int, ...]) -> bool:
    """Whether a dense layer's forward pass goes to the core: one sample always (its matrix-vector product splits
    over the threads), more while the product stays under the core's threshold of multiply-adds."""
    from lrptext.layers.linear import SPLIT_PRODUCTS

    return batch == 1 or batch * math.prod(weight_shape) < SPLIT_PRODUCTS


@pytest.mark.parametrize("batch", [1, 2])
def test_small_layers_and_wide_ones_at_batch_1_run_forward_in_the_core(batch, monkeypatch):
    """The core computes a dense layer's forward pass for one sample (its matrix-vector product is split over the
    threads, torch's is not) and any product below its threshold of multiply-adds (on one thread, where torch wakes
    its pool): same prediction and relevance as the torch backend, which keeps torch's forward."""
    model = seeded(nn.Sequential(nn.Linear(3000, 800), nn.ReLU(), nn.Linear(800, 5)), 15)
    x = torch.rand(batch, 3000, dtype=torch.float64)
    calls = _record_core_forwards(monkeypatch)
    cpp = Explainer(model, composite="epsilon", backend="cpp").explain(x)
    expected = [("dense_forward", w) for w in ((800, 3000), (5, 800)) if _in_core(batch, w)]
    assert calls == expected and expected  # the wide layer at batch 1, the small one at any batch
    reference_run = Explainer(model, composite="epsilon", backend="torch").explain(x)
    assert calls == expected
    torch.testing.assert_close(cpp.prediction, model(x).detach())
    torch.testing.assert_close(cpp.relevance, reference_run.relevance)


class _SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 4, 3, stride=2, dilation=2, bias=False)
        self.conv3 = nn.Conv1d(4, 3, 2, padding=1, groups=1)
        self.pool, self.head = nn.MaxPool2d(3, stride=2), nn.Linear(3 * 2, 3)

    def forward(self, x):
        h = self.pool(self.conv1(x).relu())  # overlapping windows: 14 x 14 -> 6 x 6
        h = self.conv2(h).relu().flatten(2)  # 1 x 1: a sequence of one step
        return self.head(self.conv3(h).relu().flatten(1))  # two steps


@pytest.mark.parametrize("batch", [2, 100])
def test_small_convolutions_and_max_pooling_run_forward_in_the_core(batch, monkeypatch):
    """Convolutions (1-d and 2-d, strides, dilation, no bias) below the core's threshold of multiply-adds (input
    positions x weights / in_channels / stride) and max pooling run in the core; the 1-d one of stride 1 always.
    Same prediction and relevance as torch's."""
    from lrptext.layers.linear import SPLIT_PRODUCTS

    model = seeded(_SmallConvNet(), 17)
    x = torch.randn(batch, 2, 14, 14, dtype=torch.float64)
    conv1 = batch * 2 * 14 * 14 * model.conv1.weight.numel() / 2          # 21,168 per image
    conv2 = batch * 6 * 6 * 6 * model.conv2.weight.numel() / (6 * 2 * 2)  # 1,944 per image
    core_convs = (conv1 < SPLIT_PRODUCTS) + (conv2 < SPLIT_PRODUCTS) + 1
    calls = _record_core_forwards(monkeypatch)
    cpp = Explainer(model, composite="epsilon_plus", backend="cpp").explain(x)
    assert sum(name == "conv2d_forward" for name, _ in calls) == core_convs
    assert ("max_pool_forward", (3, 3)) in calls
    count = len(calls)
    reference_run = Explainer(model, composite="epsilon_plus", backend="torch").explain(x)
    assert len(calls) == count
    torch.testing.assert_close(cpp.prediction, model(x).detach())
    torch.testing.assert_close(cpp.relevance, reference_run.relevance)


@pytest.mark.parametrize("batch, stride", [(1, 1), (3, 1), (3, 2)])
def test_a_large_1d_convolution_of_stride_1_runs_forward_in_the_core(batch, stride, monkeypatch):
    """A text CNN's convolution (7.4M multiply-adds per sequence here) runs in the core, at any batch; a strided
    one, with torch above the core's threshold of multiply-adds."""
    from lrptext.layers.linear import SPLIT_PRODUCTS

    model = seeded(nn.Sequential(nn.Conv1d(64, 32, 3, stride=stride), nn.ReLU(), nn.AdaptiveMaxPool1d(1),
                                 nn.Flatten(), nn.Linear(32, 4)), 18)
    x = torch.randn(batch, 64, 1202, dtype=torch.float64)
    in_core = stride == 1 or batch * 1202 * model[0].weight.numel() / stride < SPLIT_PRODUCTS
    _check_conv_forward_in_core(model, x, (32, 64, 1, 3), in_core, monkeypatch)


def _check_conv_forward_in_core(model, x, kernel_shape, in_core, monkeypatch):
    """Whether the engine hands the convolution of this kernel shape to the core; the same prediction as the model's
    and relevance as the torch backend's either way."""
    calls = _record_core_forwards(monkeypatch)
    cpp = Explainer(model, composite="epsilon", backend="cpp").explain(x)
    assert (("conv2d_forward", kernel_shape) in calls) == in_core
    torch.testing.assert_close(cpp.prediction, model(x).detach())
    reference_run = Explainer(model, composite="epsilon", backend="torch").explain(x)
    torch.testing.assert_close(cpp.relevance, reference_run.relevance)


def test_a_vgg_convolution_keeps_torch_forward(monkeypatch):
    """A VGG-like convolution (64 -> 64 channels, 3x3, stride 1), whose relevance the core computes by Winograd's
    F(2x2, 3x3), runs forward in torch, so that its activations are rounded as the model's own."""
    model = seeded(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(64 * 24 * 24, 3)), 19)
    x = torch.randn(1, 64, 24, 24, dtype=torch.float64)
    _check_conv_forward_in_core(model, x, (64, 64, 3, 3), False, monkeypatch)


class _TwoBranches(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.a, self.b, self.head, self.dim = nn.Linear(6, 4), nn.Linear(6, 3), nn.Linear(8, 2), dim
        self.register_buffer("constant", torch.ones(3, 1))  # a piece that carries no relevance

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.constant, self.b(x).relu()], dim=self.dim))


@pytest.mark.parametrize("dim", [1, -1])
def test_a_concatenation_splits_relevance_like_the_autograd_route(dim, monkeypatch):
    from lrptext.layers import move

    model, x = seeded(_TwoBranches(dim), 16), torch.randn(3, 6, dtype=torch.float64)
    parts, slices = [], move._cat_parts
    monkeypatch.setattr(move, "_cat_parts", lambda *a: parts.append(slices(*a)) or parts[-1])
    sliced = Explainer(model, composite="epsilon").explain(x, layers=True)
    assert len(parts) == 1 and [len(p) for p in parts] == [2]  # two carrying pieces, sliced
    monkeypatch.setattr(move, "_cat_parts", lambda *a: None)
    routed = Explainer(model, composite="epsilon").explain(x, layers=True)
    torch.testing.assert_close(sliced.relevance, routed.relevance)
    assert sliced.layer_relevance.keys() == routed.layer_relevance.keys()
    for name in sliced.layer_relevance:
        torch.testing.assert_close(sliced.layer_relevance[name], routed.layer_relevance[name])


class _InPlace(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.a(x).clone()
        if self.how == "method, result unused":
            h.mul_(self.b(x))
        elif self.how == "function, result unused":
            F.relu(h, inplace=True)
        else:  # "method, result used"
            h = h.mul_(self.b(x))
        return self.head(h)


@pytest.mark.parametrize("how", ["method, result unused", "function, result unused"])
def test_an_in_place_change_read_afterwards_is_refused(how):
    """lrptext computes each operation out of place: a change in place whose result nothing reads would be lost
    to the later reads of the tensor, a wrong forward pass and explanation without a word."""
    with pytest.raises(UnsupportedLayerError, match="in place .* reads it afterwards"):
        explain(_InPlace(how), torch.randn(2, 4), composite="attnlrp")


def test_an_in_place_change_whose_result_is_used_is_explained():
    model, x = seeded(_InPlace("method, result used")), torch.randn(3, 4, dtype=torch.float64)
    e = explain(model, x, composite="attnlrp")
    torch.testing.assert_close(e.prediction, model(x))


class _BatchMoved(nn.Module):
    """[B, T, D] embeddings whose batch axis an operation moves (and another moves back); B == T == D."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.embedding, self.fc = nn.Embedding(20, 4), nn.Linear(4, 2)

    def forward(self, ids):
        x = self.embedding(ids)
        if self.how == "list index":
            y = x.transpose(0, 1)[[3, 1, 0, 2]].relu().transpose(0, 1)
        elif self.how == "transpose by keyword":
            y = x.transpose(dim0=0, dim1=1).relu().transpose(0, 1)
        elif self.how == "unsqueeze":
            y = x.transpose(0, 1).unsqueeze(0).relu().squeeze(0).transpose(0, 1)
        else:  # "t()"
            y = x[:, 0].t().relu().t()[:, None] + x
        return self.fc(y.sum(1))


@pytest.mark.parametrize("how", ["list index", "transpose by keyword", "unsqueeze", "t()"])
def test_layer_totals_follow_the_batch_wherever_an_operation_moves_it(how):
    """layers=True: each listed total is the sample's own, as it gets it alone, though no shape tells the batch
    axis apart (batch, tokens and width all 4)."""
    model, ids = seeded(_BatchMoved(how), 17), torch.randint(0, 20, (4, 4))
    assert_each_samples_own(Explainer(model, composite="epsilon"), ids)


def test_a_layer_whose_rule_does_not_read_z_frees_it_before_its_kernel(monkeypatch):
    """z+ and flat never divide by the layer's forward z: it leaves the kept values before the kernel runs, which
    lowers the peak (VGG-16 batch 1, epsilon_plus_flat: 126-151 -> 114 MiB); epsilon still gets it. (Their
    results are tested against the oracle and zennit elsewhere.)"""
    from lrptext.layers import linear

    model = seeded(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(64, 3)), 17)
    kept, arguments = {}, linear.relevance_arguments

    def spy(state, node, rule, *forms):  # what the kernel is handed, and whether z is still kept when it runs
        taken = arguments(state, node, rule, *forms)
        if node.kind.slot == "conv":
            kept[type(rule).__name__] = node.name in state.values
        return taken

    monkeypatch.setattr(linear, "relevance_arguments", spy)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    Explainer(model, composite="epsilon_plus_flat").explain(x)
    assert kept == {"ZPlus": False, "Flat": False}
    kept.clear()
    Explainer(model, composite="epsilon").explain(x)
    assert kept == {"Epsilon": True}


def test_activations_are_dropped_after_the_forward_pass_and_computed_again_on_use():
    """The engine keeps each layer's z (the rules divide by it) but not the ReLU of it, which it recomputes, unless
    it is small (below 2^13 elements)."""
    from lrptext.engine.propagate import forward

    model = seeded(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(),
                                 nn.Linear(64, 2), nn.ReLU()), 14)
    explainer = Explainer(model, composite="epsilon")
    activations = [n.name for n in explainer.graph.nodes if n.op.endswith(("ReLU", "Tanh"))]
    assert len(activations) == 3
    run = lambda x: forward(explainer.graph, (x,), explainer.rules,  # noqa: E731
                            lambda node: explainer._layer(node, torch.float32))[0].values
    small = run(torch.randn(2, 2, 8, 8))  # 216 and 128 elements
    assert not small.dropped and all(name in small for name in activations)
    x = torch.randn(130, 2, 8, 8)  # 14,040 and 8,320 elements
    values = run(x)
    # the last ReLU is the model's output, which is kept; the two inside are dropped
    assert values.dropped == set(activations[:2]) and not any(name in values for name in activations[:2])
    conv = explainer.graph.nodes[[n.name for n in explainer.graph.nodes].index(activations[0]) - 1]
    torch.testing.assert_close(values[activations[0]], torch.relu(values[conv.name]))  # computed again on use
    assert activations[0] in values
    torch.testing.assert_close(explainer.explain(x).relevance, explain(model, x, composite="epsilon").relevance)


@pytest.mark.parametrize("batch", [1, 60])
def test_max_pooling_of_a_dropped_relu_reads_the_kept_pre_activation(batch, monkeypatch):
    """conv -> ReLU -> max pool: the relevance pass pools relu(z) from the kept z rather than computing the dropped
    ReLU output again (at batch 60 both are dropped, at batch 1 both kept, being small); same relevance as the
    torch backend, which computes them again."""
    model = seeded(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3),
                                 nn.ReLU(), nn.MaxPool2d(3, stride=2), nn.Flatten(), nn.Linear(24, 3)), 19)
    x = torch.randn(batch, 3, 14, 14, dtype=torch.float64)
    relu_calls = []
    relu = F.relu
    monkeypatch.setattr(F, "relu", lambda *a, **k: relu_calls.append(a[0].shape) or relu(*a, **k))
    cpp = Explainer(model, composite="epsilon_plus", backend="cpp").explain(x)
    assert len(relu_calls) == 2  # the forward pass's only
    relu_calls.clear()
    reference_run = Explainer(model, composite="epsilon_plus", backend="torch").explain(x)
    assert len(relu_calls) == (4 if batch == 60 else 2)  # and again for the relevance pass where they were dropped
    torch.testing.assert_close(cpp.relevance, reference_run.relevance)


@pytest.mark.parametrize("rule", [Epsilon(), Gamma(0.25), ZPlus(), AlphaBeta(2.0, 1.0)], ids=repr)
def test_a_layer_after_a_dropped_relu_reads_the_kept_pre_activation(rule, monkeypatch):
    """conv -> ReLU -> conv and dense -> ReLU -> dense under a rule that reads the input: the relevance pass does
    not compute the dropped ReLUs again (the kernels read relu(z)); same relevance as the torch backend, which
    does."""
    model = seeded(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(),
                                 nn.Linear(144, 100), nn.ReLU(), nn.Linear(100, 3)), 20)
    x = torch.randn(90, 3, 8, 8, dtype=torch.float64)  # 46,080 and 9,000 activations: both dropped
    composite = Composite("same rule everywhere", dense=rule, conv=rule)
    relu_calls = []
    relu = F.relu
    monkeypatch.setattr(F, "relu", lambda *a, **k: relu_calls.append(a[0].shape) or relu(*a, **k))
    cpp = Explainer(model, composite=composite, backend="cpp").explain(x)
    assert len(relu_calls) == 2
    relu_calls.clear()
    reference_run = Explainer(model, composite=composite, backend="torch").explain(x)
    assert len(relu_calls) == 4
    torch.testing.assert_close(cpp.relevance, reference_run.relevance)


def test_an_embedding_lookup_read_through_a_transpose_is_dropped_and_computed_again_on_use():
    """A text CNN's lookup is read once, by the transpose whose contiguous copy the convolutions take: the forward
    pass drops it like an activation. The fused path never reads it; the unfused one (per-layer relevance) computes
    it again as the forward pass did, in the compute dtype (float64 here, from the convolutions, while the
    embedding's own weight is float32)."""
    from lrptext.engine.propagate import forward

    model = seeded(KimCNN(padding_idx=0), 15).double()
    model.embedding.float()
    ids = torch.randint(0, 500, (4, 100))  # 9,600 looked-up values: above what is kept (2^13)
    explainer = Explainer(model, composite="epsilon")
    lookup = next(n.name for n in explainer.graph.nodes if n.op.endswith("Embedding"))
    values = forward(explainer.graph, (ids,), explainer.rules, lambda node: explainer._layer(node, torch.float64),
                     core=True)[0].values
    assert lookup in values.dropped and lookup not in values
    assert values[lookup].dtype == torch.float64  # computed again on use
    fused = explainer.explain(ids)
    unfused = explainer.explain(ids, layers=True)
    torch.testing.assert_close(fused.relevance, unfused.relevance)
    torch.testing.assert_close(fused.relevance, Explainer(model, composite="epsilon", backend="torch").explain(ids)
                               .relevance)


def test_the_fused_embedding_path_equals_the_unfused_one(backend, monkeypatch):
    """With per-token relevance delivered by the conv kernels (reduce over the embedding axis), the result is the
    same as routing [B, D, T] relevance back through the transpose and the embedding kernel."""
    model = seeded(KimCNN(padding_idx=0), 12)
    ids = torch.randint(0, 500, (3, 25))
    ids[0, :4] = 0
    explainer = Explainer(model, composite="epsilon_gamma", backend=backend)
    calls = []
    conv = dispatch.conv
    monkeypatch.setattr(dispatch, "conv", lambda *a, **k: calls.append(k["reduce_channels"]) or conv(*a, **k))
    fused = explainer.explain(ids)
    assert calls == [True, True, True]  # the three convolutions took the fused path
    unfused = explainer.explain(ids, layers=True)
    torch.testing.assert_close(fused.relevance, unfused.relevance)
    assert (fused.relevance[0, :4] == 0).all()

    class DenseOnEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding, self.fc, self.out = nn.Embedding(40, 6), nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, ids):
            return self.out(torch.relu(self.fc(self.embedding(ids))).max(dim=1).values)

    dense = seeded(DenseOnEmbedding(), 13)
    tokens = torch.randint(0, 40, (2, 7))
    torch.testing.assert_close(explain(dense, tokens).relevance, explain(dense, tokens, layers=True).relevance)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_gamma_box", "epsilon_plus_flat"])
def test_explain_on_the_device_equals_the_cpu(device, composite):
    """explain() with the model and inputs on the device (CUDA kernels, caller's stream) gives the CPU's relevance;
    nothing is moved between devices."""
    model, (x,) = workload("W4", bias=True)
    params = {"low": 0.0, "high": 1.0} if composite == "epsilon_gamma_box" else {}
    expected = explain(model, x, composite=composite, **params).relevance
    moved = copy_to(model, device)
    e = explain(moved, x.to(device), composite=composite, **params)
    assert e.relevance.device.type == device and next(moved.parameters()).device.type == device
    torch.testing.assert_close(e.relevance.cpu(), expected, rtol=1e-7, atol=1e-10)
    kim, (ids,) = workload("W1", bias=True)
    torch.testing.assert_close(explain(copy_to(kim, device), ids.to(device)).relevance.cpu(),
                               explain(kim, ids).relevance,
                               rtol=1e-7, atol=1e-10)


def copy_to(model: nn.Module, device: str) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device)


class MadeLike(nn.Module):
    """Tensors made like a relevance-carrying one (full_like, zeros_like, new_zeros) read its shape, not its
    values: h * full_like(h, 0.5) + zeros_like(h) is h scaled by a constant (`plain`: h * 0.5)."""

    def __init__(self, plain: bool):
        super().__init__()
        self.a, self.out = nn.Linear(5, 7), nn.Linear(7, 3)
        self.plain = plain

    def forward(self, x):
        h = self.a(x)
        if self.plain:
            return self.out(h * 0.5)
        return self.out(h * torch.full_like(h, 0.5) + torch.zeros_like(h) + h.new_zeros(h.shape))


def test_tensors_made_like_another_are_constants():
    torch.manual_seed(0)
    like, plain = MadeLike(plain=False).double(), MadeLike(plain=True).double()
    plain.load_state_dict(like.state_dict())
    x = torch.randn(3, 5, dtype=torch.float64)
    got = lrptext.explain(like, x, composite="attnlrp")  # (sums without a stabiliser: the zeros take nothing)
    torch.testing.assert_close(got.relevance, lrptext.explain(plain, x, composite="attnlrp").relevance,
                               rtol=1e-12, atol=1e-15)
    rows = [row.rule for row in lrptext.support_table(like, composite="attnlrp").rows if row.kind == "scale"]
    assert rows == ["passes to the non-constant operand"]


def test_a_node_argument_holding_a_shape_list_is_bound_by_position_with_the_node_values_in_it(monkeypatch):
    """torch.fx and torch.export write a view's shape as an immutable_list (a list subclass) whose sizes may be
    nodes: the forward pass fills them in by position, without the generic walk over every argument, keeps the
    list's type and passes constant lists as they are."""
    from torch.fx.immutable_collections import immutable_list

    from lrptext.engine import propagate
    from lrptext.graph.ir import Node
    from lrptext.layers.identity import IDENTITY

    def walked(*_):
        raise AssertionError("bound by the generic walk")

    monkeypatch.setattr(propagate, "substitute", walked)
    x, size = (Node(name, name, IDENTITY, "input") for name in ("x", "size"))
    shape, constant = immutable_list([size, -1]), immutable_list([1, 2])
    bind = propagate._binder((x, shape, constant), {"dim": 0})
    value = torch.zeros(2, 3)
    args, kwargs = bind({"x": value, "size": 6})
    assert args[0] is value and args[1] == [6, -1] and type(args[1]) is immutable_list
    assert args[2] is constant and kwargs == {"dim": 0}
    assert list(shape) == [size, -1]  # the graph's own argument untouched
