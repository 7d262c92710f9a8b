"""Faithfulness on a Hugging Face classifier's subword pieces (TransformerClassifier): token deletion (MoRF and
LeRF, as words.py does for lrptext's own models) and Ali et al. (2022)'s generate and prune protocol
(fractions.py), for LRP (attnlrp, cp_lrp) and the baselines lrptext computes on the same inputs:

- sa, gi, ig: sensitivity, gradient × input and integrated gradients (zero baseline, baselines.py) at the word
  embeddings (the embedding table's output, before position embeddings and the LayerNorm), summed over their
  dimension;
- occlusion: the explained logit's drop when the token alone is deleted;
- rollout, chefer: attention rollout and gradient-weighted rollout (rollout.py);
- random: a random order per document, averaged over seeds.

Each document is read in its first window only: the special tokens and the first max_length − (special tokens)
pieces, as a model fine-tuned on truncated documents was trained and tested. Relevance is computed for the true
label on that window, and the window is what is perturbed; special tokens are never deleted."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lrptext.evaluation.baselines import GRADIENT_METHODS, gradient_attribution
from lrptext.evaluation.curves import Curve, check_choices, perturbation_curves
from lrptext.evaluation.fractions import (
    CASES,
    FRACTIONS,
    FractionCurve,
    fraction_outputs,
    ranking,
    summarise_fractions,
)
from lrptext.evaluation.words import DELETIONS, deletion_curve, output_replaced
from lrptext.text.subwords import pieces_of
from lrptext.text.transformer import TransformerClassifier, padded_batch

METHODS = ("lrp", "sa", "gi", "ig", "occlusion", "rollout", "chefer", "random")
LRP_COMPOSITES = ("attnlrp", "cp_lrp")


@dataclass(frozen=True)
class FirstWindows:
    """Each document's first window: token id rows with the special tokens, and where its pieces sit."""

    rows: list[list[int]]
    positions: list[list[int]]
    longer: list[bool]  # the document has more pieces than a window holds

    def take(self, indices: Sequence[int]) -> FirstWindows:
        return FirstWindows([self.rows[i] for i in indices], [self.positions[i] for i in indices],
                            [self.longer[i] for i in indices])


def first_windows(classifier: TransformerClassifier, texts: Sequence[str]) -> FirstWindows:
    if not isinstance(classifier, TransformerClassifier):
        raise TypeError(f"piece deletion and generate/prune read a Hugging Face classifier's windows "
                        f"(TextClassifier.from_pretrained), got {type(classifier).__name__}; evaluate lrptext's own "
                        "models with lrptext.evaluation.word_deletion")
    rows, positions, longer = [], [], []
    for i, pieces in enumerate(pieces_of(classifier.tokenizer, texts)):
        if not pieces.ids:
            raise ValueError(f"document {i} gives the tokenizer no token; nothing in it can be explained")
        content = pieces.ids[: classifier.window]
        rows.append(classifier.prefix + content + classifier.suffix)
        positions.append(list(range(len(classifier.prefix), len(classifier.prefix) + len(content))))
        longer.append(len(pieces.ids) > classifier.window)
    return FirstWindows(rows, positions, longer)


