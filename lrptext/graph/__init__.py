"""A model as a graph of nodes with LRP semantics: captured with torch.fx, canonized on copies of the weights."""

from lrptext.graph.capture import capture
from lrptext.graph.ir import Graph, Kind, Node

__all__ = ["Graph", "Kind", "Node", "capture"]
