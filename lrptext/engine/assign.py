"""Which rule each node gets, and the support table that shows it before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import LINEAR_KINDS, Graph, Kind, Node
from lrptext.rules.composites import Composite
from lrptext.rules.rule import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox

LINEAR_RULE_TYPES = (Epsilon, Gamma, AlphaBeta, ZBox, Flat, WSquare)
OVERRIDABLE = (Pass, Norm)  # what a layer_map/name_map may give a node without a linear rule

# What crosses the other kinds; shown in the support table.
FIXED = {
    Kind.EMBEDDING: "embedding: relevance summed over the embedding axis per token",
    Kind.MAX_DIM: "winner-take-all (ties: first maximum)",
    Kind.RESHAPE: "reshaped back",
    Kind.MOVE: "routed back (vector-Jacobian product)",
    Kind.ITEM: "routed back",
    Kind.SCALE: "passes to the non-constant operand",
}


def _user_rule(node: Node, layer_map: Mapping[Any, Any], name_map: Mapping[str, Any]) -> Any:
    if node.qualified_name in name_map and node.module_type is not None:
        return name_map[node.qualified_name]
    for key, rule in layer_map.items():
        if isinstance(key, type) and node.module_type is not None and issubclass(node.module_type, key):
            return rule
        if not isinstance(key, type) and node.call is key:
            return rule
    return None


def assign_rules(graph: Graph, composite: Composite, layer_map: Mapping[Any, Any] | None = None,
                 name_map: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A rule value (or a description string for rule-free kinds) per node name."""
    layer_map, name_map = dict(layer_map or {}), dict(name_map or {})
    known = {n.qualified_name for n in graph.nodes if n.module_type is not None}
    unknown = sorted(set(name_map) - known)
    if unknown:
        raise ValueError(f"name_map names no module of the model: {unknown}; module names: {sorted(known)}")
    first = graph.first_layers()
    rules: dict[str, Any] = {}
    for node in graph.nodes:
        user = _user_rule(node, layer_map, name_map)
        if node.kind in LINEAR_KINDS:
            rule = user or composite.rule_for(node.kind.value, node.name in first)
            if not isinstance(rule, LINEAR_RULE_TYPES):
                raise ValueError(f"'{node.qualified_name}' ({node.op}) needs a linear rule (Epsilon, Gamma, AlphaBeta, "
                                 f"ZPlus, ZBox, Flat, WSquare), got {rule!r}")
            rules[node.name] = rule
            continue
        if user is not None:
            if not isinstance(user, OVERRIDABLE):
                raise ValueError(f"'{node.qualified_name}' ({node.op}) is not a dense/conv layer; it takes Pass() or "
                                 f"Norm(), got {user!r}")
            rules[node.name] = user
        elif node.kind == Kind.PASS:
            rules[node.name] = Pass()
        elif node.kind in (Kind.ADD, Kind.REDUCE, Kind.EMBEDDING_BAG):
            rules[node.name] = Norm()
        elif node.kind == Kind.POOL:
            rules[node.name] = "winner-take-all (ties: first maximum)" if "Max" in node.op or "max" in node.op else Norm()
        elif node.kind == Kind.BATCHNORM:
            rules[node.name] = Epsilon()  # an unfolded BatchNorm is a diagonal linear layer
        elif node.kind in FIXED:
            rules[node.name] = FIXED[node.kind]
        elif node.kind == Kind.UNSUPPORTED:
            rules[node.name] = None
        else:
            rules[node.name] = "-"
    return rules


def unsupported_error(node: Node) -> UnsupportedLayerError:
    way_out = node.hint + "; or " if node.hint else ""
    key = node.op.removeprefix("nn.") if node.module_type is not None else node.op
    map_hint = (f"pass layer_map={{nn.{key}: Pass()}} (relevance passes through unchanged) or Norm() (split in "
                "proportion to the input's contribution)") if node.module_type is not None else (
                "rewrite it with supported operations")
    return UnsupportedLayerError(
        f"no rule for {node.op} at '{node.qualified_name}'; {way_out}{map_hint}; see lrptext.support_table(model)"
    )


def check_static_support(graph: Graph, rules: dict[str, Any]) -> None:
    """Unsupported modules are refused when the Explainer is built (functions, which may only touch masks and
    shapes, are refused when relevance reaches them)."""
    carrying = graph.carrying()
    for node in graph.nodes:
        if (node.kind == Kind.UNSUPPORTED and rules[node.name] is None and node.module_type is not None
                and node.name in carrying):
            raise unsupported_error(node)


@dataclass(frozen=True)
class SupportRow:
    name: str
    op: str
    kind: str
    rule: str
    note: str


class SupportTable:
    """Every node with the rule it will get; printable."""

    def __init__(self, rows: list[SupportRow]):
        self.rows = rows

    @property
    def unsupported(self) -> list[SupportRow]:
        return [r for r in self.rows if r.rule.startswith("UNSUPPORTED")]

    def __str__(self) -> str:
        header = SupportRow("node", "op", "kind", "rule", "note")
        rows = [header] + self.rows
        widths = [max(len(getattr(r, f)) for r in rows) for f in ("name", "op", "kind", "rule")]
        lines = []
        for r in rows:
            cells = [getattr(r, f).ljust(w) for f, w in zip(("name", "op", "kind", "rule"), widths)]
            lines.append("  ".join(cells + [r.note]).rstrip())
        return "\n".join(lines)

    __repr__ = __str__


def support_rows(graph: Graph, rules: dict[str, Any]) -> SupportTable:
    rows = []
    carrying = graph.carrying()
    for node in graph.nodes:
        if node.kind in (Kind.INPUT, Kind.OUTPUT, Kind.CONSTANT, Kind.META):
            continue
        rule = rules[node.name]
        if node.name not in carrying:
            text = "- (shape or mask arithmetic: carries no relevance)"
        elif rule is None:
            text = "UNSUPPORTED" + (f" ({node.hint})" if node.hint else "")
        else:
            text = rule if isinstance(rule, str) else repr(rule)
        rows.append(SupportRow(node.qualified_name, node.op, node.kind.value, text, node.note))
    return SupportTable(rows)
