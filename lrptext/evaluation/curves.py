"""Perturbation curves and their summaries.

A curve follows a set of examples while features are deleted one after another in an order an explanation
method chose: after k deletions, the accuracy (the fraction still classified as their true label) and the mean
score of the class explained at the start. Two summaries:

- AOPC (area over the perturbation curve, Samek et al. 2017): the mean over k = 0..K of the score's drop from
  k = 0, ⟨f(x⁰) − f(xᵏ)⟩. With MoRF (most relevant first) a faithful method makes it large; with LeRF (least
  relevant first) small.
- AUC of the accuracy curve: its mean over k = 0..K (the trapezoid over unit steps, divided by K). With MoRF on
  correctly classified examples lower is better (accuracy should fall fast); with LeRF on misclassified ones
  higher is better (accuracy should rise)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ORDERS = ("morf", "lerf")
BETTER = {"morf": {"aopc": "higher", "accuracy_auc": "lower"}, "lerf": {"aopc": "lower", "accuracy_auc": "higher"}}


@dataclass
class Curve:
    method: str
    order: str  # morf | lerf
    examples: int
    accuracy: list[float]  # after k = 0..K deletions
    score: list[float]  # mean score of the explained class after k deletions
    aopc: float
    accuracy_auc: float
    evaluations: int  # model evaluations the method spent on its explanations
    seconds_per_explanation: float
    seeds: int = 1  # random orders averaged (the random baseline)

    @property
    def better(self) -> dict[str, str]:
        """Which direction of each summary means a more faithful method, for this order."""
        return BETTER[self.order]

    def to_dict(self) -> dict:
        return {**asdict(self), "better": self.better}


def summarise(method: str, order: str, scores: np.ndarray, correct: np.ndarray, *, evaluations: int,
              seconds_per_explanation: float, seeds: int = 1) -> Curve:
    """scores, correct: [examples, K + 1] after k deletions (averaged over seeds by the caller if any)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != correct.shape or scores.shape[1] < 2:
        raise ValueError(f"scores and correct must both be [examples, steps + 1] with steps >= 1, got "
                         f"{scores.shape} and {correct.shape}")
    accuracy = correct.mean(axis=0)
    return Curve(method=method, order=order, examples=int(scores.shape[0]), accuracy=accuracy.tolist(),
                 score=scores.mean(axis=0).tolist(), aopc=float((scores[:, :1] - scores).mean()),
                 accuracy_auc=float((accuracy[1:] + accuracy[:-1]).sum() / 2 / (len(accuracy) - 1)),
                 evaluations=int(evaluations),
                 seconds_per_explanation=float(seconds_per_explanation), seeds=seeds)


def check_choices(orders: Sequence[str], given: Sequence[str], allowed: Sequence[str], what: str = "method") -> None:
    for order in orders:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    unknown = [g for g in given if g not in allowed]
    if unknown:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")


def perturbation_curves(methods: Sequence[str], orders: Sequence[str], examples: int, *,
                        scores_of: Callable[[str], tuple[Any, int]], ranked: Callable[[Any, str], Any],
                        shuffled: Callable[[int], Any], curve_of: Callable[[Any, int, str], tuple[np.ndarray, ...]],
                        seeds: int, progress: bool | None, desc: str, summary: Callable[..., Any] = summarise,
                        warm_up: Callable[[str], None] | None = None) -> list[Any]:
    """The loop every evaluation shares. scores_of(method) -> (scores, evaluations per example), timed, with
    scores None for the random baseline; ranked(scores, order) and shuffled(seed) -> each example's deletion
    order; curve_of(orders, seed, order) -> arrays [examples, steps] (by default (scores, correct) after
    k = 0..K deletions), averaged over the `seeds` random orders and handed to summary(method, order, *arrays,
    evaluations=, seconds_per_explanation=, seeds=) (default: summarise). warm_up(method), untimed, runs first:
    what a method builds once (a captured graph, a model copy) is not charged to its explanations."""
    from tqdm import tqdm

    bar = tqdm(total=len(methods) * len(orders), desc=desc, disable=None if progress is None else not progress)
    curves = []
    for method in methods:
        if warm_up is not None:
            warm_up(method)
        began = time.perf_counter()
        scores, evaluations = scores_of(method)
        seconds = (time.perf_counter() - began) / examples
        for order in orders:
            runs = ([curve_of(ranked(scores, order), 0, order)] if scores is not None
                    else [curve_of(shuffled(seed), seed, order) for seed in range(seeds)])
            averaged = [np.mean([r[i] for r in runs], axis=0) for i in range(len(runs[0]))]
            curves.append(summary(method, order, *averaged, evaluations=evaluations,
                                  seconds_per_explanation=seconds, seeds=len(runs)))
            bar.update(1)
    bar.close()
    return curves
