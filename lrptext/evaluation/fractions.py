"""The token perturbation protocol of Ali et al. (2022, "XAI for Transformers: Better Explanations through
Conservative Propagation"): a document's tokens are replaced by the unknown token in the order an explanation
ranks them, at fractions 0, 0.1, ..., 1 of its N tokens (special tokens such as [CLS] and [SEP] are never
replaced), and the model's output is followed.

- generate: start from the document with all N tokens replaced; at fraction f the ⌈f·N⌉ tokens of highest
  relevance are put back. A faithful explanation brings the model back to its output with few tokens.
- prune: start from the document; at fraction f the ⌈f·N⌉ tokens of smallest |relevance| are replaced. A
  faithful explanation takes away first what the model does not use, so its output stays.

Per fraction, over the examples: the accuracy (prediction == label), the probability and the logit of the
explained class c, the mean squared error between the perturbed and the original probability vectors,
(1/C) Σ_k (p_k(x̃) − p_k(x))², and, as Ali et al.'s released code measures it, the summed squared error of the
logits, Σ_k (z_k(x̃) − z_k(x))². Each summary is the area under its curve over f in [0, 1] (trapezoid rule):
AUAC (accuracy), AUPC (probability of c), AU-MSE (the probabilities' MSE) and AU-SSE of the logits. In both
cases a faithful method has a high AUAC and AUPC and a low AU-MSE. docs/faithfulness.md has the formulas and
where we follow the paper's code rather than its text."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

CASES = ("generate", "prune")
FRACTIONS = tuple(k / 10 for k in range(11))
BETTER = {"auac": "higher", "aupc": "higher", "au_mse": "lower", "au_logit_sse": "lower"}


def tokens_at(fraction: float, n: int) -> int:
    """⌈fraction · n⌉, the tokens put back (generate) or replaced (prune) at a fraction; the rounding keeps
    0.3 · 10 from becoming 4."""
    return min(n, math.ceil(round(fraction * n, 9)))


def ranking(scores: np.ndarray, case: str) -> np.ndarray:
    """The order in which tokens are put back (generate: highest relevance first) or replaced (prune: smallest
    |relevance| first); ties keep the document's order."""
    scores = np.asarray(scores, dtype=np.float64)
    if case == "generate":
        return np.argsort(-scores, kind="stable")
    if case == "prune":
        return np.argsort(np.abs(scores), kind="stable")
    raise ValueError(f"case must be one of {', '.join(CASES)}, got {case!r}")


def replaced(order: np.ndarray, k: int, case: str) -> np.ndarray:
    """The tokens (indices into the document's N tokens) that are the unknown token after step k."""
    return np.asarray(order[k:] if case == "generate" else order[:k], dtype=np.int64)


def area(values: Sequence[float], fractions: Sequence[float]) -> float:
    """The trapezoid rule over the fractions."""
    y, x = np.asarray(values, dtype=np.float64), np.asarray(fractions, dtype=np.float64)
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


@dataclass
class FractionCurve:
    method: str
    case: str  # generate | prune
    examples: int
    fractions: list[float]
    accuracy: list[float]  # per fraction, means over the examples
    probability: list[float]  # of the explained class
    logit: list[float]  # of the explained class
    mse: list[float]  # mean over the classes of the squared change of the probabilities
    logit_sse: list[float]  # sum over the classes of the squared change of the logits
    auac: float
    aupc: float
    au_mse: float
    au_logit_sse: float
    evaluations: int  # model evaluations the method spent per explanation
    seconds_per_explanation: float
    seeds: int = 1  # random orders averaged (the random baseline)

    @property
    def better(self) -> dict[str, str]:
        return BETTER

    def to_dict(self) -> dict:
        return {**asdict(self), "better": self.better}


def summarise_fractions(method: str, case: str, correct: np.ndarray, probability: np.ndarray, logit: np.ndarray,
                        mse: np.ndarray, logit_sse: np.ndarray, *, fractions: Sequence[float] = FRACTIONS,
                        evaluations: int, seconds_per_explanation: float, seeds: int = 1) -> FractionCurve:
    """Each array [examples, fractions] (averaged over seeds by the caller if any)."""
    if case not in CASES:
        raise ValueError(f"case must be one of {', '.join(CASES)}, got {case!r}")
    arrays = [np.asarray(a, dtype=np.float64) for a in (correct, probability, logit, mse, logit_sse)]
    if any(a.ndim != 2 or a.shape != arrays[0].shape or a.shape[1] != len(fractions) for a in arrays):
        raise ValueError(f"every curve must be [examples, {len(fractions)} fractions], got "
                         f"{[a.shape for a in arrays]}")
    means = [a.mean(axis=0) for a in arrays]
    return FractionCurve(method=method, case=case, examples=int(arrays[0].shape[0]), fractions=list(fractions),
                         accuracy=means[0].tolist(), probability=means[1].tolist(), logit=means[2].tolist(),
                         mse=means[3].tolist(), logit_sse=means[4].tolist(), auac=area(means[0], fractions),
                         aupc=area(means[1], fractions), au_mse=area(means[3], fractions),
                         au_logit_sse=area(means[4], fractions), evaluations=int(evaluations),
                         seconds_per_explanation=float(seconds_per_explanation), seeds=seeds)


def fraction_outputs(logits_of: Callable[[list[list[int]]], torch.Tensor], rows: Sequence[Sequence[int]],
                     positions: Sequence[Sequence[int]], labels: torch.Tensor, orders: Sequence[np.ndarray],
                     case: str, unk_id: int, fractions: Sequence[float] = FRACTIONS) -> tuple[np.ndarray, ...]:
    """(correct, probability, logit, mse, logit_sse), each [examples, fractions], of one case. rows: token ids
    with the special tokens; positions[i][j]: where row i's j-th replaceable token sits; orders[i]: ranking()
    of row i; logits_of(rows) -> [examples, classes]."""
    original = logits_of([list(r) for r in rows]).double()
    p0 = original.softmax(dim=1)
    out = np.zeros((5, len(rows), len(fractions)))
    for f, fraction in enumerate(fractions):
        perturbed = []
        for row, where, order in zip(rows, positions, orders):
            row = list(row)
            for j in replaced(order, tokens_at(fraction, len(where)), case):
                row[where[j]] = unk_id
            perturbed.append(row)
        z = logits_of(perturbed).double()
        p = z.softmax(dim=1)
        out[0, :, f] = (z.argmax(dim=1) == labels).double().numpy()
        out[1, :, f] = p.gather(1, labels[:, None]).squeeze(1).numpy()
        out[2, :, f] = z.gather(1, labels[:, None]).squeeze(1).numpy()
        out[3, :, f] = (p - p0).pow(2).mean(dim=1).numpy()
        out[4, :, f] = (z - original).pow(2).sum(dim=1).numpy()
    return tuple(out)
