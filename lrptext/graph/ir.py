"""The graph IR: nodes in topological order, each with the layer kind that decides how relevance crosses it.

A layer kind (lrptext/layers/) is a LayerKind subclass: how capture recognises the operation, its settings
normalised at capture, its forward step, its relevance step and the rule it takes. The structural kinds below
(inputs, constants, the output, operations without a rule) belong to the graph itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


class LayerKind:
    """What a node is. Subclasses in lrptext/layers/ fill in capture, forward and relevance; the class attributes
    are what the graph, the rule assignment and the engine read without knowing the kind."""

    name: ClassVar[str] = ""
    # Capture: the torch.nn module types, functions and Tensor method names (without a trailing "_") it stands for.
    modules: ClassVar[tuple[type, ...]] = ()
    functions: ClassVar[frozenset[Any]] = frozenset()
    methods: ClassVar[frozenset[str]] = frozenset()
    # Its functions are Python functions that capture keeps whole, where torch.fx would trace through them
    # (pack_padded_sequence).
    traced_whole: ClassVar[bool] = False
    # Rules: the composite's slot ("dense", "conv") for kinds that take a linear rule, else None; the rule types
    # a user's layer_map or name_map may give the other kinds (each must map the relevance at the node's output
    # onto its input's shape).
    slot: ClassVar[str | None] = None
    rules: ClassVar[tuple[type, ...]] = ()
    # For a kind with a slot that a composite may leave empty: why the node then has no rule (it is unsupported,
    # with the stand-ins of lrptext.layers.unsupported); None: a composite without the slot is refused.
    without_rule: ClassVar[str | None] = None
    # Its first argument holds token ids and its output is the input's representation (embeddings).
    reads_ids: ClassVar[bool] = False
    # Its output is its input rearranged, shifted or scaled by constants: a dense/conv layer reading it (and only
    # inputs of this sort) still reads the model input, so it is a first layer.
    keeps_input: ClassVar[bool] = False
    # Its value carries relevance as a float tensor; False for metadata (shapes, masks) and statistics.
    carries: ClassVar[bool] = True
    # A statistic of a relevance-carrying input (a norm) that the rules hold constant: no relevance flows into it.
    holds_constant: ClassVar[bool] = False
    # Its value is a tuple whose first item carries relevance (torch.max over a dimension: values, indices).
    tuple_output: ClassVar[bool] = False
    # Its relevance step takes relevance as two factors not yet multiplied (lrptext.kernels.factored); the engine
    # multiplies them out for the others.
    takes_factored: ClassVar[bool] = False

    def capture_module(self, node: Node, module: Any) -> None:
        """Fills node.params from the module's settings, or node.hint (and kind UNSUPPORTED) where it cannot."""

    def capture_call(self, node: Node) -> LayerKind:
        """Normalises a function or method call's settings into node.params; returns the kind the node takes (a
        kind may hand a node to another, as indexing the result of torch.max does)."""
        return self

    def item(self, node: Node) -> LayerKind | None:
        """The kind of `node`, an indexing of this kind's tuple output (`out, (h_n, c_n) = lstm(x)`), its settings
        read into node.params; None where it is an ordinary indexing."""
        return None

    def default_rule(self, node: Node) -> Any:
        """The rule (or the description of a fixed rule) when no composite slot or user map gives one."""
        return None

    def rule_text(self, node: Node, rule: Any, carrying: set[str]) -> str:
        """What the support table says of the node's rule; `carrying`: the graph's relevance-carrying nodes (a kind
        whose rule depends on which of its inputs carry relevance tells them apart here)."""
        return rule if isinstance(rule, str) else repr(rule)

    def allowed_rules(self, node: Node) -> tuple[type, ...]:
        """The rule types a layer_map or name_map may give this node (kinds without a slot)."""
        return self.rules

    def data_inputs(self, node: Node) -> list[Node]:
        """The inputs whose values (not only shape or dtype) the output is computed from: relevance can flow to
        these alone. `x.expand_as(y)` reads only y's shape."""
        if node.op.rstrip("_").endswith("_as") and node.args and isinstance(node.args[0], Node):
            return [node.args[0]]
        return node.inputs()

    def recomputable(self, node: Node) -> bool:
        """Its value may be dropped after its last reader in the forward pass and computed again from its inputs
        when the relevance pass asks (activations, embedding lookups): every layer's z is kept anyway."""
        return False

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        """The node's output from its arguments' values; `state` is the engine's forward pass (values, layer
        weights in the compute dtype, whether the C++ core may compute it)."""
        return node.call(*args, **kwargs)

    def attention_output(self, node: Node) -> bool:
        """Its output is an attention's heads' values, [B, heads, tokens, dim]: explain(layers=True) reports each
        head's share of its relevance."""
        return False

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        """(input node, its relevance) for each input that the relevance `r` at the node's output reaches, under
        `rule`; `state` is the engine's relevance pass (values, weights, kernels). Kinds whose rule is Pass or
        Norm leave this to the engine."""
        raise NotImplementedError(f"layer kind '{self.name}' has no relevance step of its own")

    def __repr__(self) -> str:
        return f"<layer kind {self.name}>"


