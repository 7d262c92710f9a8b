"""lrptext: Layer-wise Relevance Propagation for document classifiers and image CNNs."""

import scipy_openblas32  # noqa: F401  (loads the OpenBLAS that lrptext._core links against)

from lrptext._native import build_info, get_num_threads, get_winograd, release_workspaces, set_num_threads, set_winograd
from lrptext._version import __version__
from lrptext.api import explain
from lrptext.engine import Contrast, Explainer, Explanation, support_table
from lrptext.errors import UnsupportedLayerError
from lrptext.image.cam import grad_cam
from lrptext.notebook import show, to_pandas

__all__ = [
    "__version__", "Contrast", "Explainer", "Explanation", "UnsupportedLayerError", "build_info", "explain",
    "get_num_threads", "get_winograd", "grad_cam", "release_workspaces", "set_num_threads", "set_winograd",
    "show", "support_table", "to_pandas",
]
