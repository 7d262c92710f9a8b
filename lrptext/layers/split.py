"""torch.chunk, torch.split and torch.unbind (their Tensor methods and torch.export's aten operators): a tensor cut
into pieces along one dimension. Each piece a model takes (`q, k, v = self.qkv(x).chunk(3, -1)`) hands its
relevance back to the cut as one part (lrptext.layers.parts), and the cut puts every part into its own slice of the
input: the slices do not overlap, so nothing is split or summed, and a piece that nothing used leaves zeros."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.ops import aten

from lrptext.errors import UnsupportedLayerError
from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node
from lrptext.layers.parts import Parts

_CHUNKS = frozenset({torch.chunk, aten.chunk.default})
_UNBINDS = frozenset({torch.unbind, aten.unbind.int})
# The size argument under each of its names: torch.chunk's, Tensor.split's, torch.split's, aten.split_with_sizes'.
_SIZE_NAMES = ("chunks", "split_size", "split_size_or_sections", "split_sizes")


def _how(node: Node) -> str:
    if node.call in _CHUNKS or node.method == "chunk":
        return "chunk"
    if node.call in _UNBINDS or node.method == "unbind":
        return "unbind"
    return "split"


def _settings(node: Node, how: str) -> dict[str, Any] | None:
    """{"how", "sizes", "dim"} where the sizes and the dimension are constants; None where they are not."""
    args, kwargs = list(node.args[1:]), dict(node.kwargs)
    sizes = None
    if how != "unbind":
        named = [kwargs.pop(k) for k in _SIZE_NAMES if k in kwargs]
        sizes = named[0] if named else (args.pop(0) if args else None)
    dim = kwargs.pop("dim") if "dim" in kwargs else (args.pop(0) if args else 0)
    if kwargs or args or not isinstance(dim, int):
        return None
    if how == "unbind":
        return {"how": how, "sizes": None, "dim": dim}
    if isinstance(sizes, int) and sizes > 0:
        return {"how": how, "sizes": sizes, "dim": dim}
    if how == "split" and isinstance(sizes, (list, tuple)) and all(isinstance(s, int) and s >= 0 for s in sizes):
        return {"how": how, "sizes": tuple(sizes), "dim": dim}
    return None


def slices(params: dict[str, Any], length: int) -> list[tuple[int, int]]:
    """(start, length) of every piece along the cut dimension, whose size is `length`, as torch cuts it."""
    how, sizes = params["how"], params["sizes"]
    if how == "unbind":
        return [(i, 1) for i in range(length)]
    if isinstance(sizes, tuple):
        starts = [0]
        for s in sizes[:-1]:
            starts.append(starts[-1] + s)
        return list(zip(starts, sizes))
    step = math.ceil(length / sizes) if how == "chunk" else sizes
    return [(start, min(step, length - start)) for start in range(0, length, max(step, 1))]


class Split(LayerKind):
    name = "split"
    functions = frozenset({torch.split, aten.split.Tensor, aten.split_with_sizes.default}) | _CHUNKS | _UNBINDS
    methods = frozenset({"chunk", "split", "unbind"})
    keeps_input = True
    tuple_output = True

    def capture_call(self, node: Node) -> LayerKind:
        params = _settings(node, _how(node))
        if params is None:
            node.hint = "lrptext follows a chunk, split or unbind whose sizes and dimension are constants"
            return UNSUPPORTED
        node.params = params
        return self

    def item(self, node: Node) -> LayerKind | None:
        if not isinstance(node.args[1], int) or node.kwargs:
            node.hint = "index the pieces of a chunk, split or unbind with a constant (q, k, v = x.chunk(3, -1))"
            return UNSUPPORTED
        node.params = {"index": node.args[1]}
        return PIECE

    def default_rule(self, node: Node) -> Any:
        return "routed back (each piece into its slice)"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        if not isinstance(r, Parts):  # the tuple went whole into another operation: torch.cat(x.chunk(2, -1), -1)
            raise UnsupportedLayerError(
                f"the pieces of {node.op} at '{node.qualified_name}' reach another operation as one tuple; lrptext "
                "follows pieces taken one by one: unpack them first (a, b = x.chunk(2, -1); torch.cat([a, b], -1))")
        source = node.args[0]
        shape = state.shape(source)
        dim = node.params["dim"] % len(shape)
        pieces = slices(node.params, shape[dim])
        like = next(iter(r.parts.values()))  # (for the dtype and device)
        total = like.new_zeros(shape)
        unbind = node.params["how"] == "unbind"
        for (index,), part in r.parts.items():
            if pieces:  # (an empty dimension has empty pieces: nothing to place)
                start, length = pieces[index % len(pieces)]  # pieces[-1] is the last: the count is known only now
                total.narrow(dim, start, length).add_(part.unsqueeze(dim) if unbind else part)
        return [(source, total)]


class Piece(LayerKind):
    """`pieces[i]` of a chunk, split or unbind: its relevance goes back to the cut as part i."""

    name = "split_piece"
    keeps_input = True

    def default_rule(self, node: Node) -> Any:
        return f"piece {node.params['index']} of {node.args[0].op}, routed back"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        return [(node.args[0], Parts({(node.params["index"],): r}))]


SPLIT = Split()
PIECE = Piece()
