"""`lrptext serve`'s JSON API (lrptext/serve): the answers against the command line's JSON and against references
computed here, the OpenAPI description, every error class, hostile documents (never a 500), the limits, request
batching and what may be loaded. The page in a browser: tests/test_serve_browser.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
import time
import zlib

import joblib
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from lrptext import cli
from lrptext.serve import Limits, schema
from lrptext.serve.app import create_app
from lrptext.serve.batching import Batcher
from lrptext.serve.models import Goal, length_groups, load_model, load_models

SPAM = "FREE money!!! Click here to claim your prize, limited offer"
HAM = "Re: [ILUG] the kernel patch\n> wrote: thanks, I will test it on my router tomorrow"


@pytest.fixture(scope="module")
def models():
    return load_models([])


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models)) as c:
        yield c


def small_client(models, **limits) -> TestClient:
    return TestClient(create_app(models, limits=Limits(**limits)), raise_server_exceptions=False)


def explain(client, **body):
    response = client.post("/v1/explain", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def words_of(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# -- what is served -------------------------------------------------------------------------------------------------
def test_with_no_model_the_bundled_text_and_image_models_are_served(client):
    args = cli.build_parser().parse_args(["serve"])
    assert args.model == [] and args.host == "127.0.0.1" and args.port == 8000 and not args.allow_pickle
    answer = client.get("/v1/models").json()
    schema.ModelsResponse.model_validate(answer)
    by_name = {m["name"]: m for m in answer["models"]}
    assert set(by_name) == {"spam-cnn", "fashion-cnn"}
    assert by_name["spam-cnn"]["kind"] == "text" and by_name["spam-cnn"]["labels"] == ["ham", "spam"]
    assert by_name["fashion-cnn"]["kind"] == "image" and len(by_name["fashion-cnn"]["labels"]) == 10
    assert (by_name["spam-cnn"]["architecture"], by_name["fashion-cnn"]["architecture"]) == ("cnn", "vgg")
    assert client.get("/healthz").json()["status"] == "ok"


def test_only_named_files_load_and_pickles_only_when_allowed(tmp_path):
    path = tmp_path / "pipeline.joblib"
    joblib.dump(make_pipeline(TfidfVectorizer(), LogisticRegression()).fit([SPAM, HAM] * 3, ["spam", "ham"] * 3),
                path)
    with pytest.raises(ValueError, match="--allow-pickle"):
        load_model(str(path))
    assert cli.main(["serve", "--model", str(path)]) == 1  # refused before anything listens
    (tmp_path / "hf").mkdir()
    with pytest.raises(ValueError, match="folder without config.json; .* Hugging Face sequence classifiers"):
        load_model(str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="two models are named"):
        load_models(["default", "spam-cnn=default"])
    served = load_models([f"svm={path}", "default"], allow_pickle=True)
    assert served["svm"].labels == ["ham", "spam"] and served["svm"].default_composite == "lrp0"
    with TestClient(create_app(served)) as c:
        doc = explain(c, texts=[SPAM], model="svm")["documents"][0]
        assert [(w["text"], w["start"], w["end"]) for w in doc["words"]] == words_of(SPAM)
        refused = c.post("/v1/explain", json={"texts": [SPAM], "model": "svm", "target": "spam", "contrast": "ham"})
        assert refused.status_code == 422 and "contrast" in refused.json()["error"]["message"]
        other = c.post("/v1/explain", json={"texts": [SPAM], "model": "/etc/passwd"})
        assert other.status_code == 422 and "unknown model" in other.json()["error"]["message"]


# -- answers ----------------------------------------------------------------------------------------------------------
def test_documents_are_the_objects_explain_text_writes(client, tmp_path):
    out = tmp_path / "explained.json"
    assert cli.main(["explain-text", SPAM, HAM, "--format", "json", "--out", str(out)]) == 0
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    answer = explain(client, texts=[SPAM, HAM])
    schema.ExplainResponse.model_validate(answer)
    assert (answer["model"], answer["composite"], answer["labels"]) == ("spam-cnn", "epsilon", ["ham", "spam"])
    for got, want in zip(answer["documents"], expected, strict=True):
        assert set(got) == set(want)
        assert {k: got[k] for k in got if k != "words"} == pytest.approx({k: want[k] for k in want if k != "words"})
        assert [(w["text"], w["start"], w["end"]) for w in got["words"]] == \
            [(w["text"], w["start"], w["end"]) for w in want["words"]]
        assert [w["relevance"] for w in got["words"]] == pytest.approx([w["relevance"] for w in want["words"]],
                                                                       rel=1e-5, abs=1e-6)
    for probabilities, doc in zip(answer["probabilities"], answer["documents"]):
        assert sum(probabilities) == pytest.approx(1.0)
        assert answer["labels"][int(np.argmax(probabilities))] == doc["prediction"]


def test_a_contrast_is_the_difference_of_the_two_labels_explanations(client):
    """Every rule of the CNN composites is linear in the relevance it receives, so explaining f_spam − f_ham
    gives the spam explanation minus the ham one (each for its own logit)."""
    for composite in ("epsilon", "epsilon_gamma"):
        spam, ham, contrast = (explain(client, texts=[SPAM], composite=composite, **goal)["documents"][0]
                               for goal in ({"target": "spam"}, {"target": "ham"},
                                            {"target": "spam", "contrast": "ham"}))
        assert contrast["target"] == "spam" and contrast["contrast"] == "ham" and "contrast" not in spam
        difference = [a["relevance"] - b["relevance"] for a, b in zip(spam["words"], ham["words"])]
        assert [w["relevance"] for w in contrast["words"]] == pytest.approx(difference, rel=1e-4, abs=1e-5)


def _embedding_gradient(models, text: str, target: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(token embeddings, ∂f_target/∂embeddings, tokens) computed here with autograd, for the references below."""
    classifier = models["spam-cnn"].classifier
    tokens = classifier.tokenize([text])[0]
    ids = torch.tensor([classifier.vocab.encode(t.norm for t in tokens)])
    model = classifier.model
    embedded = model.embedding(ids).detach().requires_grad_(True)
    handle = model.embedding.register_forward_hook(lambda module, inputs, output: embedded)
    try:
        logit = model(ids)[0, target]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logit, embedded)
    return embedded.detach(), grad, tokens


