"""Faithfulness evaluation: the summaries from their definitions, each deletion mode and baseline against a
direct computation, LRP against random on the bundled models, the bag-of-words path, and `lrptext evaluate`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lrptext.cli import main
from lrptext.datasets import load
from lrptext.datasets.images import load_images
from lrptext.evaluation.bag_of_words import bow_word_deletion
from lrptext.evaluation.baselines import gradient_attribution
from lrptext.evaluation.curves import summarise
from lrptext.evaluation.pixels import _regions, pixel_flipping
from lrptext.evaluation.words import _Model, _scores, token_attribution, word_deletion
from lrptext.image import ImageClassifier
from lrptext.text.classifier import TextClassifier
from lrptext.text.vocab import PAD, UNK


@pytest.fixture(scope="module")
def spam():
    classifier = TextClassifier.load("default")
    test = load("spam-assassin").test
    return classifier, test


def test_summaries_follow_their_definitions():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    correct = np.array([[1, 1, 0], [1, 0, 0]])
    c = summarise("m", "morf", scores, correct, evaluations=1, seconds_per_explanation=0.0)
    assert c.accuracy == [1.0, 0.5, 0.0] and c.score == [2.0, 1.5, 1.0]
    assert c.aopc == pytest.approx((0 + 1 + 2 + 0 + 0 + 0) / 6)
    assert c.accuracy_auc == pytest.approx(((1 + 0.5) / 2 + (0.5 + 0) / 2) / 2)
    assert c.better == {"aopc": "higher", "accuracy_auc": "lower"}
    with pytest.raises(ValueError, match="steps >= 1"):
        summarise("m", "morf", scores[:, :1], correct[:, :1], evaluations=1, seconds_per_explanation=0.0)


def test_each_deletion_mode_equals_editing_the_input_by_hand(spam):
    classifier, test = spam
    _, rows, _ = classifier.rows(classifier.tokenize([test.texts[0]]))
    row = rows[0]
    t = next(i for i, x in enumerate(row) if row.count(x) == 1 and x != classifier.vocab.unk_id)  # a unique token
    with torch.no_grad():
        unk = classifier.model(*classifier.model.inputs([row[:t] + [classifier.vocab.unk_id] + row[t + 1:]]))
        removed = classifier.model(*classifier.model.inputs([row[:t] + row[t + 1:]]))
        zeroed_model = copy.deepcopy(classifier.model)
        zeroed_model.embedding.weight[row[t]] = 0.0  # the token occurs once: its row is its position's embedding
        zeroed = zeroed_model(*classifier.model.inputs([row]))
    for mode, expected in (("unk", unk), ("remove", removed), ("zero", zeroed)):
        torch.testing.assert_close(_Model(classifier, mode, 8).logits([row], [[t]]), expected)


def test_gradient_baselines_on_a_linear_model():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 5, dtype=torch.float64)  # logits_c = sum_{f,d} w[c, f, d] x[f, d]
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    target = torch.tensor([2, 0])

    def forward(v):
        return torch.einsum("cfd,bfd->bc", w, v)

    sa, _ = gradient_attribution("sa", forward, x, target, over=-1)
    gi, _ = gradient_attribution("gi", forward, x, target, over=-1)
    ig, evaluations = gradient_attribution("ig", forward, x, target, over=-1, steps=4)
    torch.testing.assert_close(sa, (w[target] ** 2).sum(-1))
    torch.testing.assert_close(gi, (w[target] * x).sum(-1))
    torch.testing.assert_close(ig, gi)  # the path integral of a constant gradient, exact with any rule
    assert evaluations == 4


def test_occlusion_is_the_logit_drop_of_deleting_each_word(spam):
    classifier, test = spam
    _, rows, _ = classifier.rows(classifier.tokenize([test.texts[1]]))
    row, c = rows[0], int(test.labels[1])
    model = _Model(classifier, "unk", 64)
    scores, evaluations = _scores("occlusion", classifier, model, rows, torch.tensor([c]), composite="epsilon",
                                  ig_steps=1, batch_size=8)
    with torch.no_grad():
        full = classifier.model(*classifier.model.inputs([row]))[0, c]
        for t in (0, len(row) // 2, len(row) - 1):
            edited = row[:t] + [classifier.vocab.unk_id] + row[t + 1:]
            drop = full - classifier.model(*classifier.model.inputs([edited]))[0, c]
            assert scores[0][t] == pytest.approx(float(drop), abs=1e-5)
    assert evaluations == len(row) + 1


def test_lrp_deletes_what_matters_faster_than_random(spam):
    classifier, test = spam
    predicted = classifier.predict(test.texts[:80]).argmax(1)
    right = [i for i in range(80) if predicted[i] == test.labels[i]][:30]
    texts, labels = [test.texts[i] for i in right], [test.labels[i] for i in right]
    curves = {(c.method, c.order): c for c in word_deletion(classifier, texts, labels, methods=("lrp", "random"),
                                                            orders=("morf", "lerf"), steps=8, seeds=3,
                                                            progress=False)}
    assert curves["lrp", "morf"].aopc > curves["random", "morf"].aopc > curves["lrp", "lerf"].aopc
    assert curves["lrp", "morf"].score[-1] < curves["lrp", "morf"].score[0]
    assert curves["random", "morf"].seeds == 3 and curves["lrp", "morf"].evaluations == 1


def test_bag_of_words_deletion_recomputes_the_features(spam):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    _, test = spam
    picks = [i for y in (0, 1) for i in [j for j, label in enumerate(test.labels) if label == y][:100]]
    texts, labels = [test.texts[i] for i in picks], [test.labels[i] for i in picks]
    pipeline = make_pipeline(TfidfVectorizer(max_features=2000), LinearSVC(dual="auto")).fit(texts, labels)
    doc, label = texts[0], labels[0]
    curves = bow_word_deletion(pipeline, [doc], [label], methods=("lrp",), steps=1, progress=False)
    vectorizer, svm = pipeline.steps[0][1], pipeline.steps[1][1]
    x = vectorizer.transform([doc]).toarray()[0]
    contribution = svm.coef_[0] * x * (1 if label == 1 else -1)  # the true class's share of the decision
    top = vectorizer.get_feature_names_out()[int(np.argmax(contribution))]
    words = [w for w in vectorizer.build_analyzer()(doc) if w in vectorizer.vocabulary_ and w != top]
    decision = float(pipeline.decision_function([" ".join(words)])[0])
    assert curves[0].score[1] == pytest.approx(decision if label == 1 else -decision, abs=1e-9)


def test_pixel_flipping_lrp_beats_random_on_the_fashion_cnn():
    classifier = ImageClassifier.load("default")
    data = load_images("fashion-mnist")
    images, labels = data.test_images[:24], data.test_labels[:24].tolist()
    curves = {c.method: c for c in pixel_flipping(classifier, images, labels, region=4, steps=12, seeds=2,
                                                  baselines=("random", "sa"), progress=False)}
    for composite in ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box"):
        assert curves[f"lrp:{composite}"].aopc > curves["random"].aopc
    assert curves["sa"].evaluations == 1
    with pytest.raises(ValueError, match="steps must be between 1 and the 49 regions"):
        pixel_flipping(classifier, images, labels, region=4, steps=50)


def test_regions_tile_the_image():
    assert _regions(4, 2).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    with pytest.raises(ValueError, match="divide the image size 28"):
        _regions(28, 5)


def test_bad_arguments_are_named(spam):
    classifier, test = spam
    with pytest.raises(ValueError, match="unknown method\\(s\\) lime"):
        word_deletion(classifier, test.texts[:2], test.labels[:2], methods=("lime",))
    with pytest.raises(ValueError, match="one label per text"):
        word_deletion(classifier, test.texts[:2], test.labels[:1])
    with pytest.raises(ValueError, match="order must be one of morf, lerf"):
        word_deletion(classifier, test.texts[:2], test.labels[:2], orders=("up",))
    bag = copy.copy(classifier)
    bag.model = nn.Sequential()
    with pytest.raises(ValueError, match="deletion 'zero' needs a model with an 'embedding' layer"):
        _Model(bag, "zero", 8)


def test_cli_evaluate_writes_json_and_a_figure(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "spam-assassin", "--methods", "lrp,gi,random", "--limit", "6",
                 "--steps", "3", "--seeds", "2", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert {(c["method"], c["order"]) for c in result["curves"]} == {
        (m, o) for m in ("lrp", "gi", "random") for o in ("morf", "lerf")}
    assert result["examples"]["morf"] == 6 and 0 < result["test_accuracy"] <= 1
    assert all(len(c["accuracy"]) == 4 for c in result["curves"])
    with Image.open(out / "curves.png") as figure:
        assert figure.size[0] > 500
    assert "AOPC" in capsys.readouterr().out


def test_cli_evaluate_takes_a_saved_scikit_learn_pipeline(tmp_path, capsys):
    """--model FILE.joblib: word deletion through the pipeline's own features (bag of words), from the CLI."""
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = load("spam-assassin").train
    picks = [i for y in (0, 1) for i in [j for j, label in enumerate(train.labels) if label == y][:200]]
    pipeline = make_pipeline(TfidfVectorizer(max_features=3000), LogisticRegression(max_iter=200))
    pipeline.fit([train.texts[i] for i in picks], [train.labels[i] for i in picks])
    joblib.dump(pipeline, tmp_path / "spam.joblib")
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "spam-assassin", "--model", str(tmp_path / "spam.joblib"), "--methods",
                 "lrp,random", "--orders", "morf", "--limit", "5", "--steps", "3", "--seeds", "2", "--out", str(out),
                 "--quiet"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert {(c["method"], c["order"]) for c in result["curves"]} == {("lrp", "morf"), ("random", "morf")}
    assert result["examples"]["morf"] == 5 and "LogisticRegression on TfidfVectorizer" in json.dumps(result)
    assert all(len(c["accuracy"]) == 4 for c in result["curves"])
    assert (out / "curves.png").exists() and "AOPC" in capsys.readouterr().out


