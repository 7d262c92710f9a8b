"""Pooling, 1-d and 2-d: max and adaptive max pooling are winner-take-all (ties to the first maximum), average and
adaptive average pooling take the Norm rule. Settings are read once, at capture."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from lrptext import kernels
from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind
from lrptext.kernels import dispatch, native
from lrptext.layers.activation import dropped_relu
from lrptext.layers.max_pool import max_pool, per_axis
from lrptext.rules import Norm


def _max_pool_signature(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        return_indices=False):
    pass


def _avg_pool_signature(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None):
    pass


def _adaptive_signature(input, output_size, return_indices=False):
    pass


_FUNCTIONS = {
    F.max_pool1d: ("max", 1, _max_pool_signature), F.max_pool2d: ("max", 2, _max_pool_signature),
    F.avg_pool1d: ("avg", 1, _avg_pool_signature), F.avg_pool2d: ("avg", 2, _avg_pool_signature),
    F.adaptive_max_pool1d: ("adaptive_max", 1, _adaptive_signature),
    F.adaptive_max_pool2d: ("adaptive_max", 2, _adaptive_signature),
    F.adaptive_avg_pool1d: ("adaptive_avg", 1, _adaptive_signature),
    F.adaptive_avg_pool2d: ("adaptive_avg", 2, _adaptive_signature),
}
_SETTINGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override",
             "return_indices")


class Pool(LayerKind):
    name = "pool"
    modules = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
    functions = frozenset(_FUNCTIONS)

    def capture_module(self, node: Node, module: Any) -> None:
        name = type(module).__name__
        mode = ("adaptive_" if name.startswith("Adaptive") else "") + ("max" if "Max" in name else "avg")
        settings = {k: getattr(module, k) for k in _SETTINGS if hasattr(module, k)}
        self._settle(node, mode, 1 if name.endswith("1d") else 2, settings)

    def capture_call(self, node: Node) -> LayerKind:
        mode, dims, signature = _FUNCTIONS[node.call]
        settings = bind(node, signature)
        if settings is None:
            node.hint = f"{node.op} with these arguments has no rule"
            return UNSUPPORTED
        settings.pop("input")
        self._settle(node, mode, dims, settings)
        return node.kind

    @staticmethod
    def _settle(node: Node, mode: str, dims: int, settings: dict[str, Any]) -> None:
        if settings.get("ceil_mode") or settings.get("return_indices"):
            node.kind = UNSUPPORTED
            node.hint = "ceil_mode and return_indices are not supported by lrptext's pooling kernels"
            return
        if any(isinstance(v, Node) for v in settings.values()):
            node.kind = UNSUPPORTED
            node.hint = "pooling settings computed in forward() are not supported; use constants"
            return
        node.params = {"mode": mode, "dims": dims, "settings": settings}

    def default_rule(self, node: Node) -> Any:
        return "winner-take-all (ties: first maximum)" if node.params["mode"].endswith("max") else Norm()

    def allowed_rules(self, node: Node) -> tuple[type, ...]:
        return () if node.params["mode"].endswith("max") else (Norm,)  # Norm's stabilizer for average pooling

    def forward(self, node: Node, args: tuple, kwargs: dict, state: Any) -> Any:
        p = node.params
        if p["mode"] == "max" and (pooled := max_pool(args[0], p["dims"], p["settings"], state.core)) is not None:
            return pooled
        return node.call(*args, **kwargs)

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        mode, dims, s = node.params["mode"], node.params["dims"], node.params["settings"]
        if (fused := _max_pool_of_dropped_relu(node, r, state)) is not None:
            return fused
        x = state.values[node.args[0].name]
        if mode == "max" and x.dim() == dims + 2 and not any(per_axis(s["padding"], dims)):
            # Every window lies inside the input: the public kernel's geometry check has nothing to refuse here.
            return [(node.args[0], _windows_inside(state.implementation, x, r, dims, s, relu_input=False))]
        fn = getattr(kernels, f"{mode}_pool{dims}d_relevance")
        if mode.startswith("adaptive"):
            extra = {"stabilizer": rule.stabilizer} if mode == "adaptive_avg" else {}
            return [(node.args[0], fn(x, r, **state.kernel_options, **extra))]
        window = {"kernel_size": s["kernel_size"], "stride": s["stride"] or s["kernel_size"], "padding": s["padding"]}
        if mode == "max":
            window["dilation"] = s["dilation"]
        else:
            window["count_include_pad"] = s["count_include_pad"]
            window["stabilizer"] = rule.stabilizer
            if dims == 2:
                window["divisor_override"] = s.get("divisor_override")
        return [(node.args[0], fn(x, r, **state.kernel_options, **window))]


def _max_pool_of_dropped_relu(node: Node, r: Any, state: Any) -> list[tuple[Node, Any]] | None:
    """Max pooling of a ReLU's output that the forward pass dropped (conv -> ReLU -> max pool, as in VGG): the C++
    kernel pools relu(z) from the kept z, so the activation is never computed again. None where that does not
    apply."""
    mode, dims, s = node.params["mode"], node.params["dims"], node.params["settings"]
    if mode != "max" or (source := dropped_relu(state, node.args[0])) is None:
        return None
    z = state.values[source.args[0].name]
    if z.dim() != dims + 2 or any(per_axis(s["padding"], dims)) or any(d != 1 for d in per_axis(s["dilation"], dims)):
        return None
    return [(source, _windows_inside(native, z, r, dims, s, relu_input=True))]


def _windows_inside(impl: Any, x: Any, r: Any, dims: int, s: dict[str, Any], relu_input: bool) -> Any:
    """Max-pooling relevance through windows without padding (pooling settings `s`), past the public checks."""
    kernel = per_axis(s["kernel_size"], dims)
    return dispatch.pool(impl, x, r, mode="max", kernel=kernel, stride=per_axis(s["stride"] or kernel, dims),
                         padding=(0,) * dims, dilation=per_axis(s["dilation"], dims), adaptive=False,
                         count_include_pad=True, divisor_override=0, stabilizer=0.0, check_finite=False,
                         relu_input=relu_input)


POOL = Pool()
