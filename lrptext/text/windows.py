"""Long documents in overlapping windows of the model's length, and how the windows' results combine.

A document of n pieces (special tokens aside) is read in windows of `length` pieces that start every `stride`
pieces (0, stride, 2·stride, ...), the last one moved back to end exactly at the document's end, so every piece
is in at least one window and no window is shorter than it must be. Each window gets the model's special tokens
([CLS] ... [SEP], <s> ... </s>) as a document of its own would.

The combination (docs/transformers.md): the document's logits are the mean of its W windows' logits, and a
piece's relevance is the sum of the relevance it gets in each window that holds it, divided by W. That is LRP of
the mean logit exactly (relevance is linear in the output relevance it starts from), so the relevance still sums
to the explained logit as in a single window, a piece read twice is not counted twice over, and a one-window
document is explained as before."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def window_starts(n: int, length: int, stride: int) -> list[int]:
    """Where each window of a document of n pieces starts."""
    if length < 1 or not 1 <= stride <= length:
        raise ValueError(f"windows need length >= 1 and 1 <= stride <= length, got length {length}, stride {stride}")
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, stride))
    if starts[-1] + length < n:
        starts.append(n - length)
    return starts


def mean_logits(window_logits: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """[documents, classes]: each document's windows' logits (consecutive rows, `counts` per document) averaged."""
    return torch.stack([part.mean(dim=0) for part in window_logits.split(list(counts))])


def combine(n: int, starts: Sequence[int], relevance: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n]: relevance of each piece of a document from its windows' piece relevance (relevance[w][j] is piece
    starts[w] + j), summed over the windows that hold it and divided by the number of windows."""
    total = torch.zeros(n, dtype=torch.float64)
    for start, r in zip(starts, relevance):
        total[start: start + len(r)] += r.double()
    return total / len(starts)
