"""lrptext: Layer-wise Relevance Propagation for document classifiers and image CNNs."""

import scipy_openblas32  # noqa: F401  (loads the OpenBLAS that lrptext._core links against)

from lrptext._native import build_info, get_num_threads, set_num_threads

__all__ = ["build_info", "get_num_threads", "set_num_threads"]
__version__ = "0.1.0"
