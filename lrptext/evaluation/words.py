"""Word deletion (Arras et al. 2017) for a TextClassifier: delete the tokens of each document one after another in
the order an explanation ranks them, and follow the accuracy and the explained class's score.

Relevance is computed once, on the intact document, for the document's true label (as in Arras et al.); MoRF
deletes the most relevant token first, LeRF the least relevant. "Delete" is one of

- "zero": the token's embedding becomes the zero vector (Arras et al.; the document keeps its length),
- "unk": the token becomes the unknown token,
- "remove": the token is taken out and the document closes up.

The score is the explained class's logit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from lrptext.evaluation.baselines import GRADIENT_METHODS, gradient_attribution
from lrptext.evaluation.curves import Curve, check_choices, perturbation_curves
from lrptext.text.classifier import DEFAULT_COMPOSITE, TextClassifier

DELETIONS = ("zero", "unk", "remove")
METHODS = ("lrp", "sa", "gi", "ig", "occlusion", "random")


@contextmanager
def output_replaced(module: torch.nn.Module, replace: Callable[[torch.Tensor], torch.Tensor]):
    """Runs `module` with its output passed through `replace` (a forward hook, removed on leaving)."""
    handle = module.register_forward_hook(lambda _module, _inputs, output: replace(output))
    try:
        yield
    finally:
        handle.remove()


class _Model:
    """Logits of a text classifier's model for token rows with some positions deleted."""

    def __init__(self, classifier: TextClassifier, deletion: str, batch_size: int):
        if deletion not in DELETIONS:
            raise ValueError(f"deletion must be one of {', '.join(DELETIONS)}, got {deletion!r}")
        self.model, self.vocab = classifier.model, classifier.vocab
        self.deletion, self.batch_size = deletion, batch_size
        self.embedding = getattr(self.model, "embedding", None)
        if deletion == "zero" and not isinstance(self.embedding, torch.nn.Embedding):
            raise ValueError(f"deletion 'zero' needs a model with an 'embedding' layer ({type(self.model).__name__} "
                             "has none); use deletion='unk' or 'remove'")

    def embedding_output(self, replace: Callable[[torch.Tensor], torch.Tensor]):
        """Runs the model with its embedding's output passed through `replace`."""
        return output_replaced(self.embedding, replace)

    def logits(self, rows: Sequence[Sequence[int]], deleted: Sequence[Sequence[int]]) -> torch.Tensor:
        out = []
        for start in range(0, len(rows), self.batch_size):
            out.append(self._logits(rows[start: start + self.batch_size], deleted[start: start + self.batch_size]))
        return torch.cat(out)

    def _logits(self, rows, deleted) -> torch.Tensor:
        with torch.no_grad():
            gone = [set(d) for d in deleted]
            if self.deletion == "unk":
                rows = [[self.vocab.unk_id if t in g else x for t, x in enumerate(r)] for r, g in zip(rows, gone)]
            elif self.deletion == "remove":
                rows = [[x for t, x in enumerate(r) if t not in g] for r, g in zip(rows, gone)]
            inputs = self.model.inputs(rows)
            if self.deletion != "zero":
                return self.model(*inputs)
            keep = torch.ones(inputs[0].shape, dtype=torch.float32)
            for b, d in enumerate(deleted):
                keep[b, list(d)] = 0.0
            with self.embedding_output(lambda e: e * keep.unsqueeze(-1).to(e.dtype)):
                return self.model(*inputs)


