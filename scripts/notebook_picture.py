"""Regenerates docs/notebook.png: a notebook cell that explains a document, as Jupyter shows it. The cell runs in a
real kernel (nbclient, the python3 kernel of ipykernel); its text/html output, exactly as the kernel sent it, is
placed under the cell's code in a page styled like a JupyterLab cell and photographed by headless Chromium.

    python scripts/notebook_picture.py

Needs the test extras (nbclient, ipykernel) and the Debian package chromium.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from pathlib import Path

from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

DOCS = Path(__file__).resolve().parent.parent / "docs"
SETUP = """from lrptext.text.classifier import TextClassifier
from lrptext.cli import _sample_emails

classifier = TextClassifier.load("default")
email = _sample_emails(4)[0]"""
CELL = """doc = classifier.explain([email])[0]
doc"""

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; padding: 16px 24px; background: #fff; font-family: system-ui, sans-serif; }}
.cell {{ display: grid; grid-template-columns: 56px 1fr; row-gap: 6px; }}
.prompt {{ color: #307fc1; font-family: ui-monospace, monospace; font-size: 13px; padding-top: 6px; }}
.prompt.out {{ color: #bf5b3d; }}
pre {{ margin: 0; padding: 6px 8px; background: #f5f5f5; border: 1px solid #e0e0e0; border-radius: 2px;
       font-size: 13px; }}
</style></head><body><div class="cell">
<div class="prompt">[2]:</div><pre>{code}</pre>
<div class="prompt out">[2]:</div><div>{output}</div>
</div></body></html>"""


def main() -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    notebook = new_notebook(cells=[new_code_cell(SETUP), new_code_cell(CELL)])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    output = next(o.data["text/html"] for o in notebook.cells[1].outputs if "text/html" in o.get("data", {}))
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "cell.html"
        page.write_text(PAGE.format(code=html.escape(CELL), output=output), encoding="utf-8")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp}/profile", "--hide-scrollbars", "--window-size=1000,640",
                        f"--screenshot={DOCS / 'notebook.png'}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(DOCS / "notebook.png")


if __name__ == "__main__":
    main()
