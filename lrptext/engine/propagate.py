"""One explanation: a forward pass over the graph that records every node's value, then the relevance pass in
reverse topological order, one kernel call (or one vectorised torch step) per node.

A node "carries" relevance when its value is a floating tensor computed from a model input (token ids reach
float values through an embedding); only carrying nodes receive relevance. Masks and shapes computed from token
ids therefore pass through any operation, while an operation without a rule that relevance must cross raises
UnsupportedLayerError.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrptext import kernels
from lrptext.engine.assign import unsupported_error
from lrptext.engine.max_pool import max_pool, per_axis
from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import LINEAR_KINDS, Graph, Kind, Node
from lrptext.kernels import dispatch, native
from lrptext.kernels.torch_backend import stabilize
from lrptext.rules.rule import AlphaBeta, Epsilon, Gamma, Norm, Pass


# Multiply-adds below which the C++ core runs a product on one thread, and from which it splits a matrix-vector
# product over its threads (exec.h, kParallelFlops).
SPLIT_PRODUCTS = 1 << 21


@dataclass
class Layer:
    """A dense/conv/embedding node's weights in the compute dtype and device, with rule-modified weights."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    prepared: dispatch.Prepared = (None, None)


def _core_forward(lp: Layer, x: torch.Tensor, node: Node) -> torch.Tensor | None:
    """The layer's output computed by the C++ core where that is faster than torch, else None. Small products
    (the digits CNN at batch 1): the core runs them on one thread, where torch wakes its thread pool two or three
    times per layer, 50-100 us each with OMP_WAIT_POLICY=PASSIVE (its 32 -> 64 convolution on one 8x8 image:
    0.13 ms, the core's 0.03 ms). One sample through a wide dense layer: torch's matrix-vector product runs on one
    thread, the core's on all of them (a 20000 -> 512 layer from a cold cache: 2.8 -> 2.0 ms). A 1-d convolution
    of stride 1 (a text CNN's), which the core runs as one GEMM per tap without a column matrix: torch's took
    1.0-1.4x the core's time at 1 to 64 sequences (300 -> 100 channels over 400 tokens, kernel 3: 1.19 -> 0.86 ms
    for one, 34.9 -> 26.7 ms for 64; kernel 5: 0.96 -> 0.88, 43.1 -> 41.8). For 2-d convolutions of one image and
    strided 1-d ones, either was faster by up to 15% depending on the shape, so those stay with torch. So do the 3x3
    ones of stride 1 that the core's relevance passes compute by Winograd's algorithm, though its forward pass took
    0.74x torch's time on VGG-16 at batch 4: activations rounded otherwise than the model's own moved the benchmark's
    VGG-16 relevance by 3e-2 of its largest value at batch 1 (the core's direct sums as much), as there the input's
    relevance is a 1e-6 residue of the logit (float32 torch itself is 3.7e-2 from float64's answer)."""
    w = lp.weight
    if not x.is_cpu:
        return None
    if node.kind == Kind.DENSE:
        if x.dim() != 2 or (x.shape[0] != 1 and x.shape[0] * w.numel() >= SPLIT_PRODUCTS):
            return None
        return native.dense_forward(x.contiguous(), w, lp.bias)
    p = node.params
    if x.dim() != w.dim():
        return None
    shifted = w.dim() == 3 and tuple(p["stride"]) == (1,) and p["groups"] == 1
    if not shifted and x.numel() * w.numel() >= SPLIT_PRODUCTS * x.shape[1] * math.prod(p["stride"]):
        return None  # input positions x weights / in_channels / stride: the product's multiply-adds
    if w.dim() == 4:
        return native.conv2d_forward(x.contiguous(), w, lp.bias, stride=tuple(p["stride"]),
                                     padding=tuple(p["padding"]), dilation=tuple(p["dilation"]), groups=p["groups"])
    y = native.conv2d_forward(x.contiguous()[:, :, None], w[:, :, None], lp.bias, stride=(1,) + tuple(p["stride"]),
                              padding=(0,) + tuple(p["padding"]), dilation=(1,) + tuple(p["dilation"]),
                              groups=p["groups"])
    return y[:, :, 0]


