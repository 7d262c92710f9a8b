"""lrptext.show() and lrptext.to_pandas(): what a notebook user types. Explained documents, support tables and
image explanations display themselves (their _repr_html_); show() displays several documents one per row, or an
Explanation of images that came from lrptext.explain, and prints plain text outside a notebook. IPython is only
used where it is already running."""

from __future__ import annotations

import sys
from typing import Any

from lrptext.engine import Explanation


class _Images:
    """An Explanation of images [N, C, H, W] without its pixels, shown as heatmaps."""

    def __init__(self, explanation: Explanation):
        self.explanation = explanation

    def _repr_html_(self) -> str:
        from lrptext.image.explanation import images_html

        e = self.explanation
        return images_html(e.relevance, e.prediction, e.target, e.contrast)

    def __str__(self) -> str:
        e = self.explanation
        return (f"relevance of {len(e.relevance)} image(s), shape {tuple(e.relevance.shape)}: display it in a "
                "notebook, or write heatmaps with lrptext.image.heatmap and save_png")


def viewable(explained: Any) -> Any:
    """What show() displays for `explained`."""
    from lrptext.image.explanation import is_image_relevance
    from lrptext.text.document import DocumentExplanation
    from lrptext.text.notebook import Documents

    if isinstance(explained, (list, tuple)) and all(isinstance(d, DocumentExplanation) for d in explained):
        return Documents(explained)
    if hasattr(explained, "_repr_html_"):
        return explained
    if isinstance(explained, Explanation) and is_image_relevance(explained.relevance):
        return _Images(explained)
    raise TypeError(f"lrptext.show takes explained documents (a DocumentExplanation or a list of them), a support "
                    f"table or an Explanation of images [N, C, H, W]; got {type(explained).__name__}"
                    + (" (an Explanation of token ids or features: read its .relevance)"
                       if isinstance(explained, Explanation) else ""))


def show(explained: Any) -> None:
    """Displays explained documents (one per row), a document, a support table or image explanations in a
    Jupyter notebook; elsewhere prints them as text."""
    view = viewable(explained)
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        from IPython.display import display

        display(view)
        return
    from lrptext.text import render
    from lrptext.text.document import DocumentExplanation

    print(render.terminal(view, colour=False) if isinstance(view, DocumentExplanation) else str(view))


def to_pandas(docs: Any):
    """One row per word of every document (extra `pandas`): document (its index in `docs`), position, word, start,
    end, relevance, and the document's prediction, score, target, target_score, contrast and truncated."""
    from lrptext.text.table import to_pandas as table

    return table(docs)
