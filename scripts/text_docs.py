"""Regenerates docs/top-words.md and docs/report.png: the words with the largest summed relevance over the
SpamAssassin test split (each document explained for its true label), and a screenshot of the HTML report that
`lrptext explain-text --samples 4 --html report.html` writes (the same four e-mails).

    python scripts/text_docs.py [--model default] [--composite epsilon]
    python scripts/text_docs.py --model lstm.pt --report docs/recurrent-report.png   # the screenshot alone

The screenshot needs the Debian package chromium.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from lrptext.cli import _sample_emails
from lrptext.datasets import load
from lrptext.text import render
from lrptext.text.classifier import DEFAULT_COMPOSITE, TextClassifier

DOCS = Path(__file__).resolve().parents[1] / "docs"


def top_words(classifier: TextClassifier, composite: str, k: int = 25) -> tuple[str, float]:
    test = load("spam-assassin").test
    started = time.perf_counter()
    lines = []
    for label_index, label in enumerate(classifier.labels):
        texts = [t for t, y in zip(test.texts, test.labels) if y == label_index]
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for doc in classifier.explain(texts, target=label, composite=composite):
            for token, r in doc.token_relevance:
                totals[token.norm] += r
                counts[token.norm] += 1
        ranked = sorted(totals, key=totals.get, reverse=True)[:k]
        lines += [f"### {label}: {len(texts)} test e-mails, explained for '{label}'", "",
                  "| rank | token | summed relevance | occurrences |", "|---:|---|---:|---:|"]
        lines += [f"| {i + 1} | `{w}` | {totals[w]:.2f} | {counts[w]} |" for i, w in enumerate(ranked)]
        lines.append("")
    return "\n".join(lines), time.perf_counter() - started


def report_picture(classifier: TextClassifier, composite: str, out: Path) -> None:
    """A screenshot of the HTML report of the four e-mails `lrptext explain-text --samples 4` explains."""
    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("the screenshot needs chromium (Debian package chromium)")
    docs = classifier.explain(_sample_emails(4), composite=composite)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render.html_report(docs), encoding="utf-8")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={tmp}/profile", "--hide-scrollbars",
                        "--window-size=1200,1600", f"--screenshot={out.resolve()}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--composite", default=DEFAULT_COMPOSITE)
    parser.add_argument("--report", type=Path, metavar="PNG", help="write only the report's screenshot, here")
    args = parser.parse_args()
    classifier = TextClassifier.load(args.model)
    if args.report:
        report_picture(classifier, args.composite, args.report)
        return
    table, seconds = top_words(classifier, args.composite)
    meta = classifier.metadata
    (DOCS / "top-words.md").write_text(
        "# Top words on the SpamAssassin test split\n\n"
        f"Model: the bundled CNN (test accuracy {meta['test_accuracy']:.4f}); composite `{args.composite}`; "
        "relevance of each token summed over the test e-mails of one label, each explained for its true label. "
        f"Explaining all {len(load('spam-assassin').test)} e-mails took {seconds:.1f} s on this machine. "
        "Regenerate with `python scripts/text_docs.py`.\n\n"
        "How to read it: ham evidence is mostly the structure of mailing-list replies (quote markers `>`, `re`, "
        "`wrote`, header-like `date` and `:` lines, the brackets of subject tags such as `[ILUG]`), not topical "
        "words, because the corpus's ham comes from a few mailing lists; spam evidence is the vocabulary of "
        "advertising (`!`, `your`, `click`, `free`, `%`, `removed`, `receive`). Showing such corpus shortcuts is "
        "what an explanation is for.\n\n" + table)
    report_picture(classifier, args.composite, DOCS / "report.png")
    print((DOCS / "top-words.md").read_text()[:2000])


if __name__ == "__main__":
    main()
