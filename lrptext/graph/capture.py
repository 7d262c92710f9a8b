"""torch.fx capture: a model's forward as a Graph of nodes whose kind decides how relevance crosses them.

The model is traced, never modified: weights are referenced (read-only) and canonization (BatchNorm folding)
writes new tensors. Standard torch.nn modules stay whole (Linear, Conv, GRU...); user modules are traced through,
so nodes keep qualified names such as "encoder.conv1".
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.canonize import canonize
from lrptext.graph.ir import Graph, Kind, Node

ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus,
                      nn.Hardtanh, nn.ReLU6, nn.Mish, nn.SELU, nn.CELU, nn.Hardswish, nn.Hardsigmoid, nn.PReLU)
IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)

ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.leaky_relu, F.elu, F.gelu, F.silu, F.tanh, torch.tanh, F.sigmoid,
                        torch.sigmoid, F.softplus, F.hardtanh, F.relu6, F.mish, F.selu, F.celu, F.hardswish}
IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout}
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
MOVE_FUNCTIONS = {torch.permute, torch.transpose, torch.t, torch.swapaxes, torch.cat, torch.concat,
                  torch.concatenate, torch.stack}
POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
                  F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d}
META_FUNCTIONS = {getattr, len, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
                  torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge, torch.arange, torch.zeros_like,
                  torch.ones_like, torch.full_like, torch.logical_not, operator.invert, operator.floordiv}

ACTIVATION_METHODS = {"relu", "tanh", "sigmoid"}  # looked up without a trailing "_" (in place)
IDENTITY_METHODS = {"contiguous", "clone", "detach"}
CONVERSION_METHODS = {"float", "double", "to", "type_as"}  # dtype/device changes: relevance passes unchanged
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
MOVE_METHODS = {"permute", "transpose", "t", "swapaxes", "expand", "expand_as", "repeat"}
META_METHODS = {"size", "dim", "numel", "eq", "ne", "lt", "le", "gt", "ge", "long", "int", "bool", "new_zeros",
                "new_ones", "new_full", "logical_not"}

SOFTMAX = (nn.Softmax, nn.LogSoftmax)


def _function_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", "") or ""
    name = getattr(fn, "__name__", repr(fn))
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    if module.startswith("torch") or module == "builtins" or module == "_operator":
        return f"torch.{name}" if module.startswith("torch") else name
    return f"{module}.{name}"


def _identity(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x


def _conv_padding(conv: nn.Module, weight: torch.Tensor) -> tuple[int, ...] | str:
    """nn.Conv padding as integers; 'same' with an odd total padding (asymmetric in torch) is refused."""
    padding = conv.padding
    if padding == "valid":
        return (0,) * (weight.dim() - 2)
    if padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, weight.shape[2:])]
        if any(t % 2 for t in totals):
            return "asymmetric"
        return tuple(t // 2 for t in totals)
    return tuple(padding)


def _module_node(name: str, module: nn.Module, args: tuple, kwargs: dict) -> Node:
    op = f"nn.{type(module).__name__}" if type(module).__module__.startswith("torch.nn") else type(module).__name__
    node = Node(name=name, qualified_name="", kind=Kind.UNSUPPORTED, op=op, args=args, kwargs=kwargs, call=module,
                module_type=type(module))
    if isinstance(module, nn.Linear):
        node.kind, node.params = Kind.DENSE, {"weight": module.weight, "bias": module.bias}
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        padding = _conv_padding(module, module.weight)
        if module.padding_mode != "zeros" or padding == "asymmetric":
            node.hint = ("lrptext's convolution kernels pad with zeros and symmetrically; use padding_mode='zeros' "
                         "and an explicit padding")
        else:
            node.kind = Kind.CONV
            node.params = {"weight": module.weight, "bias": module.bias, "stride": tuple(module.stride),
                           "padding": padding, "dilation": tuple(module.dilation), "groups": module.groups}
    elif isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            node.hint = "Embedding(max_norm=...) renormalises its weights during forward; set max_norm=None"
        else:
            node.kind, node.params = Kind.EMBEDDING, {"weight": module.weight, "padding_idx": module.padding_idx}
    elif isinstance(module, nn.EmbeddingBag):
        if module.mode == "max" or module.max_norm is not None:
            node.hint = "EmbeddingBag is supported with mode 'sum' or 'mean' and max_norm=None"
        else:
            node.kind = Kind.EMBEDDING_BAG
            node.params = {"weight": module.weight, "mode": module.mode, "padding_idx": module.padding_idx,
                           "include_last_offset": module.include_last_offset}
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not module.track_running_stats or module.running_mean is None:
            node.hint = "BatchNorm without running statistics cannot be explained in eval semantics"
        else:
            node.kind = Kind.BATCHNORM
            node.params = {"weight": module.weight, "bias": module.bias, "mean": module.running_mean,
                           "var": module.running_var, "eps": module.eps}
    elif isinstance(module, ACTIVATION_MODULES):
        node.kind = Kind.PASS
        if getattr(module, "inplace", False):  # keep the recorded input intact
            node.call = lambda x, *a, **k: module(x.clone(), *a, **k)
    elif isinstance(module, IDENTITY_MODULES):
        node.kind, node.call = Kind.PASS, _identity  # eval semantics: dropout is the identity
    elif isinstance(module, (nn.Flatten, nn.Unflatten)):
        node.kind = Kind.RESHAPE
    elif isinstance(module, POOL_MODULES):
        node.kind = Kind.POOL
    elif isinstance(module, SOFTMAX):
        node.hint = ("explain the logits: drop the softmax from the model, or treat it as the identity with "
                     f"layer_map={{nn.{type(module).__name__}: Pass()}}")
    return node


IN_PLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}
SOFTMAX_HINT = "explain the logits: drop the softmax from the model's forward"

FUNCTION_KINDS: dict[Any, Kind] = {
    F.linear: Kind.DENSE, F.conv1d: Kind.CONV, F.conv2d: Kind.CONV, F.embedding: Kind.EMBEDDING,
    **dict.fromkeys(ACTIVATION_FUNCTIONS | IDENTITY_FUNCTIONS, Kind.PASS),
    **dict.fromkeys(RESHAPE_FUNCTIONS, Kind.RESHAPE),
    **dict.fromkeys(MOVE_FUNCTIONS, Kind.MOVE),
    **dict.fromkeys((operator.add, torch.add, operator.sub, torch.sub), Kind.ADD),
    **dict.fromkeys((operator.mul, torch.mul, operator.truediv, torch.div, operator.neg, torch.neg), Kind.SCALE),
    **dict.fromkeys((torch.max, torch.amax), Kind.MAX_DIM),
    **dict.fromkeys((torch.mean, torch.sum), Kind.REDUCE),
    **dict.fromkeys(POOL_FUNCTIONS, Kind.POOL),
    **dict.fromkeys(META_FUNCTIONS, Kind.META),
}
METHOD_KINDS: dict[str, Kind] = {
    **dict.fromkeys(ACTIVATION_METHODS | IDENTITY_METHODS | CONVERSION_METHODS, Kind.PASS),
    **dict.fromkeys(RESHAPE_METHODS, Kind.RESHAPE),
    **dict.fromkeys(MOVE_METHODS, Kind.MOVE),
    **dict.fromkeys(("add", "sub"), Kind.ADD),
    **dict.fromkeys(("mul", "div", "neg"), Kind.SCALE),
    **dict.fromkeys(("max", "amax"), Kind.MAX_DIM),
    **dict.fromkeys(("mean", "sum"), Kind.REDUCE),
    **dict.fromkeys(META_METHODS, Kind.META),
}


def _function_node(name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Node:
    if kwargs.get("inplace"):  # in-place operations run out of place: the recorded values must stay intact
        kwargs = {**kwargs, "inplace": False}
    fn = IN_PLACE_FUNCTIONS.get(fn, fn)
    node = Node(name=name, qualified_name=_function_name(fn), kind=FUNCTION_KINDS.get(fn, Kind.UNSUPPORTED),
                op=_function_name(fn), args=args, kwargs=kwargs, call=_identity if fn in IDENTITY_FUNCTIONS else fn)
    source = args[0] if args else None
    from_max = isinstance(source, Node) and source.kind == Kind.MAX_DIM
    if fn is operator.getitem:  # [0] of torch.max(x, dim) is its values; indexing a shape is metadata
        if from_max:
            node.kind = Kind.ITEM if args[1] == 0 else Kind.META
        else:
            node.kind = Kind.META if isinstance(source, Node) and source.kind == Kind.META else Kind.MOVE
    elif fn is getattr and from_max and args[1] == "values":
        node.kind = Kind.ITEM
    elif fn in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
        node.hint = SOFTMAX_HINT
    return node


def _method_node(name: str, method: str, args: tuple, kwargs: dict) -> Node:
    out_of_place = method[:-1] if method.endswith("_") and not method.startswith("_") else method

    def call(self: Any, *rest: Any, **kw: Any) -> Any:
        return getattr(self, out_of_place)(*rest, **kw)

    node = Node(name=name, qualified_name=f"Tensor.{method}", kind=METHOD_KINDS.get(out_of_place, Kind.UNSUPPORTED),
                op=f"Tensor.{method}", args=args, kwargs=kwargs,
                call=_identity if out_of_place in IDENTITY_METHODS else call)
    if out_of_place in ("softmax", "log_softmax"):
        node.hint = SOFTMAX_HINT
    return node


def _fetch(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def trace(model: nn.Module) -> torch.fx.GraphModule:
    if not isinstance(model, nn.Module):
        raise TypeError(f"lrptext explains torch.nn.Module instances, got {type(model).__name__}")
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:  # torch.fx raises many types; the message says which construct failed
        raise UnsupportedLayerError(
            f"lrptext could not trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}). "
            "Data-dependent control flow (if/for on tensor values) cannot be traced: move it out of forward(), "
            "or explain a submodule that has none"
        ) from error


def capture(model: nn.Module, *, fold_batchnorm: bool = True) -> Graph:
    """The model's forward as a Graph (the model itself is not changed)."""
    gm = trace(model)
    nodes: dict[str, Node] = {}
    ordered: list[Node] = []
    inputs: list[Node] = []
    output: Node | None = None
    for fx in gm.graph.nodes:
        args = torch.fx.node.map_arg(fx.args, lambda n: nodes[n.name])
        kwargs = torch.fx.node.map_arg(fx.kwargs, lambda n: nodes[n.name])
        if fx.op == "placeholder":
            node = Node(name=fx.name, qualified_name=str(fx.target), kind=Kind.INPUT, op="input")
            inputs.append(node)
        elif fx.op == "get_attr":
            node = Node(name=fx.name, qualified_name=str(fx.target), kind=Kind.CONSTANT, op="attribute",
                        params={"value": _fetch(gm, fx.target)})
        elif fx.op == "call_module":
            node = _module_node(fx.name, gm.get_submodule(fx.target), args, kwargs)
            node.qualified_name = str(fx.target)
        elif fx.op == "call_function":
            node = _function_node(fx.name, fx.target, args, kwargs)
        elif fx.op == "call_method":
            node = _method_node(fx.name, fx.target, args, kwargs)
        else:  # output
            if not isinstance(args[0], Node):
                raise UnsupportedLayerError(
                    f"{type(model).__name__}.forward returns {type(args[0]).__name__}; lrptext explains a model "
                    "with one tensor output (the logits): wrap it to return the tensor to explain"
                )
            node = Node(name=fx.name, qualified_name="output", kind=Kind.OUTPUT, op="output", args=args)
            output = node
        nodes[fx.name] = node
        ordered.append(node)
    assert output is not None  # torch.fx graphs always end in an output node
    graph = Graph(nodes=ordered, inputs=inputs, output=output)
    _functional_params(graph)
    return canonize(graph) if fold_batchnorm else graph


