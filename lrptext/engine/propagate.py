"""One explanation: a forward pass over the graph that records every node's value, then the relevance pass in
reverse topological order, one layer kind's step per node (lrptext/layers/).

A node "carries" relevance when its value is a floating tensor computed from a model input (token ids reach
float values through an embedding); only carrying nodes receive relevance. Masks and shapes computed from token
ids therefore pass through any operation, while an operation without a rule that relevance must cross raises
UnsupportedLayerError. Relevance that would vanish where it should flow, or come back in another shape than the
value it belongs to, is an error too: a plausible-looking wrong heatmap is worse than none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx.immutable_collections import immutable_list

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import CONSTANT, INPUT, OUTPUT, UNSUPPORTED, Graph, LayerKind, Node
from lrptext.kernels import dispatch
from lrptext.kernels.factored import Factored, multiplied, summed
from lrptext.kernels.torch_backend import stabilize
from lrptext.layers import projections
from lrptext.layers.attention import ATTENTION
from lrptext.layers.identity import IDENTITY
from lrptext.layers.unsupported import unsupported_error
from lrptext.rules.rule import Norm, Pass


@dataclass
class Layer:
    """A node's weights in the compute dtype and device, with rule-modified weights for dense/conv nodes."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    prepared: dispatch.Prepared = (None, None)


def substitute(a: Any, values: dict[str, Any]) -> Any:
    if isinstance(a, Node):
        return values[a.name]
    if isinstance(a, (list, tuple)):
        return type(a)(substitute(x, values) for x in a)
    if isinstance(a, dict):
        return {k: substitute(v, values) for k, v in a.items()}
    return a


_SEQUENCES = (list, tuple, immutable_list)


def _binder(args: tuple, kwargs: dict) -> Callable[[dict[str, Any]], tuple[tuple, dict]]:
    """values -> (args, kwargs) with every Node replaced by its value. Flat arguments (the common case), and flat
    lists or tuples among the positional ones (a view's shape with sizes computed in the graph), are filled in by
    position, without substitute's walk over every constant."""
    def flat(a: Any) -> bool:  # (torch.fx's immutable_list, which captured shapes are, counts as a list)
        return not isinstance(a, (list, tuple, dict)) or (
            type(a) in _SEQUENCES and not any(isinstance(x, (list, tuple, dict)) for x in a))

    if not all(flat(a) for a in args) or any(isinstance(a, (list, tuple, dict)) for a in kwargs.values()):
        return lambda values: (substitute(args, values), substitute(kwargs, values))
    slots = [(i, a.name) for i, a in enumerate(args) if isinstance(a, Node)]
    # (position, its type, its items, where its nodes are) for the sequences that hold nodes
    sequences = [(i, type(a), list(a), [(j, x.name) for j, x in enumerate(a) if isinstance(x, Node)])
                 for i, a in enumerate(args) if isinstance(a, (list, tuple)) and any(isinstance(x, Node) for x in a)]
    keyword_slots = [(k, a.name) for k, a in kwargs.items() if isinstance(a, Node)]

    def bind(values: dict[str, Any]) -> tuple[tuple, dict]:
        filled = list(args)
        for i, name in slots:
            filled[i] = values[name]
        for i, kind, items, inner in sequences:
            items = items.copy()
            for j, name in inner:
                items[j] = values[name]
            filled[i] = items if kind is list else kind(items)
        if not keyword_slots:
            return tuple(filled), kwargs
        keywords = dict(kwargs)
        for k, name in keyword_slots:
            keywords[k] = values[name]
        return tuple(filled), keywords

    return bind


# Recomputable values smaller than this are kept: computing one again (a module call and its bookkeeping) costs
# more than its memory is worth (docs/performance.md).
_RECOMPUTED_FROM = 1 << 13  # elements


@dataclass(frozen=True)
class Step:
    """A node with what the graph alone decides about its forward pass, worked out once per graph."""

    node: Node
    reads: tuple[str, ...]  # the nodes among its arguments
    data_reads: tuple[str, ...]  # those whose values (not only shapes) it reads: relevance can flow from these
    frees: tuple[str, ...]  # recomputable values (activations, lookups) it reads last: dropped after it runs
    from_input: bool        # computed from a model input, whatever the dtype (token ids, masks)
    arguments: Callable[[dict[str, Any]], tuple[tuple, dict]]


