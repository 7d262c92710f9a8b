"""The relevance of a tuple output, gathered part by part: each indexing of the tuple that relevance reaches
(`out, (h_n, c_n) = lstm(x)`, `q, k, v = qkv.chunk(3, -1)`) hands its relevance back as one part, and the node
that made the tuple takes all of them at once."""

from __future__ import annotations

import torch


class Parts:
    """Relevance by the path of each part: (0,) the first item, (1, 0) the first item of the second..."""

    def __init__(self, parts: dict[tuple[int, ...], torch.Tensor]):
        self.parts = parts

    def __add__(self, other: Parts) -> Parts:
        merged = dict(self.parts)
        for path, r in other.parts.items():
            merged[path] = merged[path] + r if path in merged else r
        return Parts(merged)

    def get(self, path: tuple[int, ...]) -> torch.Tensor | None:
        return self.parts.get(path)