def _constant(value: Any) -> Any:
    return value.params["value"] if isinstance(value, Node) and value.kind == Kind.CONSTANT else value


def _functional_params(graph: Graph) -> None:
    """Weights of functional dense/conv/embedding calls must be model attributes (constants) to be prepared once."""
    for node in graph.nodes:
        if node.module_type is not None or node.kind not in (Kind.DENSE, Kind.CONV, Kind.EMBEDDING):
            continue
        names = {Kind.DENSE: ("input", "weight", "bias"),
                 Kind.CONV: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                 Kind.EMBEDDING: ("input", "weight", "padding_idx")}[node.kind]
        bound = dict(zip(names, node.args))
        bound.update({k: v for k, v in node.kwargs.items() if k in names})
        weight, bias = _constant(bound.get("weight")), _constant(bound.get("bias"))
        if not isinstance(weight, torch.Tensor) or isinstance(bias, Node):
            node.kind = Kind.UNSUPPORTED
            node.hint = "the weights of a functional layer must be attributes of the model (nn.Parameter or buffer)"
            continue
        node.args = (bound["input"],)
        node.kwargs = {}
        if node.kind == Kind.DENSE:
            node.params = {"weight": weight, "bias": bias}
        elif node.kind == Kind.EMBEDDING:
            padding_idx = bound.get("padding_idx")
            if padding_idx is not None and padding_idx < 0:
                padding_idx += weight.shape[0]
            node.params = {"weight": weight, "padding_idx": padding_idx}
        else:
            dims = weight.dim() - 2

            def tup(v: Any, default: int) -> tuple[int, ...]:
                v = default if v is None else v
                return (int(v),) * dims if isinstance(v, int) else tuple(int(x) for x in v)

            padding = bound.get("padding", 0)
            if isinstance(padding, str):
                node.kind = Kind.UNSUPPORTED
                node.hint = "pass an explicit integer padding to the functional convolution"
                continue
            node.params = {"weight": weight, "bias": bias, "stride": tup(bound.get("stride"), 1),
                           "padding": tup(padding, 0), "dilation": tup(bound.get("dilation"), 1),
                           "groups": int(bound.get("groups") or 1)}
