"""Functions that tests run in child processes. They live here because a spawned child imports its target by
module name, and test modules collected in importlib mode have no importable name."""

from __future__ import annotations

import torch

import lrptext
from models import digits_cnn


def model_and_inputs():
    torch.manual_seed(0)
    model = digits_cnn().eval()
    return model, torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def explain_in_child(queue) -> None:
    model, x = model_and_inputs()
    queue.put(lrptext.explain(model, x).relevance.sum().item())