def substitute(a: Any, values: dict[str, Any]) -> Any:
    if isinstance(a, Node):
        return values[a.name]
    if isinstance(a, (list, tuple)):
        return type(a)(substitute(x, values) for x in a)
    if isinstance(a, dict):
        return {k: substitute(v, values) for k, v in a.items()}
    return a


def contiguous_input(node: Node, x: Any, values: dict[str, Any]) -> Any:
    """A layer's input made contiguous once: the copy replaces the input node's value, so that the other layers
    reading it (a Kim CNN's parallel convolutions over one transposed embedding, 0.2 ms per copy) and the relevance
    pass reuse it."""
    if not isinstance(x, torch.Tensor) or x.is_contiguous():
        return x
    x = x.contiguous()
    if isinstance(node.args[0], Node):
        values[node.args[0].name] = x
    return x


def _is_float_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


# ---------------------------------------------------------------------------------------------- forward


def _forward_node(node: Node, args: tuple, kwargs: dict, layer: Callable[[Node], Layer], core: bool) -> Any:
    """The node's output; `core`: the C++ core may compute dense, conv and max-pool nodes where it is faster."""
    p = node.params
    if node.kind in LINEAR_KINDS:
        lp, x = layer(node), args[0]
        if core and (y := _core_forward(lp, x, node)) is not None:
            return y
        if node.kind == Kind.DENSE:
            return F.linear(x, lp.weight, lp.bias)
        conv = F.conv1d if lp.weight.dim() == 3 else F.conv2d
        return conv(x, lp.weight, lp.bias, p["stride"], p["padding"], p["dilation"], p["groups"])
    if node.kind == Kind.EMBEDDING:
        return F.embedding(args[0], layer(node).weight, p["padding_idx"])
    if node.kind == Kind.EMBEDDING_BAG:
        bound = _bind(_bag_signature, args, kwargs)
        return F.embedding_bag(bound["input"], layer(node).weight, bound["offsets"], mode=p["mode"],
                               per_sample_weights=bound["per_sample_weights"], padding_idx=p["padding_idx"],
                               include_last_offset=p["include_last_offset"])
    if node.kind == Kind.BATCHNORM:
        scale, shift = _batchnorm_affine(node, args[0])
        return args[0] * scale + shift
    if node.kind == Kind.POOL:
        mode, dims, settings = _pool_spec(node, args, kwargs)
        if mode == "max" and (pooled := max_pool(args[0], dims, settings, core)) is not None:
            return pooled
    return node.call(*args, **kwargs)


