"""The README's Python snippets run as written, so they cannot drift from the API.

Every ```python block of README.md is listed here by its first two lines, with what it assumes and does not show (the
`texts` or `model` a reader brings), given in plain code beside it. A block added to the README without an entry
here, or an entry whose block is gone, fails the suite. The MiniLM block needs the opt-in extra `minilm` (an 83 MB
package of weights, as tests/test_minilm.py): it runs where that package is installed and is skipped, with that
reason, elsewhere; it is the only block that may be skipped."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded

README = Path(__file__).resolve().parent.parent / "README.md"

TEXTS = '''
texts = ["FREE money!!! Click here to claim your prize", "Meeting notes for the kernel patch review",
         "win a FREE prize now", "see you at lunch tomorrow"]
labels = ["spam", "ham", "spam", "ham"]
'''

# Each block by its first two lines -> the code that defines what the block uses without showing it.
GIVEN = {
    "from lrptext.text.classifier import TextClassifier / ": "",
    "import spacy / ": TEXTS,
    "import lrptext / from sklearn.pipeline import make_pipeline": TEXTS + '''
import numpy as np
from sklearn.linear_model import LogisticRegression

X = np.random.default_rng(0).random((20, 6))
y = (X[:, 0] > X[:, 1]).astype(int)
classifier = LogisticRegression().fit(X, y)
''',
    "import torch, lrptext / ": '''
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 6, 6)).eval()   # six classes
token_ids = torch.randint(0, 50, (2, 6))
x = token_ids
''',
    "import torch, lrptext / from transformers import BertConfig, BertForSequenceClassification": "",
    "from lrptext.integrations.transformers import SentenceClassifier, load_minilm / ": "import lrptext\n",
    "import lrptext / from lrptext.text.classifier import TextClassifier": "",
    # a tiny random BERT folder stands in for the fine-tuned MiniLM (tests/hf_folders.py)
    "from lrptext.text.classifier import TextClassifier   # the folder written by `lrptext train` above / ": '''
from pathlib import Path
import hf_folders

tokenizer = hf_folders.wordpiece_tokenizer()
hf_folders.save_folder(hf_folders.bert(tokenizer), tokenizer, Path("minilm-spam"))
text = "free money click here to claim your prize now"
''',
}
OPT_IN = {"from lrptext.integrations.transformers import SentenceClassifier, load_minilm / ": "all_minilm_l6_v2"}


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def key(block: str) -> str:
    return " / ".join((block.splitlines() + [""])[:2])


def test_every_python_block_of_the_readme_is_run_here():
    found = [key(b) for b in blocks()]
    assert len(found) == len(set(found)), f"two README blocks share an entry: {found}"
    assert set(found) == set(GIVEN), (f"README blocks without an entry here: {sorted(set(found) - set(GIVEN))}; "
                                      f"entries without a block: {sorted(set(GIVEN) - set(found))}")


@pytest.mark.parametrize("block", blocks(), ids=key)
def test_a_readme_block_runs_as_written(block, tmp_path, monkeypatch):
    name = key(block)
    package = OPT_IN.get(name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip("opt-in: pip install 'lrptext[minilm]' to run the README's MiniLM block")
    monkeypatch.chdir(tmp_path)  # what a block writes (a spaCy pipeline on disk) lands here
    namespace: dict = {"__name__": "readme"}
    exec(compile(GIVEN[name], f"README given: {name}", "exec"), namespace)
    exec(compile(block, f"README block: {name}", "exec"), namespace)
