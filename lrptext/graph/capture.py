"""torch.fx capture: a model's forward as a Graph of nodes whose layer kind decides how relevance crosses them.

The model is traced, never modified: weights are referenced (read-only); canonization (BatchNorm folding) writes
new tensors. Standard torch.nn modules stay whole (Linear, Conv, GRU...); user modules are traced through, so nodes
keep qualified names such as "encoder.conv1". What each operation is comes from the registry of layer kinds the
caller passes (lrptext.layers.KINDS): this module knows torch.fx, not LRP.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import torch.fx
from torch import nn

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import CONSTANT, INPUT, OUTPUT, UNSUPPORTED, Graph, LayerKind, Node


class LayerKinds(Protocol):
    """The registry capture asks what an operation is (lrptext.layers.KINDS)."""

    def for_module(self, module: nn.Module) -> LayerKind | None: ...
    def for_function(self, function: Callable[..., Any]) -> LayerKind | None: ...
    def for_method(self, name: str) -> LayerKind | None: ...
    def unsupported_hint(self, node: Node, target: Any) -> str: ...
    @property
    def leaf_functions(self) -> tuple[Callable[..., Any], ...]: ...


# In-place operators run out of place: the forward pass records every value, which must stay intact.
IN_PLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}


def function_name(fn: Callable[..., Any]) -> str:
    """"F.relu", "torch.cat", "add", "aten.linear": how tables and messages name a function."""
    if isinstance(fn, torch._ops.OpOverload):  # an operator of a torch.export graph
        return f"aten.{fn.overloadpacket.__name__}"
    module = getattr(fn, "__module__", "") or ""
    name = getattr(fn, "__name__", repr(fn))
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    if module.startswith("torch") or module == "builtins" or module == "_operator":
        return f"torch.{name}" if module.startswith("torch") else name
    return f"{module}.{name}"


def _unsupported(node: Node, kinds: LayerKinds, target: Any) -> Node:
    node.kind = UNSUPPORTED
    node.hint = node.hint or kinds.unsupported_hint(node, target)
    return node


def _module_node(name: str, target: str, module: nn.Module, args: tuple, kwargs: dict, kinds: LayerKinds) -> Node:
    op = f"nn.{type(module).__name__}" if type(module).__module__.startswith("torch.nn") else type(module).__name__
    node = Node(name=name, qualified_name=target, kind=UNSUPPORTED, op=op, args=args, kwargs=kwargs, call=module,
                module_type=type(module))
    kind = kinds.for_module(module)
    if kind is None:
        return _unsupported(node, kinds, module)
    node.kind = kind
    kind.capture_module(node, module)
    return _unsupported(node, kinds, module) if node.kind is UNSUPPORTED else node


def _call_node(node: Node, kind: LayerKind | None, kinds: LayerKinds, target: Any) -> Node:
    if kind is None:
        return _unsupported(node, kinds, target)
    node.kind = kind
    node.kind = kind.capture_call(node)
    return _unsupported(node, kinds, target) if node.kind is UNSUPPORTED else node


def _function_node(name: str, fn: Callable[..., Any], args: tuple, kwargs: dict, kinds: LayerKinds) -> Node:
    if kwargs.get("inplace"):
        kwargs = {**kwargs, "inplace": False}
    fn = IN_PLACE_FUNCTIONS.get(fn, fn)
    node = Node(name=name, qualified_name=function_name(fn), kind=UNSUPPORTED, op=function_name(fn), args=args,
                kwargs=kwargs, call=fn)
    return _call_node(node, kinds.for_function(fn), kinds, fn)


def _out_of_place(method: str) -> str:
    """"mul" for the in-place "mul_"; a method that changes nothing ("view", "__getitem__") as it is."""
    return method[:-1] if method.endswith("_") and not method.startswith("_") else method


def _method_node(name: str, method: str, args: tuple, kwargs: dict, kinds: LayerKinds) -> Node:
    out_of_place = _out_of_place(method)

    def call(self: Any, *rest: Any, **kw: Any) -> Any:
        return getattr(self, out_of_place)(*rest, **kw)

    node = Node(name=name, qualified_name=f"Tensor.{method}", kind=UNSUPPORTED, op=f"Tensor.{method}", args=args,
                kwargs=kwargs, call=call)
    return _call_node(node, kinds.for_method(out_of_place), kinds, out_of_place)


# The check torch.fx adds for an argument traced as None; the caller passes none, so there is nothing to check.
_ASSERT_IS_NONE = getattr(torch.fx._symbolic_trace, "_assert_is_none", None)


def _fetch(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def forward_parameters(model: nn.Module) -> list[inspect.Parameter]:
    """The parameters of model.forward that take tensors (no *args, **kwargs)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in inspect.signature(model.forward).parameters.values() if p.kind in kinds]


