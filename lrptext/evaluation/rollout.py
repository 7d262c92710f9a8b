"""Attention-based baselines for transformer encoders, computed by lrptext from the model's attention
probabilities A_l = softmax(Q Kᵀ/√d + mask), [batch, heads, T, T] for layers l = 1..L:

- attention rollout (Abnar & Zuidema 2020): Â_l = row-normalised ½ mean_h A_l + ½ I (the residual connection),
  R = Â_L ··· Â_2 Â_1;
- gradient-weighted rollout (Chefer et al. 2021, "Generic Attention-model Explainability", the rule for
  self-attention encoders): Ā_l = mean_h (∇A_l ⊙ A_l)⁺ with ∇A_l = ∂f_c/∂A_l for the explained class c,
  R = I, then R ← R + Ā_l R for l = 1..L.

A token's score is its column in the row of the token the classifier reads: [CLS] (position 0; BERT, RoBERTa,
DistilBERT and ELECTRA classifiers), or for a mean-pooled classifier the mean of the rows of the real tokens.

The probabilities come from a copy of the model run with attn_implementation="eager" and output_attentions
(SDPA attention does not expose them); the user's model is never changed."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

POOLINGS = ("cls", "mean")


def pooled_rows(r: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T]: the row of R [B, T, T] the classifier reads, zero at padding."""
    mask = mask.to(r.dtype)
    if pooling == "cls":
        scores = r[:, 0, :]
    elif pooling == "mean":
        scores = (mask[:, :, None] * r).sum(dim=1) / mask.sum(dim=1, keepdim=True)
    else:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return scores * mask


def rollout(attentions: Sequence[torch.Tensor], mask: torch.Tensor, pooling: str = "cls") -> torch.Tensor:
    """Attention rollout token scores [B, T] from each layer's attention probabilities [B, H, T, T]."""
    r = None
    for a in attentions:
        a = a.detach().double().mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        r = a if r is None else a @ r
    return pooled_rows(r, mask, pooling)


def gradient_rollout(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], mask: torch.Tensor,
                     pooling: str = "cls") -> torch.Tensor:
    """Gradient-weighted rollout (Chefer et al. 2021) token scores [B, T] from each layer's attention
    probabilities and the explained logit's gradient at them, [B, H, T, T] each."""
    r = None
    for a, g in zip(attentions, gradients):
        weighted = (g.detach().double() * a.detach().double()).clamp(min=0).mean(dim=1)
        if r is None:
            r = torch.eye(weighted.shape[-1], dtype=weighted.dtype).expand_as(weighted).clone()
        r = r + weighted @ r
    return pooled_rows(r, mask, pooling)


def pooling_of(model: torch.nn.Module) -> str:
    """"mean" for lrptext's mean-pooled SentenceClassifier, "cls" for Hugging Face sequence classifiers."""
    from lrptext.integrations.transformers import SentenceClassifier

    return "mean" if isinstance(model, SentenceClassifier) else "cls"


class AttentionExplainer:
    """Rollout and gradient-weighted rollout of a Hugging Face model (or a module holding one, such as
    SentenceClassifier), from an eager-attention copy made once."""

    def __init__(self, model: torch.nn.Module, pooling: str | None = None):
        from transformers import PreTrainedModel

        self.pooling = pooling or pooling_of(model)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(True)  # the copy's: gradients must reach the attention probabilities
        self.encoder = next((m for m in self.model.modules() if isinstance(m, PreTrainedModel)), None)
        if self.encoder is None:
            raise TypeError(f"attention rollout reads a Hugging Face model's attention probabilities; "
                            f"{type(model).__name__} holds no transformers PreTrainedModel")
        self.encoder.set_attn_implementation("eager")
        self.encoder.config.output_attentions = True

    def run(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(logits [B, C], attention probabilities per layer [B, H, T, T]) of the copy."""
        captured: list[Any] = []
        handle = self.encoder.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            out = self.model(**batch)
        finally:
            handle.remove()
        attentions = getattr(captured[0], "attentions", None)
        if not attentions:
            raise RuntimeError(f"{type(self.encoder).__name__} returned no attention probabilities with "
                               "output_attentions=True and eager attention")
        logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
        return (out[0] if logits is None else logits), tuple(attentions)

    def rollout(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            _, attentions = self.run(batch)
        return rollout(attentions, batch["attention_mask"], self.pooling)

    def gradient_rollout(self, batch: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            logits, attentions = self.run(batch)
            gradients = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), attentions)
        return gradient_rollout(attentions, gradients, batch["attention_mask"], self.pooling)