def _word_sums(text: str, tokens: list, per_token: list[float]) -> list[float]:
    words = words_of(text)
    sums = [0.0] * len(words)
    for token, value in zip(tokens, per_token):
        k = next(i for i, (_, start, end) in enumerate(words) if start <= token.start < end)
        sums[k] += value
    return sums


def test_gradient_times_input_is_the_embeddings_times_their_gradient(client, models):
    embedded, grad, tokens = _embedding_gradient(models, SPAM, target=0)
    reference = _word_sums(SPAM, tokens, (embedded * grad).sum(-1)[0].tolist())
    answer = explain(client, texts=[SPAM], method="gi", target="ham")
    assert answer["method"] == "gi" and answer["composite"] is None
    assert [w["relevance"] for w in answer["documents"][0]["words"]] == pytest.approx(reference, rel=1e-4, abs=1e-6)


def test_integrated_gradients_nearly_complete_the_logit_difference_to_the_zero_baseline(client, models):
    """Σ IG = f(x) − f(0) up to the 32-point midpoint rule's error (Sundararajan et al. 2017, completeness)."""
    classifier = models["spam-cnn"].classifier
    tokens = classifier.tokenize([SPAM])[0]
    ids = torch.tensor([classifier.vocab.encode(t.norm for t in tokens)])
    model = classifier.model
    with torch.no_grad():
        logit = model(ids)[0, 1]
        zero = torch.zeros_like(model.embedding(ids))
        handle = model.embedding.register_forward_hook(lambda module, inputs, output: zero)
        baseline = model(ids)[0, 1]
        handle.remove()
    words = explain(client, texts=[SPAM], method="ig", target="spam")["documents"][0]["words"]
    total = sum(w["relevance"] for w in words)
    assert total == pytest.approx(float(logit - baseline), rel=0.05)


