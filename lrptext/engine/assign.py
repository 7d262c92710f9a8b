"""Which rule each node gets, and the support table that shows it before anything runs."""

from __future__ import annotations

import html
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.capture import function_name
from lrptext.graph.ir import CONSTANT, INPUT, OUTPUT, UNSUPPORTED, Graph, Node
from lrptext.layers import unsupported
from lrptext.rules.composites import Composite


def _user_rule(node: Node, layer_map: Mapping[Any, Any], name_map: Mapping[str, Any]) -> Any:
    if node.qualified_name in name_map and node.module_type is not None:
        return name_map[node.qualified_name]
    return next((rule for key, rule in layer_map.items() if _matches(key, node)), None)


def _matches(key: Any, node: Node) -> bool:
    """The layer_map key names the node's operation: a module type (or a base class of it), a function, or a Tensor
    method (layer_map={torch.Tensor.cumsum: Norm()})."""
    if isinstance(key, type):
        return node.module_type is not None and issubclass(node.module_type, key)
    if node.call is key:
        return True
    method = unsupported.method_name(key)
    return method is not None and node.op.startswith("Tensor.") and (
        node.op.removeprefix("Tensor.").rstrip("_") == method)


def _key_name(key: Any) -> str:
    """A layer_map key as messages name operations: nn.LSTM, torch.Tensor.cumsum, F.gelu, torch.cat."""
    if isinstance(key, type):
        return f"nn.{key.__name__}" if key.__module__.startswith("torch.nn") else key.__qualname__
    method = unsupported.method_name(key)
    return f"torch.Tensor.{method}" if method else function_name(key)


def _allowed(node: Node) -> tuple[type, ...]:
    return unsupported.stand_ins(node) if node.kind is UNSUPPORTED else node.kind.allowed_rules(node)


def _refuse(node: Node, rule: Any) -> ValueError:
    allowed = _allowed(node)
    if allowed:
        return ValueError(f"'{node.qualified_name}' ({node.op}) takes {' or '.join(f'{t.__name__}()' for t in allowed)}"
                          f", got {rule!r}: no other rule maps the relevance at its output onto its input's shape")
    if node.kind is UNSUPPORTED:
        return ValueError(f"'{node.qualified_name}' ({node.op}) returns several tensors, so no rule can stand in for "
                          f"it (got {rule!r}); {node.hint or 'lrptext has no rule for it'}")
    return ValueError(f"'{node.qualified_name}' ({node.op}) has a fixed rule ({node.kind.default_rule(node)}); a "
                      f"layer_map or name_map cannot change it (got {rule!r})")


