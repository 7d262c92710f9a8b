"""LRP rules as immutable values (DESIGN.md §3)."""

from lrptext.rules.rule import AlphaBeta, Epsilon, Flat, Gamma, LinearRule, WSquare, ZBox, ZPlus

__all__ = ["AlphaBeta", "Epsilon", "Flat", "Gamma", "LinearRule", "WSquare", "ZBox", "ZPlus"]