def test_layer_totals_run_from_the_explained_logit_to_the_words(client, models):
    answer = explain(client, texts=[SPAM], composite="epsilon", target="spam", layers=True)
    schema.ExplainResponse.model_validate(answer)
    totals = answer["layers"][0]
    classifier = models["spam-cnn"].classifier
    with torch.no_grad():
        logit = float(classifier.model(*classifier.model.inputs(classifier.rows([classifier.tokenize([SPAM])[0]])[1]))
                      [0, 1])
    assert totals[0]["layer"] == "fc" and totals[0]["relevance"] == pytest.approx(logit, rel=1e-5)
    assert totals[-1]["layer"] == "embedding"
    words = sum(w["relevance"] for w in answer["documents"][0]["words"])
    assert totals[-1]["relevance"] == pytest.approx(words, rel=1e-4)
    refused = client.post("/v1/explain", json={"texts": [SPAM], "method": "gi", "layers": True})
    assert refused.status_code == 422 and "LRP" in refused.json()["error"]["message"]


def test_an_image_is_explained_pixel_by_pixel(client, models):
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 8:20] = 200  # a bright block: something like a garment
    answer = client.post("/v1/explain-image", json={"images": [png(pixels)], "target": "Trouser"})
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    schema.ImageResponse.model_validate(answer)
    result = answer["results"][0]
    assert result["target"] == "Trouser" and sum(result["probabilities"]) == pytest.approx(1.0)
    e = models["fashion-cnn"].classifier.explain(pixels[None, None] / 255.0, target="Trouser")
    assert np.asarray(result["relevance"]) == pytest.approx(e.relevance[0].sum(0).numpy(), rel=1e-5, abs=1e-7)
    contrast = client.post("/v1/explain-image", json={"images": [png(pixels)], "target": "Trouser",
                                                      "contrast": "Dress"}).json()["results"][0]
    dress = client.post("/v1/explain-image", json={"images": [png(pixels)], "target": "Dress"}).json()["results"][0]
    assert contrast["contrast"] == "Dress"  # each rule is linear in the relevance it receives (as for text)
    assert np.asarray(contrast["relevance"]) == pytest.approx(
        np.asarray(result["relevance"]) - np.asarray(dress["relevance"]), rel=1e-4, abs=1e-6)
    for bad, message in ((png(np.zeros((32, 32), dtype=np.uint8)), "32x32"),
                         (png(np.zeros((28, 28, 3), dtype=np.uint8)), "RGB"),
                         (base64.b64encode(b"not an image").decode(), "image 0 is not a readable image"),
                         ("%%%", "base64")):
        refused = client.post("/v1/explain-image", json={"images": [bad]})
        assert refused.status_code == 422 and message in refused.json()["error"]["message"]
    wrong = client.post("/v1/explain", json={"texts": [SPAM], "model": "fashion-cnn"})
    assert wrong.status_code == 422 and "/v1/explain-image" in wrong.json()["error"]["message"]


def test_a_huge_image_header_is_refused_before_its_pixels_are_decoded(client):
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR: 60000 x 60000 pixels, 3.6 GB if decoded
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the chunk's checksum
    answer = client.post("/v1/explain-image", json={"images": [base64.b64encode(bytes(data)).decode()]})
    message = error_of(answer, 422, "unexplainable")
    assert "60000x60000" in message or "decompression bomb" in message


# -- the corpus view --------------------------------------------------------------------------------------------------
CORPUS = [
    {"text": "FREE money!!! Click here to claim your FREE prize", "label": "spam"},
    {"text": "Limited offer: click here, free shipping on your order", "label": "spam"},
    {"text": "Re: [ILUG] kernel patch\n> wrote: it works on my router", "label": "ham"},
    {"text": "Re: the list meeting is moved to Friday, thanks for the patch", "label": "ham"},
]


