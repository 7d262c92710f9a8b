"""Explaining a corpus file: three input formats, invalid records reported by line and skipped (or fatal with
--strict), incremental writing, resuming after an interruption."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lrptext.cli import main
from lrptext.datasets import load
from lrptext.text.classifier import TextClassifier
from lrptext.text.records import CorpusReader, Record
from lrptext.text.streaming import resume_point, stream_corpus


@pytest.fixture(scope="module")
def classifier():
    return TextClassifier.load("default")


@pytest.fixture(scope="module")
def emails():
    return [" ".join(t.split()) for t in load("spam-assassin").test.texts[:12]]  # one line each


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_explanations(records, docs):
    assert len(records) == len(docs)
    for record, doc in zip(records, docs):
        assert record["prediction"] == doc.prediction and record["target"] == doc.target
        assert [w["text"] for w in record["words"]] == [w.text for w in doc.words]
        torch.testing.assert_close(torch.tensor([w["relevance"] for w in record["words"]], dtype=torch.float64),
                                   torch.tensor([w.relevance for w in doc.words], dtype=torch.float64),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["lines", "jsonl", "csv"])
def test_each_format_streams_the_same_explanations_as_explain(kind, classifier, emails, tmp_path):
    corpus = tmp_path / f"corpus.{'txt' if kind == 'lines' else kind}"
    if kind == "lines":
        corpus.write_text("\n".join(emails) + "\n", encoding="utf-8")
    elif kind == "jsonl":
        corpus.write_text("".join(json.dumps({"id": f"m{i}", "body": t}) + "\n" for i, t in enumerate(emails)))
    else:
        with corpus.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "body"])
            writer.writerows([f"m{i}", t] for i, t in enumerate(emails))
    out = tmp_path / "out.jsonl"
    options = ["--input-format", "lines"] if kind == "lines" else ["--text-field", "body", "--id-field", "id"]
    assert main(["explain-text", "--file", str(corpus), *options, "--format", "jsonl", "--out", str(out),
                 "--batch-size", "5"]) == 0
    records = read_jsonl(out)
    assert_same_explanations(records, classifier.explain(emails))
    first = 1 if kind == "lines" else 2 if kind == "csv" else 1
    assert [r["line"] for r in records] == list(range(first, first + len(emails)))
    if kind != "lines":
        assert [r["id"] for r in records] == [f"m{i}" for i in range(len(emails))]


def test_invalid_records_are_reported_by_line_and_skipped(classifier, emails, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": emails[0]}), "{not json", json.dumps({"body": "no text field"}),
             json.dumps({"text": "   "}), json.dumps({"text": 42}), json.dumps(["a", "list"]),
             json.dumps({"text": "zzqqxv wwvvkk"}), "", json.dumps({"text": emails[1]})]
    corpus.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "caf\xe9"}\n')
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    assert main(["explain-text", "--file", str(corpus), "--format", "jsonl", "--out", str(out),
                 "--rejects", str(rejects)]) == 0
    assert_same_explanations(read_jsonl(out), classifier.explain(emails[:2]))
    reasons = {r["line"]: r["error"] for r in read_jsonl(rejects)}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 10]  # line 8 is blank: no record in JSON lines
    assert reasons[2].startswith("not valid JSON")
    assert "no 'text' field (fields: body); pass --text-field" in reasons[3]
    assert "empty" in reasons[4] and "must be a str, got int" in reasons[5] and "expected an object" in reasons[6]
    assert "vocabulary" in reasons[7] and "not valid utf-8" in reasons[10]
    err = capsys.readouterr().err
    assert f"{corpus}:2: skipped: not valid JSON" in err and "7 invalid records skipped" in err


def test_csv_and_plain_text_report_their_own_problems(tmp_path, emails):
    corpus = tmp_path / "c.csv"
    corpus.write_text('text,label\n"free money, now",1\n"spans\ntwo lines",0\nthree,fields,here\nmeeting at noon,0\n')
    records = list(CorpusReader(corpus, "csv"))
    assert [(r.line, r.valid) for r in records] == [(2, True), (3, True), (5, False), (6, True)]
    assert records[2].error == "3 fields where the header has 2"
    with pytest.raises(ValueError, match=r"no column 'body' \(columns: text, label\); pass --text-field"):
        list(CorpusReader(corpus, "csv", text_field="body"))
    plain = tmp_path / "c.txt"
    plain.write_text(f"{emails[0]}\n\n{emails[1]}\n")
    assert [(r.line, r.error) for r in CorpusReader(plain, "lines")] == [
        (1, None), (2, "the document is empty; there is nothing to explain"), (3, None)]


def test_strict_stops_at_the_first_invalid_record(tmp_path, emails, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": emails[0]}) + "\n" + json.dumps({"text": ""}) + "\n"
                      + json.dumps({"text": emails[1]}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["explain-text", "--file", str(corpus), "--format", "jsonl", "--out", str(out), "--strict"]) == 1
    assert "line 2: the document is empty" in capsys.readouterr().err
    assert [r["line"] for r in read_jsonl(out)] == [1]  # what came before it is kept


def test_output_is_written_batch_by_batch_and_resumes_after_an_interruption(classifier, emails, tmp_path):
    out = tmp_path / "out.jsonl"

    def interrupted():
        for i, text in enumerate(emails[:7]):
            yield Record(i + 1, text)
        raise KeyboardInterrupt  # e.g. Ctrl-C while reading: two whole batches of three are already on disk

    with pytest.raises(KeyboardInterrupt):
        stream_corpus(classifier, interrupted(), out, batch_size=3)
    assert [r["line"] for r in read_jsonl(out)] == [1, 2, 3, 4, 5, 6]
    with out.open("a") as f:
        f.write('{"line": 7, "prediction": "sp')  # a write cut off by a kill
    assert resume_point(out) == 6 and [r["line"] for r in read_jsonl(out)] == list(range(1, 7))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(emails) + "\n")
    assert main(["explain-text", "--file", str(corpus), "--input-format", "lines", "--format", "jsonl",
                 "--out", str(out), "--resume", "--batch-size", "4"]) == 0
    assert_same_explanations(read_jsonl(out), classifier.explain(emails))


def test_a_resumed_run_lists_each_invalid_record_once(classifier, emails, tmp_path):
    """Invalid records after the last explained one are read again on resume: their rejects are not doubled."""
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    records = [Record(1, emails[0]), Record(2, None, error="bad"), Record(3, emails[1]), Record(4, None, error="bad"),
               Record(5, None, error="bad"), Record(6, emails[2])]

    def interrupted():
        yield from records[:5]
        raise KeyboardInterrupt  # the batches [1, 2] and [3, 4] are written; 4, after line 3, is invalid

    with pytest.raises(KeyboardInterrupt):
        stream_corpus(classifier, interrupted(), out, batch_size=2, rejects=rejects)
    assert resume_point(out) == 3 and [r["line"] for r in read_jsonl(rejects)] == [2, 4]
    with rejects.open("a") as f:
        f.write('{"line": 6, "err')  # a write cut off by a kill
    report = stream_corpus(classifier, records, out, batch_size=2, rejects=rejects, resume=True)
    assert [r["line"] for r in read_jsonl(out)] == [1, 3, 6] and report.already_done == 3
    assert [r["line"] for r in read_jsonl(rejects)] == [2, 4, 5]
    rejects.write_text("not a reject record\n")
    with pytest.raises(ValueError, match="is not the --rejects file of an earlier run"):
        stream_corpus(classifier, records, out, rejects=rejects, resume=True)


def test_an_existing_output_is_never_overwritten_or_resumed_by_accident(tmp_path, emails):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": emails[0]}) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("my notes\n")
    args = ["explain-text", "--file", str(corpus), "--format", "jsonl", "--out", str(out)]
    assert main(args) == 1
    assert main([*args, "--resume"]) == 1
    assert out.read_text() == "my notes\n"


def test_corpus_mode_refuses_what_it_cannot_stream(tmp_path, emails, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": emails[0]}) + "\n")
    assert main(["explain-text", "--file", str(corpus), "--format", "html", "--out", str(tmp_path / "x")]) == 1
    assert "pass --format jsonl --out FILE" in capsys.readouterr().err
    assert main(["explain-text", "--file", str(corpus), "--file", str(corpus), "--format", "jsonl",
                 "--out", str(tmp_path / "y")]) == 1
    assert "explain it on its own" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        stream_corpus(TextClassifier.load("default"), [], tmp_path / "z", batch_size=0)

