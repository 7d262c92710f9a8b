"""Word relevance as tables: to_pandas (one row per word, offsets that slice the text), Parquet from the CLI
(streamed in row groups, resumable after any interruption, the same rows as JSON lines), and a clear message when
the extra is missing."""

from __future__ import annotations

import json
import sys

import pyarrow.parquet as pq
import pytest

import lrptext
from lrptext.cli import main
from lrptext.datasets import load
from lrptext.text.classifier import TextClassifier
from lrptext.text.parquet import ParquetSink
from lrptext.text.records import Record
from lrptext.text.streaming import InvalidRecordError, stream_corpus
from lrptext.text.table import arrow_schema

COLUMNS = ["line", "id", "position", "word", "start", "end", "relevance", "prediction", "score", "target",
           "target_score", "contrast", "truncated"]


@pytest.fixture(scope="module")
def classifier():
    return TextClassifier.load("default")


@pytest.fixture(scope="module")
def emails():
    return [" ".join(t.split()) for t in load("spam-assassin").test.texts[:10]]  # one line each


def test_to_pandas_has_one_row_per_word_whose_offsets_slice_the_text(classifier, emails):
    docs = classifier.explain(emails[:3], target="spam")
    frame = lrptext.to_pandas(docs)
    assert len(frame) == sum(len(d.words) for d in docs)
    assert list(frame.columns[:6]) == ["document", "position", "word", "start", "end", "relevance"]
    for row in frame.itertuples():
        doc = docs[row.document]
        assert doc.text[row.start:row.end] == row.word == doc.words[row.position].text
        assert row.relevance == doc.words[row.position].relevance and row.target == "spam"
        assert row.prediction == doc.prediction and row.score == doc.score
    single = docs[1].to_pandas()
    assert "document" not in single and len(single) == len(docs[1].words)
    assert single["relevance"].sum() == pytest.approx(sum(w.relevance for w in docs[1].words))


def test_a_missing_pandas_names_the_extra(classifier, monkeypatch):
    doc = classifier.explain(["FREE money"])[0]
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"to_pandas needs pandas, which is not installed: pip install "
                                          r"'lrptext\[pandas\]'"):
        doc.to_pandas()


def rows_of_jsonl(path):
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for position, w in enumerate(record["words"]):
            rows.append((record["line"], position, w["text"], w["start"], w["end"], w["relevance"],
                         record["prediction"], record["target"]))
    return rows


def rows_of_parquet(path):
    t = pq.read_table(path).to_pylist()
    return [(r["line"], r["position"], r["word"], r["start"], r["end"], r["relevance"], r["prediction"],
             r["target"]) for r in t]


def test_parquet_holds_the_rows_of_jsonl_in_one_row_group_per_batch(emails, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"m{i}", "text": t}) + "\n" for i, t in enumerate(emails))
                      + json.dumps({"id": "empty", "text": " "}) + "\n")
    common = ["explain-text", "--file", str(corpus), "--id-field", "id", "--batch-size", "4"]
    assert main([*common, "--format", "jsonl", "--out", str(tmp_path / "words.jsonl")]) == 0
    assert main([*common, "--format", "parquet", "--out", str(tmp_path / "words.parquet")]) == 0
    table = pq.ParquetFile(tmp_path / "words.parquet")
    assert table.schema_arrow.names == COLUMNS and table.schema_arrow.equals(arrow_schema())
    assert table.num_row_groups == 3  # 11 records in batches of 4; the empty one is skipped as in JSON lines
    assert rows_of_parquet(tmp_path / "words.parquet") == rows_of_jsonl(tmp_path / "words.jsonl")
    ids = pq.read_table(tmp_path / "words.parquet", columns=["line", "id"]).to_pylist()
    assert {(r["line"], r["id"]) for r in ids} == {(i + 1, f"m{i}") for i in range(len(emails))}
    assert not (tmp_path / "words.parquet.parts").exists()


