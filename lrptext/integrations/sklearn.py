"""scikit-learn: explain fitted text pipelines and linear/MLP classifiers with the same kernels.

A fitted estimator becomes the equivalent torch network (its numpy weights copied, nothing refitted), which
lrptext's engine explains with the C++ kernels. Supported: LogisticRegression, LinearSVC, SGDClassifier,
RidgeClassifier and MLPClassifier, alone on a feature matrix or after a CountVectorizer / TfidfVectorizer in a
Pipeline, on raw texts.

Conventions:
- Binary linear models have one decision function f = w·x + b; lrptext gives them two logits (-f, f), so
  explaining class 1 explains f and class 0 explains -f.
- Linear models are explained with LRP-0 by default: the relevance of feature i for class c is exactly
  w_ci·x_i, and the bias b_c keeps its own share (relevance sums to f_c(x) - b_c).
- Words: an n-gram feature's relevance is divided equally among its occurrences in the document, and each
  occurrence's share equally among its n words; a word's relevance is the sum over its tokens. This needs the
  vectorizer's built-in word analyzer (token_pattern, lowercase, strip_accents, stop words, ngram_range); a
  callable analyzer, tokenizer or preprocessor, or a character analyzer, cannot be mapped back to words: explain
  the feature matrix with explain_features() (or RelevanceTransformer) instead.
- Loading a pickled scikit-learn pipeline (joblib) runs arbitrary code: load only files you trust.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from lrptext.engine import Explainer, Explanation
from lrptext.rules import Composite, Epsilon
from lrptext.text.document import DocumentExplanation, words_of
from lrptext.text.tokens import Token

LRP0 = Composite("lrp0", dense=Epsilon(0.0), conv=Epsilon(0.0))
LINEAR_NAMES = ("LogisticRegression", "LinearSVC", "SGDClassifier", "RidgeClassifier")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": nn.Identity}


def _check_fitted(estimator: Any) -> None:
    check_is_fitted(estimator)


def _pair(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One decision function becomes the two logits (-f, f)."""
    return np.vstack([-weight, weight]), np.concatenate([-bias, bias])


def _linear(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float64)))
        layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float64)))
    return layer


def to_torch(estimator: Any) -> nn.Module:
    """The fitted classifier as an equivalent torch network of dense layers (float64), logits out."""
    _check_fitted(estimator)
    name = type(estimator).__name__
    if name in LINEAR_NAMES:
        weight = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
        bias = np.broadcast_to(np.asarray(estimator.intercept_, dtype=np.float64), (weight.shape[0],)).copy()
        if weight.shape[0] == 1:
            weight, bias = _pair(weight, bias)
        return nn.Sequential(_linear(weight, bias))
    if name == "MLPClassifier":
        layers: list[nn.Module] = []
        count = len(estimator.coefs_)
        for i, (w, b) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
            w, b = np.asarray(w, dtype=np.float64).T, np.asarray(b, dtype=np.float64)
            if i == count - 1 and w.shape[0] == 1:
                w, b = _pair(w, b)
            layers.append(_linear(w, b))
            if i < count - 1:
                layers.append(ACTIVATIONS[estimator.activation]())
        return nn.Sequential(*layers)
    raise TypeError(f"lrptext cannot explain {name}; supported classifiers: {', '.join(LINEAR_NAMES)}, "
                    "MLPClassifier (alone or after CountVectorizer/TfidfVectorizer in a Pipeline)")


def _dense(X: Any) -> np.ndarray:
    if hasattr(X, "toarray"):
        X = X.toarray()
    X = np.array(X, dtype=np.float64)  # a writable float64 copy for torch
    if X.ndim != 2:
        raise ValueError(f"the feature matrix must be 2-D (samples, features), got shape {X.shape}")
    return X


