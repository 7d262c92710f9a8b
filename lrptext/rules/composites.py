"""Composites: named presets that give every node with a composite slot (dense, conv, attention) a rule, first
layers chosen by graph position.

Names and meanings follow zennit 1.0.0 (docs/conventions.md lists where lrptext differs). Users refine them with
``layer_map`` (by module type) and ``name_map`` (by qualified name); precedence: name_map > layer_map > first
layer > the slot's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lrptext.rules.rule import CPLRP, AlphaBeta, AttnLRP, Epsilon, Flat, Gamma, LinearRule, Norm, Rule, ZBox, ZPlus


class Composite:
    """A rule per slot, and optionally another for the first layers (those that read the model input). Which rules
    a slot takes is its layer kind's to say (dense and conv: the linear rules; attention: AttnLRP or CPLRP); the
    rule assignment checks. A composite may also name a kind without a slot (add=Norm(0.0)) to replace that kind's
    own rule.

    >>> Composite("mine", dense=Epsilon(), conv=ZPlus(), first=Flat())          # Flat for every first layer
    >>> Composite("mine", dense=Epsilon(), conv=Gamma(), first={"conv": ZBox(-1, 1)})   # first convolutions only
    """

    def __init__(self, name: str, *, first: LinearRule | Mapping[str, LinearRule] | None = None, **slots: Rule):
        self.name = name
        self.slots: dict[str, Rule] = dict(slots)
        if first is None or isinstance(first, Mapping):
            self.first: dict[str, Rule] = dict(first or {})
        else:  # one rule for the first layers of every linear slot
            self.first = {slot: first for slot, rule in self.slots.items() if isinstance(rule, LinearRule)}
        for where, rules in (("", self.slots), ("first=", self.first)):
            for slot, rule in rules.items():
                if isinstance(rule, type) or rule is None:
                    raise TypeError(f"Composite '{name}': {where}{slot} must be a rule value such as Epsilon(), got "
                                    f"{rule!r}")

    def rule_for(self, slot: str, first: bool) -> Rule | None:
        """The rule of a node in `slot` (None where the composite names none); `first`: it reads the model input."""
        if first and slot in self.first:
            return self.first[slot]
        return self.slots.get(slot)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Composite) and (self.name, self.slots, self.first)
                == (other.name, other.slots, other.first))

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.slots.items()), tuple(self.first.items())))

    def __repr__(self) -> str:
        slots = ", ".join(f"{k}={v!r}" for k, v in self.slots.items())
        return f"Composite({self.name!r}, {slots}, first={self.first!r})"


# The linear parts of recurrent layers (Arras et al. 2017) take a larger epsilon than dense layers: with 1e-6 a
# candidate whose input and recurrent contributions nearly cancel gets huge, mostly cancelling relevances. On word
# deletion over the validation splits 0.01 came within 2 % of the best epsilon of the SpamAssassin LSTM (0.03) and
# GRU (0.003), and was the best of five for the 20 Newsgroups GRU (docs/recurrent.md).
RECURRENT_EPSILON = 0.01


def _cnn(name: str, conv: Callable[..., Rule], first: Rule | None = None) -> Callable[..., Composite]:
    """A composite for CNNs and recurrent nets: Epsilon(epsilon) on dense layers, conv(epsilon, ...) on
    convolutions, Epsilon(recurrent_epsilon) on recurrent layers (their only rule)."""
    def make(epsilon: float = 1e-6, recurrent_epsilon: float = RECURRENT_EPSILON, **conv_params: Any) -> Composite:
        return Composite(name, dense=Epsilon(epsilon), conv=conv(epsilon, **conv_params),
                         recurrent=Epsilon(recurrent_epsilon), first=first)
    return make


def _box(name: str, low: Any = None, high: Any = None, gamma: float = 0.25, epsilon: float = 1e-6,
         recurrent_epsilon: float = RECURRENT_EPSILON) -> Composite:
    if low is None or high is None:
        raise ValueError(
            f"composite '{name}' needs the input's bounds: pass low= and high= (numbers, or one per input channel; "
            "for inputs normalised as (x - mean) / std over [0, 1] pixels: low=-mean/std, high=(1-mean)/std)"
        )
    # z^B for first convolutions only, as zennit: a first dense layer keeps the dense rule.
    return Composite(name, dense=Epsilon(epsilon), conv=Gamma(gamma), recurrent=Epsilon(recurrent_epsilon),
                     first={"conv": ZBox(low, high)})


def _transformer(name: str, attention: Rule, epsilon: float, gamma: float | None) -> Composite:
    """Epsilon on every linear layer (or Gamma(gamma), AttnLRP's variant for vision transformers) and the attention
    rule; LayerNorm takes its own rule (identity on 1/std, epsilon on the centring)."""
    linear = Epsilon(epsilon) if gamma is None else Gamma(gamma)
    # additions (residuals, the embeddings' sum, an attention mask's) and sums (pooling) split exactly, without a
    # stabiliser; products of two computed tensors (gated units) by the attention rule's multiplication rule
    return Composite(name, dense=linear, conv=linear, attention=attention, layer_norm=Epsilon(epsilon), add=Norm(0.0),
                     reduce=Norm(0.0), scale=attention)


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon": _cnn("epsilon", lambda epsilon: Epsilon(epsilon)),
    "epsilon_plus": _cnn("epsilon_plus", lambda epsilon: ZPlus()),
    "epsilon_plus_flat": _cnn("epsilon_plus_flat", lambda epsilon: ZPlus(), first=Flat()),
    "epsilon_gamma": _cnn("epsilon_gamma", lambda epsilon, gamma=0.25: Gamma(gamma)),
    "epsilon_gamma_box": lambda **kw: _box("epsilon_gamma_box", **kw),
    "epsilon_alpha2_beta1": _cnn("epsilon_alpha2_beta1", lambda epsilon: AlphaBeta(2.0, 1.0)),
    "epsilon_alpha2_beta1_flat": _cnn("epsilon_alpha2_beta1_flat", lambda epsilon: AlphaBeta(2.0, 1.0), first=Flat()),
    # LRP-0: ε = 0 everywhere; a z of exactly 0 divides by 0, and explain() then names the node
    "lrp0": lambda: Composite("lrp0", dense=Epsilon(0.0), conv=Epsilon(0.0), recurrent=Epsilon(0.0)),
    "attnlrp": lambda epsilon=1e-6, gamma=None: _transformer("attnlrp", AttnLRP(), epsilon, gamma),
    "cp_lrp": lambda epsilon=1e-6, gamma=None: _transformer("cp_lrp", CPLRP(), epsilon, gamma),
}


def composite(spec: str | Composite, **params: Any) -> Composite:
    """A composite by name (with its parameters, e.g. ``low=``/``high=`` for epsilon_gamma_box) or as given."""
    if isinstance(spec, Composite):
        if params:
            raise ValueError(f"composite parameters {sorted(params)} apply to named composites only")
        return spec
    if spec not in COMPOSITES:
        raise ValueError(f"unknown composite {spec!r}; choose one of {', '.join(COMPOSITES)} or pass a Composite")
    try:
        return COMPOSITES[spec](**params)
    except TypeError as error:
        raise ValueError(f"composite {spec!r}: {error}") from error
