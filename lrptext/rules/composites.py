"""Composites: named presets that give every dense/conv node a rule, first layers chosen by graph position.

Names and meanings follow zennit (DESIGN.md §3). Users refine them with ``layer_map`` (by module type) and
``name_map`` (by qualified name); precedence: name_map > layer_map > first layer > conv/dense default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lrptext.rules.rule import AlphaBeta, Epsilon, Flat, Gamma, LinearRule, ZBox, ZPlus


@dataclass(frozen=True)
class Composite:
    name: str
    dense: LinearRule
    conv: LinearRule
    first: LinearRule | None = None  # every dense/conv node that consumes the model input

    def rule_for(self, kind: str, first: bool) -> LinearRule:
        if first and self.first is not None:
            return self.first
        return self.conv if kind == "conv" else self.dense


def _box(name: str, low: Any = None, high: Any = None, gamma: float = 0.25, epsilon: float = 1e-6) -> Composite:
    if low is None or high is None:
        raise ValueError(
            f"composite '{name}' needs the input's bounds: pass low= and high= (numbers, or one per input channel; "
            "for inputs normalised as (x - mean) / std over [0, 1] pixels: low=-mean/std, high=(1-mean)/std)"
        )
    return Composite(name, dense=Epsilon(epsilon), conv=Gamma(gamma), first=ZBox(low, high))


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon": lambda epsilon=1e-6: Composite("epsilon", dense=Epsilon(epsilon), conv=Epsilon(epsilon)),
    "epsilon_plus": lambda epsilon=1e-6: Composite("epsilon_plus", dense=Epsilon(epsilon), conv=ZPlus()),
    "epsilon_plus_flat": lambda epsilon=1e-6: Composite("epsilon_plus_flat", dense=Epsilon(epsilon), conv=ZPlus(),
                                                        first=Flat()),
    "epsilon_gamma": lambda gamma=0.25, epsilon=1e-6: Composite("epsilon_gamma", dense=Epsilon(epsilon),
                                                                conv=Gamma(gamma)),
    "epsilon_gamma_box": lambda **kw: _box("epsilon_gamma_box", **kw),
    "epsilon_alpha2_beta1": lambda epsilon=1e-6: Composite("epsilon_alpha2_beta1", dense=Epsilon(epsilon),
                                                           conv=AlphaBeta(2.0, 1.0)),
    "epsilon_alpha2_beta1_flat": lambda epsilon=1e-6: Composite("epsilon_alpha2_beta1_flat", dense=Epsilon(epsilon),
                                                                conv=AlphaBeta(2.0, 1.0), first=Flat()),
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