def _target(estimator: Any, target: Any) -> Any:
    """Class labels (as in estimator.classes_) to indices; None stays None (the predicted class)."""
    if target is None:
        return None
    classes = list(estimator.classes_)
    labels = [target] if np.isscalar(target) else list(target)
    try:
        indices = [classes.index(t) for t in labels]
    except ValueError:
        raise ValueError(f"unknown target {target!r}; the classifier's classes are {classes}") from None
    return indices[0] if np.isscalar(target) else indices


def default_composite(estimator: Any) -> Composite | str:
    """LRP-0 for a linear classifier (its relevance is w·x exactly), epsilon for an MLP."""
    return LRP0 if type(estimator).__name__ in LINEAR_NAMES else "epsilon"


def explain_features(estimator: Any, X: Any, *, target: Any = None, composite: Composite | str | None = None,
                     backend: str = "auto") -> Explanation:
    """Feature-level relevance of a fitted classifier on a (dense or sparse) feature matrix: relevance [n, F]."""
    module = to_torch(estimator)
    composite = composite or default_composite(estimator)
    return Explainer(module, composite=composite, backend=backend).explain(
        torch.from_numpy(_dense(X)), target=_target(estimator, target))


def split_pipeline(pipeline: Any) -> tuple[Any, Any]:
    """(vectorizer, classifier) of a two-step CountVectorizer/TfidfVectorizer + classifier Pipeline; (None, the
    estimator) for a bare classifier. Any other Pipeline raises a TypeError."""
    steps = getattr(pipeline, "steps", None)
    if steps is None:
        return None, pipeline
    if len(steps) != 2:
        raise TypeError(f"lrptext explains a Pipeline of a vectorizer and a classifier, got {len(steps)} steps")
    vectorizer, classifier = steps[0][1], steps[1][1]
    if type(vectorizer).__name__ not in ("CountVectorizer", "TfidfVectorizer"):
        raise TypeError(f"the first step must be a CountVectorizer or TfidfVectorizer, got {type(vectorizer).__name__}")
    return vectorizer, classifier


def check_word_analyzer(vectorizer: Any) -> None:
    """Raises a ValueError unless the vectorizer's features are words of the text (its built-in word analyzer: no
    callable analyzer, tokenizer or preprocessor, no character n-grams)."""
    if (callable(vectorizer.analyzer) or vectorizer.analyzer != "word" or vectorizer.tokenizer is not None
            or vectorizer.preprocessor is not None):
        raise ValueError(
            f"{type(vectorizer).__name__} uses a custom or character analyzer (analyzer={vectorizer.analyzer!r}, "
            f"tokenizer={vectorizer.tokenizer!r}, preprocessor={vectorizer.preprocessor!r}): its features cannot "
            "be mapped back to words of the text. Explain the features instead: "
            "lrptext.integrations.sklearn.explain_features(classifier, vectorizer.transform(texts))")


def _token_relevance(vectorizer: Any, text: str, feature_relevance: np.ndarray) -> list[tuple[Token, float]]:
    """Feature relevance spread over the text's tokens: equally over a feature's occurrences, then over an
    n-gram's words."""
    preprocess = vectorizer.build_preprocessor()
    stop = vectorizer.get_stop_words() or frozenset()
    tokens = [(preprocess(m.group()), Token(m.group(), m.start(), m.end()))
              for m in re.finditer(vectorizer.token_pattern, text)]
    tokens = [(norm, tok) for norm, tok in tokens if norm not in stop]
    low, high = vectorizer.ngram_range
    occurrences: dict[int, list[tuple[int, int]]] = {}
    for n in range(low, high + 1):
        for i in range(len(tokens) - n + 1):
            feature = vectorizer.vocabulary_.get(" ".join(norm for norm, _ in tokens[i: i + n]))
            if feature is not None:
                occurrences.setdefault(feature, []).append((i, n))
    shares = [0.0] * len(tokens)
    for feature, places in occurrences.items():
        for i, n in places:
            for k in range(i, i + n):
                shares[k] += float(feature_relevance[feature]) / len(places) / n
    return [(tok, shares[k]) for k, (_, tok) in enumerate(tokens)]


