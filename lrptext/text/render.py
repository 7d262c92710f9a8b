"""Explanations as a standalone HTML page, as 24-bit colour terminal text (plain where colour is off), and as JSON.

Colours are symmetric around zero and normalised per document: red for words that speak for the explained label,
blue for words against it, the strongest word of the document at full colour. Every piece of the document's text
is HTML-escaped."""

from __future__ import annotations

import html
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from lrptext.text.document import DocumentExplanation

RED, BLUE = (220, 38, 38), (37, 99, 235)

# The document's rules, scoped to .lrptext so that they style nothing else when a notebook embeds them; a document
# sets its own light background and dark text, readable in light and dark notebook themes alike.
DOC_STYLE = """
.lrptext section.doc { border: 1px solid #ddd; border-radius: 6px; padding: 1rem 1.25rem; margin-bottom: 1.5rem;
                       background: #fff; color: #111; color-scheme: light; }
.lrptext .meta { margin-bottom: .6rem; }
.lrptext .label { font-weight: 600; }
.lrptext .legend { display: flex; align-items: center; gap: .5rem; font-size: .85rem; margin-bottom: .75rem; }
.lrptext .bar { width: 14rem; height: .8rem; border-radius: 3px; border: 1px solid #ccc; }
.lrptext .text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: .9rem; line-height: 1.5; }
.lrptext .w { border-radius: 2px; }
.lrptext .note { color: #a15c00; font-size: .85rem; }
.lrptext details summary { cursor: pointer; color: #1d4ed8; font-size: .85rem; margin-top: .5rem; }
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #111; max-width: 70rem; }
""" + DOC_STYLE

BAR = f"background: linear-gradient(to right, rgb{BLUE}, #fff, rgb{RED})"


def _colour(relevance: float, scale: float) -> tuple[tuple[int, int, int], float]:
    alpha = min(abs(relevance) / scale, 1.0) if scale > 0 else 0.0
    return (RED if relevance > 0 else BLUE), alpha


def _scale(doc: DocumentExplanation) -> float:
    return max((abs(w.relevance) for w in doc.words), default=0.0)


def _describe(doc: DocumentExplanation) -> str:
    against = f" against {doc.contrast}" if doc.contrast else ""
    return (f"prediction: {doc.prediction} ({doc.score:.3f}) · explaining: {doc.target}{against} "
            f"({doc.target_score:.3f})")


def html_text(doc: DocumentExplanation, start: int = 0, end: int | None = None) -> str:
    """The characters [start, end) of the document, escaped, each word coloured by its relevance (hover: the
    value)."""
    end = len(doc.text) if end is None else end
    scale = _scale(doc)
    pieces, cursor = [], start
    for w in doc.words:
        if w.start < start or w.end > end:
            continue
        pieces.append(html.escape(doc.text[cursor: w.start]))
        (r, g, b), alpha = _colour(w.relevance, scale)
        pieces.append(f'<span class="w" style="background-color: rgba({r}, {g}, {b}, {alpha:.3f})" '
                      f'title="relevance {w.relevance:+.4g}" data-relevance="{w.relevance:.6g}">'
                      f"{html.escape(w.text)}</span>")
        cursor = w.end
    pieces.append(html.escape(doc.text[cursor:end]))
    return "".join(pieces)


