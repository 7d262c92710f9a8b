"""A Hugging Face sequence classifier (BERT, DistilBERT, RoBERTa, ELECTRA, MiniLM ...) with its fast tokenizer,
explained with AttnLRP or CP-LRP down to the user's words: subword pieces summed into whitespace words with
character offsets, special tokens reported apart, long documents in overlapping windows (lrptext.text.windows),
never truncated."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lrptext.engine import Contrast, Explainer
from lrptext.text.checks import check_text
from lrptext.text.classifier import TextClassifier
from lrptext.text.document import WORD, DocumentExplanation, Word
from lrptext.text.subwords import WHITESPACE, Pieces, pieces_of, require_fast, special_template, sum_into
from lrptext.text.tokens import Token
from lrptext.text.windows import combine, mean_logits, window_starts

DEFAULT_TRANSFORMER_COMPOSITE = "attnlrp"
# Model types whose position ids start after the padding id (RoBERTa's scheme): max_position_embeddings holds
# pad_token_id + 1 positions no token reaches.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")


def labels_of(config: Any) -> list[str]:
    """The labels in output order, from the config's id2label."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    outputs = getattr(config, "num_labels", len(id2label))
    if sorted(id2label) != list(range(outputs)):
        raise ValueError(f"the model config's id2label {id2label} does not name its {outputs} outputs "
                         f"0..{outputs - 1}; set config.id2label or pass labels=")
    return [id2label[i] for i in range(outputs)]


def model_window(tokenizer: Any, config: Any) -> int:
    """Tokens the model reads at once, special tokens included: the tokenizer's model_max_length, at most the
    positions the model has."""
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:  # unset: transformers' VERY_LARGE_INTEGER
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        if getattr(config, "model_type", None) in OFFSET_POSITIONS:
            positions -= (config.pad_token_id or 0) + 1
        limits.append(int(positions))
    if not limits:
        raise ValueError("neither the tokenizer (model_max_length) nor the model config (max_position_embeddings) "
                         "says how many tokens the model reads; pass max_length=")
    return min(limits)