def _probabilities(classifier: Any, X: Any, logits: torch.Tensor) -> np.ndarray:
    """The classifier's own predict_proba where it has one; else the softmax of its decision logits (LinearSVC,
    RidgeClassifier and hinge-loss SGD give no calibrated probabilities)."""
    try:
        return np.asarray(classifier.predict_proba(X), dtype=np.float64)
    except AttributeError:
        return logits.softmax(dim=1).numpy()


def explain_texts(pipeline: Any, texts: Sequence[str], *, target: Any = None,
                  composite: Composite | str | None = None, backend: str = "auto") -> list[DocumentExplanation]:
    """Word-level relevance (with character offsets) of a fitted vectorizer + classifier Pipeline on raw texts."""
    if isinstance(texts, str):
        raise TypeError("pass a list of documents, e.g. [text]")
    vectorizer, classifier = split_pipeline(pipeline)
    if vectorizer is None:
        raise TypeError("raw texts need a Pipeline whose first step is a CountVectorizer or TfidfVectorizer; "
                        "for a feature matrix call explain_features()")
    _check_fitted(vectorizer)
    check_word_analyzer(vectorizer)
    X = vectorizer.transform(list(texts))
    e = explain_features(classifier, X, target=target, composite=composite, backend=backend)
    relevance = e.relevance.numpy()
    probs = _probabilities(classifier, X, e.prediction)
    labels = [str(c) for c in classifier.classes_]
    docs = []
    for i, text in enumerate(texts):
        pairs = _token_relevance(vectorizer, text, relevance[i])
        predicted, explained = int(probs[i].argmax()), int(e.target[i])
        docs.append(DocumentExplanation(
            text=text, labels=labels, prediction=labels[predicted], score=float(probs[i, predicted]),
            target=labels[explained], target_score=float(probs[i, explained]), words=words_of(text, pairs),
            token_relevance=pairs, truncated=False, probabilities=tuple(probs[i].tolist())))
    return docs


def explain_estimator(estimator: Any, inputs: Any, *, target: Any = None, composite: Composite | str | None = None,
                      backend: str = "auto") -> list[DocumentExplanation] | Explanation:
    """What lrptext.explain() does with a fitted scikit-learn classifier or vectorizer + classifier Pipeline: a
    non-empty list (or tuple) of strings is raw texts (explain_texts: one DocumentExplanation each), anything else
    a feature matrix (explain_features: one Explanation)."""
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        return explain_texts(estimator, inputs, target=target, composite=composite, backend=backend)
    return explain_features(estimator, inputs, target=target, composite=composite, backend=backend)


class RelevanceTransformer(TransformerMixin, BaseEstimator):
    """Feature-level relevance as a scikit-learn transformer: ``transform(X)`` gives, per sample and feature, the
    relevance for the class the classifier predicts.

    estimator: a supported classifier; a clone is fitted in ``fit`` unless prefit=True, in which case the
    estimator must already be fitted and is used as it is. composite: None (LRP-0 for linear models, epsilon for
    MLPs) or any lrptext composite.
    """

    def __init__(self, estimator: Any = None, *, prefit: bool = False, composite: Any = None):
        self.estimator = estimator
        self.prefit = prefit
        self.composite = composite

    def fit(self, X: Any, y: Any = None) -> RelevanceTransformer:
        if self.estimator is None:
            raise ValueError("RelevanceTransformer needs an estimator, e.g. RelevanceTransformer(LogisticRegression())")
        if self.prefit:
            check_is_fitted(self.estimator)
            validate_data(self, X, accept_sparse=True, reset=True)
            self.estimator_ = self.estimator
        else:
            X = validate_data(self, X, accept_sparse=True, reset=True)
            self.estimator_ = clone(self.estimator).fit(X, y)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, accept_sparse=True, reset=False)
        return explain_features(self.estimator_, X, composite=self.composite).relevance.numpy()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.required = True  # the wrapped classifier is fitted on (X, y)
        return tags
