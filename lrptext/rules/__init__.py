"""LRP rules as immutable values (docs/conventions.md), and composites that assign them to a model's layers."""

from lrptext.rules.composites import COMPOSITES, Composite, composite
from lrptext.rules.rule import (
    CPLRP,
    LINEAR_RULES,
    AlphaBeta,
    AttnLRP,
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

__all__ = ["COMPOSITES", "LINEAR_RULES", "AlphaBeta", "AttnLRP", "CPLRP", "Composite", "composite", "Epsilon", "Flat",
           "Gamma", "LinearRule", "Norm", "Pass", "Rule", "WSquare", "ZBox", "ZPlus"]
