"""Trust: no silent wrong answer. Each test checks one promise of the "Trust" issue through the public API only
(Explainer, explain, support_table, the rules), against independent references: autograd's gradient × input, the
float64 oracle of tests/reference.py, and explanations with every rule named explicitly.

- stand-in rules: every rule on every kind of layer either is refused with an error naming the layer, or gives
  finite relevance of the input's shape that does not vanish; errors never advise a stand-in that would be wrong;
- relevance that vanishes at a node (its output had relevance, its input gets none) is an error;
- the first-layer rule goes to the layers that read the input, not to every layer behind a concatenation;
- composites named after zennit's mean what zennit's mean (ZBox on first convolutions only, unfoldable BatchNorm
  passes relevance unchanged);
- delta where the explained output's batch is not the input's;
- the non-finite error names the node, the rule and the real remedy;
- optional forward arguments left out are absent, not required.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrptext
import reference
from lrptext import Explainer, UnsupportedLayerError, explain, rules as R, support_table
from lrptext.rules import AlphaBeta, Composite, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus
from models import KimCNN

REFUSED = (ValueError, UnsupportedLayerError, TypeError)


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model.double().eval()


def rows(model, **options) -> dict[str, str]:
    return {row.name: row.rule for row in support_table(model, **options).rows}


def assert_sound(model, x, e) -> None:
    """An explanation that is not refused must be usable: the input's shape, finite, the model's own prediction,
    and not all zero while the explained logit is not zero."""
    shape = tuple(e.relevance.shape)
    assert shape == tuple(x.shape), f"relevance {shape} for input {tuple(x.shape)}"
    assert torch.isfinite(e.relevance).all(), "non-finite relevance"
    with torch.no_grad():
        torch.testing.assert_close(e.prediction, model(x))
    if (e.initial != 0).any():
        assert (e.relevance != 0).any(), f"all-zero relevance for target logits {e.initial.tolist()} (delta {e.delta})"


# ------------------------------------------------------------------------- models wrapping one layer type each


class Wrap(nn.Module):
    """x -> probe -> flatten -> head: logits [B, 3]."""

    def __init__(self, probe: nn.Module, features: int):
        super().__init__()
        self.probe = probe
        self.head = nn.Linear(features, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.probe(x), 1))


class Recurrent(nn.Module):
    """A recurrent layer read at its last step: logits from the output sequence."""

    def __init__(self, probe: nn.Module):
        super().__init__()
        self.probe = probe
        self.head = nn.Linear(probe.hidden_size, 3)

    def forward(self, x):
        out, _ = self.probe(x)
        return self.head(out[:, -1])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.probe = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(5 * 4, 3)

    def forward(self, x):
        out, _ = self.probe(x, x, x)
        return self.head(torch.flatten(out, 1))


class Function(nn.Module):
    """x -> Linear -> fn -> flatten -> head, for functions lrptext has no rule for."""

    def __init__(self, fn, features: int):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.fn = fn
        self.head = nn.Linear(features, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.fn(self.a(x)), 1))


def normal(*shape):
    return lambda g: torch.randn(*shape, generator=g, dtype=torch.float64)


# name: (model factory, input maker, node name in messages, what the layer does to its input's shape)
LAYERS = {
    "Conv3d": (lambda: Wrap(nn.Conv3d(1, 2, 2), 2 * 27), normal(2, 1, 4, 4, 4), "probe", "reshapes"),
    "ConvTranspose1d": (lambda: Wrap(nn.ConvTranspose1d(2, 2, 2), 2 * 5), normal(2, 2, 4), "probe", "reshapes"),
    "ConvTranspose2d": (lambda: Wrap(nn.ConvTranspose2d(2, 2, 2), 2 * 25), normal(2, 2, 4, 4), "probe", "reshapes"),
    "Conv2d-reflect": (lambda: Wrap(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), 3 * 16),
                       normal(2, 2, 4, 4), "probe", "reshapes"),
    "Conv2d-circular": (lambda: Wrap(nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), 3 * 16),
                        normal(2, 2, 4, 4), "probe", "reshapes"),
    "MaxPool3d": (lambda: Wrap(nn.MaxPool3d(2), 8), normal(2, 1, 4, 4, 4), "probe", "reshapes"),
    "AvgPool3d": (lambda: Wrap(nn.AvgPool3d(2), 8), normal(2, 1, 4, 4, 4), "probe", "reshapes"),
    "Upsample": (lambda: Wrap(nn.Upsample(scale_factor=2), 2 * 36), normal(2, 2, 3, 3), "probe", "reshapes"),
    "ZeroPad2d": (lambda: Wrap(nn.ZeroPad2d(1), 2 * 36), normal(2, 2, 4, 4), "probe", "reshapes"),
    "PixelShuffle": (lambda: Wrap(nn.PixelShuffle(2), 16), normal(2, 4, 2, 2), "probe", "reshapes"),
    "LSTM": (lambda: Recurrent(nn.LSTM(4, 5, batch_first=True)), normal(2, 6, 4), "probe", "several"),
    "GRU": (lambda: Recurrent(nn.GRU(4, 5, batch_first=True)), normal(2, 6, 4), "probe", "several"),
    "RNN": (lambda: Recurrent(nn.RNN(4, 5, batch_first=True)), normal(2, 6, 4), "probe", "several"),
    "MultiheadAttention": (Attention, normal(2, 5, 4), "probe", "several"),
    "LayerNorm": (lambda: Wrap(nn.LayerNorm(6), 6), normal(2, 6), "probe", "keeps"),
    "Softmax": (lambda: Wrap(nn.Softmax(dim=1), 6), normal(2, 6), "probe", "keeps"),
    "GELU": (lambda: Wrap(nn.GELU(), 6), normal(2, 6), "probe", "keeps"),
    "Hardtanh-saturated": (lambda: Wrap(nn.Hardtanh(), 6), lambda g: 2 + torch.rand(2, 6, generator=g,
                           dtype=torch.float64), "probe", "keeps"),
    "Dropout": (lambda: Wrap(nn.Dropout(0.5), 6), normal(2, 6), "probe", "keeps"),
    "Identity": (lambda: Wrap(nn.Identity(), 6), normal(2, 6), "probe", "keeps"),
    "Linear": (lambda: Wrap(nn.Linear(6, 5), 5), normal(2, 6), "probe", "reshapes"),
    "Conv1d": (lambda: Wrap(nn.Conv1d(2, 3, 3), 3 * 4), normal(2, 2, 6), "probe", "reshapes"),
    "Conv2d": (lambda: Wrap(nn.Conv2d(2, 3, 3, padding=1), 3 * 16), normal(2, 2, 4, 4), "probe", "reshapes"),
    "MaxPool2d": (lambda: Wrap(nn.MaxPool2d(2), 8), normal(2, 2, 4, 4), "probe", "reshapes"),
    "AvgPool2d": (lambda: Wrap(nn.AvgPool2d(2), 8), normal(2, 2, 4, 4), "probe", "reshapes"),
    "AdaptiveAvgPool2d": (lambda: Wrap(nn.AdaptiveAvgPool2d(1), 2), normal(2, 2, 4, 4), "probe", "reshapes"),
    "BatchNorm2d": (lambda: Wrap(nn.BatchNorm2d(2), 32), normal(2, 2, 4, 4), "probe", "keeps"),
    "Flatten": (lambda: Wrap(nn.Flatten(), 32), normal(2, 2, 4, 4), "probe", "reshapes"),
}

STAND_INS = [Pass(), Norm(), Epsilon(), Gamma(), ZPlus(), AlphaBeta(2, 1), Flat(), WSquare()]


def build(name: str, seed: int = 0):
    factory, make_input, node, _ = LAYERS[name]
    model = seeded(factory(), seed)
    x = make_input(torch.Generator().manual_seed(seed + 1))
    return model, x, node


# ------------------------------------------------------------------------------- 2. stand-in rules, every pair


@pytest.mark.parametrize("rule", [None, *STAND_INS], ids=lambda r: "default" if r is None else type(r).__name__)
@pytest.mark.parametrize("layer", LAYERS)
def test_every_rule_on_every_layer_is_refused_by_name_or_sound(layer, rule):
    model, x, node = build(layer)
    layer_map = None if rule is None else {type(model.probe): rule}
    try:
        e = Explainer(model, layer_map=layer_map).explain(x)
    except REFUSED as err:
        message = str(err)
        assert node in message or type(model.probe).__name__ in message, f"the error names no layer: {message}"
        return
    assert_sound(model, x, e)


SHAPE_CHANGING = [name for name, case in LAYERS.items() if case[3] == "reshapes"
                  and name not in ("Linear", "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
                                   "Flatten")]


@pytest.mark.parametrize("rule", [Pass(), Epsilon(), ZPlus(), WSquare()], ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("layer", SHAPE_CHANGING)
def test_a_rule_that_cannot_map_a_shape_changing_layer_is_refused_when_the_explainer_is_built(layer, rule):
    model, x, node = build(layer)
    with pytest.raises((ValueError, UnsupportedLayerError)) as err:
        Explainer(model, layer_map={type(model.probe): rule})
    assert node in str(err.value)


def test_a_stand_in_for_a_shape_changing_layer_is_gradient_times_input_without_biases():
    """Following the advice for a layer lrptext has no rule for must give the right answer, not just the right
    shape: with Norm on every shape-changing layer and LRP-0 elsewhere, a bias-free ReLU net's relevance is
    x · ∂f/∂x (autograd)."""
    lrp0 = Composite("lrp0", dense=Epsilon(0.0), conv=Epsilon(0.0))
    g = torch.Generator().manual_seed(3)
    for probe, shape in [(nn.Conv3d(1, 2, 2, bias=False), (2, 1, 4, 4, 4)),
                         (nn.ConvTranspose2d(2, 2, 2, bias=False), (2, 2, 4, 4)),
                         (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=False), (2, 2, 4, 4)),
                         (nn.MaxPool3d(2), (2, 1, 4, 4, 4)), (nn.Upsample(scale_factor=2), (2, 1, 3, 3))]:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        features = probe.double()(x)[0].numel()
        model = seeded(nn.Sequential(probe, nn.ReLU(), nn.Flatten(), nn.Linear(features, 3, bias=False)), 4)
        e = explain(model, x, composite=lrp0, layer_map={type(probe): Norm(0.0)}, target=1)
        xg = x.clone().requires_grad_(True)
        model(xg)[:, 1].sum().backward()
        torch.testing.assert_close(e.relevance, x * xg.grad, rtol=1e-9, atol=1e-12,
                                   msg=lambda m, p=probe: f"{type(p).__name__}: {m}")


# ------------------------------------------------------------------------- 2. what the errors advise


def refusal(model, x) -> str | None:
    """The UnsupportedLayerError's message; None where the layer is supported (then its explanation must be
    sound)."""
    try:
        e = Explainer(model).explain(x)
    except UnsupportedLayerError as err:
        return str(err)
    assert_sound(model, x, e)
    return None


def advice(message: str) -> tuple[str | None, list[str]]:
    """The module type or function an error's `layer_map={key: Rule()} ... or Rule()` advice names, and the rules
    it advises (explanations in parentheses dropped, up to the clause's end)."""
    plain = re.sub(r"\s\([^()]+\)", "", message)
    found = re.search(r"layer_map=\{([^:}]+):([^;]*)", plain)
    if not found:
        return None, []
    return found.group(1).strip(), re.findall(r"\b(Pass|Norm|Epsilon|Gamma|AlphaBeta|ZPlus|ZBox|Flat|WSquare)\(\)",
                                              found.group(2))


# name: (model factory, input maker, node name in messages, what it does to its input's shape)
FUNCTIONS = {
    "torch.roll": (lambda: Function(lambda h: torch.roll(h, 1, 1), 4), normal(2, 4), "torch.roll", "keeps"),
    "torch.cumsum": (lambda: Function(lambda h: torch.cumsum(h, 1), 4), normal(2, 4), "torch.cumsum", "keeps"),
    "Tensor.cumsum": (lambda: Function(lambda h: h.cumsum(1), 4), normal(2, 4), "Tensor.cumsum", "keeps"),
    "F.softsign": (lambda: Function(F.softsign, 4), normal(2, 4), "F.softsign", "keeps"),
    "Tensor.masked_fill": (lambda: Function(lambda h: h.masked_fill(h > 1.0, 0.0), 4), normal(2, 4),
                           "Tensor.masked_fill", "keeps"),
    "F.interpolate": (lambda: Function(lambda h: F.interpolate(h.unsqueeze(1), scale_factor=2), 8), normal(2, 4),
                      "F.interpolate", "reshapes"),
}
# layers and functions lrptext had no rule for when this was written; one that gains a rule must explain soundly
UNSUPPORTED = {**{k: LAYERS[k] for k in ("Conv3d", "ConvTranspose1d", "ConvTranspose2d", "Conv2d-reflect",
                                         "MaxPool3d", "AvgPool3d", "Upsample", "LSTM", "GRU", "MultiheadAttention",
                                         "LayerNorm", "Softmax")}, **FUNCTIONS}


def build_unsupported(name: str, seed: int = 0):
    factory, make_input, node, shape = UNSUPPORTED[name]
    return seeded(factory(), seed), make_input(torch.Generator().manual_seed(seed + 1)), node, shape


@pytest.mark.parametrize("layer", UNSUPPORTED)
def test_an_unsupported_layer_is_refused_by_name_without_advising_a_wrong_stand_in(layer):
    model, x, node, shape = build_unsupported(layer)
    message = refusal(model, x)
    if message is None:
        return
    assert f"'{node}'" in message, message
    _, advised = advice(message)
    if shape == "reshapes":
        assert "Pass" not in advised, f"advises Pass() for a layer that changes its input's shape: {message}"
    if shape == "several":  # recurrent and attention layers: no stand-in can route relevance through them
        assert "Pass()" not in message and "Norm()" not in message, message
        assert "layer_map=" not in message, message


@pytest.mark.parametrize("layer", [k for k, case in UNSUPPORTED.items() if case[3] != "several"])
def test_following_an_errors_advice_gives_a_sound_explanation(layer):
    model, x, node, _ = build_unsupported(layer)
    message = refusal(model, x)
    if message is None:
        return
    key, advised = advice(message)
    assert key and advised, f"no layer_map advice: {message}"
    resolved = eval(key, {"nn": nn, "torch": torch, "F": F, "Tensor": torch.Tensor})  # noqa: S307 (our own table)
    for name in advised:
        e = explain(model, x, layer_map={resolved: getattr(R, name)()})
        assert_sound(model, x, e)


@pytest.mark.parametrize("layer", [k for k, case in UNSUPPORTED.items() if case[3] == "keeps"])
def test_an_error_says_a_layer_changes_its_inputs_shape_only_when_it_does(layer):
    model, x, node, _ = build_unsupported(layer)
    message = refusal(model, x)
    if message is None:
        return
    assert "changes the shape" not in message, f"'{node}' keeps its input's shape, but: {message}"


# -------------------------------------------------------------------------------------- 2. vanishing relevance


class Saturating(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.act(x))


class Projection(nn.Module):
    """One bias-free linear layer at a qualified name with a dot: logits = x @ W.T."""

    def __init__(self, weight):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        with torch.no_grad():
            self.encoder.proj.weight.copy_(weight)

    def forward(self, x):
        return self.encoder.proj(x)


def vanishing_case(name: str):
    """(model, input, target, options, node) where the node's output has relevance but its rule gives its input
    none: Norm on a saturated Hardtanh/ReLU6 (zero gradient), z⁺ on a neuron with only negative terms."""
    g = torch.Generator().manual_seed(5)
    if name in ("Hardtanh", "ReLU6", "Hardtanh, one sample"):
        act = nn.ReLU6() if name == "ReLU6" else nn.Hardtanh()
        model = seeded(Saturating(act), 5)
        x = 7 + torch.rand(2, 4, generator=g, dtype=torch.float64)  # saturated: every gradient is 0
        if name == "Hardtanh, one sample":
            x[0] = torch.rand(4, generator=g, dtype=torch.float64) * 0.5  # sample 0 in the linear part
        return model, x, 0, {"layer_map": {type(act): Norm()}}, "act"
    model = Projection(torch.tensor([[-1.0, -2.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)).eval()
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)  # logit 0 = -8: all of its terms are negative
    return model, x, 0, {"name_map": {"encoder.proj": ZPlus()}}, "encoder.proj"


@pytest.mark.parametrize("case", ["Hardtanh", "ReLU6", "Hardtanh, one sample"])
def test_relevance_that_vanishes_at_a_node_is_reported(case):
    model, x, target, options, node = vanishing_case(case)
    with torch.no_grad():
        logits = model(x)
        assert (logits[:, target] != 0).all()
    with pytest.raises((ValueError, UnsupportedLayerError), match=re.escape(node)):
        e = explain(model, x, target=target, **options)
        pytest.fail(f"no error; relevance {e.relevance.tolist()}, delta {e.delta.tolist()}")


def test_a_positive_only_rule_on_a_neuron_without_positive_terms_is_reported_by_delta():
    """z+ takes the positive contributions only, by its definition: a neuron with none passes no relevance, and its
    share is absorbed like a bias's (docs/conventions.md). That is the rule, not a stand-in failing, so it is no
    error; delta reports the whole logit as absorbed."""
    model, x, target, options, _ = vanishing_case("ZPlus, negative terms only")
    e = explain(model, x, target=target, **options)
    assert not e.relevance.any()
    torch.testing.assert_close(e.delta, -e.initial)


def test_the_vanishing_cases_have_relevance_at_the_nodes_output():
    """The cases above are not degenerate: every sample has relevance at the node's output (it does not depend on
    the node's own rule), and a rule that routes it (Pass on the activation, ε on the projection) gives it to the
    input."""
    for case, options in [("Hardtanh", {"layer_map": {nn.Hardtanh: Pass()}}),
                          ("ReLU6", {"layer_map": {nn.ReLU6: Pass()}}),
                          ("Hardtanh, one sample", {"layer_map": {nn.Hardtanh: Pass()}}),
                          ("ZPlus, negative terms only", {"name_map": {"encoder.proj": Epsilon()}})]:
        model, x, target, _, node = vanishing_case(case)
        e = explain(model, x, target=target, layers=True, **options)
        assert (e.layer_relevance[node] != 0).all(), (case, e.layer_relevance)
        assert_sound(model, x, e)


# ------------------------------------------------------------------------------------- 3. the first-layer rule


class ConcatSkip(nn.Module):
    """The raw input concatenated with features: fc reads the input through torch.cat, yet is not a first layer."""

    def __init__(self):
        super().__init__()
        self.dense1 = nn.Linear(6, 5)
        self.fc = nn.Linear(6 + 5, 3)

    def forward(self, x):
        return self.fc(torch.cat([x, F.relu(self.dense1(x))], 1))


class ConvConcatSkip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(2 + 3, 2, 3)
        self.fc = nn.Linear(2 * 4, 3)

    def forward(self, x):
        h = torch.cat([x, F.relu(self.conv1(x))], 1)
        return self.fc(torch.flatten(F.relu(self.conv2(h)), 1))


@pytest.mark.parametrize(("flat", "plain"), [("epsilon_plus_flat", "epsilon_plus"),
                                             ("epsilon_alpha2_beta1_flat", "epsilon_alpha2_beta1")])
def test_the_first_layer_rule_skips_a_layer_behind_a_concatenation_with_the_input(flat, plain):
    model = seeded(ConcatSkip(), 11)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    table = rows(model, composite=flat)
    assert table["dense1"].startswith("Flat"), table
    assert table["fc"].startswith("Epsilon"), table
    got = explain(model, x, composite=flat).relevance
    expected = explain(model, x, composite=plain, name_map={"dense1": Flat()}).relevance
    torch.testing.assert_close(got, expected)
    wrong = explain(model, x, composite=plain, name_map={"dense1": Flat(), "fc": Flat()}).relevance
    assert not torch.allclose(got, wrong), "the check cannot tell Flat on fc from Epsilon"


def test_zbox_skips_a_convolution_behind_a_concatenation_with_the_input():
    model = seeded(ConvConcatSkip(), 13)
    x = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    table = rows(model, composite="epsilon_gamma_box", low=0.0, high=1.0)
    assert table["conv1"].startswith("ZBox"), table
    assert table["conv2"].startswith("Gamma"), table
    got = explain(model, x, composite="epsilon_gamma_box", low=0.0, high=1.0).relevance
    plain = Composite("plain", dense=Epsilon(1e-6), conv=Gamma(0.25))
    expected = explain(model, x, composite=plain, name_map={"conv1": ZBox(0.0, 1.0)}).relevance
    torch.testing.assert_close(got, expected)


def test_every_parallel_convolution_of_a_text_cnn_gets_the_first_layer_rule():
    model = seeded(KimCNN(), 15)
    ids = torch.randint(0, 500, (2, 20), generator=torch.Generator().manual_seed(16))
    table = rows(model, composite="epsilon_plus_flat")
    assert all(table[f"convs.{i}"].startswith("Flat") for i in range(3)), table
    assert table["fc"].startswith("Epsilon"), table
    got = explain(model, ids, composite="epsilon_plus_flat").relevance
    expected = explain(model, ids, composite="epsilon_plus",
                       name_map={f"convs.{i}": Flat() for i in range(3)}).relevance
    torch.testing.assert_close(got, expected)
    one = explain(model, ids, composite="epsilon_plus", name_map={"convs.0": Flat()}).relevance
    assert not torch.allclose(got, one), "the check cannot tell one first convolution from three"


class ReadsThrough(nn.Module):
    """fc1 reads the input [B, 2, 3] through shape-only operations; fc2 reads fc1."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        if self.how == "view":
            h = x.view(x.shape[0], -1)
        elif self.how == "reshape":
            h = x.reshape(x.shape[0], -1)
        elif self.how == "torch.flatten":
            h = torch.flatten(x, 1)
        elif self.how == "nn.Flatten":
            h = self.flatten(x)
        elif self.how == "transpose":
            h = x.transpose(1, 2).reshape(x.shape[0], -1)
        elif self.how == "permute":
            h = x.permute(0, 2, 1).flatten(1)
        else:
            h = self.drop(self.flatten(x))
        return self.fc2(F.relu(self.fc1(h)))


@pytest.mark.parametrize("how", ["view", "reshape", "torch.flatten", "nn.Flatten", "transpose", "permute", "dropout"])
def test_a_layer_reading_the_input_through_shape_only_operations_is_a_first_layer(how):
    model = seeded(ReadsThrough(how), 17)
    x = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    table = rows(model, composite="epsilon_plus_flat")
    assert table["fc1"].startswith("Flat"), table
    assert table["fc2"].startswith("Epsilon"), table
    got = explain(model, x, composite="epsilon_plus_flat").relevance
    torch.testing.assert_close(got, explain(model, x, composite="epsilon_plus", name_map={"fc1": Flat()}).relevance)


# ------------------------------------------------------------------------- 4. composites named after zennit's


def test_epsilon_gamma_box_gives_zbox_to_first_convolutions_only():
    g = torch.Generator().manual_seed(19)
    plain = Composite("plain", dense=Epsilon(1e-6), conv=Gamma(0.25))
    # an MLP: zennit's EpsilonGammaBox maps ZBox to convolutions only, so its first Linear gets ε
    mlp = seeded(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), 20)
    x = torch.rand(3, 6, generator=g, dtype=torch.float64)
    table = rows(mlp, composite="epsilon_gamma_box", low=0.0, high=1.0)
    assert table["0"].startswith("Epsilon") and table["2"].startswith("Epsilon"), table
    got = explain(mlp, x, composite="epsilon_gamma_box", low=0.0, high=1.0).relevance
    torch.testing.assert_close(got, explain(mlp, x, composite=plain).relevance)
    zbox = explain(mlp, x, composite=plain, name_map={"0": ZBox(0.0, 1.0)}).relevance
    assert not torch.allclose(got, zbox), "the check cannot tell ZBox from ε on the first Linear"
    # a CNN: the first convolution gets ZBox, the next γ, the dense layer ε
    cnn = seeded(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(),
                               nn.Linear(2 * 2 * 2, 3)), 21)
    x = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    table = rows(cnn, composite="epsilon_gamma_box", low=0.0, high=1.0)
    assert table["0"].startswith("ZBox") and table["2"].startswith("Gamma") and table["5"].startswith("Epsilon")
    got = explain(cnn, x, composite="epsilon_gamma_box", low=0.0, high=1.0).relevance
    torch.testing.assert_close(got, explain(cnn, x, composite=plain, name_map={"0": ZBox(0.0, 1.0)}).relevance)


def randomize(bn: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    bn.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64))
    bn.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64))  # a shift: Norm or ε would change Σ R


def bn_after_relu():
    model = seeded(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.BatchNorm1d(5), nn.Linear(5, 3)), 22)
    randomize(model[2], 23)
    return model, torch.randn(4, 6, generator=torch.Generator().manual_seed(24), dtype=torch.float64)


COMPOSITE_PARAMS = {"epsilon_gamma_box": {"low": -3.0, "high": 3.0}}


@pytest.mark.parametrize("canonizers", [("batchnorm",), ()], ids=["canonizers=batchnorm", "canonizers=()"])
@pytest.mark.parametrize("composite", list(lrptext.rules.COMPOSITES))
def test_a_batchnorm_that_is_not_folded_passes_relevance_unchanged(composite, canonizers):
    model, x = bn_after_relu()
    params = COMPOSITE_PARAMS.get(composite, {})
    assert rows(model, composite=composite, canonizers=canonizers, **params)["2"] == "Pass()"
    e = explain(model, x, composite=composite, canonizers=canonizers, layers=True, **params)
    # Σ relevance at the BatchNorm's output ('2') equals Σ at its input (the ReLU's output, '1')
    torch.testing.assert_close(e.layer_relevance["1"], e.layer_relevance["2"], rtol=1e-12, atol=1e-12)


def test_a_batchnorm_that_is_not_folded_matches_the_oracle_with_relevance_passed_through():
    """Linear -> ReLU -> BatchNorm1d -> Linear under 'epsilon': the float64 oracle's ε on both Linear layers, the
    relevance at the BatchNorm's output handed unchanged to its input."""
    model, x = bn_after_relu()
    e = explain(model, x, composite="epsilon", canonizers=())
    with torch.no_grad():
        h = model[2](model[1](model[0](x)))
        logits = model[3](h)
    r = np.zeros(tuple(logits.shape))
    rows_ = np.arange(x.shape[0])
    r[rows_, e.target.numpy()] = logits.numpy()[rows_, e.target.numpy()]
    spec = {"name": "epsilon", "epsilon": 1e-6}
    r = reference.dense(h.numpy(), model[3].weight.detach().numpy(), model[3].bias.detach().numpy(), r, spec)
    r = reference.dense(x.numpy(), model[0].weight.detach().numpy(), model[0].bias.detach().numpy(), r, spec)
    np.testing.assert_allclose(e.relevance.numpy(), r, rtol=1e-9, atol=1e-12)


def test_a_batchnorm_after_a_first_convolution_without_canonizers_matches_the_oracle():
    """Conv2d -> BatchNorm2d -> ReLU -> Linear under 'epsilon_gamma_box' with canonizers=(): ZBox on the conv,
    Pass on the BatchNorm, ε on the Linear (the float64 oracle)."""
    model = seeded(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(2 * 4 * 4, 3)), 25)
    randomize(model[1], 26)
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(27), dtype=torch.float64)
    table = rows(model, composite="epsilon_gamma_box", low=0.0, high=1.0, canonizers=())
    assert table["0"].startswith("ZBox") and table["1"] == "Pass()", table
    e = explain(model, x, composite="epsilon_gamma_box", low=0.0, high=1.0, canonizers=())
    with torch.no_grad():
        flat = model[3](model[2](model[1](model[0](x))))
        logits = model[4](flat)
    r = np.zeros(tuple(logits.shape))
    n = np.arange(x.shape[0])
    r[n, e.target.numpy()] = logits.numpy()[n, e.target.numpy()]
    r = reference.dense(flat.numpy(), model[4].weight.detach().numpy(), model[4].bias.detach().numpy(), r,
                        {"name": "epsilon", "epsilon": 1e-6})
    r = reference.conv2d(x.numpy(), model[0].weight.detach().numpy(), model[0].bias.detach().numpy(),
                         r.reshape(2, 2, 4, 4), {"name": "zbox", "stabilizer": 1e-6},
                         low=np.array([0.0]), high=np.array([1.0]))
    np.testing.assert_allclose(e.relevance.numpy(), r, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------ 5. delta when the batches differ


class BatchSummed(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.a, self.fc = nn.Linear(6, 5, bias=bias), nn.Linear(5, 3, bias=bias)

    def forward(self, x):  # [4, 6] -> [1, 3]
        return self.fc(F.relu(self.a(x))).sum(0, keepdim=True)


class PairsMerged(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.a, self.fc = nn.Linear(12, 5, bias=bias), nn.Linear(5, 3, bias=bias)

    def forward(self, x):  # [4, 6] -> [2, 12] -> [2, 3]
        return self.fc(F.relu(self.a(x.reshape(x.shape[0] // 2, -1))))


class SameBatch(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.a, self.fc = nn.Linear(6, 5, bias=bias), nn.Linear(5, 3, bias=bias)

    def forward(self, x):
        return self.fc(F.relu(self.a(x)))


@pytest.mark.parametrize("bias", [False, True], ids=["bias-free", "biases"])
@pytest.mark.parametrize("model_type", [BatchSummed, PairsMerged, SameBatch], ids=lambda t: t.__name__)
def test_delta_is_relevance_minus_initial_whatever_the_output_batch(model_type, bias):
    model = seeded(model_type(bias), 28)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(29), dtype=torch.float64)
    e = explain(model, x, composite=Composite("lrp0ish", dense=Epsilon(1e-9), conv=Epsilon(1e-9)))
    with torch.no_grad():
        logits = model(x)
    assert e.relevance.shape == x.shape
    torch.testing.assert_close(e.prediction, logits)
    torch.testing.assert_close(e.initial, logits.gather(1, e.target.reshape(-1, 1)).reshape(-1))
    assert e.delta.numel() >= 1 and torch.isfinite(e.delta).all()
    total = e.relevance.sum() - e.initial.sum()
    torch.testing.assert_close(e.delta.sum(), total, rtol=1e-9, atol=1e-12)
    scale = e.initial.abs().sum().item()
    if bias:
        assert total.abs().item() > 1e-3 * scale, "the biased model conserves: the check cannot fail"
    else:  # bias-free ReLU net, ε → 0: relevance is conserved, every delta ≈ 0
        assert e.delta.abs().max().item() < 1e-5 * scale, f"delta {e.delta.tolist()} for initial {e.initial.tolist()}"
        torch.testing.assert_close(e.relevance.sum(), e.initial.sum(), rtol=1e-5, atol=0.0)
    if model_type is SameBatch:  # one delta per sample
        torch.testing.assert_close(e.delta, e.relevance.sum(1) - e.initial, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------- 6. non-finite relevance: node, rule, remedy


@pytest.mark.parametrize("rule", [ZPlus(stabilizer=0.0), AlphaBeta(2.0, 1.0, stabilizer=0.0)], ids=repr)
def test_a_zero_denominator_under_a_zero_stabilizer_names_node_rule_and_stabilizer(rule):
    # float64 throughout; logit 0 = -8 has only negative terms, so the z⁺ denominator is exactly 0
    model = Projection(torch.tensor([[-1.0, -2.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)).eval()
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    with pytest.raises(ValueError) as err:
        explain(model, x, target=0, name_map={"encoder.proj": rule})
    message = str(err.value)
    assert "encoder.proj" in message and type(rule).__name__ in message, message
    assert "stabilizer" in message, message
    assert "float64" not in message, f"advises float64 for a float64 input: {message}"


def test_lrp0_dividing_by_an_exact_zero_names_node_and_epsilon():
    model = Projection(torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)).eval()
    x = torch.tensor([[1.0, 1.0, 2.0]], dtype=torch.float64)  # z = [0, 4] exactly
    given = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # relevance on the neuron whose z is 0
    with pytest.raises(ValueError) as err:
        explain(model, x, output_relevance=given, name_map={"encoder.proj": Epsilon(0.0)})
    message = str(err.value)
    assert "encoder.proj" in message and "Epsilon" in message, message
    assert "epsilon" in message.lower() or "LRP-0" in message, message
    assert "float64" not in message, f"advises float64 for a float64 input: {message}"


def test_a_float32_overflow_still_advises_float64():
    model = Projection(torch.full((2, 3), 2e38)).float().eval()  # 3 · 2e38 overflows float32
    with pytest.raises(ValueError) as err:
        explain(model, torch.ones(2, 3))
    message = str(err.value)
    assert "encoder.proj" in message and "float64" in message, message


# ------------------------------------------------------------------------- 7. optional forward arguments


class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(30, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, ids, mask=None, lengths=None):
        h = self.embedding(ids)
        if mask is not None:
            h = h * mask.unsqueeze(-1).to(h.dtype)
        h = h.sum(1)
        if lengths is not None:
            h = h / lengths.unsqueeze(1).to(h.dtype)
        return self.fc(h)


class Unmasked(Masked):
    def forward(self, ids):
        return self.fc(self.embedding(ids).sum(1))


class LengthsOnly(nn.Module):
    def __init__(self, inner: Masked):
        super().__init__()
        self.inner = inner

    def forward(self, ids, lengths):
        return self.inner(ids, lengths=lengths)


def of_ids(relevance):
    """The token ids' relevance: a tuple holds one entry per model input."""
    return relevance[0] if isinstance(relevance, tuple) else relevance


def masked_case():
    model = seeded(Masked(), 30)
    plain = Unmasked().double().eval()
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 30, (2, 5), generator=torch.Generator().manual_seed(31))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[:, 3:] = 0
    return model, plain, ids, mask


def test_an_optional_forward_argument_left_out_is_absent():
    model, plain, ids, mask = masked_case()
    assert not support_table(model).unsupported
    assert {r.name for r in support_table(model).rows} == {r.name for r in support_table(plain).rows}
    without = explain(model, ids, composite="epsilon")
    torch.testing.assert_close(without.relevance, explain(plain, ids, composite="epsilon").relevance)
    torch.testing.assert_close(without.prediction, model(ids))
    given = explain(model, (ids, mask), composite="epsilon", target=without.target)
    relevance = of_ids(given.relevance)
    torch.testing.assert_close(given.prediction, model(ids, mask))
    assert (relevance[:, 3:] == 0).all(), "the mask is ignored"
    # the masked model on 5 tokens is the unmasked one on the first 3
    truncated = explain(plain, ids[:, :3].contiguous(), composite="epsilon", target=without.target).relevance
    torch.testing.assert_close(relevance[:, :3], truncated, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(relevance, without.relevance)


def test_one_explainer_follows_whichever_optional_arguments_each_call_gives():
    model, plain, ids, mask = masked_case()
    explainer = Explainer(model, composite="epsilon")
    first = explainer.explain(ids, target=0).relevance
    masked = of_ids(explainer.explain((ids, mask), target=0).relevance)
    again = explainer.explain(ids, target=0).relevance
    assert (masked[:, 3:] == 0).all() and not torch.allclose(masked, first)
    torch.testing.assert_close(again, first)


def test_an_optional_argument_given_as_none_is_absent():
    """(ids, None, lengths): the mask left out by position, the lengths given."""
    model, _, ids, _ = masked_case()
    lengths = torch.tensor([5, 4])
    torch.testing.assert_close(of_ids(explain(model, (ids, None), composite="epsilon", target=1).relevance),
                               explain(model, ids, composite="epsilon", target=1).relevance)
    got = of_ids(explain(model, (ids, None, lengths), composite="epsilon", target=1).relevance)
    expected = of_ids(explain(LengthsOnly(model), (ids, lengths), composite="epsilon", target=1).relevance)
    torch.testing.assert_close(got, expected)


# ------------------------------------------------------------------ found in review: each one silently wrong before


def test_each_graph_of_an_explainer_keeps_its_own_weights():
    """An Explainer holds one graph per set of optional arguments; a node name may stand for another layer in
    another graph, and the weights prepared for one must not serve the other."""

    class Optional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1, self.w2 = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(4, 4))

        def forward(self, x, extra=None):
            if extra is not None:
                x = x + F.linear(extra, self.w2)
            return F.linear(x, self.w1)

    torch.manual_seed(1)
    model = Optional().double()
    x, extra = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    explainer = lrptext.Explainer(model, composite="epsilon")
    explainer.explain(x)
    both = explainer.explain((x, extra))
    torch.testing.assert_close(both.prediction, model(x, extra).detach())
    fresh = lrptext.Explainer(model, composite="epsilon").explain((x, extra))
    torch.testing.assert_close(both.relevance[0], fresh.relevance[0])


def test_a_product_with_one_relevance_carrying_operand_gives_it_all():
    class MaskedSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.head = nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False)

        def forward(self, x, mask):  # [B, 1, T] @ [B, T, D]: the mask carries no relevance
            return self.head((mask.unsqueeze(1).to(x.dtype) @ self.proj(x)).squeeze(1))

    torch.manual_seed(2)
    model = MaskedSum().double()
    x, mask = torch.randn(2, 5, 4, dtype=torch.float64), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    composite = Composite("e", dense=Epsilon(1e-12), attention=lrptext.rules.AttnLRP())
    e = lrptext.explain(model, (x, mask), composite=composite)
    torch.testing.assert_close(e.relevance[0].sum((1, 2)), e.initial, rtol=1e-8, atol=1e-10)
    assert not e.relevance[0][0, 3:].any()  # masked tokens


def test_embedding_ids_changed_after_the_input_are_refused():
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(10, 3), nn.Linear(3, 2)

        def forward(self, ids):
            return self.head(self.emb(ids.t()).sum(0))

    with pytest.raises(UnsupportedLayerError, match="looks up ids computed from the input"):
        lrptext.Explainer(Transposed())


def test_a_zero_sample_whose_share_a_constant_takes_is_no_vanishing():
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("c", torch.ones(4))
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(x + self.c)

    torch.manual_seed(3)
    x = torch.randn(2, 4, dtype=torch.float64)
    x[1] = 0
    e = lrptext.explain(Shifted().double(), x, composite="epsilon")
    assert not e.relevance[1].any() and e.relevance[0].any()