def html_document(doc: DocumentExplanation, index: int = 0, *, excerpt: tuple[int, int] | None = None) -> str:
    """One document as a <section>; with `excerpt` (start, end), only those characters show, and the whole text
    behind a "show the whole document" switch (<details>, no script)."""
    scale = _scale(doc)
    note = ('<div class="note">The document is longer than the model\'s window: words after it were not read and '
            "have no relevance.</div>") if doc.truncated else ""
    if doc.windows is not None:
        note += f'<div class="note">{html.escape(_read_in(doc))}</div>'

    if excerpt is None:
        text = f'<div class="text">{html_text(doc)}</div>'
    else:
        start, end = excerpt
        text = (f'<div class="note">The {len(doc.text):,} characters are cut to their most relevant part, '
                f"characters {start:,} to {end:,}.</div>\n"
                f'<div class="text">{"… " if start > 0 else ""}{html_text(doc, start, end)}'
                f'{" …" if end < len(doc.text) else ""}</div>\n'
                f"<details><summary>Show the whole document</summary>"
                f'<div class="text">{html_text(doc)}</div></details>')
    return (f'<section class="doc" id="doc-{index}">\n<div class="meta">'
            f'prediction: <span class="label prediction">{html.escape(doc.prediction)}</span> ({doc.score:.3f}) · '
            f'explaining: <span class="label target">{html.escape(doc.target)}</span>'
            + (f" against {html.escape(doc.contrast)}" if doc.contrast else "")
            + f" ({doc.target_score:.3f})</div>\n"
            f'<div class="legend"><span>{-scale:+.3g} (against {html.escape(doc.target)})</span>'
            f'<span class="bar" style="{BAR}"></span><span>{scale:+.3g} (for {html.escape(doc.target)})</span></div>\n'
            f"{note}{text}\n</section>")


def html_report(docs: Sequence[DocumentExplanation], *, title: str = "lrptext: word relevance") -> str:
    """A standalone page (no scripts, no external resources); hovering a word shows its relevance."""
    body = "\n".join(html_document(d, i) for i, d in enumerate(docs))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            '<p>Red words speak for the explained label, blue words against it; colours are scaled per document. '
            "Hover a word for its relevance.</p>\n"
            f'<main class="lrptext">\n{body}\n</main>\n</body>\n</html>\n')


def _read_in(doc: DocumentExplanation) -> str:
    """How a transformer read the document, and the relevance of its tokens that are in no word."""
    windows = f"read in {doc.windows} window{'s' if doc.windows != 1 else ''}"
    apart = ", ".join(f"{name} {r:+.3g}" for name, r in doc.special.items())
    return f"{windows}; tokens in no word: {apart}" if apart else windows


def use_colour(stream: TextIO) -> bool:
    """24-bit colour unless NO_COLOR is set or the stream is not a terminal."""
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def terminal(doc: DocumentExplanation, *, colour: bool | None = None, max_characters: int = 3000, top: int = 8) -> str:
    if colour is None:
        colour = use_colour(sys.stdout)
    shown = doc.text[:max_characters]
    lines = [_describe(doc)]
    if colour:
        scale = _scale(doc)
        pieces, cursor = [], 0
        for w in doc.words:
            if w.start >= len(shown):
                break
            pieces.append(shown[cursor: w.start])
            (r, g, b), alpha = _colour(w.relevance, scale)
            bg = tuple(round(255 + (c - 255) * alpha) for c in (r, g, b))
            pieces.append(f"\x1b[38;2;0;0;0m\x1b[48;2;{bg[0]};{bg[1]};{bg[2]}m{w.text}\x1b[0m")
            cursor = w.end
        pieces.append(shown[cursor:])
        lines.append("".join(pieces))
    else:
        lines.append(shown)
    if len(doc.text) > max_characters:
        lines.append(f"... ({len(doc.text) - max_characters:,} more characters)")
    if doc.truncated:
        lines.append("(longer than the model's window: the words after it have no relevance)")
    if doc.windows is not None:
        lines.append(f"({_read_in(doc)})")
    for negative, heading in ((False, f"for {doc.target}"), (True, f"against {doc.target}")):
        words = doc.top_words(top, negative=negative)
        lines.append(f"top words {heading}: " + (", ".join(f"{w.text} ({w.relevance:+.3g})" for w in words) or "-"))
    return "\n".join(lines) + "\n"


def json_lines(docs: Sequence[DocumentExplanation]) -> str:
    return "".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in docs)
