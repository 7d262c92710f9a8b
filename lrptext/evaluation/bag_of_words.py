"""Word deletion for a bag-of-words scikit-learn pipeline (CountVectorizer/TfidfVectorizer + a linear classifier
or MLP), as Arras et al. (2017) ran it on their TF-IDF SVM: relevance per vocabulary word of the document, and
deleting a word removes all its occurrences from the document before the features are computed again (so TF-IDF
weights and normalisation follow, as they would for the edited text).

Methods: lrp (w·x per feature for linear models, LRP-0 on their torch equivalent; epsilon for MLPs), sa (the
squared gradient of the explained class's logit per present feature), gi (gradient × input), occlusion (the
logit's drop when the word alone is removed), random. The score is the explained class's logit (decision value).
Unigram word analyzers only: an n-gram feature has no single word to delete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lrptext.evaluation.curves import Curve, check_choices, perturbation_curves

METHODS = ("lrp", "sa", "gi", "occlusion", "random")


class _Pipeline:
    def __init__(self, pipeline: Any, batch_size: int):
        from lrptext.integrations.sklearn import check_word_analyzer, split_pipeline, to_torch

        self.vectorizer, self.classifier = split_pipeline(pipeline)
        if self.vectorizer is None:
            raise TypeError("word deletion on raw texts needs a Pipeline whose first step is a CountVectorizer or "
                            "TfidfVectorizer")
        check_word_analyzer(self.vectorizer)
        if tuple(self.vectorizer.ngram_range) != (1, 1):
            raise ValueError(f"word deletion needs unigram features, the vectorizer has ngram_range "
                             f"{self.vectorizer.ngram_range}; an n-gram has no single word to delete")
        self.analyze = self.vectorizer.build_analyzer()
        self.module = to_torch(self.classifier)
        self.batch_size = batch_size
        self._explainer = None

    @property
    def explainer(self):
        """LRP of the classifier's torch equivalent with its default composite, captured once for every batch."""
        if self._explainer is None:
            from lrptext.engine import Explainer
            from lrptext.integrations.sklearn import default_composite

            self._explainer = Explainer(self.module, composite=default_composite(self.classifier))
        return self._explainer

    def features(self, words: Sequence[Sequence[str]]) -> torch.Tensor:
        # The analyzer's own tokens, joined by spaces, analyse back to themselves (unigrams, lower-cased).
        X = self.vectorizer.transform([" ".join(w) for w in words])
        return torch.from_numpy(np.asarray(X.toarray(), dtype=np.float64))

    def logits(self, words: Sequence[Sequence[str]]) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(0, len(words), self.batch_size):
                out.append(self.module(self.features(words[start: start + self.batch_size])))
        return torch.cat(out)


def _word_scores(method: str, model: _Pipeline, words: list[list[str]], vocabulary: list[list[str]],
                 truth: torch.Tensor) -> tuple[list[np.ndarray], int]:
    """Per distinct word of each document (in `vocabulary` order), and evaluations per document."""
    index = model.vectorizer.vocabulary_
    scores, evaluations = [], 1
    for start in range(0, len(words), model.batch_size):
        batch, goal = words[start: start + model.batch_size], truth[start: start + model.batch_size]
        X = model.features(batch)
        if method == "lrp":
            per_feature = model.explainer.explain(X, target=goal).relevance
        elif method in ("sa", "gi"):
            x = X.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model.module(x).gather(1, goal[:, None]).sum(), x)
            per_feature = grad.pow(2) if method == "sa" else grad * X
        elif method == "occlusion":
            per_feature = None
        else:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        for i, types in enumerate(vocabulary[start: start + model.batch_size]):
            if per_feature is not None:
                scores.append(np.array([float(per_feature[i, index[w]]) for w in types]))
                continue
            doc, c = batch[i], int(goal[i])
            variants = [doc] + [[t for t in doc if t != w] for w in types]
            logits = model.logits(variants)[:, c].numpy()
            scores.append(logits[0] - logits[1:])
    if method == "occlusion":
        evaluations = round(np.mean([len(v) + 1 for v in vocabulary]))
    return scores, evaluations


def bow_word_deletion(pipeline: Any, texts: Sequence[str], labels: Sequence[Any], *,
                      methods: Sequence[str] = ("lrp", "sa", "random"), orders: Sequence[str] = ("morf",),
                      steps: int = 25, seeds: int = 5, batch_size: int = 64,
                      progress: bool | None = None) -> list[Curve]:
    """One Curve per method and order over `texts` with their true `labels` (as in the classifier's classes_),
    relevance for the true label."""
    if "ig" in methods:
        raise ValueError("method 'ig' (integrated gradients) is not available for a scikit-learn pipeline; for a "
                         "linear classifier it equals 'gi' (gradient x input, zero baseline)")
    check_choices(orders, methods, METHODS)
    model = _Pipeline(pipeline, batch_size)
    classes = list(model.classifier.classes_)
    missing = sorted({str(y) for y in labels if y not in classes})
    if missing:
        raise ValueError(f"unknown label(s) {', '.join(missing)}; the classifier's classes are {classes}")
    truth = torch.tensor([classes.index(y) for y in labels])
    known = model.vectorizer.vocabulary_
    words = [[w for w in model.analyze(t) if w in known] for t in texts]
    vocabulary = [list(dict.fromkeys(w)) for w in words]  # distinct known words, first occurrence order

    def scores_of(method: str):
        return (None, 0) if method == "random" else _word_scores(method, model, words, vocabulary, truth)

    def ranked(scores, order):
        return [[v[j] for j in np.argsort(-s if order == "morf" else s, kind="stable")]
                for v, s in zip(vocabulary, scores)]

    def shuffled(seed):
        rng = np.random.default_rng(seed)
        return [[v[j] for j in rng.permutation(len(v))] for v in vocabulary]

    return perturbation_curves(methods, orders, len(texts), scores_of=scores_of, ranked=ranked, shuffled=shuffled,
                               curve_of=lambda order, seed, _: _curve(model, words, order, truth, steps),
                               seeds=seeds, progress=progress, desc="word deletion")


def _curve(model: _Pipeline, words: list[list[str]], ranked: list[list[str]], truth: torch.Tensor,
           steps: int) -> tuple[np.ndarray, np.ndarray]:
    scores, correct = np.zeros((len(words), steps + 1)), np.zeros((len(words), steps + 1))
    for k in range(steps + 1):
        gone = [set(r[:k]) for r in ranked]
        edited = [[t for t in doc if t not in g] for doc, g in zip(words, gone)]
        logits = model.logits(edited)
        scores[:, k] = logits.gather(1, truth[:, None]).squeeze(1).numpy()
        correct[:, k] = (logits.argmax(1) == truth).double().numpy()
    return scores, correct
