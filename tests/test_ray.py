"""Ray Data: ExplainTexts on a local Ray instance gives the single-process explanations, row for row."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import ray
import torch

from lrptext.datasets import load
from lrptext.integrations.ray import ExplainTexts, ExplainWords
from lrptext.text.classifier import TextClassifier
from lrptext.text.table import arrow_schema

# Ray warns about its own deprecated settings while it starts (DataContext sets them itself); ours stay errors.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("batch_format", ["numpy", "pandas"])
def test_ray_data_equals_the_single_process_result(local_ray, batch_format):
    texts = load("spam-assassin").test.texts[:24]
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)] + [{"id": 24, "text": "  "}]
    ds = ray.data.from_items(rows)
    out = ds.map_batches(ExplainTexts, batch_size=8, concurrency=2, batch_format=batch_format).take_all()
    out = sorted(out, key=lambda r: r["id"])  # workers may finish out of order
    expected = TextClassifier.load("default").explain(texts)
    assert len(out) == len(rows)
    for row, doc in zip(out, expected):
        assert row["error"] is None and row["prediction"] == doc.prediction and row["target"] == doc.target
        assert list(row["words"]) == [w.text for w in doc.words]
        torch.testing.assert_close(torch.tensor(list(row["relevance"]), dtype=torch.float64),
                                   torch.tensor([w.relevance for w in doc.words], dtype=torch.float64),
                                   rtol=1e-5, atol=1e-7)
        assert row["score"] == pytest.approx(doc.score, rel=1e-6)
    bad = out[-1]
    assert bad["error"] == "the document is empty; there is nothing to explain"
    assert bad["prediction"] is None and len(bad["words"]) == 0
    assert bad["score"] is None or math.isnan(bad["score"])  # Arrow stores pandas' NaN as a null


def test_a_missing_text_column_is_named(local_ray):
    ds = ray.data.from_items([{"body": "free money"}])
    with pytest.raises(Exception, match="no column 'text' \\(columns: body\\); pass text_column="):
        ds.map_batches(ExplainTexts, batch_size=8, concurrency=1).take_all()


def test_ray_word_rows_are_written_in_the_clis_parquet_schema(local_ray, tmp_path):
    texts = load("spam-assassin").test.texts[:6]
    ds = ray.data.from_items([{"key": i, "text": t} for i, t in enumerate(texts)] + [{"key": 6, "text": " "}])
    ds.map_batches(ExplainWords, fn_constructor_kwargs={"id_column": "key"}, batch_size=4,
                   concurrency=1).write_parquet(str(tmp_path / "words"))
    table = pq.read_table(tmp_path / "words")
    assert table.schema.equals(arrow_schema(), check_metadata=False)  # what `--format parquet` writes
    rows = sorted(table.to_pylist(), key=lambda r: (int(r["id"]), r["position"]))
    expected = TextClassifier.load("default").explain(texts)
    assert len(rows) == sum(len(d.words) for d in expected)  # the empty text gives no rows
    for row in rows:
        doc = expected[int(row["id"])]
        word = doc.words[row["position"]]
        assert (row["word"], row["start"], row["end"], row["line"]) == (word.text, word.start, word.end, None)
        assert row["relevance"] == pytest.approx(word.relevance, rel=1e-5, abs=1e-7)
        assert row["prediction"] == doc.prediction and row["score"] == pytest.approx(doc.score, rel=1e-6)