def _batchnorm_affine(node: Node, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale·x + shift, broadcast over the channel axis (1)."""
    p = node.params
    scale = (p["var"].to(x) + p["eps"]).rsqrt()
    if p["weight"] is not None:
        scale = scale * p["weight"].to(x)
    shift = -p["mean"].to(x) * scale + (p["bias"].to(x) if p["bias"] is not None else 0)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return scale.reshape(shape), shift.reshape(shape)


# Element-wise activations that are computed again in the relevance pass rather than kept from the forward pass:
# the layer after one keeps its input alive otherwise, and every layer's z is kept anyway (the rules divide by it),
# so keeping both held two copies of every activation (autograd keeps one).
# Deterministic ones only, by name ("nn.ReLU", "F.relu", "Tensor.relu_"): RReLU, for one, samples in training mode.
_RECOMPUTED_ACTIVATIONS = {"relu", "leakyrelu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softplus"}
# Smaller activations are kept: computing one again (a module call and its bookkeeping, ~10 us) costs more than its
# memory is worth (the digits CNN at batch 1: three of them, 25 KiB).
_RECOMPUTED_FROM = 1 << 13  # elements


def _activation_name(node: Node) -> str:
    """The operation's name in lower case without the module or in-place mark: nn.ReLU, F.relu, Tensor.relu_: relu."""
    return node.op.rsplit(".", 1)[-1].lower().rstrip("_")


def _recomputable(node: Node) -> bool:
    """An activation, or an embedding's lookup (a text CNN's is read once, through a transpose whose contiguous
    copy the convolutions take: the lookup itself is then held for nothing)."""
    if node.kind == Kind.EMBEDDING:
        return True
    return node.kind == Kind.PASS and len(node.inputs()) == 1 and _activation_name(node) in _RECOMPUTED_ACTIVATIONS


def _is_relu(node: Node) -> bool:
    """nn.ReLU, F.relu, torch.relu, Tensor.relu (and their in-place spellings) of one tensor, nothing else."""
    return (_recomputable(node) and _activation_name(node) == "relu"
            and len(node.args) == 1 and not node.kwargs.keys() - {"inplace"})


def _binder(args: tuple, kwargs: dict) -> Callable[[dict[str, Any]], tuple[tuple, dict]]:
    """values -> (args, kwargs) with every Node replaced by its value. Flat arguments (the common case) are filled in
    by position, without substitute's walk over every constant."""
    if any(isinstance(a, (list, tuple, dict)) for a in (*args, *kwargs.values())):
        return lambda values: (substitute(args, values), substitute(kwargs, values))
    slots = [(i, a.name) for i, a in enumerate(args) if isinstance(a, Node)]
    keyword_slots = [(k, a.name) for k, a in kwargs.items() if isinstance(a, Node)]

    def bind(values: dict[str, Any]) -> tuple[tuple, dict]:
        filled = list(args)
        for i, name in slots:
            filled[i] = values[name]
        if not keyword_slots:
            return tuple(filled), kwargs
        keywords = dict(kwargs)
        for k, name in keyword_slots:
            keywords[k] = values[name]
        return tuple(filled), keywords

    return bind


@dataclass(frozen=True)
class Step:
    """A node with what the graph alone decides about its forward pass, worked out once per graph."""

    node: Node
    reads: tuple[str, ...]  # the nodes among its arguments
    frees: tuple[str, ...]  # recomputable values (activations, lookups) it reads last: dropped after it runs
    from_input: bool        # computed from a model input, whatever the dtype (token ids, masks)
    arguments: Callable[[dict[str, Any]], tuple[tuple, dict]]


def plan(graph: Graph) -> dict[str, Step]:
    """Every node's Step in topological order, kept on the graph (the engine walks the same graph every call)."""
    cached = graph.__dict__.get("_plan")
    if cached is not None:
        return cached
    last_reader = {a.name: node.name for node in graph.nodes for a in node.inputs()}
    from_input: set[str] = set()
    steps: dict[str, Step] = {}
    for node in graph.nodes:
        reads = tuple(a.name for a in node.inputs())
        if node.kind == Kind.INPUT or (node.kind != Kind.CONSTANT and any(r in from_input for r in reads)):
            from_input.add(node.name)
        frees = () if node.kind == Kind.OUTPUT else tuple(dict.fromkeys(
            a.name for a in node.inputs() if last_reader[a.name] == node.name and _recomputable(a)))
        steps[node.name] = Step(node, reads, frees, node.name in from_input, _binder(node.args, node.kwargs))
    graph.__dict__["_plan"] = steps
    return steps


class Values(dict):
    """Every node's value by name; an activation dropped after its last use in the forward pass is computed
    again from its input by `compute(node, args, kwargs)` (as in the forward pass) when the relevance pass asks."""

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
        self.dropped.discard(name)


def forward(graph: Graph, inputs: tuple[Any, ...], rules: dict[str, Any], layer: Callable[[Node], Layer],
            core: bool = False) -> tuple[Values, set[str]]:
    """Every node's value, and the names of the nodes that carry relevance. `core`: see _forward_node."""
    steps = plan(graph)
    values = Values(steps, lambda node, args, kwargs: _forward_node(node, args, kwargs, layer, core))
    carries: set[str] = set()  # floating values that relevance flows through
    given = dict(zip((n.name for n in graph.inputs), inputs))
    for step in steps.values():
        node = step.node
        if node.kind == Kind.INPUT:
            value = given[node.name]
        elif node.kind == Kind.CONSTANT:
            value = node.params["value"]
        else:
            args, kwargs = step.arguments(values)
            if node.kind in LINEAR_KINDS and args:
                args = (contiguous_input(node, args[0], values),) + args[1:]
            value = args[0] if node.kind == Kind.OUTPUT else _forward_node(node, args, kwargs, layer, core)
            for name in step.frees:
                if not isinstance(values[name], torch.Tensor) or values[name].numel() >= _RECOMPUTED_FROM:
                    del values[name]
                    values.dropped.add(name)
        values[node.name] = value
        if node.kind == Kind.INPUT or node.kind in (Kind.EMBEDDING, Kind.EMBEDDING_BAG):
            flows = step.from_input
        else:
            flows = any(r in carries for r in step.reads)
        if not flows:
            continue
        if node.kind == Kind.MAX_DIM or _is_float_tensor(value):  # torch.max(x, dim) returns (values, indices)
            carries.add(node.name)
            if node.kind in (Kind.UNSUPPORTED, Kind.META) and not isinstance(rules.get(node.name), (Pass, Norm)):
                raise unsupported_error(node) if node.kind == Kind.UNSUPPORTED else UnsupportedLayerError(
                    f"relevance would have to cross {node.op} at '{node.qualified_name}', which lrptext treats as "
                    "shape or mask arithmetic; see lrptext.support_table(model)")
    return values, carries


# --------------------------------------------------------------------------------------------- signatures


@functools.cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)  # ~30 us each time: a text CNN asked three times per explanation


