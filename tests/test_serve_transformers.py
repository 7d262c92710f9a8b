"""`lrptext serve --model FOLDER` with a Hugging Face model folder: a tiny random BERT whose WordPiece tokenizer is
trained here (tests/hf_folders.py; nothing is downloaded), read in windows of 6 pieces. The answers are checked
against `lrptext explain-text --model FOLDER --format json`, the per-layer totals against lrptext.explain on each
window alone (the model loaded again by transformers, not by lrptext) and against the logits the model computes.
The page with this model: tests/test_serve_browser.py."""

from __future__ import annotations

import json
import re
import shutil

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import lrptext  # noqa: E402
from hf_folders import bert, save_folder, wordpiece_tokenizer  # noqa: E402
from lrptext import cli  # noqa: E402
from lrptext.engine import Contrast  # noqa: E402
from lrptext.serve import schema  # noqa: E402
from lrptext.serve.app import create_app  # noqa: E402
from lrptext.serve.models import load_model, load_models  # noqa: E402

SHORT = "free money now"  # at most six pieces: one window
TWELVE = "f r e e m o n e y n o w"  # twelve pieces: three windows of six, starting at 0, 3 and 6
STARTS = {SHORT: [0], TWELVE: [0, 3, 6]}
WINDOW = 6  # pieces per window beside [CLS] and [SEP]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tokenizer = wordpiece_tokenizer(max_length=WINDOW + 2)
    return save_folder(bert(tokenizer), tokenizer, tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="module")
def client(folder):
    with TestClient(create_app(load_models([str(folder), "default"]))) as c:
        yield c


