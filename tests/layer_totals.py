"""The check of per-sample layer totals (explain(..., layers=True)): each total listed for a batch is the one its
sample gets explained alone, for every layer listed both ways."""

from __future__ import annotations

import torch


def assert_each_samples_own(explainer, ids: torch.Tensor, layers: int = 4) -> None:
    """`layers`: how many layers the batch must list at least (a check that lists nothing passes nothing)."""
    together = explainer.explain(ids, layers=True).layer_relevance
    assert len(together) >= layers
    for i in range(len(ids)):
        alone = explainer.explain(ids[i:i + 1], layers=True).layer_relevance
        for name, total in together.items():
            torch.testing.assert_close(total[i:i + 1], alone[name], rtol=1e-9, atol=1e-12)
