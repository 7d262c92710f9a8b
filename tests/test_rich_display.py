"""What Jupyter shows (the _repr_html_ of documents, document lists, support tables and image explanations), read
from the HTML itself; tests/test_tutorials.py checks the same in a real kernel."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

import lrptext
from lrptext.image import ImageClassifier
from lrptext.text.classifier import TextClassifier
from lrptext.text.document import DocumentExplanation, Word
from lrptext.text.notebook import EXCERPT, LONG, Documents, relevant_region

HOSTILE = '<script>alert("x")</script> FREE money!!! <b>Click</b> here & win'


@pytest.fixture(scope="module")
def classifier():
    return TextClassifier.load("default")


def made_up(text: str, relevance: list[float], **fields) -> DocumentExplanation:
    """A document whose word relevance is given, not computed."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    words = [Word(text[s:e], s, e, r) for (s, e), r in zip(spans, relevance, strict=True)]
    values = dict(labels=["ham", "spam"], prediction="spam", score=0.9, target="spam", target_score=0.9,
                  token_relevance=[], truncated=False)
    return DocumentExplanation(text=text, words=words, **{**values, **fields})


def test_a_document_shows_its_words_coloured_escaped_with_prediction_and_legend(classifier):
    doc = classifier.explain([HOSTILE], target="ham", contrast="spam")[0]
    page = doc._repr_html_()
    assert "<script>" not in page and "<b>" not in page  # every piece of the text escaped
    for w in doc.words:
        assert f">{html.escape(w.text)}</span>" in page
    strongest = max(doc.words, key=lambda w: abs(w.relevance))
    colour = "220, 38, 38" if strongest.relevance > 0 else "37, 99, 235"
    assert f'rgba({colour}, 1.000)" title="relevance {strongest.relevance:+.4g}"' in page  # at full colour
    assert f"({doc.score:.3f})" in page and ">ham</span> against spam" in page
    assert 'class="legend"' in page and "linear-gradient" in page
    assert "background: #fff; color: #111" in page  # its own light card: readable in dark themes too
    assert "<details>" not in page  # short: nothing hidden
    long = classifier.explain([" ".join(["see you at the meeting"] * 300)])[0]
    assert len(repr(long)) < 250 and repr(long).startswith(f"DocumentExplanation(prediction={long.prediction!r}")


def test_a_long_document_shows_its_most_relevant_part_and_the_rest_behind_a_switch():
    filler = ["plain"] * 400
    text = " ".join(filler[:300] + ["FREE", "money", "now"] + filler[300:])
    relevance = [0.0] * 300 + [3.0, 2.0, 1.0] + [0.0] * 100
    doc = made_up(text, relevance, truncated=True)
    assert len(text) > LONG
    start, end = relevant_region(doc)
    assert text[start:end].split().count("FREE") == 1 and end - start <= EXCERPT
    page = doc._repr_html_()
    shown, hidden = page.split("<details>")
    assert "FREE</span>" in shown and shown.count('class="w"') < len(doc.words)  # cut to a part ...
    assert hidden.count('class="w"') == len(doc.words)  # ... the whole text one click away
    assert "longer than the model's window" in page  # truncated documents say so


def test_the_most_relevant_region_is_the_window_with_the_largest_summed_magnitude():
    # the words a..f, one character each, 2 apart; windows of 5 characters hold three words
    doc = made_up("a b c d e f", [1.0, 0.0, 0.0, -2.0, 2.0, 1.0])
    assert relevant_region(doc, width=5) == (6, 11)  # "d e f": |-2| + 2 + 1 = 5 beats "c d e" (4) and "a b c" (1)
    doc = made_up("a b c d e f", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert relevant_region(doc, width=5) == (0, 5)  # nothing relevant: the opening words
    doc = made_up("a b c d e f g", [0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0])
    assert relevant_region(doc, width=5) == (6, 11)  # "e" alone is the best run, widened around it: "d e f" ...
    assert relevant_region(doc, width=11) == (2, 13)  # ... and before it once the end is reached: "b c d e f g"


def test_several_documents_show_one_per_row(classifier):
    docs = classifier.explain([HOSTILE, "Meeting notes for the kernel patch review", "see you at lunch"])
    table = Documents(docs)._repr_html_()
    assert table.count("<tr><td>") == 3 and "<script>" not in table
    assert all(f"{d.prediction} ({d.score:.3f})" in table for d in docs)
    with pytest.raises(TypeError, match="document 1 is a str"):
        Documents([docs[0], "text"])


def test_show_prints_text_outside_a_notebook(classifier, capsys):
    docs = classifier.explain(["FREE money!!! Click here", "see you at lunch"])
    lrptext.show(docs)
    out = capsys.readouterr().out
    assert "FREE money!!! Click here" in out and "see you at lunch" in out and "\x1b[" not in out
    with pytest.raises(TypeError, match="lrptext.show takes explained documents"):
        lrptext.show(42)


def test_the_support_table_is_an_html_table_and_prints_as_before():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    table = lrptext.support_table(model, composite="epsilon")
    page = table._repr_html_()
    assert page.startswith('<table class="lrptext-support">') and page.count("<tr>") == len(table.rows) + 1
    assert "<th>layer kind</th>" in page and "Epsilon" in page
    text = str(table)
    assert text.splitlines()[0].split()[:4] == ["node", "op", "kind", "rule"] and "<" not in text.splitlines()[0]


def decoded_pngs(page: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_an_image_explanation_shows_input_and_heatmap_with_the_colour_scale():
    classifier = ImageClassifier.load("default")
    images = torch.zeros(2, 1, 28, 28)
    images[:, :, 6:22, 10:18] = 1.0  # a bright block
    e = classifier.explain(images, composite="epsilon")
    page = e._repr_html_()
    pngs = decoded_pngs(page)
    assert len(pngs) == 4  # input and heatmap per image
    side = pngs[0].shape[0]
    assert side >= 112 and side % 28 == 0
    factor = side // 28
    assert (pngs[0][8 * factor, 12 * factor] == 255).all() and (pngs[0][0, 0] == 0).all()  # the input as given
    relevance = e.relevance[0].sum(0)
    top = np.unravel_index(int(relevance.abs().argmax()), relevance.shape)
    red, blue = (255, 0, 0), (0, 0, 255)  # the ends of bwr: the strongest pixel is at full colour
    assert tuple(pngs[1][top[0] * factor, top[1] * factor]) == (red if relevance[top] > 0 else blue)
    predicted = int(e.prediction[0].argmax())
    assert f"prediction: <b>{classifier.labels[predicted]}</b>" in page
    assert f"±{float(relevance.abs().max()):.3g}" in page and "linear-gradient" in page


def test_show_draws_a_plain_explanation_of_images_and_refuses_token_relevance():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 6 * 6, 3)).eval()
    e = lrptext.explain(model, torch.rand(1, 1, 8, 8))
    view = lrptext.notebook.viewable(e)
    assert len(decoded_pngs(view._repr_html_())) == 1  # no pixels known: the heatmap alone
    tokens = lrptext.explain(torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(),
                                                 torch.nn.Linear(12, 2)), torch.tensor([[1, 2, 3]]))
    with pytest.raises(TypeError, match="an Explanation of token ids or features"):
        lrptext.show(tokens)