def plan(graph: Graph) -> dict[str, Step]:
    """Every node's Step in topological order, kept on the graph."""
    return graph.kept("_plan", lambda: _steps(graph))


def _steps(graph: Graph) -> dict[str, Step]:
    last_reader = {a.name: node.name for node in graph.nodes for a in node.inputs()}
    from_input: set[str] = set()
    steps: dict[str, Step] = {}
    for node in graph.nodes:
        reads = tuple(a.name for a in node.inputs())
        if node.kind is INPUT or (node.kind is not CONSTANT and any(r in from_input for r in reads)):
            from_input.add(node.name)
        frees = () if node.kind is OUTPUT else tuple(dict.fromkeys(
            a.name for a in node.inputs() if last_reader[a.name] == node.name and a.kind.recomputable(a)))
        data_reads = tuple(a.name for a in node.kind.data_inputs(node))
        steps[node.name] = Step(node, reads, data_reads, frees, node.name in from_input,
                                _binder(node.args, node.kwargs))
    return steps


def _constants_apart(graph: Graph, steps: dict[str, Step]) -> tuple[tuple[Node, ...], tuple[Step, ...]]:
    """The graph's constants (its parameters and buffers, a third of an encoder's nodes) and the other steps in
    order, kept on the graph: the forward pass sets the constants' values first instead of stepping through them."""
    return graph.kept("_constants_apart", lambda: (
        tuple(s.node for s in steps.values() if s.node.kind is CONSTANT),
        tuple(s for s in steps.values() if s.node.kind is not CONSTANT)))


class Values(dict):
    """Every node's value by name; a value dropped after its last use in the forward pass is computed again from
    its inputs by `compute(node, args, kwargs)` (as in the forward pass) when the relevance pass asks."""

    def __init__(self, steps: dict[str, Step], compute: Callable[[Node, tuple, dict], Any]):
        super().__init__()
        self._steps = steps
        self._compute = compute
        self.dropped: set[str] = set()

    def __missing__(self, name: str) -> Any:
        if name not in self.dropped:
            raise KeyError(name)
        step = self._steps[name]
        args, kwargs = step.arguments(self)
        self[name] = value = self._compute(step.node, args, kwargs)
        return value

    def discard(self, name: str) -> None:
        self.pop(name, None)
        if self.dropped:
            self.dropped.discard(name)

    def close(self) -> None:
        self._compute = None
        self.dropped.clear()


class ForwardPass:
    """What a layer kind's forward step reads: the values so far, the layers' weights in the compute dtype, and
    whether the C++ core may compute a node where it is faster (`core`)."""

    def __init__(self, graph: Graph, layer: Callable[[Node], Layer], core: bool):
        self.steps = plan(graph)
        self.layer, self.core = layer, core
        self.stacks = projections.stacks(graph, ATTENTION)  # dense layers computed as one product
        self.values = Values(self.steps, lambda node, args, kwargs: node.kind.forward(node, args, kwargs, self))
        self.shapes: dict[str, torch.Size] = {}
        # What forward steps keep for relevance steps beside the values, by node name (attention's log-sum-exp)
        # or (name, form) (an attention mask converted once for all the layers that read it)
        self.saved: dict[Any, Any] = {}
        # What relevance steps work out from the graph, the rules and which nodes carry relevance alone (which
        # steps may fuse), kept with those (forward()) for the next explanation: RelevancePass.planned
        self.plans: dict[Any, Any] = {}

    def close(self) -> None:
        """Ends the pass: its values no longer compute dropped ones again, which needs the pass (a reference
        cycle that only the cycle collector would free, with every activation in it)."""
        self.values.close()


def _carries_value(kind: LayerKind, value: Any) -> bool:
    # (PackedSequence(data, ...), (h_n, c_n)): data; torch.export's aten.split returns a list
    while kind.tuple_output and isinstance(value, (tuple, list)):
        value = value[0]
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _holds_floats(value: Any) -> bool:
    """A tuple or list with a float tensor in it (torch.tensor_split's pieces, torch.sort's values)."""
    return isinstance(value, (tuple, list)) and any(
        (isinstance(v, torch.Tensor) and v.is_floating_point()) or _holds_floats(v) for v in value)


