"""Token strings to ids: <pad> = 0, <unk> = 1, then the most frequent training tokens."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK = "<pad>", "<unk>"


class Vocabulary:
    def __init__(self, tokens: Sequence[str]):
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(tokens[:2])}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("a vocabulary lists every token once")

    pad_id, unk_id = 0, 1

    @classmethod
    def build(cls, documents: Iterable[Iterable[str]], *, max_size: int = 20_000, min_count: int = 2) -> Vocabulary:
        counts = Counter(t for doc in documents for t in doc)
        ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in (PAD, UNK)),
                        key=lambda t: (-counts[t], t))
        return cls([PAD, UNK] + ranked[: max_size - 2])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.index.get(t, self.unk_id) for t in tokens]
