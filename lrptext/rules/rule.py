"""The rules: immutable values that validate themselves, and the one table of the linear rules.

Equations in docs/conventions.md (zennit 1.0.0's conventions); x⁺ = max(x, 0), x⁻ = min(x, 0),
st(z) = z + s·sign(z) with sign(0) = +1. Every rule but `Epsilon` stabilises its denominator with `stabilizer`.

Each linear rule declares, once, everything the rest of lrptext needs of it: its parameters (the dataclass
fields, checked in __post_init__), its name in the C++ core (`kernel`) and the scalar arguments it passes there
(`kernel_args`), the modified weights it computes once per model (`modify_weights`), and what its kernels read
(`reads_z`, `reads_relu_input`). The kernels' Python side, the torch backend and the rule assignment read these;
LINEAR_RULES lists them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union


def _non_negative(owner: str, name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: '{name}' must be a finite number >= 0, got {value!r}")
    return value


class LinearRule:
    """A rule for dense and convolution layers (the kinds with a composite slot)."""

    kernel: ClassVar[str]                   # the rule's name in the C++ core (csrc/include/lrptext/rule_table.h)
    reads_z: ClassVar[bool] = False         # its kernels read the forward's pre-activation z (kept by the engine)
    reads_relu_input: ClassVar[bool] = False  # its C++ kernels can read relu(x) from a dropped ReLU's input x
    modified_weights: ClassVar[int] = 0     # how many of modify_weights' two results are weights (not None)

    def kernel_args(self) -> dict[str, Any]:
        """The scalar parameters the C++ core takes for this rule, by the names of its bindings."""
        return {"stabilizer": self.stabilizer}  # type: ignore[attr-defined]

    def modify_weights(self, weight: Any) -> tuple[Any, Any]:
        """The modified weights (a, b) the rule reads instead of or beside w, computed once per model; None where
        it reads none. `weight` is a torch tensor."""
        return None, None

    def bounds(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Per-channel input bounds (low, high) for a layer with `channels` input channels, for rules that read
        them (z^B)."""
        return None


@dataclass(frozen=True)
class Epsilon(LinearRule):
    """LRP-ε: R_i = x_i Σ_j w_ji R_j / st(z_j, ε). ``Epsilon(0)`` is LRP-0, which yields ±inf where z_j = 0."""

    epsilon: float = 1e-6
    kernel: ClassVar[str] = "epsilon"
    reads_z: ClassVar[bool] = True
    reads_relu_input: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _non_negative("Epsilon", "epsilon", self.epsilon))

    def kernel_args(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}


@dataclass(frozen=True)
class Gamma(LinearRule):
    """LRP-γ: positive contributions amplified by γ, inputs split by sign (Montavon et al. 2019, eq. 5)."""

    gamma: float = 0.25
    stabilizer: float = 1e-6
    kernel: ClassVar[str] = "gamma"
    modified_weights: ClassVar[int] = 2
    reads_z: ClassVar[bool] = True
    reads_relu_input: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", _non_negative("Gamma", "gamma", self.gamma))
        object.__setattr__(self, "stabilizer", _non_negative("Gamma", "stabilizer", self.stabilizer))

    def kernel_args(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "stabilizer": self.stabilizer}

    def modify_weights(self, weight: Any) -> tuple[Any, Any]:
        return weight + self.gamma * weight.clamp(min=0), weight + self.gamma * weight.clamp(max=0)


@dataclass(frozen=True)
class AlphaBeta(LinearRule):
    """LRP-αβ (Bach et al. 2015): α·positive share − β·negative share, with α − β = 1 and α, β >= 0."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    kernel: ClassVar[str] = "alpha_beta"
    modified_weights: ClassVar[int] = 2
    reads_relu_input: ClassVar[bool] = True

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

    def kernel_args(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "stabilizer": self.stabilizer}

    def modify_weights(self, weight: Any) -> tuple[Any, Any]:
        return weight.clamp(min=0), weight.clamp(max=0)


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
    raise TypeError(f"ZBox: '{name}' must be a number or a sequence of numbers (one per channel), got "
                    f"{type(value).__name__}")


@dataclass(frozen=True)
class ZBox(LinearRule):
    """z^B (Montavon et al. 2017) for inputs bounded by [low, high]: one number, or one per input channel."""

    low: Bound
    high: Bound
    stabilizer: float = 1e-6
    kernel: ClassVar[str] = "zbox"
    modified_weights: ClassVar[int] = 2

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

    def modify_weights(self, weight: Any) -> tuple[Any, Any]:
        return weight.clamp(min=0), weight.clamp(max=0)

    def bounds(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.channels(channels)


@dataclass(frozen=True)
class Flat(LinearRule):
    """Flat: relevance spread uniformly over each neuron's receptive field (padding not counted)."""

    stabilizer: float = 1e-6
    kernel: ClassVar[str] = "flat"
    modified_weights: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "stabilizer", _non_negative("Flat", "stabilizer", self.stabilizer))

    def modify_weights(self, weight: Any) -> tuple[Any, Any]:
        return weight.new_ones(weight.shape), None


@dataclass(frozen=True)
class WSquare(LinearRule):
    """w²: R_i = Σ_j w_ji² / st(Σ_k w_jk² + b_j²) R_j; ``zero_params="bias"`` drops b²."""

    stabilizer: float = 1e-6
    zero_params: str | None = field(default=None)
    kernel: ClassVar[str] = "wsquare"
    modified_weights: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "stabilizer", _non_negative("WSquare", "stabilizer", self.stabilizer))
        if self.zero_params not in (None, "bias"):
            raise ValueError(f"WSquare: 'zero_params' must be None or 'bias', got {self.zero_params!r}")

    def kernel_args(self) -> dict[str, Any]:
        return {"stabilizer": self.stabilizer, "use_bias": self.zero_params != "bias"}

    def modify_weights(self, weight: Any) -> tuple[Any, Any]:
        return weight * weight, None


# The one table of linear rules (ZPlus is AlphaBeta(1, 0)).
LINEAR_RULES: tuple[type[LinearRule], ...] = (Epsilon, Gamma, AlphaBeta, ZBox, Flat, WSquare)


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


@dataclass(frozen=True)
class AttnLRP:
    """Attention by AttnLRP (Achtibat et al. 2024), for scaled dot-product attention O = softmax(s·QKᵀ) V:
    the products QKᵀ and A·V by the uniform rule (each operand gets half of every term's share a·b·R/o, no
    stabiliser: half of gradient × input at each), the softmax by R_in = x ⊙ (R_out − A Σ R_out) (gradient ×
    input through it, which keeps back a bias-like share that `delta` reports). Masked keys get exactly 0."""


@dataclass(frozen=True)
class CPLRP:
    """Attention by CP-LRP (Ali et al. 2022): the attention probabilities A are constants, so O = A·V sends all of
    its relevance to V, R(V) = V ⊙ Aᵀ (R / O), and none reaches Q or K through the softmax."""


Rule = Union[LinearRule, Pass, Norm, AttnLRP, CPLRP]
