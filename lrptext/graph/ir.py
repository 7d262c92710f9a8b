"""The graph IR: nodes in topological order, each with the kind that decides how relevance crosses it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.Enum):
    INPUT = "input"
    CONSTANT = "constant"          # a tensor attribute of the model used by a functional call
    OUTPUT = "output"
    DENSE = "dense"                # Linear, F.linear
    CONV = "conv"                  # Conv1d/2d, F.conv1d/2d
    EMBEDDING = "embedding"        # token ids -> vectors
    EMBEDDING_BAG = "embedding_bag"
    BATCHNORM = "batchnorm"        # left when it could not be folded into the layer before it
    PASS = "pass"                  # element-wise activations, dropout, identity, contiguous
    RESHAPE = "reshape"            # view, reshape, flatten, squeeze, unsqueeze: relevance reshaped back
    MOVE = "move"                  # permute, transpose, cat, stack, indexing, expand: relevance routed back
    ADD = "add"                    # residual and bias additions (Norm rule)
    SCALE = "scale"                # multiplication or division by a constant (relevance passes)
    MAX_DIM = "max_dim"            # torch.max(x, dim) / amax: winner-take-all
    ITEM = "item"                  # .values / [0] of torch.max(x, dim)
    POOL = "pool"                  # max / avg / adaptive pooling
    REDUCE = "reduce"              # sum / mean over dimensions (Norm rule)
    META = "meta"                  # shapes, sizes, masks: values that carry no relevance
    UNSUPPORTED = "unsupported"


# Kinds that take a linear rule (and rule-modified weights).
LINEAR_KINDS = (Kind.DENSE, Kind.CONV)


@dataclass
class Node:
    """One operation. `args`/`kwargs` hold Node references and constants, as in the torch.fx node they came from;
    `call` evaluates the operation on concrete values; `params` holds weights and layer settings."""

    name: str                       # unique name (the fx node name)
    qualified_name: str             # module path ("encoder.conv1") or the function's name, for messages
    kind: Kind
    op: str                         # what it is, for tables and messages: "nn.Conv1d", "F.relu", "Tensor.view"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    call: Callable[..., Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    module_type: type | None = None
    hint: str = ""                  # for UNSUPPORTED: how to proceed
    note: str = ""                  # canonization that touched it ("BatchNorm 'bn1' folded in")

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


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[Node]
    output: Node

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
               if n.kind in (Kind.EMBEDDING, Kind.EMBEDDING_BAG) and n.inputs() and n.inputs()[0].kind == Kind.INPUT}
        carry: set[str] = set()
        for n in self.nodes:
            if (n.kind == Kind.INPUT and n.name not in ids) or n.kind in (Kind.EMBEDDING, Kind.EMBEDDING_BAG):
                carry.add(n.name)
            elif n.kind not in (Kind.INPUT, Kind.CONSTANT, Kind.META) and any(a.name in carry for a in n.inputs()):
                carry.add(n.name)
        return carry

    def first_layers(self) -> set[str]:
        """Every dense/conv node that consumes the model input: reached from an input without crossing another
        dense/conv node (the three parallel convolutions of a Kim CNN are all first layers)."""
        first: set[str] = set()
        reached: set[str] = {n.name for n in self.inputs}
        for n in self.nodes:
            if n.kind == Kind.INPUT or not any(a.name in reached for a in n.inputs()):
                continue
            if n.kind in LINEAR_KINDS:
                first.add(n.name)
            else:
                reached.add(n.name)
        return first