def trace(model: nn.Module, present: tuple[str, ...] | None = None,
          leaves: Sequence[Callable[..., Any]] = ()) -> tuple[torch.fx.Graph, nn.Module]:
    """The traced forward and the module its nodes' targets name. `present`: the names of the arguments the caller
    passes (None: all); the others, which must default to None, are traced as absent (`if mask is not None:` takes
    the branch without the mask). `leaves`: Python functions whose calls stay whole, however forward reaches them
    (`nn.utils.rnn.f` or `f`): the modules defining them are patched during the trace, as torch.fx patches `math`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"lrptext explains torch.nn.Module instances, got {type(model).__name__}")
    absent = {}
    if present is not None:
        parameters = forward_parameters(model)
        for p in parameters:
            if p.name in present:
                continue
            if p.default is not None:
                required = [q.name for q in parameters if q.default is inspect.Parameter.empty]
                raise ValueError(f"{type(model).__name__}.forward needs the argument '{p.name}' (its default is not "
                                 f"None); pass one tensor per argument of {required}, None for optional ones")
            absent[p.name] = None
    try:
        modules = tuple(dict.fromkeys(m for m in map(inspect.getmodule, leaves) if m is not None))
        tracer = torch.fx.Tracer(autowrap_modules=(math, *modules), autowrap_functions=tuple(leaves))
        # the graph alone: a GraphModule's generated code would register the leaves' dotted names with torch.fx's
        # wrap, which breaks every later trace in the process
        return tracer.trace(model, concrete_args=absent or None), tracer.root
    except Exception as error:  # torch.fx raises many types; the message says which construct failed
        raise UnsupportedLayerError(
            f"lrptext could not trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}). "
            "Data-dependent control flow (if/for on tensor values) cannot be traced: move it out of forward(), "
            "or explain a submodule that has none"
        ) from error


def _refuse_lost_mutations(traced: torch.fx.Graph, model: str) -> None:
    """An in-place operation whose result nothing reads (`h.mul_(g)`, `x[:, 0] = 0`, `F.relu(x, inplace=True)`)
    changes a tensor that later operations read. lrptext computes every operation out of place, so they would read
    it unchanged: a wrong forward pass and explanation, without a word. Refused, with the rewrite that works."""
    order = {n: i for i, n in enumerate(traced.nodes)}
    for n in traced.nodes:
        if n.users or n.op not in ("call_method", "call_function"):
            continue
        method = n.target if n.op == "call_method" else None
        mutates = (method is not None and _out_of_place(method) != method) or (
            n.target is operator.setitem or n.kwargs.get("inplace") is True)
        changed = n.args[0] if n.args else None
        if mutates and isinstance(changed, torch.fx.Node) and any(order[u] > order[n] for u in changed.users):
            op = method or getattr(n.target, "__name__", str(n.target))
            how = (f"write `h = h.{_out_of_place(method)}(...)`" if method else
                   "index with torch.where or masked_fill, e.g. `x = x.masked_fill(mask, 0)`"
                   if n.target is operator.setitem else "use its result")
            raise UnsupportedLayerError(
                f"{model}.forward changes '{changed.name}' in place ({op}) and reads it afterwards; lrptext computes "
                f"every operation out of place, so the later reads would see it unchanged: {how}")


def capture(model: nn.Module, kinds: LayerKinds, *, present: tuple[str, ...] | None = None,
            canonizers: Sequence[Callable[[Graph], Graph]] = ()) -> Graph:
    """The model's forward as a Graph (the model itself is not changed), each canonizer applied in turn.
    `present`: see trace(); None traces every argument of forward as an input."""
    traced, root = trace(model, present, getattr(kinds, "leaf_functions", ()))
    _refuse_lost_mutations(traced, type(model).__name__)
    parameters = iter(forward_parameters(model))
    nodes: dict[str, Node] = {}
    ordered: list[Node] = []
    inputs: list[Node] = []
    output: Node | None = None
    for fx in traced.nodes:
        parameter = next(parameters, None) if fx.op == "placeholder" else None
        if parameter is not None and present is not None and parameter.name not in present:
            nodes[fx.name] = None  # an argument traced as absent: torch.fx keeps a placeholder that must be None
            continue
        if fx.op == "call_function" and fx.target is _ASSERT_IS_NONE:
            continue
        args = torch.fx.node.map_arg(fx.args, lambda n: nodes[n.name])
        kwargs = torch.fx.node.map_arg(fx.kwargs, lambda n: nodes[n.name])
        if fx.op == "placeholder":
            node = Node(name=fx.name, qualified_name=str(fx.target), kind=INPUT, op="input")
            inputs.append(node)
        elif fx.op == "get_attr":
            node = Node(name=fx.name, qualified_name=str(fx.target), kind=CONSTANT, op="attribute",
                        params={"value": _fetch(root, fx.target)})
        elif fx.op == "call_module":
            node = _module_node(fx.name, str(fx.target), root.get_submodule(fx.target), args, kwargs, kinds)
        elif fx.op == "call_function":
            node = _function_node(fx.name, fx.target, args, kwargs, kinds)
        elif fx.op == "call_method":
            node = _method_node(fx.name, fx.target, args, kwargs, kinds)
        else:  # output
            if not isinstance(args[0], Node):
                raise UnsupportedLayerError(
                    f"{type(model).__name__}.forward returns {type(args[0]).__name__}; lrptext explains a model "
                    "with one tensor output (the logits): wrap it to return the tensor to explain"
                )
            node = Node(name=fx.name, qualified_name="output", kind=OUTPUT, op="output", args=args)
            output = node
        nodes[fx.name] = node
        ordered.append(node)
    assert output is not None  # torch.fx graphs always end in an output node
    graph = Graph(nodes=ordered, inputs=inputs, output=output)
    for canonize in canonizers:
        graph = canonize(graph)
    return graph


def export(model: nn.Module, example: dict[str, torch.Tensor], kinds: LayerKinds, *,
           canonizers: Sequence[Callable[[Graph], Graph]] = ()) -> Graph:
    """The model's forward, called with the keyword tensors of `example`, captured by torch.export: for models
    torch.fx cannot trace (Hugging Face encoders). Every dimension stays dynamic, so one graph serves every batch
    and length. Parameters and buffers become constants read from the model itself; nodes are named after the
    module that ran them ("bert.encoder.layer.0.attention.self.query")."""
    dynamic = {k: {i: torch.export.Dim.AUTO for i in range(v.dim())} for k, v in example.items()}
    try:
        with torch.no_grad():
            exported = torch.export.export(model, (), dict(example), dynamic_shapes=dynamic, strict=False)
    except Exception as error:  # torch.export raises many types; the message says which construct failed
        raise UnsupportedLayerError(f"lrptext could not capture {type(model).__name__} with torch.export "
                                    f"({type(error).__name__}: {str(error)[:500]})") from error
    specs = {spec.arg.name: spec for spec in exported.graph_signature.input_specs if hasattr(spec.arg, "name")}
    nodes: dict[str, Node | None] = {}
    ordered: list[Node] = []
    inputs: list[Node] = []
    output: Node | None = None
    for fx in exported.graph.nodes:
        args = torch.fx.node.map_arg(fx.args, lambda n: nodes[n.name])
        kwargs = torch.fx.node.map_arg(fx.kwargs, lambda n: nodes[n.name])
        if fx.op == "placeholder":
            spec = specs[fx.name]
            if spec.target is None:  # a user input; an integer one (a mask) carries no relevance
                node = Node(name=fx.name, qualified_name=fx.name, kind=INPUT, op="input",
                            params={"integer": not example[fx.name].is_floating_point()})
                inputs.append(node)
            else:  # a parameter, buffer or constant of the model
                node = Node(name=fx.name, qualified_name=spec.target, kind=CONSTANT, op="attribute",
                            params={"value": _constant_of(model, exported, spec.target)})
        elif fx.op == "call_function":
            node = _function_node(fx.name, fx.target, args, kwargs, kinds)
            stack = list((fx.meta.get("nn_module_stack") or {}).values())
            path = stack[-1][0] if stack else ""
            module = _submodule(model, path)
            if module is not None:
                node.qualified_name = path
                if node.kind.modules and isinstance(module, node.kind.modules):  # the module's own operation
                    node.module_type, node.op = type(module), f"nn.{type(module).__name__}"
        elif fx.op == "output":
            result = args[0][0] if isinstance(args[0], (tuple, list)) else args[0]
            if not isinstance(result, Node):
                raise UnsupportedLayerError(f"{type(model).__name__}'s first output is not a tensor computed in "
                                            "forward; lrptext explains the first output (the logits)")
            node = Node(name=fx.name, qualified_name="output", kind=OUTPUT, op="output", args=(result,))
            output = node
        else:
            raise UnsupportedLayerError(f"torch.export produced a '{fx.op}' node, which lrptext does not read")
        nodes[fx.name] = node
        ordered.append(node)
    assert output is not None  # exported graphs always end in an output node
    graph = Graph(nodes=ordered, inputs=inputs, output=output)
    for canonize in canonizers:
        graph = canonize(graph)
    return graph


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    """The module at `path` of torch.export's module stack, or None (an empty or synthetic path)."""
    try:
        return model.get_submodule(path) if path else None
    except AttributeError:
        return None


def _constant_of(model: nn.Module, exported: Any, target: str) -> Any:
    """The model's own parameter or buffer (no copy), or a constant torch.export lifted out of forward."""
    try:
        return _fetch(model, target)
    except AttributeError:
        return exported.constants[target]
