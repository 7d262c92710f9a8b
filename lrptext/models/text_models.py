"""Document classifiers lrptext trains and explains. Each takes rows of token ids through ``inputs(rows)`` and maps
the relevance of its inputs back to one value per token with ``token_relevance``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrptext.models.recurrent_models import GRUClassifier, LSTMClassifier

Rows = list[list[int]]


class TextCNN(nn.Module):
    """Kim (2014): embedding -> parallel 1-d convolutions + ReLU -> max over time -> dropout -> linear."""

    arch = "cnn"

    def __init__(self, vocab_size: int, classes: int, *, dim: int = 64, channels: int = 64,
                 widths: tuple[int, ...] = (3, 4, 5), dropout: float = 0.5):
        super().__init__()
        self.config = {"dim": dim, "channels": channels, "widths": list(widths), "dropout": dropout}
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.convs = nn.ModuleList([nn.Conv1d(dim, channels, w) for w in widths])
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * len(widths), classes)
        self.min_length = max(widths)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids).transpose(1, 2)
        lengths = (ids != 0).sum(dim=1, keepdim=True)
        pooled = []
        for conv in self.convs:
            h = F.relu(conv(x))
            # Windows that reach into the batch's padding are zeroed (all but the first, for documents shorter
            # than the window), so a document's prediction does not depend on what else is in its batch.
            positions = torch.arange(h.shape[2], device=ids.device).unsqueeze(0)
            valid = (positions <= (lengths - conv.kernel_size[0]).clamp(min=0)).to(h.dtype)
            pooled.append((h * valid.unsqueeze(1)).amax(dim=2))
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))

    def inputs(self, rows: Rows) -> tuple[torch.Tensor]:
        width = max([self.min_length] + [len(r) for r in rows])
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return (ids,)

    def token_relevance(self, relevance: Any, rows: Rows) -> list[list[float]]:
        return [relevance[i, : len(r)].tolist() for i, r in enumerate(rows)]


class BagOfEmbeddings(nn.Module):
    """fastText-style: the mean of the tokens' embeddings (EmbeddingBag) -> linear."""

    arch = "bag"

    def __init__(self, vocab_size: int, classes: int, *, dim: int = 64):
        super().__init__()
        self.config = {"dim": dim}
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0)
        self.fc = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bag(ids, offsets))

    def inputs(self, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        flat = torch.tensor([t for r in rows for t in r], dtype=torch.long)
        offsets = torch.tensor([0] + [len(r) for r in rows[:-1]], dtype=torch.long).cumsum(0)
        return flat, offsets

    def token_relevance(self, relevance: Any, rows: Rows) -> list[list[float]]:
        flat = relevance[0].tolist()
        out, start = [], 0
        for r in rows:
            out.append(flat[start: start + len(r)])
            start += len(r)
        return out


class TfidfMLP(nn.Module):
    """A bag-of-words MLP on L2-normalised TF-IDF vectors (idf fitted on the training documents)."""

    arch = "mlp"

    def __init__(self, vocab_size: int, classes: int, *, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.config = {"hidden": hidden, "dropout": dropout}
        self.register_buffer("idf", torch.ones(vocab_size))
        self.net = nn.Sequential(nn.Linear(vocab_size, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, classes))

    def fit(self, rows: Rows) -> None:
        df = torch.zeros_like(self.idf)
        for r in rows:
            df[torch.tensor(sorted(set(r)), dtype=torch.long)] += 1
        self.idf.copy_(torch.log((1 + len(rows)) / (1 + df)) + 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def inputs(self, rows: Rows) -> tuple[torch.Tensor]:
        x = torch.zeros(len(rows), self.idf.shape[0])
        for i, r in enumerate(rows):
            x[i].index_add_(0, torch.tensor(r, dtype=torch.long), torch.ones(len(r)))
        x = x * self.idf
        return (x / x.norm(dim=1, keepdim=True).clamp(min=1e-12),)

    def token_relevance(self, relevance: Any, rows: Rows) -> list[list[float]]:
        """A feature's relevance is shared equally by the occurrences of its token."""
        out = []
        for i, r in enumerate(rows):
            counts: dict[int, int] = {}
            for t in r:
                counts[t] = counts.get(t, 0) + 1
            out.append([float(relevance[i, t]) / counts[t] for t in r])
        return out


ARCHS: dict[str, type[nn.Module]] = {"cnn": TextCNN, "bag": BagOfEmbeddings, "mlp": TfidfMLP,
                                      "lstm": LSTMClassifier, "gru": GRUClassifier}
