"""The registry of layer kinds: which kind an operation is, for capture, and what the composites' slots are."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from lrptext.graph.ir import LayerKind, Node


class Registry:
    """Layer kinds by module type (first match in order, so subclasses of a listed type match), function and
    Tensor method name."""

    def __init__(self, kinds: Iterable[LayerKind], hints: Callable[[Node, Any], str]):
        self.kinds = tuple(kinds)
        self._functions: dict[Any, LayerKind] = {}
        self._methods: dict[str, LayerKind] = {}
        for kind in self.kinds:
            for table, keys in ((self._functions, kind.functions), (self._methods, kind.methods)):
                for key in keys:
                    if key in table:
                        raise ValueError(f"{key!r} is claimed by layer kinds '{table[key].name}' and '{kind.name}'")
                    table[key] = kind
        self._hints = hints

    @property
    def slots(self) -> tuple[str, ...]:
        """The composite slots: the kinds that take a linear rule ("dense", "conv")."""
        return tuple(k.slot for k in self.kinds if k.slot is not None)

    @property
    def leaf_functions(self) -> tuple[Callable[..., Any], ...]:
        """The functions of kinds traced whole (pack_padded_sequence): capture keeps their calls, where torch.fx
        would trace through them."""
        return tuple(f for k in self.kinds if k.traced_whole for f in k.functions)

    def for_module(self, module: nn.Module) -> LayerKind | None:
        return next((k for k in self.kinds if k.modules and isinstance(module, k.modules)), None)

    def for_function(self, function: Callable[..., Any]) -> LayerKind | None:
        try:
            return self._functions.get(function)
        except TypeError:  # an unhashable callable
            return None

    def for_method(self, name: str) -> LayerKind | None:
        return self._methods.get(name)

    def unsupported_hint(self, node: Node, target: Any) -> str:
        return self._hints(node, target)