def _logits(output: Any) -> torch.Tensor:
    """A model's logits (in its own dtype), whether it returns a tensor, a ModelOutput or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    return output[0] if logits is None else logits


class Perturbed:
    """Logits of the classifier's model for token rows with some positions deleted: replaced by the unknown token
    ("unk"), taken out ("remove"), or their word embedding zeroed ("zero"; position and token-type embeddings
    stay)."""

    def __init__(self, classifier: TransformerClassifier, deletion: str, batch_size: int = 32):
        if deletion not in DELETIONS:
            raise ValueError(f"deletion must be one of {', '.join(DELETIONS)}, got {deletion!r}")
        self.model, self.deletion, self.batch_size = classifier.model, deletion, batch_size
        tokenizer = classifier.tokenizer
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.unk = tokenizer.unk_token_id
        if deletion == "unk" and self.unk is None:
            raise ValueError(f"deletion 'unk' replaces tokens by the unknown token, but {type(tokenizer).__name__} "
                             "has none (unk_token is unset); use deletion 'zero' or 'remove'")
        self.embeddings = self.model.get_input_embeddings()

    def embedding_output(self, replace: Callable[[torch.Tensor], torch.Tensor]):
        """Runs the model with its word embeddings' output passed through `replace`."""
        return output_replaced(self.embeddings, replace)

    def logits(self, rows: Sequence[Sequence[int]], deleted: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        deleted = deleted if deleted is not None else [[]] * len(rows)
        parts = [self._logits(rows[s: s + self.batch_size], deleted[s: s + self.batch_size])
                 for s in range(0, len(rows), self.batch_size)]
        return torch.cat(parts)

    def _logits(self, rows, deleted) -> torch.Tensor:
        gone = [set(d) for d in deleted]
        if self.deletion == "unk":
            rows = [[self.unk if t in g else x for t, x in enumerate(r)] for r, g in zip(rows, gone)]
        elif self.deletion == "remove":
            rows = [[x for t, x in enumerate(r) if t not in g] for r, g in zip(rows, gone)]
        batch = padded_batch([list(r) for r in rows], self.pad)
        with torch.no_grad():
            if self.deletion != "zero":
                return _logits(self.model(**batch))
            keep = torch.ones(batch["input_ids"].shape)
            for b, d in enumerate(deleted):
                keep[b, list(d)] = 0.0
            with self.embedding_output(lambda e: e * keep.unsqueeze(-1).to(e.dtype)):
                return _logits(self.model(**batch))


class TokenScores:
    """Each method's scores of the pieces of first windows, for given classes; what a method builds once (LRP's
    captured graph, the eager-attention copy) is built by warm_up, outside the timed explanations."""

    def __init__(self, classifier: TransformerClassifier, perturbed: Perturbed, *, ig_steps: int = 32,
                 batch_size: int = 32):
        self.classifier, self.perturbed = classifier, perturbed
        self.ig_steps, self.batch_size = ig_steps, batch_size
        self._attention = None

    def attention(self):
        from lrptext.evaluation.rollout import AttentionExplainer

        if self._attention is None:
            self._attention = AttentionExplainer(self.classifier.model)
        return self._attention

    def warm_up(self, method: str, windows: FirstWindows, target: torch.Tensor) -> None:
        if method != "random":
            self.scores(method, windows.take([0]), target[:1])

    def scores(self, method: str, windows: FirstWindows, target: torch.Tensor) -> tuple[list[np.ndarray], int]:
        """(scores of each document's pieces, model evaluations per explanation)."""
        out: list[np.ndarray] = []
        evaluations = 0
        for s in range(0, len(windows.rows), self.batch_size):
            rows, goal = windows.rows[s: s + self.batch_size], target[s: s + self.batch_size]
            positions = windows.positions[s: s + self.batch_size]
            if method == "occlusion":
                for row, where, c in zip(rows, positions, goal.tolist()):
                    logits = self.perturbed.logits([row] * (len(where) + 1), [[]] + [[t] for t in where])
                    out.append((logits[0, c] - logits[1:, c]).double().numpy())
                    evaluations += len(where) + 1
                continue
            per_token, evaluations = self._batch_scores(method, padded_batch(rows, self.perturbed.pad), goal)
            out += [per_token[i, where].detach().double().numpy() for i, where in enumerate(positions)]
        if method == "occlusion":
            evaluations = round(evaluations / max(len(windows.rows), 1))
        return out, evaluations

    def _batch_scores(self, method: str, batch: dict[str, torch.Tensor], goal: torch.Tensor
                      ) -> tuple[torch.Tensor, int]:
        if method.startswith("lrp:"):
            e = self.classifier.explainer(method.split(":", 1)[1]).explain(batch, target=goal)
            return e.relevance, 1
        if method in GRADIENT_METHODS:
            return self._embedding_attribution(method, batch, goal)
        if method == "rollout":
            return self.attention().rollout(batch), 1
        if method == "chefer":
            return self.attention().gradient_rollout(batch, goal), 1
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")

    def _embedding_attribution(self, method: str, batch: dict[str, torch.Tensor], goal: torch.Tensor
                               ) -> tuple[torch.Tensor, int]:
        model = self.classifier.model
        with torch.no_grad():
            x = self.perturbed.embeddings(batch["input_ids"])

        def forward(e: torch.Tensor) -> torch.Tensor:
            with self.perturbed.embedding_output(lambda _: e):
                return _logits(model(**batch))

        return gradient_attribution(method, forward, x, goal, over=-1, steps=self.ig_steps)


def expand_methods(methods: Sequence[str], composites: Sequence[str] | None) -> list[str]:
    """The methods as curves are named: "lrp" becomes "lrp:<composite>" for each composite (default: attnlrp
    and cp_lrp)."""
    check_choices((), methods, METHODS)
    out = []
    for method in methods:
        out += [f"lrp:{c}" for c in (composites or LRP_COMPOSITES)] if method == "lrp" else [method]
    return out


def _truth(classifier: TransformerClassifier, labels: Sequence[str | int], texts: Sequence[str]) -> torch.Tensor:
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"give one label per text and at least one text, got {len(texts)} texts and {len(labels)} "
                         "labels")
    return torch.tensor([classifier.label_index(label) for label in labels])