def assign_rules(graph: Graph, composite: Composite, layer_map: Mapping[Any, Any] | None = None,
                 name_map: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A rule value (or a description string for kinds with a fixed rule; None where there is none) per node."""
    layer_map, name_map = dict(layer_map or {}), dict(name_map or {})
    known = {n.qualified_name for n in graph.nodes if n.module_type is not None}
    unknown = sorted(set(name_map) - known)
    if unknown:
        raise ValueError(f"name_map names no module of the model: {unknown}; module names: {sorted(known)}")
    unmatched = [key for key in layer_map if not any(_matches(key, n) for n in graph.nodes)]
    if unmatched:  # a misspelt key would leave the composite's rules in place without a word; a shared map may not
        warnings.warn(f"layer_map names no operation of the model: {[_key_name(k) for k in unmatched]}, so "
                      "those entries change nothing; lrptext.support_table(model) lists its operations", stacklevel=3)
    first = graph.first_layers()
    rules: dict[str, Any] = {}
    for node in graph.nodes:
        user = _user_rule(node, layer_map, name_map)
        slot = node.kind.slot
        if slot is not None:
            rule = user or composite.rule_for(slot, node.name in first)
            allowed = node.kind.allowed_rules(node)
            names = ", ".join(t.__name__ for t in allowed)
            if rule is None and node.kind.without_rule is not None:
                node.hint = node.kind.without_rule  # unsupported under this composite
                rules[node.name] = None
                continue
            if rule is None:
                hint = " (attnlrp, cp_lrp)" if slot == "attention" else ""
                raise ValueError(f"composite '{composite.name}' has no rule for '{slot}' layers such as "
                                 f"'{node.qualified_name}' ({node.op}); give it one ({names}), or pick a composite "
                                 f"that has one{hint}")
            if not isinstance(rule, allowed):
                raise ValueError(f"'{node.qualified_name}' ({node.op}) takes one of {names}, got {rule!r}")
            rules[node.name] = rule
        elif user is not None:
            if not isinstance(user, _allowed(node)):
                raise _refuse(node, user)
            rules[node.name] = user
        elif node.kind in (INPUT, OUTPUT, CONSTANT):
            rules[node.name] = "-"
        elif (chosen := composite.rule_for(node.kind.name, False)) is not None:  # a composite may name a kind
            if not isinstance(chosen, _allowed(node)):
                raise ValueError(f"composite '{composite.name}' gives {chosen!r} to '{node.kind.name}' nodes such as "
                                 f"'{node.qualified_name}', which take {_allowed(node)}")
            rules[node.name] = chosen
        else:
            rules[node.name] = node.kind.default_rule(node)  # None for an unsupported node
    return rules


def _from_input_values(node: Node) -> Node | None:
    """The model input whose values (not only its shape, through metadata) `node` is computed from, or None."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.kind is INPUT:
            return n
        if n.kind.carries:  # metadata (sizes, masks' comparisons) reads no values relevance could go back to
            stack.extend(n.kind.data_inputs(n))
    return None


def check_static_support(graph: Graph, rules: dict[str, Any]) -> None:
    """Unsupported modules are refused when the Explainer is built (functions, which may only touch masks and
    shapes, are refused when relevance reaches them); so are embeddings of token ids that an operation changed
    after the model input: per-token relevance reaches the input's ids only, and would vanish there. (Ids built
    from sizes or buffers, such as position ids, read no input values: their embeddings keep their share, as
    biases do.)"""
    carrying = graph.carrying()
    for node in graph.nodes:
        ids = node.inputs()[0] if node.kind.reads_ids and node.inputs() else None
        if ids is not None and ids.kind is not INPUT and (source := _from_input_values(ids)) is not None:
            raise UnsupportedLayerError(
                f"{node.op} at '{node.qualified_name}' looks up ids computed from the input '{source.qualified_name}' "
                f"by {ids.op}; lrptext gives each token of the input its relevance only where the ids go to the "
                "embedding unchanged: apply the operation to the embedding's output instead")
        if rules[node.name] is None and node.module_type is not None and node.name in carrying:
            raise unsupported.unsupported_error(node)


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

    def _repr_html_(self) -> str:
        """Jupyter shows the table as HTML (print() keeps the text above); unsupported nodes in bold red."""
        head = "".join(f"<th>{h}</th>" for h in ("node", "op", "layer kind", "rule (parameters)", "note"))
        body = []
        for r in self.rows:
            mark = ' style="color: #b91c1c; font-weight: 600"' if r.rule.startswith("UNSUPPORTED") else ""
            cells = "".join(f"<td>{html.escape(v)}</td>" for v in (r.name, r.op, r.kind, r.rule, r.note))
            body.append(f"<tr{mark}>{cells}</tr>")
        return (f'<table class="lrptext-support"><thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body)
                + "\n</tbody></table>")


def support_rows(graph: Graph, rules: dict[str, Any]) -> SupportTable:
    rows = []
    carrying = graph.carrying()
    first = graph.first_layers()
    for node in graph.nodes:
        if node.kind in (INPUT, OUTPUT, CONSTANT) or not node.kind.carries:
            continue
        rule = rules[node.name]
        if node.name not in carrying:
            text = "- (shape or mask arithmetic: carries no relevance)"
        elif rule is None:
            text = "UNSUPPORTED" + (f" ({node.hint})" if node.hint else "")
        else:
            text = node.kind.rule_text(node, rule, carrying)
        note = "; ".join(n for n in (node.note, "first layer" if node.name in first else "") if n)
        rows.append(SupportRow(node.qualified_name, node.op, node.kind.name, text, note))
    return SupportTable(rows)
