"""Explained documents in Jupyter: the HTML a notebook shows for one document (its _repr_html_) and for several,
one per row. Both are the HTML report's own rendering (lrptext.text.render) with its style scoped to the output,
so a notebook and `lrptext explain-text --format html` colour every word alike."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from lrptext.text import render
from lrptext.text.document import DocumentExplanation

LONG = 1500      # characters: a longer document shows its most relevant part first, the rest behind a switch
EXCERPT = 600    # characters of that part
ROW_EXCERPT = 240  # characters of each document in the one-row-per-document view
MAX_ROWS = 50

# Inline as well as in <style>: a notebook viewer that strips <style> (an untrusted notebook) still shows dark
# text on a light card, whatever its theme.
CARD = "background: #fff; color: #111; color-scheme: light; border-radius: 6px"

# One row per document: line breaks fold into spaces, so that a row stays a few lines high.
ROWS_STYLE = """
.lrptext table.docs { border-collapse: collapse; width: 100%; background: #fff; color: #111; font-size: .85rem; }
.lrptext table.docs th, .lrptext table.docs td { border-bottom: 1px solid #ddd; padding: .3rem .5rem;
                                                 text-align: left; vertical-align: top; }
.lrptext table.docs td.text { white-space: normal; font-family: ui-monospace, monospace; }
"""


def relevant_region(doc: DocumentExplanation, width: int = EXCERPT) -> tuple[int, int]:
    """The characters (start, end) of a run of whole words at most `width` characters long: the shortest run with
    the largest summed |relevance| (the first of equals), widened a word after and a word before in turn to fill
    `width`."""
    words = doc.words
    if not words:
        return 0, min(width, len(doc.text))
    best, best_total, first, total = (0, 0), -1.0, 0, 0.0
    for last, w in enumerate(words):
        total += abs(w.relevance)
        while first < last and w.end - words[first].start > width:
            total -= abs(words[first].relevance)
            first += 1
        if total > best_total:
            best, best_total = (first, last), total
    first, last = best
    while first < last and words[first].relevance == 0:  # irrelevant ends add nothing: centre what counts
        first += 1
    while last > first and words[last].relevance == 0:
        last -= 1
    grown = True
    while grown:  # a word after, a word before, while they fit
        grown = False
        if last + 1 < len(words) and words[last + 1].end - words[first].start <= width:
            last, grown = last + 1, True
        if first > 0 and words[last].end - words[first - 1].start <= width:
            first, grown = first - 1, True
    return words[first].start, words[last].end


def document_html(doc: DocumentExplanation) -> str:
    """One document as a notebook shows it: the report's section (prediction, target, legend, coloured words),
    cut to its most relevant part, with a switch to the whole text, when it is longer than a screen."""
    excerpt = relevant_region(doc) if len(doc.text) > LONG else None
    return (f'<div class="lrptext" style="{CARD}"><style>{render.DOC_STYLE}</style>\n'
            f"{render.html_document(doc, excerpt=excerpt)}\n</div>")


def documents_html(docs: Sequence[DocumentExplanation]) -> str:
    """Several documents, one per row: prediction, explained label, and the most relevant part of the text."""
    rows = []
    for i, doc in enumerate(docs[:MAX_ROWS]):
        start, end = relevant_region(doc, ROW_EXCERPT)
        against = f" against {html.escape(doc.contrast)}" if doc.contrast else ""
        flags = "<br><small>truncated: longer than the model's window</small>" if doc.truncated else ""
        rows.append(f"<tr><td>{i}</td><td>{html.escape(doc.prediction)} ({doc.score:.3f})</td>"
                    f"<td>{html.escape(doc.target)}{against} ({doc.target_score:.3f}){flags}</td>"
                    f'<td class="text">{"… " if start > 0 else ""}{render.html_text(doc, start, end)}'
                    f'{" …" if end < len(doc.text) else ""}</td></tr>')
    more = (f"<p>… and {len(docs) - MAX_ROWS} more documents (show them one at a time, or slice the list)</p>"
            if len(docs) > MAX_ROWS else "")
    return (f'<div class="lrptext" style="{CARD}"><style>{render.DOC_STYLE}{ROWS_STYLE}</style>\n'
            f'<div class="legend">red: for the explained label, blue: against it, scaled per document '
            f'<span class="bar" style="{render.BAR}"></span></div>\n'
            '<table class="docs"><thead><tr><th>#</th><th>prediction</th><th>explaining</th>'
            "<th>most relevant part (hover a word for its relevance)</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + f"\n</tbody></table>{more}\n</div>")


class Documents(list):
    """A list of explained documents that a notebook shows one per row (lrptext.show), and that turns into a
    table of words (to_pandas)."""

    def __init__(self, docs: Iterable[DocumentExplanation] = ()):
        super().__init__(docs)
        for i, doc in enumerate(self):
            if not isinstance(doc, DocumentExplanation):
                raise TypeError(f"document {i} is a {type(doc).__name__}, not a DocumentExplanation; pass the list "
                                "that TextClassifier.explain or lrptext.explain(pipeline, texts) returns")

    def _repr_html_(self) -> str:
        return documents_html(self)

    def __str__(self) -> str:
        return "\n".join(render.terminal(d, colour=False) for d in self)

    def to_pandas(self):
        """One row per word of every document, with the document's index (lrptext.text.table.to_pandas)."""
        from lrptext.text.table import to_pandas

        return to_pandas(self)