def test_the_corpus_view_sums_word_relevance_per_class_and_links_the_documents(client):
    lines = [json.dumps(r) for r in CORPUS] + ['{"text": 3}', "not json", json.dumps({"text": "x", "label": "eggs"})]
    answer = client.post("/v1/corpus", json={"data": "\n".join(lines), "format": "jsonl", "label_field": "label",
                                             "top": 100})
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    schema.CorpusResponse.model_validate(answer)
    assert answer["by"] == "label" and [r["line"] for r in answer["rejected"]] == [5, 6, 7]
    assert [d["text"] for d in answer["documents"]] == [r["text"] for r in CORPUS]
    # the reference: each document explained alone through /v1/explain for its label, its tokens summed here
    classifier = load_models(["default"])["spam-cnn"].classifier
    for group in answer["classes"]:
        label = group["label"]
        members = [i for i, r in enumerate(CORPUS) if r["label"] == label]
        assert group["documents"] == len(members)
        expected: dict[str, float] = {}
        places: dict[str, set[int]] = {}
        shared: set[str] = set()  # tokens that also occur inside a word of several tokens: not checkable here
        for i in members:
            doc = explain(client, texts=[CORPUS[i]["text"]], target=label)["documents"][0]
            tokens = classifier.tokenize([CORPUS[i]["text"]])[0]
            for word in doc["words"]:  # a word's relevance is its tokens'; words of one token map one to one
                inside = [t for t in tokens if word["start"] <= t.start < word["end"]]
                if len(inside) == 1:
                    expected[inside[0].norm] = expected.get(inside[0].norm, 0.0) + word["relevance"]
                    places.setdefault(inside[0].norm, set()).add(i)
                else:
                    shared.update(t.norm for t in inside)
        got = {w["word"]: w for w in group["words"]}
        ranked = [w["relevance"] for w in group["words"]]
        assert ranked == sorted(ranked, reverse=True)
        checked = 0
        for word, total in expected.items():
            if word not in shared:
                assert got[word]["relevance"] == pytest.approx(total, rel=1e-4, abs=1e-5)
                assert got[word]["documents"] == sorted(places[word])
                checked += 1
        assert checked >= 5


def test_a_csv_corpus_without_labels_is_counted_by_prediction(client):
    rows = "text,id\n" + "\n".join(f'"{r["text"]}",{i}' for i, r in enumerate(CORPUS))
    answer = client.post("/v1/corpus", json={"data": rows, "format": "csv"}).json()
    assert answer["by"] == "prediction"
    assert sum(group["documents"] for group in answer["classes"]) == len(CORPUS)
    for doc in answer["documents"]:
        assert doc["explained"] == doc["prediction"]
    missing = client.post("/v1/corpus", json={"data": rows, "format": "csv", "text_field": "body"})
    assert missing.status_code == 422 and "no column 'body'" in missing.json()["error"]["message"]


def test_a_corpus_over_the_limit_is_refused(models):
    with small_client(models, max_corpus_documents=3) as c:
        answer = c.post("/v1/corpus", json={"data": "\n".join(json.dumps(r) for r in CORPUS), "format": "jsonl"})
        assert answer.status_code == 413 and "more than 3 documents" in answer.json()["error"]["message"]


