"""A trained document classifier with everything needed to explain it: tokenizer, vocabulary, labels, model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lrptext.engine import Contrast, Explainer
from lrptext.models import ARCHS, store
from lrptext.text.checks import check_text
from lrptext.text.document import DocumentExplanation, words_of
from lrptext.text.tokens import Token, Tokenizer
from lrptext.text.vocab import Vocabulary

# The most faithful composite on word deletion, tied with LRP-0 and as cheap as a gradient
# (docs/conventions.md); ε rather than LRP-0, which divides by z = 0 where a neuron's inputs cancel
DEFAULT_COMPOSITE = "epsilon"


class TextClassifier:
    default_composite = DEFAULT_COMPOSITE
    windowed = False  # True for transformers: long documents are read in windows, never truncated

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, labels: Sequence[str], *, max_tokens: int = 400,
                 tokenizer: Tokenizer | None = None, metadata: dict[str, Any] | None = None):
        self.model = model.eval()
        self.vocab = vocab
        self.labels = list(labels)
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer or Tokenizer()
        self.metadata = dict(metadata or {})
        self._explainers: dict[str, Explainer] = {}

    # -- files -----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path = "default", *, tokenizer: Tokenizer | None = None) -> TextClassifier:
        """A model file from 'lrptext train', "default" (the bundled CNN), or a Hugging Face model folder."""
        if Path(path).is_dir():
            return cls.from_pretrained(path)
        payload = store.read(path)
        arch = ARCHS.get(payload["arch"])
        if arch is None:
            raise ValueError(f"{path}: unknown architecture {payload['arch']!r}; known: {', '.join(ARCHS)}")
        model = arch(len(payload["vocab"]), len(payload["labels"]), **payload["config"])
        model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
        return cls(model, Vocabulary(payload["vocab"]), payload["labels"], max_tokens=payload["max_tokens"],
                   tokenizer=tokenizer, metadata=payload.get("metadata"))

    @staticmethod
    def from_pretrained(model: str | Path | torch.nn.Module, tokenizer: Any = None, **options: Any) -> TextClassifier:
        """A Hugging Face sequence classifier: a local folder (config.json with id2label, model.safetensors,
        tokenizer.json; nothing is downloaded), or a model object with its fast tokenizer. Options: labels=,
        max_length= (tokens per window), stride= (lrptext.text.transformer.TransformerClassifier)."""
        from lrptext.text.transformer import TransformerClassifier

        if isinstance(model, (str, Path)):
            if tokenizer is not None:
                raise ValueError("a model folder brings its own tokenizer; pass tokenizer= with a model object only")
            return TransformerClassifier.from_folder(model, **options)
        if tokenizer is None:
            raise ValueError("from_pretrained(model) with a model object needs its tokenizer: "
                             "from_pretrained(model, tokenizer)")
        return TransformerClassifier(model, tokenizer, **options)

    def save(self, path: str | Path, *, half: bool = False) -> None:
        state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in self.model.state_dict().items()}
        store.save(path, {"arch": self.model.arch, "config": self.model.config, "vocab": self.vocab.tokens,
                          "labels": self.labels, "max_tokens": self.max_tokens, "state_dict": state,
                          "metadata": self.metadata})

    # -- prediction and explanation --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[Token]]:
        if isinstance(texts, str):
            raise TypeError("pass a list of documents, e.g. [text]")
        return list(self.tokenizer.pipe([check_text(t, i) for i, t in enumerate(texts)]))

    def knows_a_word(self, tokens: Sequence[Token]) -> bool:
        """Whether the model's window of a tokenised document holds a word of the vocabulary."""
        return any(x != self.vocab.unk_id for x in self.vocab.encode(t.norm for t in tokens[: self.max_tokens]))

    def rows(self, tokens: Sequence[Sequence[Token]]) -> tuple[list[list[Token]], list[list[int]], list[bool]]:
        """(tokens the model sees, their ids, truncated?) per tokenised document."""
        kept, rows, truncated = [], [], []
        for i, toks in enumerate(tokens):
            ids = self.vocab.encode(t.norm for t in toks[: self.max_tokens])
            if not self.knows_a_word(toks):
                raise ValueError(f"document {i} has no word in the model's vocabulary (all {len(ids)} tokens are "
                                 "unknown); nothing in it can be explained")
            kept.append(list(toks[: self.max_tokens]))
            rows.append(ids)
            truncated.append(len(toks) > self.max_tokens)
        return kept, rows, truncated

    def predict(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities [B, C]."""
        _, rows, _ = self.rows(self.tokenize(texts))
        with torch.no_grad():
            return self.model(*self.model.inputs(rows)).softmax(dim=1)

    def label_index(self, label: str | int, what: str = "target") -> int:
        if isinstance(label, int) and 0 <= label < len(self.labels):
            return label
        if isinstance(label, str) and label in self.labels:
            return self.labels.index(label)
        raise ValueError(f"unknown {what} label {label!r}; this model's labels are {', '.join(self.labels)}")

    def goal_indices(self, target: str | int | None, contrast: str | int | None) -> tuple[int | None, int | None]:
        """The indices of an explanation's target and contrast labels (None: the predicted label, no contrast)."""
        target_index = None if target is None else self.label_index(target)
        contrast_index = None if contrast is None else self.label_index(contrast, "contrast")
        if contrast_index is not None and target_index is None:
            raise ValueError("a contrast needs an explicit target label (--target on the command line)")
        return target_index, contrast_index

    def explainer(self, composite: str = DEFAULT_COMPOSITE) -> Explainer:
        if composite not in self._explainers:
            self._explainers[composite] = Explainer(self.model, composite=composite)
        return self._explainers[composite]

    def explain(self, texts: Sequence[str], *, target: str | int | None = None, contrast: str | int | None = None,
                composite: str | None = None, batch_size: int = 32) -> list[DocumentExplanation]:
        """Word-level relevance for each document: for `target` (default: the predicted label), optionally
        against `contrast`; composite default: `default_composite`."""
        target_index, contrast_index = self.goal_indices(target, contrast)
        out: list[DocumentExplanation] = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start: start + batch_size])
            out.extend(self.explain_tokens(batch, self.tokenize(batch), target=target_index,
                                           contrast=contrast_index, composite=composite))
        return out

    def explain_tokens(self, texts: Sequence[str], tokens: Sequence[Sequence[Token]], *, target: int | None = None,
                       contrast: int | None = None, composite: str | None = None) -> list[DocumentExplanation]:
        """Explains documents that are already tokenised (e.g. spaCy Docs), in one pass through the kernels."""
        tokens, rows, truncated = self.rows(tokens)
        goal: Any = Contrast(target, contrast) if contrast is not None else target
        e = self.explainer(composite or self.default_composite).explain(self.model.inputs(rows), target=goal)
        relevance = self.model.token_relevance(e.relevance, rows)
        probs = e.prediction.softmax(dim=1)
        docs = []
        for i, text in enumerate(texts):
            pairs = list(zip(tokens[i], relevance[i]))
            predicted = int(probs[i].argmax())
            explained = int(e.target[i])
            docs.append(DocumentExplanation(
                text=text, labels=self.labels, prediction=self.labels[predicted], score=float(probs[i, predicted]),
                target=self.labels[explained], target_score=float(probs[i, explained]),
                words=words_of(text, pairs), token_relevance=pairs, truncated=truncated[i],
                contrast=None if contrast is None else self.labels[contrast], probabilities=tuple(probs[i].tolist())))
        return docs
