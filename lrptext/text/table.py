"""Word relevance as a table: one row per word, with its offsets and its document's prediction, for pandas
(doc.to_pandas(), lrptext.to_pandas(docs)) and for Parquet (`lrptext explain-text --format parquet`, and the
Ray Data path, lrptext.integrations.ray.ExplainWords). pandas and pyarrow come with the extra `pandas`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lrptext.text.document import DocumentExplanation

# A word's columns, then its document's (repeated on each of the document's rows).
WORD_COLUMNS = ("position", "word", "start", "end", "relevance")
DOCUMENT_COLUMNS = ("prediction", "score", "target", "target_score", "contrast", "truncated")
# Parquet rows lead with where the document came from: its line in the corpus file (null on Ray Data, which has no
# lines) and its id (--id-field, or ExplainWords' id_column; null without one).
SOURCE_COLUMNS = ("line", "id")


def require_extra(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module.split('.')[0]}, which is not installed: pip install "
                          "'lrptext[pandas]' (pandas and pyarrow)") from None


def rows(docs: Iterable[DocumentExplanation], heads: Iterable[dict[str, Any]]) -> dict[str, list]:
    """Column lists, one entry per word of each document, each row led by its document's `heads` columns."""
    columns: dict[str, list] = {}
    for head, doc in zip(heads, docs):
        values = {"prediction": doc.prediction, "score": doc.score, "target": doc.target,
                  "target_score": doc.target_score, "contrast": doc.contrast, "truncated": doc.truncated}
        for position, w in enumerate(doc.words):
            row = {**head, "position": position, "word": w.text, "start": w.start, "end": w.end,
                   "relevance": w.relevance, **values}
            for name, value in row.items():
                columns.setdefault(name, []).append(value)
    return columns


def to_pandas(docs: Sequence[DocumentExplanation] | DocumentExplanation):
    """A DataFrame with one row per word: `document` (the index in `docs`; absent for a single document), then
    position (the word's index in its document), word, start, end (character offsets: text[start:end] is the
    word), relevance, and the document's prediction, score, target, target_score, contrast and truncated."""
    pandas = require_extra("pandas", "to_pandas")
    single = isinstance(docs, DocumentExplanation)
    docs = [docs] if single else list(docs)
    for i, doc in enumerate(docs):
        if not isinstance(doc, DocumentExplanation):
            raise TypeError(f"docs[{i}] is a {type(doc).__name__}, not a DocumentExplanation; pass what "
                            "TextClassifier.explain or lrptext.explain(pipeline, texts) returns")
    names = ((() if single else ("document",)) + WORD_COLUMNS + DOCUMENT_COLUMNS)
    columns = rows(docs, [{} if single else {"document": i} for i in range(len(docs))])
    return pandas.DataFrame({name: columns.get(name, []) for name in names}, columns=list(names))


def arrow_schema():
    """The Parquet schema of word rows, the same for the CLI and for Ray Data."""
    pa = require_extra("pyarrow", "Parquet output")
    types = {"line": pa.int64(), "id": pa.string(), "position": pa.int64(), "word": pa.string(),
             "start": pa.int64(), "end": pa.int64(), "relevance": pa.float64(), "prediction": pa.string(),
             "score": pa.float64(), "target": pa.string(), "target_score": pa.float64(), "contrast": pa.string(),
             "truncated": pa.bool_()}
    return pa.schema([(name, types[name]) for name in SOURCE_COLUMNS + WORD_COLUMNS + DOCUMENT_COLUMNS])


def arrow_table(docs: Sequence[DocumentExplanation], sources: Sequence[tuple[int | None, Any]]):
    """Word rows of `docs` as a pyarrow Table in arrow_schema(); sources: (line, id) per document (an id that is
    not a string is written as its str())."""
    pa = require_extra("pyarrow", "Parquet output")
    heads = [{"line": line, "id": None if key is None else str(key)} for line, key in sources]
    schema = arrow_schema()
    columns = rows(docs, heads)
    return pa.table({name: pa.array(columns.get(name, []), type=schema.field(name).type) for name in schema.names},
                    schema=schema)
