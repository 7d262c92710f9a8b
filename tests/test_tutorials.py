"""Notebooks in a real Jupyter kernel (nbclient starting ipykernel with the Python that runs the tests):

- the tutorials (docs/tutorials/*.ipynb) are committed without outputs, run cell by cell, and each code cell
  displays what its metadata promises (metadata.lrptext.expect: a MIME type and substrings; none for a cell that
  displays nothing), so a new cell cannot go unchecked;
- a notebook written here shows each kind of explanation, and its display data are checked against the same
  explanation computed in this process: a document's HTML holds its words, escaped, in colour; an image explanation
  holds PNGs; a support table is an HTML table; to_pandas has one row per word and offsets that slice the text."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # inherited by the kernels: nothing is downloaded
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own paths, without its migration warning

import base64  # noqa: E402
import html  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import nbformat  # noqa: E402
import pytest  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbformat.v4 import new_code_cell, new_notebook  # noqa: E402
from PIL import Image  # noqa: E402

from lrptext.text.classifier import TextClassifier  # noqa: E402

TUTORIALS = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
NAMES = ["01-documents", "02-pytorch-text-model", "03-scikit-learn", "04-images", "05-faithfulness",
         "06-hugging-face"]
HOSTILE = '<script>alert("x")</script> FREE money!!! <img src=x onerror=alert(1)> Click here & win'


KERNEL = "lrptext-tests"


@pytest.fixture(scope="module", autouse=True)
def kernel_of_this_python(tmp_path_factory):
    """A kernel spec that starts ipykernel with this very Python, first on Jupyter's path: a `python3` spec in the
    user's Jupyter folder (another Python, without lrptext) cannot be picked instead."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lrptext tests", "language": "python"}))
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), *([before] if before else [])])
    yield
    if before is None:
        del os.environ["JUPYTER_PATH"]
    else:
        os.environ["JUPYTER_PATH"] = before


def execute(notebook: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    NotebookClient(notebook, timeout=180, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def displayed(cell: nbformat.NotebookNode, mime: str) -> list[str]:
    """What the cell displayed as `mime` ("stream": what it printed)."""
    if mime == "stream":
        return [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"]
    return [o.data[mime] for o in cell.outputs if o.output_type in ("display_data", "execute_result")
            and mime in o.data]


def test_every_tutorial_is_committed_without_outputs_and_says_what_each_cell_shows():
    assert sorted(p.stem for p in TUTORIALS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        notebook = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
        nbformat.validate(notebook)
        for i, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
            assert cell.outputs == [] and cell.execution_count is None, f"{name}, code cell {i}: has outputs"
            assert "expect" in cell.metadata.get("lrptext", {}), f"{name}, code cell {i}: no metadata.lrptext.expect"


@pytest.mark.parametrize("name", NAMES)
def test_a_tutorial_runs_and_each_cell_displays_what_it_promises(name, tmp_path):
    notebook = execute(nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4), tmp_path)
    for i, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
        where = f"{name}, code cell {i}"
        expected = cell.metadata["lrptext"]["expect"]
        if not expected:
            assert not [o for o in cell.outputs if o.output_type != "stream"], f"{where}: displays something"
        for promise in expected:
            shown = displayed(cell, promise["mime"])
            assert shown, f"{where}: no {promise['mime']} output (outputs: {[o.output_type for o in cell.outputs]})"
            for text in promise["contains"]:
                assert any(text in s for s in shown), f"{where}: {promise['mime']} lacks {text!r}"
            if promise["mime"] == "image/png":
                assert Image.open(io.BytesIO(base64.b64decode(shown[0]))).format == "PNG"


CHECKS = [
    f"""
import torch
import lrptext
from lrptext.text.classifier import TextClassifier
from lrptext.image import ImageClassifier

doc = TextClassifier.load("default").explain([{HOSTILE!r}])[0]
doc
""",
    """
images = torch.zeros(2, 1, 28, 28)
images[:, :, 6:22, 10:18] = 1.0
ImageClassifier.load("default").explain(images)
""",
    """
lrptext.support_table(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)))
""",
    """
frame = doc.to_pandas()
print(frame.to_json(orient="records"))
frame
""",
]


def test_a_kernel_displays_each_kind_of_explanation(tmp_path):
    notebook = execute(new_notebook(cells=[new_code_cell(source) for source in CHECKS]), tmp_path)
    document, image, table, words = notebook.cells
    doc = TextClassifier.load("default").explain([HOSTILE])[0]  # the same explanation, in this process

    [page] = displayed(document, "text/html")
    for w in doc.words:
        assert f">{html.escape(w.text)}</span>" in page
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert len(re.findall(r"background-color: rgba\((220, 38, 38|37, 99, 235), (?!0\.000)", page)) > 0
    assert f"({doc.score:.3f})" in page

    [pictures] = displayed(image, "text/html")
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', pictures)
    assert len(pngs) == 4 and all(Image.open(io.BytesIO(base64.b64decode(p))).format == "PNG" for p in pngs)

    [rules] = displayed(table, "text/html")
    assert rules.startswith('<table class="lrptext-support">') and rules.count("<tr>") == 1 + 3  # head, 3 nodes
    assert "Linear" in rules and "<th>rule (parameters)</th>" in rules

    [printed] = displayed(words, "stream")
    rows = json.loads(printed)
    assert len(rows) == len(doc.words)
    assert all(doc.text[r["start"]:r["end"]] == r["word"] == w.text for r, w in zip(rows, doc.words))
    assert "<th>relevance</th>" in displayed(words, "text/html")[0]