def _bind(signature: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = _signature(signature).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _bag_signature(input, offsets=None, per_sample_weights=None):  # nn.EmbeddingBag.forward
    pass


def _max_dim_signature(input, dim=None, keepdim=False):  # torch.max / amax / Tensor.max
    pass


def _cat_signature(tensors, dim=0):  # torch.cat / torch.concat
    pass


def _max_pool_signature(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        return_indices=False):
    pass


def _avg_pool_signature(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None):
    pass


def _adaptive_signature(input, output_size, return_indices=False):
    pass


POOL_FUNCTIONS = {
    F.max_pool1d: ("max", 1, _max_pool_signature), F.max_pool2d: ("max", 2, _max_pool_signature),
    F.avg_pool1d: ("avg", 1, _avg_pool_signature), F.avg_pool2d: ("avg", 2, _avg_pool_signature),
    F.adaptive_max_pool1d: ("adaptive_max", 1, _adaptive_signature),
    F.adaptive_max_pool2d: ("adaptive_max", 2, _adaptive_signature),
    F.adaptive_avg_pool1d: ("adaptive_avg", 1, _adaptive_signature),
    F.adaptive_avg_pool2d: ("adaptive_avg", 2, _adaptive_signature),
}


def _pool_spec(node: Node, args: tuple, kwargs: dict) -> tuple[str, int, dict[str, Any]]:
    """(mode, spatial dims, settings) of a pooling module or function call."""
    module = node.call
    if isinstance(module, nn.Module):
        name = type(module).__name__
        mode = ("adaptive_" if name.startswith("Adaptive") else "") + ("max" if "Max" in name else "avg")
        dims = 1 if name.endswith("1d") else 2
        settings = {k: getattr(module, k) for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                                    "count_include_pad", "divisor_override", "return_indices")
                    if hasattr(module, k)}
        return mode, dims, settings
    mode, dims, signature = POOL_FUNCTIONS[node.call]
    settings = _bind(signature, args, kwargs)
    settings.pop("input")
    return mode, dims, settings