def token_deletion(classifier: TransformerClassifier, texts: Sequence[str], labels: Sequence[str | int], *,
                   methods: Sequence[str] = ("lrp", "sa", "random"), orders: Sequence[str] = ("morf",),
                   steps: int = 25, deletion: str = "unk", composites: Sequence[str] | None = None, seeds: int = 5,
                   ig_steps: int = 32, batch_size: int = 32, progress: bool | None = None) -> list[Curve]:
    """One Curve per method and order: pieces of the first windows deleted one by one, k = 0..steps."""
    check_choices(orders, methods, METHODS)
    truth = _truth(classifier, labels, texts)
    windows = first_windows(classifier, texts)
    perturbed = Perturbed(classifier, deletion, batch_size)
    explain = TokenScores(classifier, perturbed, ig_steps=ig_steps, batch_size=batch_size)

    def ranked(scores, order):
        return [np.asarray(where)[np.argsort(-x if order == "morf" else x, kind="stable")]
                for x, where in zip(scores, windows.positions)]

    def shuffled(seed):
        rng = np.random.default_rng(seed)
        return [rng.permutation(where) for where in windows.positions]

    return perturbation_curves(
        expand_methods(methods, composites), orders, len(texts),
        scores_of=lambda m: (None, 0) if m == "random" else explain.scores(m, windows, truth),
        ranked=ranked, shuffled=shuffled,
        curve_of=lambda order, seed, _: deletion_curve(perturbed, windows.rows, truth, order, steps),
        seeds=seeds, progress=progress, desc="token deletion",
        warm_up=lambda m: explain.warm_up(m, windows, truth))


def generate_and_prune(classifier: TransformerClassifier, texts: Sequence[str], labels: Sequence[str | int], *,
                       methods: Sequence[str] = ("lrp", "gi", "random"), cases: Sequence[str] = CASES,
                       composites: Sequence[str] | None = None, seeds: int = 5,
                       fractions: Sequence[float] = FRACTIONS, ig_steps: int = 32, batch_size: int = 32,
                       progress: bool | None = None) -> list[FractionCurve]:
    """One FractionCurve per method and case (generate, prune) of Ali et al.'s protocol on the first windows;
    tokens are replaced by the tokenizer's unknown token."""
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise ValueError(f"cases must be some of {', '.join(CASES)}, got {list(cases)}")
    truth = _truth(classifier, labels, texts)
    windows = first_windows(classifier, texts)
    perturbed = Perturbed(classifier, "unk", batch_size)
    explain = TokenScores(classifier, perturbed, ig_steps=ig_steps, batch_size=batch_size)

    def shuffled(seed):
        rng = np.random.default_rng(seed)
        return [rng.permutation(len(where)) for where in windows.positions]

    return perturbation_curves(
        expand_methods(methods, composites), cases, len(texts),
        scores_of=lambda m: (None, 0) if m == "random" else explain.scores(m, windows, truth),
        ranked=lambda scores, case: [ranking(x, case) for x in scores], shuffled=shuffled,
        curve_of=lambda orders, seed, case: fraction_outputs(perturbed.logits, windows.rows, windows.positions, truth,
                                                             orders, case, perturbed.unk, fractions),
        seeds=seeds, progress=progress, desc="generate and prune",
        summary=functools.partial(summarise_fractions, fractions=list(fractions)),
        warm_up=lambda m: explain.warm_up(m, windows, truth))
