"""One explained document: the prediction and the relevance of each word, with character offsets."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from lrptext.text.tokens import Token

WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Word:
    """A whitespace-delimited word of the raw text; its relevance is the sum over its tokens (spaCy splits
    "don't" into "do" + "n't" and "free!" into "free" + "!")."""

    text: str
    start: int
    end: int
    relevance: float


@dataclass(frozen=True)
class DocumentExplanation:
    text: str
    labels: list[str]
    prediction: str        # the predicted label
    score: float           # its softmax probability
    target: str            # the explained label
    target_score: float
    words: list[Word]
    token_relevance: list[tuple[Token, float]]
    truncated: bool        # the document was longer than the model's window; later words got no relevance
    contrast: str | None = None
    probabilities: tuple[float, ...] = ()  # per label, in the order of `labels`
    windows: int | None = None  # transformers: the windows the document was read in (never truncated)
    special: dict[str, float] = field(default_factory=dict)  # relevance of tokens in no word ([CLS], [SEP], ...)

    def to_dict(self) -> dict:
        return {
            "prediction": self.prediction,
            "target": self.target,
            "score": self.score,
            **({"contrast": self.contrast} if self.contrast else {}),
            "truncated": self.truncated,
            **({"windows": self.windows, "special": self.special} if self.windows is not None else {}),
            "words": [asdict(w) for w in self.words],
        }

    def top_words(self, k: int = 10, *, negative: bool = False) -> list[Word]:
        ranked = sorted(self.words, key=lambda w: w.relevance, reverse=not negative)
        return [w for w in ranked[:k] if (w.relevance < 0) == negative and w.relevance != 0]

    def __repr__(self) -> str:
        """Short, as the text/plain beside the HTML that a notebook stores: not every token."""
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        against = f", contrast={self.contrast!r}" if self.contrast else ""
        return (f"DocumentExplanation(prediction={self.prediction!r}, score={self.score:.3f}, target={self.target!r}"
                f"{against}, words={len(self.words)}, truncated={self.truncated}, text={text!r})")

    def _repr_html_(self) -> str:
        """Jupyter shows the document as the HTML report does (lrptext.text.notebook)."""
        from lrptext.text.notebook import document_html

        return document_html(self)

    def to_pandas(self):
        """A DataFrame, one row per word: position, word, start, end, relevance, and the prediction, score,
        target, target_score, contrast and truncated of the document (extra `pandas`)."""
        from lrptext.text.table import to_pandas

        return to_pandas(self)


def words_of(text: str, token_relevance: list[tuple[Token, float]]) -> list[Word]:
    """Sums token relevance into the whitespace-delimited words that contain the tokens."""
    spans = [(m.start(), m.end()) for m in WORD.finditer(text)]
    totals = [0.0] * len(spans)
    k = 0
    for token, r in sorted(token_relevance, key=lambda tr: tr[0].start):
        while k < len(spans) and spans[k][1] <= token.start:
            k += 1
        if k < len(spans) and spans[k][0] <= token.start:
            totals[k] += r
    return [Word(text[s:e], s, e, totals[i]) for i, (s, e) in enumerate(spans)]