# ------------------------------------------------------------------------------------------- relevance


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


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Undo broadcasting: sum a tensor down to `shape`."""
    while t.dim() > len(shape):
        t = t.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and t.shape[i] != 1:
            t = t.sum(i, keepdim=True)
    return t


class Backward:
    """The relevance pass of one explanation."""

    def __init__(self, graph: Graph, rules: dict[str, Any], values: Values, carries: set[str],
                 layer: Callable[[Node], Layer], backend: str, fuse: bool = True):
        self.graph, self.rules, self.values, self.carries = graph, rules, values, carries
        self.steps = plan(graph)
        self.layer, self.backend = layer, backend
        # explain() checks its inputs and its result for NaN/inf once; a check per layer would scan every activation
        # again and, on a GPU, wait for the device at every layer.
        self.kernel_options = {"backend": backend, "check_finite": False}
        # Dense and convolution nodes, most of the calls, skip the public kernels' argument checks: their arguments
        # are this pass's own tensors. The implementation is picked by the device, once per pass.
        self.implementation = None
        # For 1-D token ids of an EmbeddingBag: each token's sample (bag), to sum relevance per sample.
        self.segments: dict[str, torch.Tensor] = {}
        self.fuse = fuse

    def run(self, initial: torch.Tensor, record: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Relevance at the inputs (and per node, when recorded). Every relevance tensor of the pass is its own
        and is not read after the node that takes it, so the layers' kernels may overwrite theirs; `initial`
        included: the caller reads nothing from it afterwards."""
        relevance: dict[str, torch.Tensor] = {}
        sums: dict[str, torch.Tensor] = {}
        source = self.graph.output.args[0]
        relevance[source.name] = initial
        self.implementation = dispatch.implementation("explain", self.backend, initial)
        for node in reversed(self.graph.nodes):
            if node.kind in (Kind.INPUT, Kind.OUTPUT, Kind.CONSTANT) or node.name not in relevance:
                continue
            r = relevance.pop(node.name)
            if record:
                sums[node.qualified_name if node.module_type else node.name] = r.reshape(r.shape[0], -1).sum(1)
            for arg, r_arg in self.node_relevance(node, r):
                # token-id inputs do not carry float values but receive per-token relevance from embeddings
                if r_arg is not None and (arg.name in self.carries or arg.kind == Kind.INPUT):
                    relevance[arg.name] = relevance[arg.name] + r_arg if arg.name in relevance else r_arg
            # Its consumers came before it in this reverse order, so nothing reads this node's output again:
            # activations are freed as the pass goes, as autograd frees its saved tensors.
            self.values.discard(node.name)
        return relevance, sums

    def node_relevance(self, node: Node, r: torch.Tensor) -> list[tuple[Node, torch.Tensor | None]]:
        rule = self.rules.get(node.name)
        kind = node.kind
        # Element-wise nodes always get Pass, sums and means Norm (assign_rules), and a layer_map may give either to
        # an unsupported module: those take these two branches; every other kind has a handler below.
        if isinstance(rule, Pass) and kind not in (Kind.DENSE, Kind.CONV):
            return [(self._carrying_nodes(node)[0], r)]  # needs no values (a dropped activation stays dropped)
        if kind == Kind.POOL and (fused := self._max_pool_of_dropped_relu(node, r)) is not None:
            return fused
        if kind in LINEAR_KINDS and (relu := self._dropped_relu_read_by_rule(node, rule)) is not None:
            args, kwargs = (self.values[relu.args[0].name],), {}  # its pre-activation, not the ReLU again
        else:
            args, kwargs = self.steps[node.name].arguments(self.values)
        if kind in LINEAR_KINDS and not isinstance(rule, (Epsilon, Gamma)):
            out = None  # rules other than these do not read z: it is freed before the kernel takes its buffers
            self.values.discard(node.name)
        else:
            out = self.values[node.name]
        if isinstance(rule, Norm) and kind in (Kind.UNSUPPORTED, Kind.PASS, Kind.ADD, Kind.REDUCE):
            return self._norm(node, args, kwargs, r, rule.stabilizer)
        handler = getattr(self, f"_{kind.value}", None)
        if handler is None:
            raise unsupported_error(node)
        return handler(node, args, kwargs, out, r, rule)

    def _carrying_nodes(self, node: Node) -> list[Node]:
        return [a for a in node.inputs() if a.name in self.carries]

    # linear layers ------------------------------------------------------------------------------------
    def _embedding_source(self, node: Node) -> Node | None:
        """The embedding whose output this dense/conv node reads with the embedding axis as its input channels
        (directly, or through a transpose for a conv1d): its input relevance is then only needed per token."""
        if not self.fuse:
            return None
        src = node.args[0]
        if node.kind == Kind.DENSE and src.kind == Kind.EMBEDDING:
            return src
        if node.kind != Kind.CONV or src.kind != Kind.MOVE or not isinstance(src.args[0], Node):
            return None
        emb = src.args[0]
        if emb.kind != Kind.EMBEDDING or self.values[src.name].dim() != 3 or src.kwargs:  # the lookup may be dropped
            return None
        dims = tuple(d % 3 for d in src.args[1:] if isinstance(d, int))
        swaps = src.op.endswith("transpose") and sorted(dims) == [1, 2]
        permutes = src.op.endswith("permute") and dims in ((0, 2, 1),)
        return emb if swaps or permutes else None

    def _to_tokens(self, emb: Node, rel: torch.Tensor) -> list[tuple[Node, torch.Tensor]]:
        """Per-token relevance delivered straight to the embedding's ids (padding tokens get none)."""
        padding_idx = emb.params["padding_idx"]
        if padding_idx is not None:
            rel = rel.masked_fill(self.values[emb.args[0].name] == padding_idx, 0.0)
        return [(emb.args[0], rel)]

    def _dropped_relu(self, source: Any) -> Node | None:
        """`source` when it is a ReLU whose output the forward pass dropped and whose kept input z is on the CPU,
        where the C++ kernels can read relu(z) themselves: the activation is then not computed again (VGG-16 batch
        4: 51 MiB at the peak, and a pass over it)."""
        if (self.implementation is not native or not isinstance(source, Node) or source.name not in self.values.dropped
                or not _is_relu(source)):
            return None
        z = self.values[source.args[0].name]
        return source if isinstance(z, torch.Tensor) and z.is_cpu else None

    def _dropped_relu_read_by_rule(self, node: Node, rule: Any) -> Node | None:
        """The dropped ReLU a layer reads (conv -> ReLU -> conv) under a rule whose kernel can take its
        pre-activation instead (epsilon, gamma, alpha-beta), or None."""
        return self._dropped_relu(node.args[0]) if isinstance(rule, (Epsilon, Gamma, AlphaBeta)) and node.args else None

    def _layer_input(self, node: Node, args: tuple, rule: Any) -> tuple[torch.Tensor, bool]:
        """(x, relu_input): the layer's input, made contiguous once, or the pre-activation of its dropped ReLU."""
        if self._dropped_relu_read_by_rule(node, rule) is not None:
            return args[0], True
        return contiguous_input(node, args[0], self.values), False

    def _dense(self, node, args, kwargs, out, r, rule):
        lp = self.layer(node)
        z = out if isinstance(rule, (Epsilon, Gamma)) else None
        emb = self._embedding_source(node)
        x, relu_input = self._layer_input(node, args, rule)
        rel = dispatch.dense(self.implementation, x, lp.weight, lp.bias, r, rule=rule, z=z, prepared=lp.prepared,
                             reduce_channels=emb is not None, check_finite=False, relevance_writable=True,
                             relu_input=relu_input)
        return self._to_tokens(emb, rel) if emb is not None else [(node.args[0], rel)]

    def _conv(self, node, args, kwargs, out, r, rule):
        lp, p = self.layer(node), node.params
        z = out if isinstance(rule, (Epsilon, Gamma)) else None
        emb = self._embedding_source(node)
        x, relu_input = self._layer_input(node, args, rule)
        rel = dispatch.conv(self.implementation, x, lp.weight, lp.bias, r, stride=p["stride"], padding=p["padding"],
                            dilation=p["dilation"], groups=p["groups"], rule=rule, z=z, prepared=lp.prepared,
                            reduce_channels=emb is not None, check_finite=False, relevance_writable=True,
                            relu_input=relu_input)
        return self._to_tokens(emb, rel) if emb is not None else [(node.args[0], rel)]

    def _embedding(self, node, args, kwargs, out, r, rule):
        weight = self.layer(node).weight
        rel = kernels.embedding_relevance(args[0], r, num_embeddings=weight.shape[0],
                                          padding_idx=node.params["padding_idx"], **self.kernel_options)
        return [(node.args[0], rel)]

    def _embedding_bag(self, node, args, kwargs, out, r, rule):
        bound = _bind(_bag_signature, args, kwargs)
        ids, offsets = bound["input"], bound["offsets"]
        if node.params["include_last_offset"] and offsets is not None:
            offsets = offsets[:-1]
        rel = kernels.embedding_bag_relevance(ids, self.layer(node).weight, r, offsets=offsets,
                                              mode=node.params["mode"], per_sample_weights=bound["per_sample_weights"],
                                              padding_idx=node.params["padding_idx"], stabilizer=rule.stabilizer,
                                              **self.kernel_options)
        ids_node = node.args[0] if node.args else node.kwargs["input"]
        if ids.dim() == 1 and offsets is not None:
            lengths = torch.diff(offsets, append=offsets.new_tensor([ids.shape[0]]))
            self.segments[ids_node.name] = torch.repeat_interleave(torch.arange(len(offsets), device=ids.device), lengths)
        return [(ids_node, rel)]

    def _batchnorm(self, node, args, kwargs, out, r, rule):
        scale, _ = _batchnorm_affine(node, args[0])
        return [(node.args[0], args[0] * scale * r / stabilize(out, rule.epsilon))]

    # relevance-preserving movement ---------------------------------------------------------------------
    def _reshape(self, node, args, kwargs, out, r, rule):
        return [(node.args[0], r.reshape(args[0].shape))]

    def _move(self, node, args, kwargs, out, r, rule):
        if node.call in (torch.cat, torch.concat) and (parts := self._cat_parts(node, args, kwargs, r)) is not None:
            return parts
        return self._routed(node, args, kwargs, lambda y: r)

    def _cat_parts(self, node, args, kwargs, r):
        """Each input's slice of r (autograd took 0.2 ms for a Kim CNN's concatenation); None for what the
        general route handles (other spellings of the arguments, torch's legacy empty 1-D pieces)."""
        try:
            tensors, dim = _bind(_cat_signature, args, kwargs).values()
            nodes = _bind(_cat_signature, node.args, node.kwargs)["tensors"]
        except TypeError:
            return None
        if not all(isinstance(t, torch.Tensor) and t.dim() == r.dim() for t in tensors):
            return None
        parts = r.split([t.shape[dim] for t in tensors], dim)
        return [(n, part) for n, part in zip(nodes, parts) if isinstance(n, Node) and n.name in self.carries]

    def _item(self, node, args, kwargs, out, r, rule):
        return [(node.args[0], r)]

    def _scale(self, node, args, kwargs, out, r, rule):
        carrying = self._carrying_nodes(node)
        if len(carrying) != 1 or (node.call in (operator.truediv, torch.div) and node.args[0] is not carrying[0]):
            raise UnsupportedLayerError(
                f"{node.op} at '{node.qualified_name}' multiplies or divides relevance-carrying tensors; lrptext passes "
                "relevance through multiplication by constants only (gating and attention need their own rule)")
        return [(carrying[0], _sum_to(r, self.values[carrying[0].name].shape))]

    def _routed(self, node, args, kwargs, grad_out):
        flat: list[Any] = []
        _flatten((args, kwargs), flat)
        flat_nodes: list[Any] = []
        _flatten((node.args, node.kwargs), flat_nodes)
        carrying = [i for i, a in enumerate(flat_nodes) if isinstance(a, Node) and a.name in self.carries]
        grads = _vjp(node, args, kwargs, carrying, grad_out, flat)
        return [(flat_nodes[i], g) for i, g in zip(carrying, grads)]

    # proportional split (Norm) -------------------------------------------------------------------------
    def _norm(self, node, args, kwargs, r, stabilizer):
        parts = self._routed(node, args, kwargs, lambda y: r / stabilize(y, stabilizer))
        return [(a, None if g is None else self.values[a.name] * g) for a, g in parts]

    # winner-take-all and pooling -------------------------------------------------------------------------
    def _max_dim(self, node, args, kwargs, out, r, rule):
        bound = _bind(_max_dim_signature, args, kwargs)
        dim = bound["dim"]
        if isinstance(dim, (tuple, list)):
            if len(dim) != 1:
                raise UnsupportedLayerError(f"{node.op} over several dimensions at '{node.qualified_name}' is not "
                                            "supported; take the maximum over one dimension at a time")
            dim = dim[0]
        if dim is None:
            raise UnsupportedLayerError(f"{node.op} without a dimension at '{node.qualified_name}' (a global maximum "
                                        "over all elements) is not supported; give dim=")
        if bound["keepdim"]:
            r = r.squeeze(dim)
        return [(node.args[0], kernels.global_max_relevance(args[0], r, dim=dim, **self.kernel_options))]

    def _pool(self, node, args, kwargs, out, r, rule):
        mode, dims, s = _pool_spec(node, args, kwargs)
        if s.get("ceil_mode") or s.get("return_indices"):
            raise UnsupportedLayerError(f"{node.op} at '{node.qualified_name}' uses ceil_mode or return_indices, which "
                                        "lrptext's pooling kernels do not support")
        x = args[0]
        if mode == "max" and x.dim() == dims + 2 and not any(per_axis(s["padding"], dims)):
            # Every window lies inside the input: the public kernel's geometry check has nothing to refuse here,
            # and its argument checks were a third of this node's time at batch 1.
            return [(node.args[0], self._windows_inside(self.implementation, x, r, dims, s, relu_input=False))]
        fn = getattr(kernels, f"{mode}_pool{dims}d_relevance")
        if mode.startswith("adaptive"):
            extra = {"stabilizer": rule.stabilizer} if mode == "adaptive_avg" else {}
            return [(node.args[0], fn(x, r, **self.kernel_options, **extra))]
        window = {"kernel_size": s["kernel_size"], "stride": s["stride"] or s["kernel_size"], "padding": s["padding"]}
        if mode == "max":
            window["dilation"] = s["dilation"]
        else:
            window["count_include_pad"] = s["count_include_pad"]
            window["stabilizer"] = rule.stabilizer
            if dims == 2:
                window["divisor_override"] = s.get("divisor_override")
        return [(node.args[0], fn(x, r, **self.kernel_options, **window))]

    def _max_pool_of_dropped_relu(self, node: Node, r: torch.Tensor) -> list[tuple[Node, torch.Tensor]] | None:
        """Max pooling of a ReLU's output that the forward pass dropped (conv -> ReLU -> max pool, as in VGG): the
        C++ kernel pools relu(z) from the kept z, so the activation is never computed again (VGG-16 batch 4: 51 MiB
        and a pass over it). None where that does not apply."""
        if not isinstance(node.call, nn.Module) or len(node.args) != 1 or node.kwargs:
            return None
        if (source := self._dropped_relu(node.args[0])) is None:
            return None
        z = self.values[source.args[0].name]
        mode, dims, s = _pool_spec(node, (z,), {})
        if (mode != "max" or z.dim() != dims + 2 or any(per_axis(s["padding"], dims))
                or any(d != 1 for d in per_axis(s["dilation"], dims)) or s.get("ceil_mode") or s.get("return_indices")):
            return None
        return [(source, self._windows_inside(native, z, r, dims, s, relu_input=True))]

    @staticmethod
    def _windows_inside(impl: Any, x: torch.Tensor, r: torch.Tensor, dims: int, s: dict[str, Any],
                        relu_input: bool) -> torch.Tensor:
        """Max-pooling relevance through windows without padding (pooling settings `s`), past the public checks."""
        kernel = per_axis(s["kernel_size"], dims)
        return dispatch.pool(impl, x, r, mode="max", kernel=kernel, stride=per_axis(s["stride"] or kernel, dims),
                             padding=(0,) * dims, dilation=per_axis(s["dilation"], dims), adaptive=False,
                             count_include_pad=True, divisor_override=0, stabilizer=0.0, check_finite=False,
                             relu_input=relu_input)

    def _unsupported(self, node, args, kwargs, out, r, rule):
        raise unsupported_error(node)

    def _meta(self, node, args, kwargs, out, r, rule):
        raise unsupported_error(node)