def test_parquet_resumes_after_a_kill_and_after_a_finished_run(classifier, emails, tmp_path):
    out = tmp_path / "words.parquet"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(emails) + "\n")
    args = ["explain-text", "--file", str(corpus), "--input-format", "lines", "--format", "parquet",
            "--out", str(out), "--batch-size", "3"]
    # a run killed after two batches: whole parts on disk, a part cut off in the middle, no OUT and no footer
    sink = ParquetSink(out)
    first = classifier.explain(emails[:6])
    sink.write(first[:3], [(1, None), (2, None), (3, None)])
    sink.write(first[3:], [(4, None), (5, None), (6, None)])
    (sink.parts / "000002.tmp").write_bytes(b"PAR1 cut off")
    assert not out.exists()
    assert main(args) == 1  # never touched by accident
    assert main([*args, "--resume"]) == 0
    assert not (tmp_path / "words.parquet.parts").exists()
    expected_rows = [(line + 1, p, w.text, w.start, w.end, w.relevance, d.prediction, d.target)
                     for line, d in enumerate(classifier.explain(emails)) for p, w in enumerate(d.words)]
    got = rows_of_parquet(out)
    assert [r[:5] + r[6:] for r in got] == [r[:5] + r[6:] for r in expected_rows]
    assert [r[5] for r in got] == pytest.approx([r[5] for r in expected_rows], rel=1e-5, abs=1e-7)
    # the corpus grows: a finished file resumes too, keeping what it holds
    report = stream_corpus(classifier, [Record(i + 1, t) for i, t in enumerate(emails + ["FREE money!!! Click"])],
                           out, batch_size=3, resume=True, format="parquet")
    assert report.already_done == len(emails) and report.explained == 1
    lines = pq.read_table(out, columns=["line"]).column("line").to_pylist()
    assert sorted(set(lines)) == list(range(1, len(emails) + 2)) and lines == sorted(lines)


def test_parquet_is_interrupted_cleanly_and_refuses_foreign_files(classifier, emails, tmp_path):
    out = tmp_path / "words.parquet"

    def interrupted():
        for i, text in enumerate(emails[:5]):
            yield Record(i + 1, text)
        raise KeyboardInterrupt  # Ctrl-C: the batches done are gathered into a readable OUT

    with pytest.raises(KeyboardInterrupt):
        stream_corpus(classifier, interrupted(), out, batch_size=2, format="parquet")
    assert sorted(set(pq.read_table(out, columns=["line"]).column("line").to_pylist())) == [1, 2, 3, 4]
    strict = tmp_path / "strict.parquet"  # --strict keeps the documents before the invalid record, as JSON lines
    with pytest.raises(InvalidRecordError, match="line 2: bad"):
        stream_corpus(classifier, [Record(1, emails[0]), Record(2, None, error="bad"), Record(3, emails[1])], strict,
                      batch_size=3, strict=True, format="parquet")
    assert set(pq.read_table(strict, columns=["line"]).column("line").to_pylist()) == {1}
    foreign = tmp_path / "notes.parquet"
    foreign.write_text("my notes\n")
    with pytest.raises(ValueError, match="is not a word table written by lrptext"):
        stream_corpus(classifier, [], foreign, resume=True, format="parquet")
    assert foreign.read_text() == "my notes\n"


def test_documents_given_one_by_one_become_parquet_too(tmp_path):
    out = tmp_path / "two.parquet"
    assert main(["explain-text", "FREE money!!! Click here", "see you at lunch", "--format", "parquet",
                 "--out", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    assert [r["word"] for r in rows] == ["FREE", "money!!!", "Click", "here", "see", "you", "at", "lunch"]
    assert [r["id"] for r in rows] == ["0"] * 4 + ["1"] * 4 and all(r["line"] is None for r in rows)
    assert main(["explain-text", "FREE money", "--format", "parquet"]) == 1  # a file needs --out
