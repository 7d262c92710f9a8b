"""A model as a graph of nodes with LRP semantics, captured with torch.fx (the layer kinds live in lrptext.layers)."""

from lrptext.graph.capture import capture
from lrptext.graph.ir import Graph, LayerKind, Node

__all__ = ["Graph", "LayerKind", "Node", "capture"]