@pytest.fixture(scope="module")
def reference(folder):
    """The folder read by transformers itself: the model and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


def explain(client, **body) -> dict:
    response = client.post("/v1/explain", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def windows_of(text: str, tokenizer) -> list[torch.Tensor]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) <= WINDOW if text == SHORT else len(ids) == 12, tokenizer.convert_ids_to_tokens(ids)
    return [torch.tensor([[tokenizer.cls_token_id, *ids[a: a + WINDOW], tokenizer.sep_token_id]])
            for a in STARTS[text]]


def test_a_model_folder_is_served_as_a_transformer_with_its_composites(client, folder):
    answer = client.get("/v1/models").json()
    schema.ModelsResponse.model_validate(answer)
    served = {m["name"]: m for m in answer["models"]}
    assert list(served) == ["tiny-bert", "spam-cnn"]  # named after the folder
    bert_info = served["tiny-bert"]
    assert (bert_info["kind"], bert_info["architecture"], bert_info["labels"]) == ("text", "bert", ["ham", "spam"])
    assert (bert_info["composites"], bert_info["default_composite"]) == (["attnlrp", "cp_lrp"], "attnlrp")
    assert bert_info["methods"] == ["lrp"] and bert_info["contrast"] and bert_info["layers"]
    assert bert_info["max_length"] == WINDOW + 2
    assert "attnlrp" not in served["spam-cnn"]["composites"] and served["spam-cnn"]["max_length"] is None
    assert load_model(f"news={folder}").name == "news"


def test_what_a_transformer_cannot_do_is_a_422_saying_why(client):
    for body, needle in (({"composite": "epsilon"}, "choose one of attnlrp, cp_lrp"),
                         ({"method": "gi"}, "method 'gi' is not available for model 'tiny-bert'"),
                         ({"target": "eggs"}, "unknown target label 'eggs'"),
                         ({"method": "ig", "layers": True}, "not available")):
        response = client.post("/v1/explain", json={"texts": [SHORT], "model": "tiny-bert", **body})
        assert response.status_code == 422 and needle in response.json()["error"]["message"], (body, response.text)


def test_an_incomplete_folder_is_refused_before_anything_listens(folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without config.json"):
        load_model(str(tmp_path / "empty"))
    assert cli.main(["serve", "--model", str(tmp_path / "empty")]) == 1
    # without tokenizer.json transformers would build a default tokenizer that reads every word as [UNK]
    for missing, needle in (("tokenizer.json", "no tokenizer.json"), ("model.safetensors", "model.safetensors")):
        partial = tmp_path / f"without-{missing}"
        partial.mkdir()
        for file in folder.iterdir():
            if file.name != missing:
                shutil.copy(file, partial / file.name)
        with pytest.raises(FileNotFoundError, match=needle):
            load_model(str(partial))
        assert cli.main(["serve", "--model", str(partial)]) == 1
        assert cli.main(["explain-text", SHORT, "--model", str(partial)]) == 1


@pytest.mark.parametrize("options", [{}, {"composite": "cp_lrp"}, {"target": "spam", "contrast": "ham"}])
def test_documents_are_the_objects_explain_text_writes_for_the_folder(client, folder, tmp_path, options):
    out = tmp_path / "explained.json"
    flags = [x for k, v in options.items() for x in (f"--{k}", v)]
    assert cli.main(["explain-text", SHORT, TWELVE, "--model", str(folder), "--format", "json", "--out", str(out),
                     *flags]) == 0
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    answer = explain(client, texts=[SHORT, TWELVE], **options)  # the first text model: the folder
    schema.ExplainResponse.model_validate(answer)
    assert "layers" not in answer  # only when asked: the default answer is explain-text's documents
    assert (answer["model"], answer["composite"]) == ("tiny-bert", options.get("composite", "attnlrp"))
    assert [d["windows"] for d in answer["documents"]] == [1, 3]
    for got, want in zip(answer["documents"], expected, strict=True):
        assert set(got) == set(want)
        assert {k: got[k] for k in ("prediction", "target", "truncated", "windows")} == \
            {k: want[k] for k in ("prediction", "target", "truncated", "windows")}
        assert got.get("contrast") == want.get("contrast") == options.get("contrast")
        assert got["score"] == pytest.approx(want["score"], rel=1e-6)
        assert got["special"] == pytest.approx(want["special"], rel=1e-5, abs=1e-9)
        assert [(w["text"], w["start"], w["end"]) for w in got["words"]] == \
            [(w["text"], w["start"], w["end"]) for w in want["words"]]
        assert [w["relevance"] for w in got["words"]] == pytest.approx([w["relevance"] for w in want["words"]],
                                                                       rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("composite, target, contrast", [("attnlrp", "spam", None), ("cp_lrp", "ham", None),
                                                         ("attnlrp", "ham", "spam")])
def test_layer_totals_are_the_explanations_own_averaged_over_the_windows(client, reference, composite, target,
                                                                         contrast):
    model, tokenizer = reference
    labels = ["ham", "spam"]
    body = {"texts": [SHORT, TWELVE], "composite": composite, "target": target, "layers": True}
    if contrast:
        body["contrast"] = contrast
    answer = explain(client, **body)
    schema.ExplainResponse.model_validate(answer)
    assert len(answer["layers"]) == 2
    c = labels.index(target)
    goal = c if contrast is None else Contrast(c, labels.index(contrast))
    for text, got in zip((SHORT, TWELVE), answer["layers"]):
        windows = windows_of(text, tokenizer)
        alone = [lrptext.explain(model, {"input_ids": w, "attention_mask": torch.ones_like(w)}, target=goal,
                                 composite=composite, layers=True).layer_relevance for w in windows]
        # every window has the same nodes; a document's total is the mean of its windows' (docs/transformers.md)
        assert all(list(a) == list(alone[0]) for a in alone)
        assert [t["layer"] for t in got] == list(alone[0])
        expected = [sum(float(a[name][0]) for a in alone) / len(alone) for name in alone[0]]
        assert [t["relevance"] for t in got] == pytest.approx(expected, rel=1e-5, abs=1e-10)
        # the first row holds the explained logit (less the contrast's), the windows' mean: as the model computes it
        with torch.no_grad():
            logits = torch.stack([model(input_ids=w).logits[0] for w in windows]).mean(0).double()
        explained = logits[c] - (logits[labels.index(contrast)] if contrast else 0)
        assert got[0]["layer"] == "classifier" and got[0]["relevance"] == pytest.approx(float(explained), rel=1e-5)
        names = {t["layer"] for t in got}
        assert {"bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings"} <= names
        assert any(re.fullmatch(r"bert\.encoder\.layer\.1\..*", n) for n in names)


def test_the_corpus_view_counts_whole_words_not_subword_pieces(client):
    records = [{"text": "free money click here to claim your prize now", "label": "spam"},
               {"text": "winner winner you have been selected for a cash reward", "label": "spam"},
               {"text": "please review the attached draft before friday", "label": "ham"}]
    data = "\n".join(json.dumps(r) for r in records)
    response = client.post("/v1/corpus", json={"data": data, "format": "jsonl", "label_field": "label",
                                               "model": "tiny-bert", "top": 100})
    assert response.status_code == 200, response.text
    answer = response.json()
    schema.CorpusResponse.model_validate(answer)
    assert answer["composite"] == "attnlrp"
    checked = 0
    for group in answer["classes"]:
        members = [i for i, r in enumerate(records) if r["label"] == group["label"]]
        vocabulary = {w for i in members for w in records[i]["text"].split()}
        assert {w["word"] for w in group["words"]} == vocabulary  # the documents' words, none cut into pieces
        for word in group["words"]:
            if word["occurrences"] != 1:
                continue
            (index,) = word["documents"]
            doc = explain(client, texts=[records[index]["text"]], model="tiny-bert",
                          target=group["label"])["documents"][0]
            (alone,) = [w["relevance"] for w in doc["words"] if w["text"] == word["word"]]
            assert word["relevance"] == pytest.approx(alone, rel=1e-5, abs=1e-10)
            checked += 1
    assert checked > 20  # every word of the three documents but "winner", which occurs twice
