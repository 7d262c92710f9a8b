"""The rules for linear layers (dense, convolution): immutable values that validate themselves.

Equations in DESIGN.md §3 (zennit 1.0.0 conventions); x⁺ = max(x, 0), x⁻ = min(x, 0), st(z) = z + s·sign(z)
with sign(0) = +1. Every rule but `Epsilon` stabilises its denominator with `stabilizer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union


def _non_negative(owner: str, name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: '{name}' must be a finite number >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Epsilon:
    """LRP-ε: R_i = x_i Σ_j w_ji R_j / st(z_j, ε). ``Epsilon(0)`` is LRP-0, which yields ±inf where z_j = 0."""

    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _non_negative("Epsilon", "epsilon", self.epsilon))


@dataclass(frozen=True)
class Gamma:
    """LRP-γ: positive contributions amplified by γ, inputs split by sign (Montavon et al. 2019, eq. 5)."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", _non_negative("Gamma", "gamma", self.gamma))
        object.__setattr__(self, "stabilizer", _non_negative("Gamma", "stabilizer", self.stabilizer))


@dataclass(frozen=True)
class AlphaBeta:
    """LRP-αβ (Bach et al. 2015): α·positive share − β·negative share, with α − β = 1 and α, β >= 0."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        alpha = _non_negative(type(self).__name__, "alpha", self.alpha)
        beta = _non_negative(type(self).__name__, "beta", self.beta)
        if abs(alpha - beta - 1.0) > 1e-9:
            raise ValueError(
                f"{type(self).__name__}: alpha - beta must be 1 for relevance to be conserved, got "
                f"alpha={alpha}, beta={beta}; e.g. AlphaBeta(alpha=2, beta=1) or ZPlus()"
            )
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "stabilizer", _non_negative(type(self).__name__, "stabilizer", self.stabilizer))


@dataclass(frozen=True, init=False, repr=False)
class ZPlus(AlphaBeta):
    """z⁺, which is αβ with α = 1, β = 0: only positive contributions count."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(alpha=1.0, beta=0.0, stabilizer=stabilizer)

    def __repr__(self) -> str:
        return f"ZPlus(stabilizer={self.stabilizer!r})"


Bound = Union[float, tuple[float, ...]]


def _bound(name: str, value: object) -> Bound:
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "tolist"):  # numpy arrays and torch tensors
        value = value.tolist()  # type: ignore[union-attr]
    if isinstance(value, Iterable):
        values = tuple(float(v) for v in value)
        if not values:
            raise ValueError(f"ZBox: '{name}' must be a number or one number per input channel, got an empty sequence")
        return values
    raise TypeError(f"ZBox: '{name}' must be a number or a sequence of numbers (one per channel), got {type(value).__name__}")


@dataclass(frozen=True)
class ZBox:
    """z^B (Montavon et al. 2017) for inputs bounded by [low, high]: one number, or one per input channel."""

    low: Bound
    high: Bound
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        low, high = _bound("low", self.low), _bound("high", self.high)
        lows = low if isinstance(low, tuple) else (low,)
        highs = high if isinstance(high, tuple) else (high,)
        if len(lows) > 1 and len(highs) > 1 and len(lows) != len(highs):
            raise ValueError(f"ZBox: 'low' has {len(lows)} channels but 'high' has {len(highs)}")
        if any(not (math.isfinite(a) and math.isfinite(b)) for a in lows for b in highs):
            raise ValueError("ZBox: bounds must be finite")
        pairs = zip(lows, highs) if len(lows) == len(highs) else ((a, b) for a in lows for b in highs)
        if any(a > b for a, b in pairs):
            raise ValueError(f"ZBox: 'low' must be <= 'high' in every channel, got low={low}, high={high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "stabilizer", _non_negative("ZBox", "stabilizer", self.stabilizer))

    def channels(self, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The bounds for a layer with `n` input channels (scalars broadcast)."""
        out = []
        for name, value in (("low", self.low), ("high", self.high)):
            if isinstance(value, float):
                out.append((value,) * n)
            elif len(value) == 1 or len(value) == n:
                out.append(value * n if len(value) == 1 else value)
            else:
                raise ValueError(
                    f"ZBox: '{name}' has {len(value)} values but the layer has {n} input channels; "
                    "give one number or one per channel"
                )
        return out[0], out[1]


@dataclass(frozen=True)
class Flat:
    """Flat: relevance spread uniformly over each neuron's receptive field (padding not counted)."""

    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "stabilizer", _non_negative("Flat", "stabilizer", self.stabilizer))


@dataclass(frozen=True)
class WSquare:
    """w²: R_i = Σ_j w_ji² / st(Σ_k w_jk² + b_j²) R_j; ``zero_params="bias"`` drops b²."""

    stabilizer: float = 1e-6
    zero_params: str | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stabilizer", _non_negative("WSquare", "stabilizer", self.stabilizer))
        if self.zero_params not in (None, "bias"):
            raise ValueError(f"WSquare: 'zero_params' must be None or 'bias', got {self.zero_params!r}")


LinearRule = Union[Epsilon, Gamma, AlphaBeta, ZBox, Flat, WSquare]


@dataclass(frozen=True)
class Pass:
    """Relevance passes through unchanged: element-wise activations, dropout, identity (and, by choice in a
    ``layer_map``, any shape-preserving layer lrptext has no rule for)."""


@dataclass(frozen=True)
class Norm:
    """Proportional split R_i = x_i (∂y/∂x_i) R / st(y): average pooling, sums, means and residual additions."""

    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "stabilizer", _non_negative("Norm", "stabilizer", self.stabilizer))


Rule = Union[LinearRule, Pass, Norm]
