"""Subword pieces of a Hugging Face fast tokenizer as character spans of the document, and their relevance summed
into larger units (the whitespace-delimited words, or a spaCy Doc's tokens).

A piece's span comes from the tokenizer's offset mapping, trimmed of the whitespace some tokenizers include (a
byte-level BPE piece "Ġword" may start at the space before the word): a piece belongs to the unit holding its
first character. Pieces that are whitespace only (byte-level BPE's newline pieces) belong to no word; their
relevance is reported apart, with the special tokens, never dropped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lrptext.text.tokens import Token

WHITESPACE = "(whitespace)"  # the name under which whitespace-only pieces' relevance is reported


@dataclass(frozen=True)
class Pieces:
    """One document's pieces, without special tokens: ids as the model reads them, spans into the text."""

    ids: list[int]
    tokens: list[Token]  # text == document[start:end]; "" for a whitespace-only piece

    def __len__(self) -> int:
        return len(self.ids)


def trimmed(text: str, start: int, end: int) -> Token:
    """The piece text[start:end] without leading and trailing whitespace (empty, at start, if it is all space)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Token(text[start:end], start, end)


def require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"lrptext maps subwords to words with a fast tokenizer's offset mapping; "
                        f"{type(tokenizer).__name__} is not one: load it with AutoTokenizer.from_pretrained(path) "
                        "from a folder with tokenizer.json")


def pieces_of(tokenizer: Any, texts: Sequence[str]) -> list[Pieces]:
    """Each document's pieces, all of them: no truncation, no special tokens."""
    require_fast(tokenizer)
    # Pieces beyond the model's length are expected here (windows follow): no "will result in indexing errors".
    getattr(tokenizer, "deprecation_warnings", {})["sequence-length-is-longer-than-the-specified-maximum"] = True
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                        verbose=False)
    out = []
    for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"]):
        out.append(Pieces(list(ids), [trimmed(text, int(s), int(e)) for s, e in offsets]))
    return out


def sum_into(units: Sequence[tuple[int, int]], pieces: Sequence[Token], relevance: Sequence[float]
             ) -> tuple[list[float], float]:
    """(relevance per unit, relevance of the pieces in no unit): each piece counts for the unit holding its
    first character; units are sorted, non-overlapping (start, end) spans."""
    totals = [0.0] * len(units)
    outside = 0.0
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].start)
    k = 0
    for i in order:
        piece, r = pieces[i], float(relevance[i])
        while k < len(units) and units[k][1] <= piece.start:
            k += 1
        if piece.text and k < len(units) and units[k][0] <= piece.start:
            totals[k] += r
        else:
            outside += r
    return totals, outside


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(ids before, ids after) the document's pieces when the tokenizer adds its special tokens to one sequence
    ([CLS] ... [SEP], <s> ... </s>), read from how it encodes a probe word."""
    probe = "a"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k: k + len(bare)] == bare:
            return list(full[:k]), list(full[k + len(bare):])
    raise ValueError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens (it encodes {probe!r} as "
                     f"{full} with them and {bare} without)")
