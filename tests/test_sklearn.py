"""scikit-learn: text pipelines and classifiers explained through the same kernels, RelevanceTransformer."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

import lrptext
from lrptext.cli import main
from lrptext.integrations.sklearn import RelevanceTransformer, explain_features, explain_texts

TEXTS = ["free money now click here", "meeting about the kernel patch", "click here for free money offer",
         "patch review notes for the meeting", "win money free prize now", "kernel build patch notes",
         "your free offer expires", "review the build logs"]
SPAM = [1, 0, 1, 0, 1, 0, 1, 0]
TOPICS = [0, 1, 0, 1, 2, 1, 2, 1]


@pytest.mark.parametrize("labels", [SPAM, TOPICS], ids=["binary", "three-class"])
def test_tfidf_logistic_regression_word_relevance_is_w_times_x(labels):
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, labels)
    text = "Free money: click the patch, free!"
    doc = lrptext.explain(pipeline, [text], target=labels[0])[0]
    x = pipeline[0].transform([text]).toarray()[0]
    coef = pipeline[1].coef_
    w = coef[0] if coef.shape[0] > 1 else coef[0] * (1 if labels[0] == 1 else -1)
    vocabulary = pipeline[0].vocabulary_
    per_feature: dict[str, float] = {}
    for token, r in doc.token_relevance:
        if token.text.lower() in vocabulary:
            per_feature[token.text.lower()] = per_feature.get(token.text.lower(), 0.0) + r
    for word, r in per_feature.items():  # exactly w_c,i x_i: LRP-0, the bias keeps its own share
        assert r == pytest.approx(w[vocabulary[word]] * x[vocabulary[word]], abs=1e-12)
    assert all(text[wd.start: wd.end] == wd.text for wd in doc.words)
    assert doc.prediction == str(pipeline.predict([text])[0])
    assert doc.score == pytest.approx(pipeline.predict_proba([text]).max())


def test_options_of_torch_models_are_refused_for_a_pipeline():
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, SPAM)
    for option in ({"layers": True}, {"output_relevance": torch.ones(1, 2)}, {"layer_map": {}}):
        with pytest.raises(ValueError, match=f"{next(iter(option))}: not available for scikit-learn models"):
            lrptext.explain(pipeline, ["free money"], **option)


def test_bigrams_are_split_over_their_words():
    pipeline = make_pipeline(CountVectorizer(ngram_range=(2, 2)), LogisticRegression()).fit(TEXTS, SPAM)
    doc = explain_texts(pipeline, ["free money free money"], target=1)[0]
    coef, vocabulary = pipeline[1].coef_[0], pipeline[0].vocabulary_
    free_money = coef[vocabulary["free money"]] * 2   # the feature's relevance w·x: it occurs twice
    money_free = coef[vocabulary["money free"]] * 1   # once, in the middle
    # each occurrence gets an equal share of its feature's relevance, split equally over its two words
    expected = [free_money / 4, free_money / 4 + money_free / 2, money_free / 2 + free_money / 4, free_money / 4]
    assert [w.relevance for w in doc.words] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("classifier", [LinearSVC(), SGDClassifier(random_state=0), RidgeClassifier(),
                                        MLPClassifier(hidden_layer_sizes=(6,), max_iter=2000, random_state=0)],
                         ids=lambda c: type(c).__name__)
def test_every_supported_classifier(classifier):
    pipeline = make_pipeline(CountVectorizer(), classifier).fit(TEXTS, TOPICS)
    docs = lrptext.explain(pipeline, ["free money patch"])
    assert docs[0].prediction == str(pipeline.predict(["free money patch"])[0])
    assert any(w.relevance != 0 for w in docs[0].words)


def test_an_mlp_matches_the_same_network_rebuilt_in_torch():
    X = np.random.default_rng(0).random((12, 7))
    y = np.arange(12) % 3
    mlp = MLPClassifier(hidden_layer_sizes=(9, 5), max_iter=3000, random_state=0).fit(X, y)
    torch_net = nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for layer, w, b in zip(torch_net[::2], mlp.coefs_, mlp.intercepts_):
            layer.weight.copy_(torch.from_numpy(w.T))
            layer.bias.copy_(torch.from_numpy(b))
    ours = lrptext.explain(mlp, X, target=2)
    theirs = lrptext.explain(torch_net, torch.from_numpy(X), target=2, composite="epsilon")
    torch.testing.assert_close(ours.relevance, theirs.relevance)
    np.testing.assert_allclose(ours.prediction.softmax(1).numpy(), mlp.predict_proba(X), rtol=1e-6)


def test_dense_matrices_without_a_vectorizer():
    X = np.random.default_rng(1).normal(size=(10, 4))
    clf = LogisticRegression().fit(X, np.arange(10) % 2)
    e = explain_features(clf, X, target=1)
    np.testing.assert_allclose(e.relevance.numpy(), clf.coef_[0] * X, atol=1e-12)


def test_clear_errors():
    with pytest.raises(NotFittedError):
        explain_texts(make_pipeline(TfidfVectorizer(), LogisticRegression()), ["text"])
    forest = make_pipeline(CountVectorizer(), RandomForestClassifier(n_estimators=3)).fit(TEXTS, SPAM)
    with pytest.raises(TypeError, match="cannot explain RandomForestClassifier"):
        lrptext.explain(forest, ["free money"])
    chars = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3)), LogisticRegression())
    chars.fit(TEXTS, SPAM)
    with pytest.raises(ValueError, match="cannot be mapped back to words of the text. Explain the features instead"):
        lrptext.explain(chars, ["free money"])
    custom = make_pipeline(CountVectorizer(analyzer=str.split), LogisticRegression()).fit(TEXTS, SPAM)
    with pytest.raises(ValueError, match="custom or character analyzer"):
        lrptext.explain(custom, ["free money"])
    features = explain_features(chars[1], chars[0].transform(["free money"]))
    assert features.relevance.shape[1] == len(chars[0].vocabulary_)


def test_cli_explains_a_saved_pipeline(tmp_path, capsys):
    path = tmp_path / "pipeline.joblib"
    joblib.dump(make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, ["ham", "spam"] * 4), path)
    assert main(["explain-text", "--model", str(path), "--format", "json", "free money now"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["prediction"] in ("ham", "spam") and doc["words"][0]["text"] == "free"
    assert main(["explain-text", "--model", str(path), "--target", "eggs", "free money"]) == 1
    assert "labels are ham, spam" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn's own checks warn about dok matrices
@parametrize_with_checks([RelevanceTransformer(LogisticRegression())])
def test_relevance_transformer_is_a_scikit_learn_estimator(estimator, check):
    check(estimator)


def test_relevance_transformer_prefit():
    X = np.random.default_rng(2).normal(size=(8, 3))
    clf = LogisticRegression().fit(X, np.arange(8) % 2)
    relevance = RelevanceTransformer(clf, prefit=True).fit(X).transform(X)
    predicted = clf.predict(X)
    expected = np.where(predicted[:, None] == 1, clf.coef_[0] * X, -clf.coef_[0] * X)
    np.testing.assert_allclose(relevance, expected, atol=1e-12)
    with pytest.raises(NotFittedError):
        RelevanceTransformer(LogisticRegression(), prefit=True).fit(X)
