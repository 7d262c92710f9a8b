"""Tokenisation with spaCy (``spacy.blank("en")`` by default; any spaCy Language works), keeping each token's
character offsets into the raw text."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offsets into the raw text: text == raw[start:end]
    end: int

    @property
    def norm(self) -> str:
        """The vocabulary key: lower-cased."""
        return self.text.lower()


class Tokenizer:
    """Wraps a spaCy Language's tokenizer; whitespace tokens are dropped."""

    def __init__(self, nlp: Any = None, *, language: str = "en"):
        if nlp is None:
            import spacy

            nlp = spacy.blank(language)
        if not hasattr(nlp, "make_doc"):
            raise TypeError(f"'nlp' must be a spaCy Language (e.g. spacy.blank('en')), got {type(nlp).__name__}")
        self.nlp = nlp
        self.language = nlp.lang

    def __call__(self, text: str) -> list[Token]:
        return self._tokens(self.nlp.make_doc(text))

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[list[Token]]:
        for doc in self.nlp.tokenizer.pipe(texts, batch_size=batch_size):
            yield self._tokens(doc)

    @staticmethod
    def _tokens(doc: Any) -> list[Token]:
        return [Token(t.text, t.idx, t.idx + len(t.text)) for t in doc if not t.is_space]
