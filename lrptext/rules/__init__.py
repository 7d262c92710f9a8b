"""LRP rules as immutable values (DESIGN.md §3), and composites that assign them to a model's layers."""

from lrptext.rules.composites import COMPOSITES, Composite, composite
from lrptext.rules.rule import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    LinearRule,
    Norm,
    Pass,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
)

__all__ = ["COMPOSITES", "AlphaBeta", "Composite", "composite", "Epsilon", "Flat", "Gamma", "LinearRule", "Norm", "Pass", "Rule", "WSquare", "ZBox", "ZPlus"]
