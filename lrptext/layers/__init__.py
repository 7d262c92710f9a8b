"""Layer kinds, one module each: how capture recognises the operation, its settings normalised at capture, its
forward step, its relevance step and the rule it takes. KINDS is the registry that capture, the rule assignment
and the engine walk; adding a kind is one module here plus its kernel and tests (docs/architecture.md)."""

from lrptext.layers import unsupported
from lrptext.layers.activation import ACTIVATION
from lrptext.layers.add import ADD
from lrptext.layers.attention import ATTENTION
from lrptext.layers.batchnorm import BATCHNORM, fold
from lrptext.layers.conv import CONV
from lrptext.layers.dense import DENSE
from lrptext.layers.embedding import EMBEDDING
from lrptext.layers.embedding_bag import EMBEDDING_BAG
from lrptext.layers.identity import IDENTITY
from lrptext.layers.layer_norm import LAYER_NORM
from lrptext.layers.max_dim import ITEM, MAX_DIM
from lrptext.layers.meta import META
from lrptext.layers.move import MOVE
from lrptext.layers.packing import PACK, UNPACK
from lrptext.layers.pad import PAD
from lrptext.layers.pool import POOL
from lrptext.layers.product import CONSTANT_PRODUCT, PRODUCT
from lrptext.layers.recurrent import ITEM as RECURRENT_ITEM, RECURRENT
from lrptext.layers.reduce import REDUCE
from lrptext.layers.registry import Registry
from lrptext.layers.reshape import RESHAPE
from lrptext.layers.scale import SCALE
from lrptext.layers.softmax import SOFTMAX
from lrptext.layers.split import PIECE, SPLIT
from lrptext.layers.statistic import STATISTIC

KINDS = Registry([DENSE, CONV, EMBEDDING, EMBEDDING_BAG, BATCHNORM, ACTIVATION, IDENTITY, RESHAPE, MOVE, ADD, SCALE,
                  MAX_DIM, ITEM, POOL, REDUCE, META, PAD, LAYER_NORM, ATTENTION, PRODUCT, CONSTANT_PRODUCT, SOFTMAX,
                  STATISTIC, RECURRENT, RECURRENT_ITEM, PACK, UNPACK, SPLIT, PIECE],
                 hints=unsupported.hint)

# Canonizers by name: passes over the captured graph that rewrite it on copies of the weights.
CANONIZERS = {"batchnorm": fold}

__all__ = ["CANONIZERS", "KINDS"]
