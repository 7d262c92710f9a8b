"""Explain a ``ray.data.Dataset`` of texts beyond one machine: a callable class for ``Dataset.map_batches`` that
loads the model once per worker and adds the explanation to each row.

    import ray
    from lrptext.integrations.ray import ExplainTexts

    ds = ray.data.read_json("corpus.jsonl")                       # any dataset with a text column
    explained = ds.map_batches(ExplainTexts, fn_constructor_kwargs={"model": "model.pt"},
                               batch_size=64, concurrency=4)       # 4 workers, one model each
    explained.write_json("explained/")

Each output row keeps the input columns and gains ``prediction``, ``target``, ``score``, ``words`` (the words of
the text), ``relevance`` (one value per word) and ``error`` (why a row has no explanation: empty text, no known
word; None otherwise). A bad row never fails its batch. Needs the extra ``ray``: ``pip install "lrptext[ray]"``.

``ExplainWords`` gives one row per word instead, in the Parquet schema of ``lrptext explain-text --format parquet``
(lrptext.text.table), for ``write_parquet``; it needs the extra ``pandas`` too (pyarrow).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrptext.text.classifier import TextClassifier
from lrptext.text.records import checked
from lrptext.text.streaming import explain_records

COLUMNS = ("prediction", "target", "score", "words", "relevance", "error")


class ExplainTexts:
    """model: a file from ``lrptext train`` (or "default", the bundled SpamAssassin CNN), or a Hugging Face model
    folder; it must be readable on every worker. composite: default the model's (epsilon; attnlrp for a
    transformer). threads: CPU threads per worker for torch and lrptext (default: leave both as they are)."""

    def __init__(self, model: str = "default", *, text_column: str = "text", composite: str | None = None,
                 target: str | None = None, contrast: str | None = None, threads: int | None = None):
        import torch

        from lrptext._native import set_num_threads

        if threads is not None:
            torch.set_num_threads(threads)
            set_num_threads(threads)
        self.classifier = TextClassifier.load(model)
        self.text_column, self.composite = text_column, composite
        self.target, self.contrast = self.classifier.goal_indices(target, contrast)

    def __call__(self, batch: Any) -> Any:
        """batch: a dict of numpy arrays (Ray's default batch format) or a pandas DataFrame; returns the same."""
        if self.text_column not in batch:
            raise KeyError(f"the dataset has no column '{self.text_column}' (columns: {', '.join(batch.keys())}); "
                           "pass text_column= in fn_constructor_kwargs")
        texts = list(batch[self.text_column])
        records = [checked(i, t) for i, t in enumerate(texts)]
        results = explain_records(self.classifier, records, composite=self.composite, target=self.target,
                                  contrast=self.contrast)
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        for result in results:
            explained = not isinstance(result, str)
            columns["prediction"].append(result.prediction if explained else None)
            columns["target"].append(result.target if explained else None)
            columns["score"].append(result.score if explained else float("nan"))
            columns["words"].append([w.text for w in result.words] if explained else [])
            columns["relevance"].append([w.relevance for w in result.words] if explained else [])
            columns["error"].append(None if explained else result)
        if hasattr(batch, "assign"):  # pandas
            return batch.assign(**columns)
        out = dict(batch)
        for name, values in columns.items():
            array = np.empty(len(values), dtype=object)  # ragged lists stay one list per row
            array[:] = values
            out[name] = array.astype(np.float64) if name == "score" else array
        return out


class ExplainWords(ExplainTexts):
    """One output row per word, in the schema of `lrptext explain-text --format parquet` (arrow_schema(): line,
    id, position, word, start, end, relevance, prediction, score, target, target_score, contrast, truncated), so
    ``explained.write_parquet(...)`` writes what the CLI writes. line is null (Ray rows have no line in a file);
    id is the row's `id_column` (as a string; null without one). A row that cannot be explained (empty text, no
    known word) gives no word rows: keep ExplainTexts for the reasons."""

    def __init__(self, model: str = "default", *, id_column: str | None = None, **options: Any):
        super().__init__(model, **options)
        self.id_column = id_column

    def __call__(self, batch: Any) -> Any:
        """batch: a dict of numpy arrays or a pandas DataFrame; returns a pyarrow Table of word rows."""
        from lrptext.text.table import arrow_table

        for column in (self.text_column, self.id_column):
            if column is not None and column not in batch:
                raise KeyError(f"the dataset has no column '{column}' (columns: {', '.join(batch.keys())}); pass "
                               "text_column= or id_column= in fn_constructor_kwargs")
        texts = list(batch[self.text_column])
        ids = list(batch[self.id_column]) if self.id_column is not None else [None] * len(texts)
        results = explain_records(self.classifier, [checked(i, t) for i, t in enumerate(texts)],
                                  composite=self.composite, target=self.target, contrast=self.contrast)
        explained = [(key, doc) for key, doc in zip(ids, results) if not isinstance(doc, str)]
        return arrow_table([doc for _, doc in explained], [(None, key) for key, _ in explained])