def padded_batch(rows: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Token id rows right-padded with pad_id into input_ids, with the attention_mask marking the real tokens."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}

class TransformerClassifier(TextClassifier):
    """`TextClassifier.from_pretrained(folder)` or `TransformerClassifier(model, tokenizer)`; explains as the
    other text classifiers do, with `composite="attnlrp"` (default) or `"cp_lrp"`.

    max_length: tokens per window, special tokens included (default: the model's, see model_window); stride:
    pieces between window starts (default: half a window's pieces)."""

    default_composite = DEFAULT_TRANSFORMER_COMPOSITE
    windowed = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, labels: Sequence[str] | None = None, *,
                 max_length: int | None = None, stride: int | None = None, metadata: dict[str, Any] | None = None):
        # No vocabulary nor spaCy tokenizer as the CNN's: the model's own tokenizer reads the text.
        require_fast(tokenizer)
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"'model' must be a Hugging Face sequence classifier (a torch module with a config), "
                            f"got {type(model).__name__}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = list(labels) if labels is not None else labels_of(model.config)
        outputs = getattr(model.config, "num_labels", len(self.labels))
        if len(self.labels) != outputs:
            raise ValueError(f"'labels' names {len(self.labels)} classes but the model has {outputs} outputs")
        self.metadata = dict(metadata or {})
        self._explainers: dict[str, Explainer] = {}
        limit = model_window(tokenizer, model.config)
        if max_length is not None and not 0 < max_length <= limit:
            raise ValueError(f"'max_length' must be between 1 and the model's {limit} tokens, got {max_length}")
        self.max_length = max_length or limit
        self.prefix, self.suffix = special_template(tokenizer)
        specials = len(self.prefix) + len(self.suffix)
        self.window = self.max_length - specials  # document pieces per window
        if self.window < 1:
            raise ValueError(f"max_length {self.max_length} leaves no room beside the {specials} special tokens")
        self.stride = stride or max(1, self.window // 2)
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"'stride' must be between 1 and the {self.window} pieces of a window, got {stride}")

    # -- files -----------------------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, path: str | Path, **options: Any) -> TransformerClassifier:
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError:
            raise ImportError("Hugging Face model folders need the extra 'transformers': pip install "
                              "'lrptext[transformers]'") from None
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json); lrptext reads "
                                    "local folders only (config.json, model.safetensors, tokenizer.json)")
        if not (folder / "tokenizer.json").is_file():
            # without it transformers builds a default tokenizer that reads every word as [UNK]: refused, not guessed
            raise FileNotFoundError(f"{folder} has no tokenizer.json, the fast tokenizer lrptext maps words with; "
                                    "write it beside the model with tokenizer.save_pretrained(folder)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
        except OSError as error:  # e.g. no weights: transformers' message names the files it looked for
            raise FileNotFoundError(f"{folder} is not a complete model folder ({error}); model.save_pretrained(folder) "
                                    "writes config.json and model.safetensors") from None
        metadata = {}
        record = folder / "lrptext-training.json"
        if record.is_file():
            metadata = json.loads(record.read_text(encoding="utf-8"))
        return cls(model, tokenizer, metadata=metadata, **options)

    def save(self, path: str | Path, *, half: bool = False) -> None:
        """A Hugging Face folder that from_pretrained reads back."""
        if half:
            raise ValueError("half=True is for lrptext's own model files; save a transformer in its own dtype")
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    # -- prediction and explanation --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[Token]]:
        """The document's subword pieces (special tokens and whitespace-only pieces aside)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of documents, e.g. [text]")
        checked = [check_text(t, i) for i, t in enumerate(texts)]
        return [[t for t in p.tokens if t.text] for p in pieces_of(self.tokenizer, checked)]

    def knows_a_word(self, tokens: Sequence[Token]) -> bool:
        return len(tokens) > 0

    def _windows(self, texts: Sequence[str]) -> tuple[list[Pieces], list[list[int]], list[list[int]], list[list[int]]]:
        """(pieces, window starts, window ids, window special-token masks) of each document."""
        pieces = pieces_of(self.tokenizer, texts)
        starts, rows, specials = [], [], []
        for i, p in enumerate(pieces):
            if not p.ids:
                raise ValueError(f"document {i} gives the tokenizer no token; nothing in it can be explained")
            starts.append(window_starts(len(p), self.window, self.stride))
            for s in starts[-1]:
                content = p.ids[s: s + self.window]
                rows.append(self.prefix + content + self.suffix)
                specials.append([True] * len(self.prefix) + [False] * len(content) + [True] * len(self.suffix))
        return pieces, starts, rows, specials

    def _batch(self, rows: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return padded_batch(rows, pad)

    def _logits(self, rows: Sequence[list[int]], batch_size: int = 32) -> torch.Tensor:
        parts = []
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                out = self.model(**self._batch(rows[s: s + batch_size]))
                parts.append((out.logits if hasattr(out, "logits") else out[0]).float())
        return torch.cat(parts)

    def predict(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities [B, C] from the windows' mean logits."""
        texts = [check_text(t, i) for i, t in enumerate(texts)]
        _, starts, rows, _ = self._windows(texts)
        return mean_logits(self._logits(rows), [len(s) for s in starts]).softmax(dim=1)

    def explain_tokens(self, texts: Sequence[str], tokens: Sequence[Sequence[Token]], *, target: int | None = None,
                       contrast: int | None = None, composite: str | None = None,
                       window_batch: int = 32) -> list[DocumentExplanation]:
        """Explains documents; `tokens` are the units (a spaCy Doc's tokens, or tokenize()'s pieces) whose
        relevance `token_relevance` gives, each the sum over the pieces starting in it."""
        if contrast is not None and target is None:
            raise ValueError("a contrast needs an explicit target label (--target on the command line)")
        explainer = self.explainer(composite or self.default_composite)
        pieces, starts, rows, specials = self._windows(texts)
        counts = [len(s) for s in starts]
        if target is not None:
            targets = torch.full((len(texts),), target, dtype=torch.long)
        elif any(c > 1 for c in counts):  # a document's class comes from all its windows: one forward pass first
            targets = mean_logits(self._logits(rows, window_batch), counts).argmax(dim=1)
        else:
            targets = None  # one window each: its own prediction is the document's
        per_window = None if targets is None else targets.repeat_interleave(torch.tensor(counts))
        relevance, logits = [], []
        for s in range(0, len(rows), window_batch):
            goal: Any = None if per_window is None else per_window[s: s + window_batch]
            if contrast is not None:
                goal = Contrast(goal, torch.full_like(goal, contrast))
            e = explainer.explain(self._batch(rows[s: s + window_batch]), target=goal)
            relevance.extend(e.relevance.detach().double())
            logits.append(e.prediction.detach().float())
        probs = mean_logits(torch.cat(logits), counts).softmax(dim=1)
        targets = probs.argmax(dim=1) if targets is None else targets
        docs, w = [], 0
        for i, text in enumerate(texts):
            window = slice(w, w + counts[i])
            piece_r, special = self._combine(pieces[i], starts[i], rows[window], specials[window], relevance[window])
            words, outside = sum_into([(m.start(), m.end()) for m in WORD.finditer(text)], pieces[i].tokens, piece_r)
            if any(not t.text for t in pieces[i].tokens):
                special[WHITESPACE] = outside
            units = list(tokens[i])
            unit_r, _ = sum_into([(t.start, t.end) for t in units], pieces[i].tokens, piece_r)
            predicted, explained = int(probs[i].argmax()), int(targets[i])
            docs.append(DocumentExplanation(
                text=text, labels=self.labels, prediction=self.labels[predicted], score=float(probs[i, predicted]),
                target=self.labels[explained], target_score=float(probs[i, explained]),
                words=[Word(m.group(), m.start(), m.end(), r) for m, r in zip(WORD.finditer(text), words)],
                token_relevance=list(zip(units, unit_r)), truncated=False,
                contrast=None if contrast is None else self.labels[contrast], probabilities=tuple(probs[i].tolist()),
                windows=counts[i], special=special))
            w += counts[i]
        return docs

    def layer_relevance(self, texts: Sequence[str], targets: Sequence[int], *, contrast: int | None = None,
                        composite: str | None = None) -> list[dict[str, float]]:
        """Per document, Σ relevance at each node's output (Explanation.layer_relevance: the same names, from the
        output down to the embeddings) for its target label index (against `contrast`), averaged over the
        document's windows as its word relevance is (lrptext.text.windows): one window gives that window's totals.

        One window per pass: a node the windows of a batch share (the position embeddings, broadcast over the
        batch) has one total for the whole batch, which no window could be given its share of."""
        if len(targets) != len(texts):
            raise ValueError(f"'targets' must hold one label index per document ({len(texts)}), got {len(targets)}")
        explainer = self.explainer(composite or self.default_composite)
        _, starts, rows, _ = self._windows([check_text(t, i) for i, t in enumerate(texts)])
        out = []
        windows = iter(rows)
        for target, document_starts in zip(targets, starts):
            goal: Any = Contrast(target, contrast) if contrast is not None else target
            totals: dict[str, float] = {}
            for _ in document_starts:
                e = explainer.explain(self._batch([next(windows)]), target=goal, layers=True)
                for name, total in e.layer_relevance.items():
                    totals[name] = totals.get(name, 0.0) + float(total[0]) / len(document_starts)
            out.append(totals)
        return out

    def _combine(self, pieces: Pieces, starts: list[int], rows: list[list[int]], specials: list[list[bool]],
                 relevance: list[torch.Tensor]) -> tuple[list[float], dict[str, float]]:
        """(relevance per piece, relevance per special token name) of one document from its windows'
        (lrptext.text.windows: summed over the windows, divided by their number)."""
        content, special = [], {}
        for ids, mask, r in zip(rows, specials, relevance):
            content.append(r[[j for j, m in enumerate(mask) if not m]])
            for j in (j for j, m in enumerate(mask) if m):
                name = self.tokenizer.convert_ids_to_tokens(ids[j])
                special[name] = special.get(name, 0.0) + float(r[j]) / len(starts)
        return combine(len(pieces), starts, content).tolist(), special
