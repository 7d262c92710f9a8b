"""Faithfulness of transformer explanations: Ali et al. (2022)'s generate and prune protocol written out by hand on a
stub classifier whose logits are known, attention rollout and gradient-weighted rollout against numpy from the
attention matrices of an independently built eager model, the gradient baselines and LRP against direct
computations on each document alone, piece deletion against editing the input by hand, and `lrptext evaluate` on
a tiny model folder (tests/hf_folders.py; nothing is downloaded)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
import transformers  # noqa: E402

from hf_folders import CORPUS, bert, lively, save_folder, wordpiece_tokenizer  # noqa: E402
from lrptext.cli import main  # noqa: E402
from lrptext.evaluation.fractions import (  # noqa: E402
    FRACTIONS,
    fraction_outputs,
    ranking,
    summarise_fractions,
    tokens_at,
)
from lrptext.evaluation.rollout import AttentionExplainer  # noqa: E402
from lrptext.evaluation.transformer_tokens import Perturbed, TokenScores, first_windows  # noqa: E402
from lrptext.text.classifier import TextClassifier  # noqa: E402
from lrptext.text.transformer import padded_batch  # noqa: E402

# ------------------------------------------------------------------ Ali et al.'s protocol on a stub classifier

UNK, CLS, SEP = 1, 2, 3
WEIGHTS = {10: 2.0, 11: -1.0, 12: 0.5, 13: 0.0}


def stub_logits(rows):
    """Class 1's logit is the sum of the weights of the tokens present (the unknown token weighs 0), class 0's is 0.
    The special tokens must never be replaced."""
    out = []
    for row in rows:
        assert row[0] == CLS and row[-1] == SEP
        out.append([0.0, sum(WEIGHTS.get(t, 0.0) for t in row)])
    return torch.tensor(out, dtype=torch.float64)


# Document A: tokens 10 11 12 13, label 1, scores 2, -1, 0.5, 0. Generate puts back 10, 12, 13, 11 (highest score
# first); prune replaces 13, 12, 11, 10 (smallest |score| first). With N = 4, ⌈f·N⌉ over f = 0, 0.1, ..., 1 is
# 0 1 1 2 2 2 3 3 4 4 4. Document B: tokens 11 12, label 0, scores 0.3, -0.2: generate puts back 11 then 12, prune
# replaces 12 then 11; ⌈f·2⌉ is 0 1 1 1 1 1 2 2 2 2 2. Class 1's logit after each step, written out by hand:
LOGIT = {
    ("generate", "A"): [0, 2, 2, 2.5, 2.5, 2.5, 2.5, 2.5, 1.5, 1.5, 1.5],
    ("prune", "A"): [1.5, 1.5, 1.5, 1.0, 1.0, 1.0, 2.0, 2.0, 0, 0, 0],
    ("generate", "B"): [0, -1, -1, -1, -1, -1, -0.5, -0.5, -0.5, -0.5, -0.5],
    ("prune", "B"): [-0.5, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0],
}
# Correct when the argmax is the label; at logits (0, 0) argmax is class 0. A's generate is wrong only with no token
# (AUAC 0.1 · (0.5 + 9) = 0.95), A's prune once 10 is gone (0.1 · (7 + 0.5) = 0.75); B is always right.
AUAC = {"generate": (0.95 + 1.0) / 2, "prune": (0.75 + 1.0) / 2}


def trapezoid(y):
    return sum((y[i] + y[i + 1]) / 2 * 0.1 for i in range(len(y) - 1))


@pytest.mark.parametrize("case", ["generate", "prune"])
def test_the_protocols_curves_and_areas_follow_their_definitions(case):
    rows = [[CLS, 10, 11, 12, 13, SEP], [CLS, 11, 12, SEP]]
    positions = [[1, 2, 3, 4], [1, 2]]
    labels = torch.tensor([1, 0])
    scores = [np.array([2.0, -1.0, 0.5, 0.0]), np.array([0.3, -0.2])]
    arrays = fraction_outputs(stub_logits, rows, positions, labels, [ranking(s, case) for s in scores], case, UNK)
    c = summarise_fractions("stub", case, *arrays, evaluations=1, seconds_per_explanation=0.0)

    full = {"A": 1.5, "B": -0.5}  # the intact documents' class-1 logits
    sigmoid = {d: 1 / (1 + np.exp(-np.array(LOGIT[case, d], dtype=float))) for d in "AB"}
    probability = {"A": sigmoid["A"], "B": 1 - sigmoid["B"]}  # of each document's label
    correct = {"A": np.array(LOGIT[case, "A"]) > 0, "B": np.array(LOGIT[case, "B"]) <= 0}
    # two classes: the probability vectors differ by ±(s − s0) in both entries, so their mean squared error is
    # (s − s0)²; the logits differ in class 1 only
    mse = {d: (sigmoid[d] - 1 / (1 + np.exp(-full[d]))) ** 2 for d in "AB"}
    sse = {d: (np.array(LOGIT[case, d]) - full[d]) ** 2 for d in "AB"}

    def mean(per_document):
        return (np.asarray(per_document["A"], dtype=float) + np.asarray(per_document["B"], dtype=float)) / 2

    assert c.fractions == pytest.approx(list(FRACTIONS)) and c.examples == 2
    assert c.accuracy == pytest.approx(mean(correct))
    assert c.logit == pytest.approx(mean({"A": LOGIT[case, "A"], "B": [0.0] * 11}))  # B's label is class 0
    assert c.probability == pytest.approx(mean(probability))
    assert c.mse == pytest.approx(mean(mse))
    assert c.logit_sse == pytest.approx(mean(sse))
    assert c.auac == pytest.approx(AUAC[case])
    assert c.aupc == pytest.approx(trapezoid(mean(probability)))
    assert c.au_mse == pytest.approx(trapezoid(mean(mse)))
    assert c.au_logit_sse == pytest.approx(trapezoid(mean(sse)))
    assert c.better == {"auac": "higher", "aupc": "higher", "au_mse": "lower", "au_logit_sse": "lower"}


def test_fraction_counts_round_up_and_orders_are_the_protocols():
    assert [tokens_at(f, 10) for f in FRACTIONS] == list(range(11))  # 0.3 · 10 is 3, not 4
    assert [tokens_at(f, 4) for f in FRACTIONS] == [0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]
    assert [tokens_at(f, 1) for f in FRACTIONS] == [0] + [1] * 10
    scores = np.array([0.5, -3.0, 0.5, 1.0, 0.0])
    assert ranking(scores, "generate").tolist() == [3, 0, 2, 4, 1]  # highest first, ties in document order
    assert ranking(scores, "prune").tolist() == [4, 0, 2, 3, 1]  # smallest |score| first
    with pytest.raises(ValueError, match="case must be one of generate, prune"):
        ranking(scores, "flip")
    with pytest.raises(ValueError, match="11 fractions"):
        summarise_fractions("m", "prune", *(np.zeros((2, 3)),) * 5, evaluations=1, seconds_per_explanation=0.0)


# ------------------------------------------------------------------ a tiny BERT whose output depends on its input

@pytest.fixture(scope="module")
def tiny():
    tokenizer = wordpiece_tokenizer(max_length=16)
    model = lively(bert(tokenizer, seed=4), seed=4).double()
    return TextClassifier.from_pretrained(model, tokenizer), tokenizer, model


def eager_twin(model):
    """The same weights in a model built with eager attention from the start: not the copy lrptext makes."""
    config = transformers.BertConfig(**{**model.config.to_dict(), "attn_implementation": "eager"})
    twin = transformers.BertForSequenceClassification(config).double().eval()
    twin.load_state_dict(model.state_dict())
    return twin


def alone(twin, row, target):
    """Attention probabilities [H, n, n] per layer of one document alone, and the target logit's gradient at them."""
    out = twin(input_ids=torch.tensor([row]), output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    out.logits[0, target].backward()
    return [a[0].detach().numpy() for a in out.attentions], [a.grad[0].numpy() for a in out.attentions]


def numpy_rollout(attentions):
    n = attentions[0].shape[-1]
    r = np.eye(n)
    for a in attentions:
        m = 0.5 * a.mean(axis=0) + 0.5 * np.eye(n)
        r = (m / m.sum(axis=1, keepdims=True)) @ r
    return r


def numpy_chefer(attentions, gradients):
    r = np.eye(attentions[0].shape[-1])
    for a, g in zip(attentions, gradients):
        r = r + np.maximum(a * g, 0).mean(axis=0) @ r
    return r


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_rollout_and_gradient_rollout_match_numpy_on_each_document_alone(tiny, pooling):
    classifier, tokenizer, model = tiny
    rows = first_windows(classifier, [CORPUS[0], "free money"]).rows
    assert len(rows[0]) != len(rows[1])  # a padded batch
    batch = padded_batch(rows, tokenizer.pad_token_id)
    target = torch.tensor([1, 0])
    attention = AttentionExplainer(model, pooling=pooling)
    rolled, chefer = attention.rollout(batch), attention.gradient_rollout(batch, target)
    twin = eager_twin(model)
    for i, row in enumerate(rows):
        a, g = alone(twin, row, int(target[i]))
        expected = [numpy_rollout(a), numpy_chefer(a, g)]
        if pooling == "cls":
            expected = [r[0] for r in expected]
        else:
            expected = [r.mean(axis=0) for r in expected]
        n = len(row)
        np.testing.assert_allclose(rolled[i, :n].numpy(), expected[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(chefer[i, :n].numpy(), expected[1], rtol=1e-9, atol=1e-12)
        assert torch.all(rolled[i, n:] == 0) and torch.all(chefer[i, n:] == 0)
    assert not np.allclose(rolled[0, : len(rows[0])].numpy(), rolled[0, 0].item())  # not uniform: a real test


def test_a_mean_pooled_sentence_classifier_reads_the_mean_of_the_real_rows(tiny):
    """SentenceClassifier (mean pooling over the attention mask): the attention probabilities come from its encoder,
    and the token scores are the mean of the rows of the real tokens."""
    from lrptext.integrations.transformers import SentenceClassifier

    classifier, tokenizer, model = tiny
    sentence = SentenceClassifier(copy.deepcopy(model.bert), 2).double().eval()
    attention = AttentionExplainer(sentence)
    assert attention.pooling == "mean"
    rows = first_windows(classifier, [CORPUS[2], "free money"]).rows
    rolled = attention.rollout(padded_batch(rows, tokenizer.pad_token_id))
    config = transformers.BertConfig(**{**model.config.to_dict(), "attn_implementation": "eager"})
    twin = transformers.BertModel(config).double().eval()
    twin.load_state_dict(sentence.encoder.state_dict())
    for i, row in enumerate(rows):
        with torch.no_grad():
            a = [x[0].numpy() for x in twin(input_ids=torch.tensor([row]), output_attentions=True).attentions]
        np.testing.assert_allclose(rolled[i, : len(row)].numpy(), numpy_rollout(a).mean(axis=0), rtol=1e-9)


def test_the_users_model_keeps_its_attention_and_weights(tiny):
    _, _, model = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attention = AttentionExplainer(model)
    attention.gradient_rollout(padded_batch([[2, 10, 11, 3]], 0), torch.tensor([1]))
    assert model.config._attn_implementation == "sdpa" and not model.config.output_attentions
    assert attention.model.config._attn_implementation == "eager"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_token_scores_are_each_methods_own_on_each_document_alone(tiny):
    classifier, tokenizer, model = tiny
    texts = [CORPUS[0], CORPUS[3], CORPUS[5]]
    windows = first_windows(classifier, texts)
    target = torch.tensor([1, 0, 1])
    scores = TokenScores(classifier, Perturbed(classifier, "unk"), ig_steps=8, batch_size=2)
    word = model.get_input_embeddings()

    def gradient_at(row, c, scale=1.0):
        """(word embeddings x, gradient of logit c at scale · x), through inputs_embeds rather than a hook."""
        x = word(torch.tensor([row])).detach()
        e = (scale * x).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(inputs_embeds=e).logits[0, c], e)
        return x[0], grad[0]

    for method in ("lrp:attnlrp", "lrp:cp_lrp", "sa", "gi", "ig", "occlusion"):
        got, evaluations = scores.scores(method, windows, target)
        assert evaluations == {"ig": 8, "occlusion": round(np.mean([len(p) + 1 for p in windows.positions]))}.get(
            method, 1)
        for i, (row, where) in enumerate(zip(windows.rows, windows.positions)):
            c = int(target[i])
            if method.startswith("lrp:"):
                e = classifier.explainer(method[4:]).explain({"input_ids": torch.tensor([row])}, target=c)
                expected = e.relevance[0, where].numpy()
            elif method == "occlusion":
                with torch.no_grad():
                    full = model(input_ids=torch.tensor([row])).logits[0, c]
                    expected = [float(full - model(input_ids=torch.tensor(
                        [[tokenizer.unk_token_id if t == p else x for t, x in enumerate(row)]])).logits[0, c])
                        for p in where]
            elif method == "ig":
                x, _ = gradient_at(row, c)
                total = sum(gradient_at(row, c, (k + 0.5) / 8)[1] for k in range(8))
                expected = (x * total / 8).sum(-1)[where].numpy()
            else:
                x, grad = gradient_at(row, c)
                expected = (grad.pow(2) if method == "sa" else x * grad).sum(-1)[where].numpy()
            np.testing.assert_allclose(got[i], expected, rtol=1e-7, atol=1e-10, err_msg=method)


def test_piece_deletion_equals_editing_the_input_by_hand(tiny):
    classifier, tokenizer, model = tiny
    row = first_windows(classifier, [CORPUS[1]]).rows[0]
    t = next(p for p in range(1, len(row) - 1) if row.count(row[p]) == 1)  # a piece that occurs once
    with torch.no_grad():
        unk = model(input_ids=torch.tensor([row[:t] + [tokenizer.unk_token_id] + row[t + 1:]])).logits
        removed = model(input_ids=torch.tensor([row[:t] + row[t + 1:]])).logits
        zeroed_model = copy.deepcopy(model)
        zeroed_model.get_input_embeddings().weight[row[t]] = 0.0
        zeroed = zeroed_model(input_ids=torch.tensor([row])).logits
    for mode, expected in (("unk", unk), ("remove", removed), ("zero", zeroed)):
        got = Perturbed(classifier, mode).logits([row, row], [[t], []])
        torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)
        assert not torch.allclose(got[0], got[1])  # the deletion changed the output


def test_first_windows_keep_the_special_tokens_and_the_first_pieces(tiny):
    classifier, tokenizer, _ = tiny
    long, short = CORPUS[5], "free money"
    windows = first_windows(classifier, [long, short])
    ids = tokenizer(long, add_special_tokens=False)["input_ids"]
    assert len(ids) > classifier.window == 14
    assert windows.rows[0] == [tokenizer.cls_token_id] + ids[:14] + [tokenizer.sep_token_id]
    assert windows.positions[0] == list(range(1, 15)) and windows.longer == [True, False]
    assert windows.rows[1] == tokenizer(short)["input_ids"]


# ------------------------------------------------------------------ the command line on a tiny folder

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tokenizer = wordpiece_tokenizer(max_length=16)
    return save_folder(lively(bert(tokenizer, seed=4), seed=4), tokenizer, tmp_path_factory.mktemp("m") / "tiny")


def test_cli_evaluate_runs_ali_et_als_protocol_on_a_model_folder(folder, tmp_path, capsys):
    out = tmp_path / "ali"
    assert main(["evaluate", "--dataset", "spam-assassin", "--model", str(folder), "--protocol", "ali", "--methods",
                 "lrp,gi,ig,rollout,chefer,random", "--limit", "5", "--seeds", "2", "--out", str(out),
                 "--quiet"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    methods = ("lrp:attnlrp", "lrp:cp_lrp", "gi", "ig", "rollout", "chefer", "random")
    assert {(c["method"], c["case"]) for c in result["curves"]} == {(m, k) for m in methods
                                                                    for k in ("generate", "prune")}
    assert result["protocol"] == "ali" and result["examples"] == {"generate": 5, "prune": 5}
    assert "first window" in result["window"] and "16 tokens" in result["window"]
    assert result["replacement"] == "the unknown token [UNK]"
    curves = {(c["method"], c["case"]): c for c in result["curves"]}
    for c in result["curves"]:
        assert c["fractions"] == pytest.approx([k / 10 for k in range(11)])
        assert c["evaluations"] == {"ig": 32, "random": 0}.get(c["method"], 1)
        assert c["seeds"] == (2 if c["method"] == "random" else 1)
        assert c["method"] == "random" or c["seconds_per_explanation"] > 0
        assert result["cost"][c["method"]]["evaluations"] == c["evaluations"]
        # what no ranking changes: generate ends at the intact document, prune starts there
        ends = {"generate": -1, "prune": 0}[c["case"]]
        assert c["mse"][ends] == 0 and c["logit_sse"][ends] == 0
        intact = curves["random", c["case"]]
        assert c["probability"][ends] == pytest.approx(intact["probability"][ends])
    # generate at fraction 0 and prune at fraction 1 are the all-unknown document, whatever the order
    assert len({round(c["probability"][0], 12) for c in result["curves"] if c["case"] == "generate"}) == 1
    # the methods rank differently on a model whose output depends on its input
    assert len({round(c["aupc"], 9) for c in result["curves"] if c["case"] == "generate"}) > 3
    assert (out / "curves.png").stat().st_size > 10_000
    shown = capsys.readouterr().out
    assert "AUAC" in shown and "AU-MSE" in shown and "32 evaluations" in shown


def test_cli_evaluate_deletes_pieces_of_a_model_folder(folder, tmp_path, capsys):
    out = tmp_path / "deletion"
    assert main(["evaluate", "--dataset", "spam-assassin", "--model", str(folder), "--methods", "lrp,chefer,random",
                 "--composite", "cp_lrp", "--deletion", "unk", "--limit", "4", "--steps", "3", "--seeds", "2",
                 "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    orders = [o for o, n in result["examples"].items() if n]
    assert {(c["method"], c["order"]) for c in result["curves"]} == {(m, o) for m in ("lrp:cp_lrp", "chefer", "random")
                                                                     for o in orders}
    assert all(len(c["accuracy"]) == 4 for c in result["curves"]) and result["deletion"] == "unk"
    assert "AOPC" in capsys.readouterr().out


def test_cli_evaluate_refuses_what_it_cannot_do(folder, tmp_path, capsys):
    assert main(["evaluate", "--dataset", "spam-assassin", "--protocol", "ali", "--out", str(tmp_path)]) == 1
    assert "--protocol ali" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "digits", "--model", str(folder), "--out", str(tmp_path)]) == 1
    assert "text model folder" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "spam-assassin", "--model", str(folder), "--protocol", "ali", "--orders",
                 "morf", "--out", str(tmp_path), "--quiet"]) == 1
    assert "generate, prune" in capsys.readouterr().err