class _Structural(LayerKind):
    def __init__(self, name: str, carries: bool = True):
        self.name = name  # type: ignore[misc]
        self.carries = carries  # type: ignore[misc]


# The composite slots of the kinds that take a linear rule and have weights (dense, convolution).
LINEAR_SLOTS = ("dense", "conv")

INPUT = _Structural("input")
CONSTANT = _Structural("constant", carries=False)  # a tensor attribute of the model used by a functional call
OUTPUT = _Structural("output")
UNSUPPORTED = _Structural("unsupported")


@dataclass
class Node:
    """One operation. `args`/`kwargs` hold Node references and constants, as in the torch.fx node they came from;
    `call` evaluates the operation on concrete values; `params` holds weights and settings normalised at capture."""

    name: str                       # unique name (the fx node name)
    qualified_name: str             # module path ("encoder.conv1") or the function's name, for messages
    kind: LayerKind
    op: str                         # what it is, for tables and messages: "nn.Conv1d", "F.relu", "Tensor.view"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    call: Callable[..., Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    module_type: type | None = None
    hint: str = ""                  # for UNSUPPORTED: how to proceed
    note: str = ""                  # canonization that touched it ("BatchNorm 'bn1' folded in")

    @property
    def method(self) -> str | None:
        """The Tensor method a method call calls, as written ("transpose", "mul_"); None for anything else."""
        return self.op.removeprefix("Tensor.") if self.op.startswith("Tensor.") else None

    def inputs(self) -> list[Node]:
        """The nodes among args and kwargs; kept until args or kwargs are replaced (the engine asks per call)."""
        cached = self.__dict__.get("_inputs")
        if cached is not None and cached[0] is self.args and cached[1] is self.kwargs:
            return cached[2]
        found: list[Node] = []

        def visit(a: Any) -> None:
            if isinstance(a, Node):
                found.append(a)
            elif isinstance(a, (list, tuple)):
                for item in a:
                    visit(item)
            elif isinstance(a, dict):
                for item in a.values():
                    visit(item)

        visit(self.args)
        visit(self.kwargs)
        self.__dict__["_inputs"] = (self.args, self.kwargs, found)
        return found


def bind(node: Node, signature: Callable[..., Any]) -> dict[str, Any] | None:
    """The node's arguments by the names of `signature` (a function with the operation's parameters), defaults
    filled in; None where they do not fit it."""
    try:
        bound = inspect.signature(signature).bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[Node]
    output: Node

    @functools.cached_property
    def weight_devices(self) -> set[torch.device]:
        """The devices of the layers' weights (read once: an Explainer captures its graphs again when the model's
        parameters change)."""
        return {p.device for n in self.nodes for p in [n.params.get("weight")] if isinstance(p, torch.Tensor)}

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """Each node's place in the graph's (topological) order, which the relevance pass walks backwards."""
        return {n.name: i for i, n in enumerate(self.nodes)}

    @functools.cached_property
    def readers(self) -> dict[str, list[Node]]:
        """The nodes that read each node's value (its data, LayerKind.data_inputs, not only its shape), each once."""
        readers: dict[str, list[Node]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for name in dict.fromkeys(a.name for a in n.kind.data_inputs(n)):
                readers[name].append(n)
        return readers

    def kept(self, key: str, work_out: Callable[[], Any]) -> Any:
        """What `work_out()` derives from this graph alone, worked out at the first call for `key` and kept on the
        graph (the engine and the layer kinds walk the same graph at every explanation)."""
        kept = self.__dict__.get(key)
        if kept is None:
            kept = self.__dict__[key] = work_out()
        return kept

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for a in n.inputs():
                users[a.name].append(n)
        return users

    def carrying(self) -> set[str]:
        """Nodes that can carry relevance: float inputs (an input read by an embedding holds token ids),
        embedding outputs, and everything computed from them. The rest is shape and mask arithmetic."""
        ids = {n.inputs()[0].name for n in self.nodes
               if n.kind.reads_ids and n.inputs() and n.inputs()[0].kind is INPUT}
        carry: set[str] = set()
        for n in self.nodes:
            if (n.kind is INPUT and n.name not in ids and not n.params.get("integer")) or n.kind.reads_ids:
                carry.add(n.name)
            elif n.kind not in (INPUT, CONSTANT) and n.kind.carries and any(a.name in carry
                                                                             for a in n.kind.data_inputs(n)):
                carry.add(n.name)
        return carry

    def first_layers(self) -> set[str]:
        """Every dense/conv node that reads the model input: directly, through an embedding, or through operations
        that only rearrange, shift or scale it by constants (the three parallel convolutions of a Kim CNN are all
        first layers). A node that mixes the input with computed features (a concatenation skip, a residual sum)
        does not pass the input on, so the layers after it are not first layers."""
        carrying = self.carrying()
        reached: set[str] = {n.name for n in self.inputs}
        first: set[str] = set()
        for n in self.nodes:
            if n.kind is INPUT:
                continue
            carried = [a for a in n.kind.data_inputs(n) if a.name in carrying or a.kind is INPUT]
            if not carried or not all(a.name in reached for a in carried):
                continue
            if n.kind.slot in LINEAR_SLOTS:
                first.add(n.name)
            elif n.kind.reads_ids or n.kind.keeps_input:
                reached.add(n.name)
        return first