def embedding_attribution(method: str, classifier: TextClassifier, rows: list[list[int]], target: torch.Tensor, *,
                          against: torch.Tensor | None = None, ig_steps: int = 32,
                          model: _Model | None = None) -> tuple[torch.Tensor, int]:
    """A gradient method's scores (sa, gi, ig: lrptext.evaluation.baselines) at the token embeddings of token rows,
    summed over the embedding axis: Tensor[B, T] of the padded rows, and the model evaluations per document. With
    `against` (classes per row), of the logit difference f_target - f_against."""
    model = model or _Model(classifier, "zero", len(rows))
    if model.embedding is None:
        raise ValueError(f"method {method!r} takes gradients at the token embeddings and needs a model with "
                         f"an 'embedding' layer ({type(classifier.model).__name__} has none)")
    (ids,) = classifier.model.inputs(rows)
    with torch.no_grad():
        x = model.embedding(ids)

    def forward(e: torch.Tensor) -> torch.Tensor:
        with model.embedding_output(lambda _: e):
            logits = classifier.model(ids)
        return logits if against is None else logits - logits.gather(1, against[:, None])

    return gradient_attribution(method, forward, x, target, over=-1, steps=ig_steps)


def token_attribution(method: str, classifier: TextClassifier, rows: list[list[int]], target: torch.Tensor, *,
                      ig_steps: int = 32, model: _Model | None = None) -> tuple[list[np.ndarray], int]:
    """A gradient method's scores per token of each row, and the model evaluations per document, at the furthest
    point back that is differentiable: the token embeddings (summed over their axis) of a model with an
    'embedding' layer; each token's looked-up row of an EmbeddingBag (mean mode: the gradient reaches a row
    through the bag's mean); the float features of a bag-of-words model (TF-IDF), a feature's score shared by
    its token's occurrences as LRP's is."""
    net = classifier.model
    if isinstance(getattr(net, "embedding", None), torch.nn.Embedding):
        s, evaluations = embedding_attribution(method, classifier, rows, target, ig_steps=ig_steps, model=model)
        return [s[i, : len(r)].detach().double().numpy() for i, r in enumerate(rows)], evaluations
    bag = getattr(net, "bag", None)
    if isinstance(bag, torch.nn.EmbeddingBag):
        ids, offsets = net.inputs(rows)
        if bag.mode != "mean" or not isinstance(getattr(net, "fc", None), torch.nn.Module):
            raise ValueError(f"method {method!r} on an EmbeddingBag model needs fc(EmbeddingBag(mode='mean')) as "
                             f"BagOfEmbeddings has; {type(net).__name__} has mode {bag.mode!r}")
        sample = torch.bucketize(torch.arange(len(ids)), offsets[1:], right=True)  # each token's document
        counted = (ids != bag.padding_idx if bag.padding_idx is not None else torch.ones_like(ids, dtype=torch.bool))
        counts = torch.zeros(len(rows)).index_add_(0, sample, counted.float()).clamp(min=1)
        with torch.no_grad():
            x = bag.weight[ids]

        def bag_forward(e: torch.Tensor) -> torch.Tensor:  # the bag's mean from its rows (padding left out), fc
            total = torch.zeros(len(rows), e.shape[1], dtype=e.dtype).index_add(0, sample, e * counted[:, None])
            return net.fc(total / counts[:, None].to(e.dtype))

        with torch.no_grad():  # the model must be fc(bag) and nothing more, or these scores would be of another net
            if not torch.allclose(bag_forward(x), net(ids, offsets), rtol=1e-4, atol=1e-5):
                raise ValueError(f"method {method!r}: {type(net).__name__} is not fc(EmbeddingBag(ids)) alone, so "
                                 "its gradient at the bag's rows is not known here")
        s, evaluations = gradient_attribution(method, bag_forward, x, target, over=-1, steps=ig_steps)
        flat = s.detach().double().numpy()
        ends = np.cumsum([len(r) for r in rows])
        return [flat[end - len(r): end] for r, end in zip(rows, ends)], evaluations
    inputs = net.inputs(rows)
    if len(inputs) == 1 and inputs[0].is_floating_point() and inputs[0].dim() == 2 and hasattr(net, "token_relevance"):
        s, evaluations = gradient_attribution(method, lambda f: net(f.squeeze(-1)), inputs[0].unsqueeze(-1), target,
                                              over=-1, steps=ig_steps)
        return [np.asarray(r, dtype=np.float64) for r in net.token_relevance(s.detach(), rows)], evaluations
    raise ValueError(f"method {method!r} takes gradients at the token embeddings, an EmbeddingBag's rows or float "
                     f"features; {type(net).__name__} has none of them")


