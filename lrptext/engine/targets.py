"""What to explain: the target logit(s) per sample, turned into the initial relevance at the output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch


@dataclass(frozen=True)
class Contrast:
    """Explain class `target` against class `against` (per sample or one for all): R = f_c·e_c − f_c'·e_c'."""

    target: int | Sequence[int] | torch.Tensor
    against: int | Sequence[int] | torch.Tensor


Target = Union[None, int, Sequence[int], torch.Tensor, Contrast]


def _classes(value: int | Sequence[int] | torch.Tensor, logits: torch.Tensor, what: str) -> torch.Tensor:
    batch, classes = logits.shape
    t = torch.as_tensor(value, device=logits.device)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"'{what}' must hold class indices (integers), got dtype {t.dtype}")
    t = t.long()
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"'{what}' must be one class index or one per sample ({batch}), got shape {tuple(t.shape)}")
    if batch and not 0 <= int(t.min()) <= int(t.max()) < classes:  # two reductions, not four element-wise passes
        bad = (t < 0) | (t >= classes)
        raise ValueError(f"'{what}' holds class {int(t[bad][0])}, outside [0, {classes}) for a model with {classes} "
                         "outputs")
    return t


def initial_relevance(logits: torch.Tensor, target: Target,
                      output_relevance: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(R at the output, target classes or None, contrast classes or None)."""
    if logits.dim() != 2:
        raise ValueError(f"lrptext explains models whose output is (batch, classes); this one returns shape "
                         f"{tuple(logits.shape)}: reshape it in the model, or pass output_relevance=")
    if output_relevance is not None:
        if target is not None:
            raise ValueError("pass either 'target' or 'output_relevance', not both")
        r = torch.as_tensor(output_relevance, dtype=logits.dtype, device=logits.device)
        if r.shape != logits.shape:
            raise ValueError(f"'output_relevance' must have the output's shape {tuple(logits.shape)}, got "
                             f"{tuple(r.shape)}")
        return r.clone(), None, None  # the relevance pass may overwrite it: never the caller's tensor
    if isinstance(target, Contrast):
        c = _classes(target.target, logits, "target")
        against = _classes(target.against, logits, "against")
        r = _one_hot_logit(logits, c)
        r.scatter_add_(1, against[:, None], -logits.gather(1, against[:, None]))
        return r, c, against
    c = logits.argmax(dim=1) if target is None else _classes(target, logits, "target")
    return _one_hot_logit(logits, c), c, None


def _one_hot_logit(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """logits[i, classes[i]] at (i, classes[i]), zero elsewhere; by gather and scatter, faster at batch 1 than
    indexing with row numbers."""
    index = classes[:, None]
    return torch.zeros_like(logits).scatter_(1, index, logits.gather(1, index))