# -- the OpenAPI description and the errors ------------------------------------------------------------------------
def test_the_openapi_description_names_every_route_with_its_schemas(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ("/v1/explain", "/v1/explain-image", "/v1/corpus"):
        operation = spec["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("Request")
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("Response")
        for status in ("413", "422"):
            assert operation["responses"][status]["content"]["application/json"]["schema"]["$ref"] \
                == "#/components/schemas/ErrorResponse"
    assert set(spec["paths"]) >= {"/healthz", "/v1/models"}
    document = spec["components"]["schemas"]["Document"]
    assert set(document["properties"]) == {"prediction", "target", "score", "contrast", "truncated", "windows",
                                            "special", "words"}
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    schema.ErrorResponse.model_validate(body)
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]["message"]


@pytest.mark.parametrize("body, field", [
    ({}, "texts"), ({"texts": "one document"}, "texts"), ({"texts": [SPAM], "colour": "red"}, "colour"),
    ({"texts": [SPAM], "method": "shap"}, "method"), ({"texts": [3]}, "texts.0"), ({"texts": [SPAM], "layers": "x"},
                                                                                  "layers"),
])
def test_a_request_not_matching_the_schema_is_a_422_naming_the_field(client, body, field):
    message = error_of(client.post("/v1/explain", json=body), 422, "invalid_request")
    assert message.startswith(field)
    assert client.post("/v1/explain", json=body).json()["error"]["field"] == field


@pytest.mark.parametrize("body, needle", [
    ({"model": "nope"}, "unknown model"), ({"composite": "attnlrp"}, "unknown composite"),
    ({"target": "eggs"}, "unknown target label 'eggs'"), ({"contrast": "ham"}, "needs an explicit target"),
    ({"target": "spam", "contrast": "spam"}, "against itself"), ({"texts": ["   "]}, "document 0 is empty"),
    ({"texts": [SPAM, "\u2603\u2603 \u2604"]}, "document 1 has no word in the vocabulary"),
    ({"texts": ["lone \ud800 surrogate"]}, "not valid text"),
])
def test_a_request_the_model_cannot_answer_is_a_422_saying_why(client, body, needle):
    data = json.dumps({"texts": [SPAM], **body})  # ASCII, with escapes: a lone surrogate travels as \ud800
    response = client.post("/v1/explain", content=data, headers={"Content-Type": "application/json"})
    message = error_of(response, 422, "unexplainable")
    assert needle in message


def test_a_body_that_is_not_json_text_is_a_400(client):
    for data in (b'{"texts": [', b'{"texts": ["caf\xe9 \xff\xfe"]}', b"\x00\x01"):
        error_of(client.post("/v1/explain", content=data, headers={"Content-Type": "application/json"}),
                 400, "invalid_json")


def test_limits_are_413s_that_name_them(models):
    with small_client(models, max_body_bytes=1000, max_documents=2, max_characters=50) as c:
        assert "1,000 bytes" in error_of(c.post("/v1/explain", json={"texts": ["free " * 300]}), 413, "too_large")
        chunked = c.post("/v1/explain", content=iter([b'{"texts": ["', b"free " * 300, b'"]}']),
                         headers={"Content-Type": "application/json"})
        assert "1,000 bytes" in error_of(chunked, 413, "too_large")
        assert "at most 2" in error_of(c.post("/v1/explain", json={"texts": ["free"] * 3}), 413, "too_large")
        assert "up to 50" in error_of(c.post("/v1/explain", json={"texts": ["free " * 20]}), 413, "too_large")
        assert c.post("/v1/explain", json={"texts": ["free money"]}).status_code == 200


def test_unknown_routes_and_methods_answer_in_the_same_shape(client):
    error_of(client.get("/v1/nothing"), 404, "not_found")
    error_of(client.get("/v1/explain"), 405, "method_not_allowed")


def test_an_unexpected_failure_is_a_500_without_details(models, monkeypatch):
    def broken(prepared, goal):
        raise RuntimeError("secret: /home/operator/models/key.pt")

    monkeypatch.setattr(models["spam-cnn"], "run", broken)
    with small_client(models) as c:
        message = error_of(c.post("/v1/explain", json={"texts": [SPAM]}), 500, "internal")
        assert "secret" not in message and "operator" not in c.post("/v1/explain", json={"texts": [SPAM]}).text


def test_a_slow_request_and_a_full_queue_are_503s(models, monkeypatch):
    run = models["spam-cnn"].run

    def slow(prepared, goal):
        time.sleep(0.5)
        return run(prepared, goal)

    monkeypatch.setattr(models["spam-cnn"], "run", slow)
    with small_client(models, timeout_s=0.1) as c:
        assert "0.1 s" in error_of(c.post("/v1/explain", json={"texts": [SPAM]}), 503, "timeout")
    with small_client(models, max_queued_documents=1) as c:
        assert "retry later" in error_of(c.post("/v1/explain", json={"texts": [SPAM, HAM]}), 503, "busy")


# -- hostile documents ------------------------------------------------------------------------------------------------
def test_markup_in_a_document_comes_back_as_text_with_its_offsets(client):
    text = '<script>alert("x")</script> <img src=x onerror="alert(1)"> FREE money &amp; "quotes"'
    response = client.post("/v1/explain", json={"texts": [text]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    words = response.json()["documents"][0]["words"]
    assert [(w["text"], w["start"], w["end"]) for w in words] == words_of(text)
    assert all(text[w["start"]: w["end"]] == w["text"] for w in words)


def test_two_megabytes_of_one_word_is_a_clean_4xx(models):
    word = "a" * 2_000_000
    with small_client(models) as c:  # over the server's characters per document
        assert "100,000" in error_of(c.post("/v1/explain", json={"texts": [word]}), 413, "too_large")
    with small_client(models, max_body_bytes=4_000_000, max_characters=3_000_000) as c:  # over lrptext's own limit
        assert "1,000,000" in error_of(c.post("/v1/explain", json={"texts": [word]}), 422, "unexplainable")
    with small_client(models, max_body_bytes=1_000_000) as c:  # over the body limit
        error_of(c.post("/v1/explain", json={"texts": [word]}), 413, "too_large")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=0, max_size=200), min_size=1, max_size=3))
