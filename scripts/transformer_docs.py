"""The numbers and the picture of docs/transformers.md for a model folder written by
`lrptext train --arch minilm`: its training record, the test accuracy of the windowed prediction that
`lrptext explain-text` reports (every window of every test document, not the first one only), and a screenshot
of the HTML report on four SpamAssassin test e-mails (`--picture`, needs the Debian package chromium).

    python scripts/transformer_docs.py MODEL_FOLDER [--windowed-accuracy] [--picture docs/transformer-report.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lrptext.cli import _sample_emails  # noqa: E402
from lrptext.datasets import load  # noqa: E402
from lrptext.text import render  # noqa: E402
from lrptext.text.classifier import TextClassifier  # noqa: E402


def windowed_accuracy(classifier: TextClassifier, dataset: str, batch: int = 16) -> tuple[float, float, float]:
    """(accuracy, mean windows per document, seconds) of the windowed prediction on the test split."""
    from lrptext.text.windows import window_starts

    test = load(dataset).test
    started = time.perf_counter()
    hits, windows = 0, 0
    for s in range(0, len(test), batch):
        texts = test.texts[s: s + batch]
        predicted = classifier.predict(texts).argmax(dim=1).tolist()
        hits += sum(int(p == y) for p, y in zip(predicted, test.labels[s: s + batch]))
        windows += sum(len(window_starts(len(t), classifier.window, classifier.stride)) for t in
                       classifier.tokenize(texts))
    return hits / len(test), windows / len(test), time.perf_counter() - started


def picture(classifier: TextClassifier, out: Path) -> None:
    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("the screenshot needs the Debian package chromium")
    started = time.perf_counter()
    docs = classifier.explain(_sample_emails(4))
    print(f"4 e-mails explained in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render.html_report(docs, title="lrptext: fine-tuned MiniLM-L6, attnlrp"), encoding="utf-8")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp}/profile", "--hide-scrollbars", "--window-size=1200,1600",
                        f"--screenshot={out}", page.as_uri()], check=True, capture_output=True, timeout=180)
    for d in docs:
        print(f"{d.prediction} ({d.score:.3f}), windows: {d.windows}, top words "
              + ", ".join(f"{w.text} {w.relevance:+.3g}" for w in d.top_words(5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--windowed-accuracy", action="store_true")
    parser.add_argument("--picture", type=Path)
    args = parser.parse_args()
    classifier = TextClassifier.load(args.model)
    print(json.dumps(classifier.metadata, indent=2))
    if args.windowed_accuracy:
        accuracy, windows, seconds = windowed_accuracy(classifier, classifier.metadata["dataset"])
        print(f"windowed test accuracy {accuracy:.4f} ({windows:.2f} windows per document of "
              f"{classifier.max_length} tokens, stride {classifier.stride} pieces; {seconds:.0f} s)")
    if args.picture:
        picture(classifier, args.picture)


if __name__ == "__main__":
    main()