def batch_axes(graph: Graph, inputs: tuple[Any, ...], state: ForwardPass, rules: dict[str, Any],
               layer: Callable[[Node], Layer], core: bool) -> dict[str, int] | None:
    """The axis of each tensor value that holds the batch's samples, for per-sample sums: found by running the
    forward pass again with one sample more (the first, repeated): the one axis that grew by one, from the batch
    size. Shapes alone cannot tell it (a time-first [T, B, H] with T == B looks batch-first), nor can following
    operations one by one without knowing each. Values that do not grow (shared by the batch, or reduced over it)
    and values that merge the samples with another axis ([B * T, D]) have none. None where an input cannot take one
    more sample (not a tensor with the batch first) or the model refuses it."""
    def more(x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            raise TypeError
        return torch.cat([x, x[:1]])

    try:
        probe, _ = forward(graph, tuple(more(x) for x in inputs), rules, layer, core)
    except Exception:  # (an EmbeddingBag's flat ids and offsets, a PackedSequence: no simple sample to add)
        return None
    probe.close()
    batch = inputs[0].shape[0]
    axes: dict[str, int] = {}
    for name, shape in state.shapes.items():
        grown = probe.shapes.get(name)
        if grown is None or len(grown) != len(shape):
            continue
        changed = [i for i, (a, b) in enumerate(zip(shape, grown)) if a != b]
        if len(changed) == 1 and shape[changed[0]] == batch and grown[changed[0]] == batch + 1:
            axes[name] = changed[0]
    return axes


def _signature(inputs: tuple[Any, ...]) -> tuple | None:
    """What decides which values of a graph's forward pass are float tensors: each input's dtype (its number of
    dimensions for good measure); None where an input is not a tensor (its structure could decide it)."""
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        return None
    return tuple((x.dtype, x.dim()) for x in inputs)


def forward(graph: Graph, inputs: tuple[Any, ...], rules: dict[str, Any], layer: Callable[[Node], Layer],
            core: bool = False) -> tuple[ForwardPass, set[str]]:
    """Every node's value (with the shape of every tensor), and the names of the nodes that carry relevance.
    Which nodes carry it, and whether the rules let it through, depends on the graph, the rules and the inputs'
    dtypes only: it is worked out (with the errors it raises) on the first pass for each, and kept on the graph."""
    state = ForwardPass(graph, layer, core)
    values = state.values
    signature = _signature(inputs)
    # (rules, the nodes that carry relevance, the relevance steps' plans) by the rules' id and the input signature
    known: dict[Any, tuple[dict[str, Any], frozenset[str], dict[Any, Any]]] = graph.kept(
        "_carrying", dict)
    cached = known.get((id(rules), signature)) if signature is not None else None
    flow = None if cached is not None and cached[0] is rules else _Flow(rules)
    if flow is None:
        state.plans = cached[2]
    given = dict(zip((n.name for n in graph.inputs), inputs))
    constants, computed = _constants_apart(graph, state.steps)
    for node in constants:  # (no relevance flows to or from them: flow.check has nothing to do)
        values[node.name] = value = node.params["value"]
        if isinstance(value, torch.Tensor):
            state.shapes[node.name] = value.shape
    for step in computed:
        node = step.node
        if node.kind is INPUT:
            value = given[node.name]
        else:
            args, kwargs = step.arguments(values)
            value = args[0] if node.kind is OUTPUT else node.kind.forward(node, args, kwargs, state)
            for name in step.frees:
                if not isinstance(values[name], torch.Tensor) or values[name].numel() >= _RECOMPUTED_FROM:
                    del values[name]
                    values.dropped.add(name)
        values[node.name] = value
        if isinstance(value, torch.Tensor):
            state.shapes[node.name] = value.shape
        if flow is not None:
            flow.check(step, value)
    if flow is None:
        return state, set(cached[1])
    if signature is not None:  # (the rules kept with it: their id stays theirs)
        known[(id(rules), signature)] = rules, frozenset(flow.carries), state.plans
    return state, flow.carries


class _Flow:
    """Which nodes of a forward pass carry relevance, node by node; an error where relevance would reach an
    operation that has no rule for it or cannot take it."""

    def __init__(self, rules: dict[str, Any]):
        self.rules = rules
        self.carries: set[str] = set()  # floating values that relevance flows through
        # Unsupported operations returning several tensors, reached by relevance: a float value read from one is
        # refused
        self.severed: dict[str, Node] = {}

    def check(self, step: Step, value: Any) -> None:
        node, carries, severed = step.node, self.carries, self.severed
        if node.kind is INPUT or node.kind.reads_ids:
            flows = step.from_input
        else:
            flows = any(r in carries for r in step.data_reads)
        if severed and (source := next((severed[r] for r in step.data_reads if r in severed), None)) is not None and (
                _carries_value(node.kind, value) or _holds_floats(value)):
            hint = f"{source.hint}; " if source.hint else ""
            raise UnsupportedLayerError(
                f"no rule for {source.op} at '{source.qualified_name}'; {hint}it returns several tensors, and "
                f"relevance at the float value that {node.op} ('{node.qualified_name}') reads from them could not go "
                "back to its input: it would vanish there; see lrptext.support_table(model)")
        if not flows:
            return
        rule = self.rules.get(node.name)
        if node.kind.holds_constant:
            return
        if _carries_value(node.kind, value):
            carries.add(node.name)
            if rule is None and node.kind is not OUTPUT:
                raise unsupported_error(node)
            if not node.kind.carries:
                raise UnsupportedLayerError(
                    f"relevance would have to cross {node.op} at '{node.qualified_name}', which lrptext treats as "
                    "shape or mask arithmetic; see lrptext.support_table(model)")
        elif node.kind is UNSUPPORTED and rule is None and _holds_floats(value):
            severed[node.name] = node  # (its integer items, torch.sort's indices, are metadata as ever)
        elif node.kind is UNSUPPORTED and isinstance(rule, (Pass, Norm)):
            raise UnsupportedLayerError(
                f"{node.op} at '{node.qualified_name}' returns {type(value).__name__}, not one tensor, so the "
                f"relevance at its output cannot reach its input under {rule!r}: it would vanish there; lrptext has "
                "no rule for it")


# --------------------------------------------------------------------------------------------- relevance


def _vjp(node: Node, args: tuple, kwargs: dict, carrying: list[int], grad_out: Callable[[torch.Tensor], torch.Tensor],
         flat_args: list[Any]) -> list[torch.Tensor | None]:
    """Gradients of the node's output w.r.t. its carrying tensor arguments (positions in flat_args), for the
    output gradient grad_out(y)."""
    with torch.enable_grad():
        leaves = {i: flat_args[i].detach().requires_grad_(True) for i in carrying}
        rebuilt = iter([leaves.get(i, a) for i, a in enumerate(flat_args)])
        new_args = _unflatten(args, rebuilt)
        new_kwargs = _unflatten(kwargs, rebuilt)
        y = node.call(*new_args, **new_kwargs)
        if isinstance(y, tuple):  # torch.max(x, dim) and friends: values first
            y = y[0]
        grads = torch.autograd.grad(y, [leaves[i] for i in carrying], grad_out(y.detach()), allow_unused=True)
    return list(grads)


def _flatten(a: Any, out: list[Any]) -> None:
    if isinstance(a, (list, tuple)):
        for x in a:
            _flatten(x, out)
    elif isinstance(a, dict):
        for x in a.values():
            _flatten(x, out)
    else:
        out.append(a)


def _unflatten(template: Any, items: Any) -> Any:
    if isinstance(template, (list, tuple)):
        return type(template)(_unflatten(x, items) for x in template)
    if isinstance(template, dict):
        return {k: _unflatten(v, items) for k, v in template.items()}
    return next(items)


def _layer_name(node: Node) -> str:
    """A node's name in Explanation.layer_relevance: a module's path ("encoder.layer.0.output.dense"); a function
    that a module of a torch.export graph calls, that path and the node ("encoder.layer.0.output:add_7"); else the
    node's unique name ("add_7")."""
    if node.module_type is not None:
        return node.qualified_name
    if node.qualified_name != node.op:  # torch.export named it after the module that called it
        return f"{node.qualified_name}:{node.name}"
    return node.name


class RelevancePass:
    """The relevance pass of one explanation, and what a layer kind's relevance step reads from it."""

    def __init__(self, graph: Graph, rules: dict[str, Any], state: ForwardPass, carries: set[str], backend: str,
                 fuse: bool = True, bias_factor: float = 0.0):
        self.graph, self.rules, self.carries = graph, rules, carries
        # β: the share of biases (and stabilisers) that is redistributed over a layer's inputs (1: conserving)
        self.bias_factor = bias_factor
        self.values, self.shapes, self.steps, self.layer = state.values, state.shapes, state.steps, state.layer
        # Each value's batch axis (batch_axes), set by the caller where per-node sums are recorded
        self.batch_axes: dict[str, int] | None = None
        self.saved, self._plans = state.saved, state.plans
        self.backend = backend
        # explain() checks its inputs and its result for NaN/inf once; a check per layer would scan every activation
        # again and, on a GPU, wait for the device at every layer.
        self.kernel_options = {"backend": backend, "check_finite": False}
        # Dense and convolution nodes, most of the calls, skip the public kernels' argument checks: their arguments
        # are this pass's own tensors. The implementation is picked by the device, once per pass.
        self.implementation: Any = None
        self.pending: dict[str, Any] = {}  # during run(): the relevance that has reached each node so far
        # For 1-D token ids of an EmbeddingBag: each token's sample (bag), to sum relevance per sample.
        self.segments: dict[str, torch.Tensor] = {}
        self.fuse = fuse  # dense/conv layers over an embedding may return per-token relevance directly
        # Called with (node, input node, relevance) for every relevance a node hands to an input: explain() checks
        # each for NaN/inf there to name the node where they arose.
        self.on_relevance: Callable[[Node, Node, torch.Tensor], None] | None = None
        # With per-node sums recorded: attention's relevance per sample and head, Tensor[B, H] by module path.
        self.head_sums: dict[str, torch.Tensor] = {}

    # services for the layer kinds -----------------------------------------------------------------------
    def planned(self, key: Any, work_out: Callable[[], Any]) -> Any:
        """What `work_out()` decides from the graph, the rules and which nodes carry relevance alone (never from
        values, shapes or this pass's options), worked out at the first explanation that asks and kept for the
        next ones with the same graph, rules and input dtypes. key: what is decided, for which node (and
        anything else the decision depends on, e.g. which of attention's operands receive relevance)."""
        plans = self._plans
        if key not in plans:
            plans[key] = work_out()
        return plans[key]

    def arguments(self, node: Node) -> tuple[tuple, dict]:
        """The node's arguments with every node replaced by its value (dropped values computed again)."""
        return self.steps[node.name].arguments(self.values)

    def shape(self, node: Node) -> torch.Size:
        """The shape of a node's value, without computing a dropped one again."""
        return self.shapes[node.name] if node.name in self.shapes else self.values[node.name].shape

    def accumulator(self, node: Node, like: torch.Tensor, taken: torch.Tensor,
                    factored: bool = False) -> torch.Tensor | Factored | None:
        """The relevance that has reached `node` so far, for a C++ CPU kernel to add its share to in place (returning
        that tensor) instead of a new tensor that run() then adds: the pass owns it, and it is a contiguous tensor
        like `like`, apart from the relevance `taken` that the kernel reads. With `factored`, also factored
        relevance like ⊙ gradient (the identity activation), to add a share's gradient to (in place where it owns
        it). None where there is none yet, or another implementation runs."""
        r = self.pending.get(node.name)
        if factored and isinstance(r, Factored) and r.input is like and r.activation == "identity":
            g = r.gradient
            aliased = r.owned and g.untyped_storage().data_ptr() == taken.untyped_storage().data_ptr()
            fits = g.dtype == like.dtype and g.shape == like.shape and g.is_contiguous() and g.device.type == "cpu"
            return r if fits and not aliased else None
        if (self.implementation is not dispatch.native or not isinstance(r, torch.Tensor) or r.shape != like.shape
                or r.dtype != like.dtype or r.device.type != "cpu" or like.device.type != "cpu"
                or not r.is_contiguous() or r.untyped_storage().data_ptr() == taken.untyped_storage().data_ptr()):
            return None
        return r

    def carrying_inputs(self, node: Node) -> list[Node]:
        return [a for a in node.kind.data_inputs(node) if a.name in self.carries]

    def routed(self, node: Node, grad_out: Callable[[torch.Tensor], torch.Tensor]) -> list[tuple[Node, Any]]:
        """The vector-Jacobian product of the node for the output gradient grad_out(y), at each carrying input."""
        args, kwargs = self.arguments(node)
        flat: list[Any] = []
        _flatten((args, kwargs), flat)
        flat_nodes: list[Any] = []
        _flatten((node.args, node.kwargs), flat_nodes)
        data = {a.name for a in node.kind.data_inputs(node)}
        carrying = [i for i, a in enumerate(flat_nodes) if isinstance(a, Node) and a.name in self.carries
                    and a.name in data]
        grads = _vjp(node, args, kwargs, carrying, grad_out, flat)
        return [(flat_nodes[i], g) for i, g in zip(carrying, grads)]

    def norm(self, node: Node, r: torch.Tensor, stabilizer: float) -> list[tuple[Node, Any]]:
        """The Norm rule: R_i = x_i Σ_j (∂y_j/∂x_i) R_j / st(y_j), for any operation. Where the operation's
        gradient is zero (a saturated activation under a stand-in Norm), a sample's relevance would vanish: an
        error, not a silent zero."""
        gradients = self.routed(node, lambda y: r / stabilize(y, stabilizer))
        parts = [(a, None if g is None else self.values[a.name] * g) for a, g in gradients]
        # a zero input (its share taken by a constant) is no vanishing: a zero gradient is
        given = [g for _, g in gradients if g is not None]
        per_sample = r.dim() > 0 and all(g.dim() and g.shape[0] == r.shape[0] for g in given)
        rows = r.shape[0] if per_sample else 1  # per sample where the batch stays, else over everything
        received = r.reshape(rows, -1).ne(0).any(1)
        passed = torch.zeros_like(received)
        for g in given:
            passed |= g.reshape(rows, -1).ne(0).any(1)
        if bool((received & ~passed).any()):
            sample = int((received & ~passed).nonzero()[0, 0])
            raise UnsupportedLayerError(
                f"relevance vanishes at {node.op} ('{node.qualified_name}') under {self.rules.get(node.name)!r} for "
                f"sample {sample}: its gradient is zero there (saturated or piecewise constant), so the proportional "
                "split passes nothing to its input; Norm() cannot stand in for it")
        return parts

    # the pass ---------------------------------------------------------------------------------------------
    def run(self, initial: torch.Tensor, record: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Relevance at the inputs (and per node, when recorded). Every relevance tensor of the pass is its own
        and is not read after the node that takes it, so the layers' kernels may overwrite theirs; `initial`
        included: the caller reads nothing from it afterwards."""
        relevance: dict[str, torch.Tensor] = {}
        self.pending = relevance
        sums: dict[str, torch.Tensor] = {}
        source = self.graph.output.args[0]
        if source.name not in self.carries:
            raise UnsupportedLayerError(f"the model's output ('{source.qualified_name}', {source.op}) is not computed "
                                        "from its input as a float tensor, so no relevance can reach the input")
        relevance[source.name] = initial
        self.implementation = dispatch.implementation("explain", self.backend, initial)
        for node in _steps_back(self.graph):
            if node.name not in relevance:
                continue
            r = relevance.pop(node.name)
            if record and isinstance(r, Factored):
                r = r.tensor()
            if record and isinstance(r, torch.Tensor) and (per := self._per_sample(node, r, len(initial))) is not None:
                sums[_layer_name(node)] = per
                if node.kind.attention_output(node) and r.dim() == 4 and (
                        self.batch_axes is None or self.batch_axes.get(node.name) == 0):
                    # [B, heads, tokens, dim]
                    self.head_sums[node.qualified_name] = r.sum((2, 3))
            delivered = False
            for arg, r_arg in self.node_relevance(node, r):
                # token-id inputs do not carry float values but receive per-token relevance from embeddings
                if r_arg is None or not (arg.name in self.carries or arg.kind is INPUT):
                    continue
                if arg.name in self.shapes and r_arg.shape != self.shapes[arg.name]:
                    raise UnsupportedLayerError(
                        f"the rule {self.rules.get(node.name)!r} of {node.op} at '{node.qualified_name}' returned "
                        f"relevance of shape {tuple(r_arg.shape)} for its input '{arg.qualified_name}' of shape "
                        f"{tuple(self.shapes[arg.name])}; it cannot stand in for this operation")
                if self.on_relevance is not None and isinstance(r_arg, (torch.Tensor, Factored)):
                    r_arg = multiplied(r_arg)
                    self.on_relevance(node, arg, r_arg)
                if arg.name not in relevance:
                    relevance[arg.name] = r_arg
                elif relevance[arg.name] is not r_arg:  # (a kernel that took accumulator() has added it already)
                    relevance[arg.name] = _sum(relevance[arg.name], r_arg)
                delivered = True
            if not delivered and not node.kind.reads_ids:
                raise UnsupportedLayerError(
                    f"relevance vanishes at {node.op} ('{node.qualified_name}', rule {self.rules.get(node.name)!r}): "
                    "none of it reaches the node's inputs, so the explanation would be silently zero there")
            # Its consumers came before it in this reverse order, so nothing reads this node's output again:
            # activations are freed as the pass goes, as autograd frees its saved tensors.
            self.values.discard(node.name)
        return {name: multiplied(r) for name, r in relevance.items()}, sums

    def _per_sample(self, node: Node, r: torch.Tensor, batch: int) -> torch.Tensor | None:
        """The node's relevance summed per sample, [batch]; None for a tuple output's parts (a recurrent layer's)
        and for a value without an axis of its own per sample (batch_axes), except at batch 1, where a value the
        batch shares (a broadcast parameter such as position embeddings) belongs to the one sample."""
        axis = self.batch_axes.get(node.name) if self.batch_axes is not None else 0  # (no probe: batch first)
        if axis is not None and r.dim() > axis and r.shape[axis] == batch:
            return r.movedim(axis, 0).reshape(batch, -1).sum(1)
        return r.reshape(1, -1).sum(1) if batch == 1 and r.shape[:1] == (1,) else None

    def node_relevance(self, node: Node, r: torch.Tensor) -> list[tuple[Node, torch.Tensor | None]]:
        rule = self.rules.get(node.name)
        kind = node.kind
        # Pass and Norm are rules of the engine: kinds without a relevance step of their own take them, and a
        # layer_map may give them to an unsupported node whose shapes they fit (assign_rules checks which).
        if isinstance(rule, Pass):  # (factored relevance passes as it is: the same R)
            carrying = self.carrying_inputs(node)
            if isinstance(r, Factored) and r.at_output and kind is not IDENTITY:  # its input's value differs
                r = dataclasses.replace(r, at_output=False)
            return [(carrying[0], r)] if carrying else []  # needs no values (a dropped activation stays dropped)
        if not kind.takes_factored:
            r = multiplied(r)
        if isinstance(rule, Norm) and type(kind).relevance is LayerKind.relevance:
            return self.norm(node, r, rule.stabilizer)
        if rule is None:
            raise unsupported_error(node)
        return kind.relevance(node, r, rule, self)


def _steps_back(graph: Graph) -> tuple[Node, ...]:
    """The nodes that may take a relevance step, last first (no inputs, outputs or constants: a third of an
    encoder's nodes are its parameters), kept on the graph."""
    return graph.kept("_steps_back",
                      lambda: tuple(n for n in reversed(graph.nodes) if n.kind not in (INPUT, OUTPUT, CONSTANT)))


def _sum(a: Any, b: Any) -> Any:
    """Two relevances of one node added: factored ones of the same input by their gradients."""
    if isinstance(a, Factored) and isinstance(b, Factored) and (both := summed(a, b)) is not None:
        return both
    return multiplied(a) + multiplied(b)