def test_any_text_gets_an_explanation_or_a_4xx_never_a_500(client, texts):
    response = client.post("/v1/explain", json={"texts": texts})
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code == 200:
        for text, doc in zip(texts, response.json()["documents"]):
            assert [(w["text"], w["start"], w["end"]) for w in doc["words"]] == words_of(text)


# -- batching -------------------------------------------------------------------------------------------------------
def test_concurrent_requests_share_one_pass_with_the_results_they_get_alone(models):
    """While the worker computes one job, the jobs that arrive queue; the next pass takes all of them (same key)."""
    model = models["spam-cnn"]
    goal = Goal("epsilon_gamma")
    texts = [SPAM, HAM, "Meeting notes for the kernel patch review", "Claim your FREE prize now!!!",
             "cheap pills online, no prescription", "the list archive moved, see the footer"]
    release = threading.Event()
    passes: list[int] = []

    def run(prepared):
        passes.append(len(prepared))
        if len(passes) == 1:
            release.wait(10)  # hold the worker until every other job is queued
        return model.run(prepared, goal)

    def prepare(items):
        return model.prepare(items, 100_000)

    async def scenario():
        batcher = Batcher(enabled=True, max_items=64)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("k", texts[:1], prepare, run))
        while not passes:
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit("k", [t], prepare, run)) for t in texts[1:]]
        bad = asyncio.ensure_future(batcher.submit("k", ["\u2603"], prepare, run))
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(first, *rest)
        with pytest.raises(ValueError, match="no word in the vocabulary"):
            await bad
        await batcher.stop()
        return results, batcher.stats

    results, stats = asyncio.run(scenario())
    assert passes == [1, len(texts) - 1]  # the bad document failed alone, before the pass
    assert stats.largest == len(texts) - 1 and stats.batches == 2
    for text, (result,) in zip(texts, results):
        alone = model.run(model.prepare([text], 100_000), goal)[0]["document"]
        assert result["document"]["prediction"] == alone["prediction"]
        assert [w["relevance"] for w in result["document"]["words"]] == pytest.approx(
            [w["relevance"] for w in alone["words"]], rel=1e-4, abs=1e-6)


def test_without_batching_every_request_has_its_own_pass(models):
    model = models["spam-cnn"]
    goal = Goal("epsilon_gamma")
    passes: list[int] = []

    def run(prepared):
        passes.append(len(prepared))
        time.sleep(0.05)
        return model.run(prepared, goal)

    async def scenario():
        batcher = Batcher(enabled=False)
        await batcher.start()
        await asyncio.gather(*(batcher.submit("k", [t], lambda xs: model.prepare(xs, 100_000), run)
                               for t in (SPAM, HAM, SPAM, HAM)))
        await batcher.stop()

    asyncio.run(scenario())
    assert passes == [1, 1, 1, 1]


def test_documents_are_grouped_by_length_so_that_padding_stays_small():
    lengths = [3, 500, 40, 41, 120, 9, 48, 499, 100, 1]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        longest, shortest = max(lengths[i] for i in group), min(lengths[i] for i in group)
        assert max(longest, 8) <= 1.25 * max(shortest, 8)
    assert [sorted(lengths[i] for i in g) for g in groups] == [[1, 3, 9], [40, 41, 48], [100, 120], [499, 500]]