def _scores(method: str, classifier: TextClassifier, model: _Model, rows: list[list[int]], target: torch.Tensor, *,
            composite: str, ig_steps: int, batch_size: int) -> tuple[list[np.ndarray], int]:
    """Per-token scores of `method` for each row, and the model evaluations it spent per document."""
    scores: list[np.ndarray] = []
    evaluations = 0
    for start in range(0, len(rows), batch_size):
        batch, goal = rows[start: start + batch_size], target[start: start + batch_size]
        if method == "lrp":
            e = classifier.explainer(composite).explain(classifier.model.inputs(batch), target=goal)
            scores += [np.asarray(r, dtype=np.float64) for r in classifier.model.token_relevance(e.relevance, batch)]
            evaluations = 1
        elif method in GRADIENT_METHODS:
            s, evaluations = token_attribution(method, classifier, batch, goal, ig_steps=ig_steps, model=model)
            scores += s
        elif method == "occlusion":  # the score's drop when the token alone is deleted
            for r, c in zip(batch, goal.tolist()):
                variants = [r] * (len(r) + 1)
                logits = model.logits(variants, [[]] + [[t] for t in range(len(r))])[:, c].double().numpy()
                scores.append(logits[0] - logits[1:])
                evaluations += len(r) + 1
        else:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "occlusion":
        evaluations = round(evaluations / max(len(rows), 1))
    return scores, evaluations


def deletion_curve(model: Any, rows: list[list[int]], truth: torch.Tensor, orders: list[np.ndarray],
                   steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Score of the true class and correctness after k = 0..steps deletions, [docs, steps + 1] each; `orders`
    holds row positions, and model.logits(rows, deleted positions) gives the logits (_Model here, the
    transformer's in transformer_tokens.py)."""
    scores = np.zeros((len(rows), steps + 1))
    correct = np.zeros((len(rows), steps + 1))
    for k in range(steps + 1):
        logits = model.logits(rows, [o[:k].tolist() for o in orders])
        scores[:, k] = logits.gather(1, truth[:, None]).squeeze(1).double().numpy()
        correct[:, k] = (logits.argmax(1) == truth).double().numpy()
    return scores, correct


def word_deletion(classifier: TextClassifier, texts: Sequence[str], labels: Sequence[str | int], *,
                  methods: Sequence[str] = ("lrp", "sa", "random"), orders: Sequence[str] = ("morf",),
                  steps: int = 25, deletion: str = "zero", composite: str = DEFAULT_COMPOSITE, seeds: int = 5,
                  ig_steps: int = 32, batch_size: int = 64, progress: bool | None = None) -> list[Curve]:
    """One Curve per method and order over `texts` with their true `labels`, relevance for the true label."""
    check_choices(orders, methods, METHODS)
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"give one label per text and at least one text, got {len(texts)} texts and {len(labels)} "
                         "labels")
    _, rows, _ = classifier.rows(classifier.tokenize(list(texts)))
    truth = torch.tensor([classifier.label_index(label) for label in labels])
    model = _Model(classifier, deletion, batch_size)

    def scores_of(method: str):
        if method == "random":
            return None, 0
        return _scores(method, classifier, model, rows, truth, composite=composite, ig_steps=ig_steps,
                       batch_size=batch_size)

    def ranked(scores, order):
        return [np.argsort(-x if order == "morf" else x, kind="stable") for x in scores]

    def shuffled(seed):
        rng = np.random.default_rng(seed)
        return [rng.permutation(len(r)) for r in rows]

    return perturbation_curves(methods, orders, len(rows), scores_of=scores_of, ranked=ranked, shuffled=shuffled,
                               curve_of=lambda order, seed, _: deletion_curve(model, rows, truth, order, steps),
                               seeds=seeds, progress=progress, desc="word deletion")
