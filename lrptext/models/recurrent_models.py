"""Recurrent document classifiers (Arras et al. 2017): embedding -> bidirectional LSTM or GRU over the packed
sequence (padding never enters the recurrence) -> the last hidden state of each direction -> dropout -> linear."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

Rows = list[list[int]]


class RecurrentClassifier(nn.Module):
    arch = ""
    cell: type[nn.RNNBase] = nn.LSTM

    def __init__(self, vocab_size: int, classes: int, *, dim: int = 64, hidden: int = 64,
                 bidirectional: bool = True, dropout: float = 0.5):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden, "bidirectional": bidirectional, "dropout": dropout}
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.rnn = self.cell(dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)
        self.lstm, self.two = self.cell is nn.LSTM, bidirectional

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = (ids != 0).sum(1).cpu()  # id 0 pads a batch, and only there: empty documents hold [unk]
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h = state[0] if self.lstm else state
        last = torch.cat([h[-2], h[-1]], 1) if self.two else h[-1]
        return self.fc(self.dropout(last))

    def inputs(self, rows: Rows) -> tuple[torch.Tensor]:
        ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return (ids,)

    def token_relevance(self, relevance: Any, rows: Rows) -> list[list[float]]:
        return [relevance[i, : len(r)].tolist() for i, r in enumerate(rows)]


class LSTMClassifier(RecurrentClassifier):
    arch = "lstm"
    cell = nn.LSTM


class GRUClassifier(RecurrentClassifier):
    arch = "gru"
    cell = nn.GRU