def _linear_text_model(arch: str):
    """A random bag-of-embeddings or TF-IDF MLP classifier over a 12-word vocabulary, for the gradient baselines."""
    from lrptext.models import ARCHS
    from lrptext.text.vocab import Vocabulary

    torch.manual_seed(3)
    vocab = Vocabulary([PAD, UNK] + [f"w{i}" for i in range(10)])
    model = ARCHS[arch](len(vocab), 3).eval()
    if arch == "mlp":
        model.fit([[2, 3, 3, 4], [5, 6, 2], [7, 8, 9, 11]])
    return TextClassifier(model, vocab, ["a", "b", "c"])


ROWS = [[2, 5, 5, 9, 0, 3], [7, 11, 4], []]  # a repeated token (5), padding (0), different lengths, an empty row


def test_gradient_baselines_on_a_bag_of_embeddings_follow_from_the_mean():
    """f = W mean_t(e_t) + b over the tokens that are not padding: gradient x input of token t is e_t . W_c / n,
    sensitivity |W_c|^2 / n^2, integrated gradients equal gradient x input (the model is linear in the rows), and
    padding, which the bag leaves out, gets 0."""
    classifier = _linear_text_model("bag")
    net, target = classifier.model, torch.tensor([1, 2, 0])
    rows_w = net.bag.weight.detach().double()
    for method in ("gi", "ig", "sa"):
        scores, evaluations = token_attribution(method, classifier, ROWS, target, ig_steps=3)
        assert evaluations == (3 if method == "ig" else 1)
        for row, c, s in zip(ROWS, target.tolist(), scores):
            w_c, n = net.fc.weight[c].detach().double(), sum(t != 0 for t in row)
            real = torch.tensor([float(t != 0) for t in row], dtype=torch.float64)
            expected = real * ((w_c @ w_c) / n ** 2 if method == "sa" else rows_w[row] @ w_c / n)
            np.testing.assert_allclose(s, expected.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ["bag", "mlp"])
