"""An evaluation's results on disk: JSON with every curve and summary, and a matplotlib figure of the curves."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lrptext.evaluation.curves import Curve


def write_json(curves: Sequence[Curve], path: str | Path, **context: object) -> None:
    """`context`: what was evaluated (dataset, model, deletion, ...), stored beside the curves."""
    Path(path).write_text(json.dumps({**context, "curves": [c.to_dict() for c in curves]}, indent=2) + "\n",
                          encoding="utf-8")


def plot(curves: Sequence[Curve], path: str | Path, *, unit: str = "words", title: str = "") -> None:
    """Accuracy and explained-class score against the number of deleted features, one column per order."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'lrptext[evaluate]'") from None
    orders = list(dict.fromkeys(c.order for c in curves))
    figure, axes = plt.subplots(2, len(orders), figsize=(5.5 * len(orders), 7), squeeze=False)
    for column, order in enumerate(orders):
        for curve in (c for c in curves if c.order == order):
            steps = range(len(curve.accuracy))
            label = f"{curve.method} (AOPC {curve.aopc:.2f})"
            axes[0, column].plot(steps, curve.accuracy, marker=".", label=label)
            axes[1, column].plot(steps, curve.score, marker=".", label=label)
        name = "most relevant first (MoRF)" if order == "morf" else "least relevant first (LeRF)"
        axes[0, column].set_title(f"{name}, {curve.examples} examples")
        axes[0, column].set_ylabel("accuracy")
        axes[1, column].set_ylabel("score of the explained class")
        axes[1, column].set_xlabel(f"{unit} deleted")
        axes[0, column].legend(fontsize=8)
        for ax in axes[:, column]:
            ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
