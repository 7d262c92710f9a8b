"""The spaCy component: entry point, Doc/Token/Span relevance, batching, serialisation, rendering, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import spacy

from lrptext.integrations.spacy_component import install_extensions, render_html

TEXTS = ["FREE money!!! Click here to claim your prize now.",
         "Re: the kernel patch\n\nI applied it to the tree; the build works again. Thanks!",
         "Limited  offer: earn $$$ from home, unsubscribe here."] * 3


@pytest.fixture(scope="module")
def nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("lrptext", config={"batch_size": 4})
    return nlp


def test_the_factory_is_found_without_importing_lrptext(tmp_path):
    code = ("import sys, spacy\nnlp = spacy.blank('en')\nnlp.add_pipe('lrptext')\n"
            "assert 'lrptext' in nlp.pipe_names\ndoc = nlp('FREE money now!!!')\n"
            "print(sorted(doc.cats), len(doc._.relevance) == len(doc))")
    # run outside the source tree, so that the installed package (and its entry point) is what spaCy finds
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['ham', 'spam'] True"


def test_doc_token_and_span_relevance(nlp):
    doc = nlp(TEXTS[2])
    assert set(doc.cats) == {"ham", "spam"} and abs(sum(doc.cats.values()) - 1) < 1e-5
    assert doc._.relevance_target == max(doc.cats, key=doc.cats.get)  # the predicted label is explained
    assert len(doc._.relevance) == len(doc)
    assert all(t._.relevance == 0.0 for t in doc if t.is_space)  # the double space
    assert doc[0]._.relevance == doc._.relevance[0]
    assert doc[0:3]._.relevance == pytest.approx(sum(doc._.relevance[0:3]))
    assert spacy.blank("en")("unannotated")._.relevance is None


def test_batches_go_through_the_kernels_once_each_and_equal_single_documents(nlp):
    component = nlp.get_pipe("lrptext")
    calls = []
    original = component.classifier.explain_tokens
    component.classifier.explain_tokens = lambda *a, **k: calls.append(len(a[0])) or original(*a, **k)
    try:
        batched = list(nlp.pipe(TEXTS, batch_size=4))
    finally:
        component.classifier.explain_tokens = original
    assert calls == [4, 4, 1]
    for doc, text in zip(batched, TEXTS):
        single = nlp(text)
        assert doc._.relevance == pytest.approx(single._.relevance, rel=1e-4, abs=1e-6)


def test_extensions_install_idempotently():
    install_extensions()
    install_extensions()


def test_to_disk_and_spacy_load_round_trip(nlp, tmp_path):
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.pipe_names == ["lrptext"]
    assert loaded(TEXTS[0])._.relevance == pytest.approx(nlp(TEXTS[0])._.relevance, rel=1e-5, abs=1e-7)


def test_target_config_and_rendering():
    nlp = spacy.blank("en")
    nlp.add_pipe("lrptext", config={"target": "ham"})
    doc = nlp('<script>alert("x")</script> FREE money')
    assert doc._.relevance_target == "ham"
    page = render_html(doc)
    assert "&lt;script&gt;" in page and "<script>alert" not in page and "explaining" in page


def test_config_errors_name_the_setting():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="config 'model' = '/no/such/model.pt' cannot be loaded"):
        nlp.add_pipe("lrptext", config={"model": "/no/such/model.pt"})
    with pytest.raises(ValueError, match="unknown target label 'eggs'"):
        spacy.blank("en").add_pipe("lrptext", config={"target": "eggs"})
    with pytest.raises(ValueError, match="run it through a pipeline with the 'lrptext' component"):
        render_html(spacy.blank("en")("no annotations"))