def test_gradient_x_input_is_lrp_0_on_the_bag_and_the_tf_idf_mlp(arch):
    """On a linear bag of embeddings and on a ReLU MLP, LRP-0 is gradient x input (R_j / z_j is the logit's gradient
    at z_j, layer by layer, biases included; epsilon-LRP differs by the stabiliser's share): the token scores of
    the two paths agree."""
    classifier = _linear_text_model(arch)
    target = torch.tensor([0, 1, 2])
    lrp, _ = _scores("lrp", classifier, _Model(classifier, "remove", 8), ROWS, target, composite="lrp0",
                     ig_steps=1, batch_size=8)
    gi, _ = token_attribution("gi", classifier, ROWS, target)
    for a, b in zip(lrp, gi, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(np.abs(a).max() > 1e-3 for a in gi if len(a))


def test_gradient_baselines_on_tf_idf_features_are_shared_by_a_words_occurrences():
    """A TF-IDF MLP: gradient x input per feature by autograd on the features, each feature's score split evenly
    over its token's occurrences (as the model's LRP relevance is)."""
    classifier = _linear_text_model("mlp")
    net, target = classifier.model, torch.tensor([0, 2, 1])
    (features,) = net.inputs(ROWS)
    x = features.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).gather(1, target[:, None]).sum(), x)
    scores, _ = token_attribution("gi", classifier, ROWS, target)
    for i, (row, s) in enumerate(zip(ROWS, scores)):
        expected = [float(features[i, t] * grad[i, t]) / row.count(t) for t in row]
        np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-8)


def test_integrated_gradients_is_refused_for_a_scikit_learn_pipeline_with_the_reason():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(["free money", "see you"], [1, 0])
    with pytest.raises(ValueError, match="'ig'.*not available for a scikit-learn pipeline.*equals 'gi'"):
        bow_word_deletion(pipeline, ["free money"], [1], methods=["ig"])
