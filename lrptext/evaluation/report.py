"""An evaluation's results on disk: JSON with every curve and summary, and a matplotlib figure of the curves
(deletion curves against the features deleted; Ali et al.'s generate and prune curves against the fraction)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_json(curves: Sequence[Any], path: str | Path, **context: object) -> None:
    """`context`: what was evaluated (dataset, model, deletion, ...), stored beside the curves."""
    Path(path).write_text(json.dumps({**context, "curves": [c.to_dict() for c in curves]}, indent=2) + "\n",
                          encoding="utf-8")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'lrptext[evaluate]'") from None
    return plt


def plot(curves: Sequence[Any], path: str | Path, *, unit: str = "words", title: str = "") -> None:
    """Accuracy and explained-class score against the number of deleted features, one column per order (for
    FractionCurves: plot_fractions)."""
    if curves and hasattr(curves[0], "fractions"):
        plot_fractions(curves, path, title=title)
        return
    plt = _pyplot()
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


def plot_fractions(curves: Sequence[Any], path: str | Path, *, title: str = "") -> None:
    """Ali et al.'s protocol: accuracy, the explained class's probability and the probabilities' MSE against the
    fraction of tokens present (generate) or replaced (prune), one column per case."""
    plt = _pyplot()
    cases = list(dict.fromkeys(c.case for c in curves))
    rows = (("accuracy", "accuracy", "auac", "AUAC"),
            ("probability", "probability of the explained class", "aupc", "AUPC"),
            ("mse", "MSE of the probabilities", "au_mse", "AU-MSE"))
    figure, axes = plt.subplots(len(rows), len(cases), figsize=(5.5 * len(cases), 9), squeeze=False)
    for column, case in enumerate(cases):
        for curve in (c for c in curves if c.case == case):
            for row, (field, _, summary, name) in enumerate(rows):
                axes[row, column].plot(curve.fractions, getattr(curve, field), marker=".",
                                       label=f"{curve.method} ({name} {getattr(curve, summary):.3g})")
        axes[0, column].set_title(f"{case}, {curve.examples} examples")
        for row, (_, label, _, _) in enumerate(rows):
            axes[row, column].set_ylabel(label)
            axes[row, column].legend(fontsize=7)
            axes[row, column].grid(alpha=0.3)
        axes[-1, column].set_xlabel("fraction of tokens put back" if case == "generate"
                                    else "fraction of tokens replaced by the unknown token")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
