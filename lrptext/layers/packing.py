"""pack_padded_sequence and pad_packed_sequence around a recurrent layer: a batch of sequences of different
lengths. Relevance of a PackedSequence travels as its padded tensor, batch first; these kinds turn it back into
the layout of the padded tensor they read. Padding positions get none: the recurrent layer never reads them."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lrptext.graph.ir import UNSUPPORTED, LayerKind, Node, bind
from lrptext.layers.recurrent import _item_of


def _pack_signature(input, lengths, batch_first=False, enforce_sorted=True):  # pack_padded_sequence
    pass


def _pad_signature(sequence, batch_first=False, padding_value=0.0, total_length=None):  # pad_packed_sequence
    pass


class Pack(LayerKind):
    name = "pack"
    functions = frozenset({pack_padded_sequence})
    traced_whole = True
    tuple_output = True  # a PackedSequence: its data first

    def capture_call(self, node: Node) -> LayerKind:
        bound = bind(node, _pack_signature)
        if bound is None or not isinstance(bound["batch_first"], bool) or not isinstance(bound["input"], Node):
            node.hint = "call pack_padded_sequence(input, lengths, batch_first=..., enforce_sorted=...) with constants"
            return UNSUPPORTED
        node.params = {"input": bound["input"], "batch_first": bound["batch_first"]}
        return self

    def data_inputs(self, node: Node) -> list[Node]:
        return [node.params["input"]]  # the lengths are metadata

    def default_rule(self, node: Node) -> Any:
        return "packed back to padded"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        source = node.params["input"]
        steps = state.shape(source)[0 if not node.params["batch_first"] else 1]
        r = F.pad(r, (0, 0, 0, steps - r.shape[1]))  # the input may be longer than its longest sequence
        return [(source, r if node.params["batch_first"] else r.transpose(0, 1))]


class Unpack(LayerKind):
    name = "unpack"
    functions = frozenset({pad_packed_sequence})
    traced_whole = True
    tuple_output = True  # (padded, lengths)

    def capture_call(self, node: Node) -> LayerKind:
        bound = bind(node, _pad_signature)
        if bound is None or not isinstance(bound["batch_first"], bool) or not isinstance(bound["sequence"], Node):
            node.hint = "call pad_packed_sequence(sequence, batch_first=...) with constants"
            return UNSUPPORTED
        node.params = {"sequence": bound["sequence"], "batch_first": bound["batch_first"]}
        return self

    def data_inputs(self, node: Node) -> list[Node]:
        return [node.params["sequence"]]

    def item(self, node: Node) -> LayerKind | None:
        return _item_of(node)

    def default_rule(self, node: Node) -> Any:
        return "padded back to packed"

    def relevance(self, node: Node, r: Any, rule: Any, state: Any) -> list[tuple[Node, Any]]:
        padded = r.get((0,))
        if padded is None:
            return []
        return [(node.params["sequence"], padded if node.params["batch_first"] else padded.transpose(0, 1))]


PACK = Pack()
UNPACK = Unpack()
