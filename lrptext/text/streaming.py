"""Explain a whole corpus with bounded memory: read records lazily, explain them a batch at a time, append each
batch to a JSON-lines file as soon as it is done, and resume after an interruption from the last line written.

Memory holds one batch of documents and the model, whatever the corpus size."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from lrptext.text.classifier import TextClassifier
from lrptext.text.document import DocumentExplanation
from lrptext.text.records import CorpusReader, Record


class InvalidRecordError(ValueError):
    """A record cannot be explained and the run was asked to stop at the first one (strict mode)."""


def explain_records(classifier: TextClassifier, records: Sequence[Record], *, composite: str | None = None,
                    target: int | None = None, contrast: int | None = None) -> list[DocumentExplanation | str]:
    """Each record's explanation, or the reason it has none (invalid text, no known word), in one kernel pass for
    the batch: a bad document never fails its neighbours."""
    results: list[DocumentExplanation | str] = [r.error or "" for r in records]
    valid = [i for i, r in enumerate(records) if r.valid]
    tokens = classifier.tokenize([records[i].text for i in valid]) if valid else []
    explainable = []
    for i, toks in zip(valid, tokens):
        if classifier.knows_a_word(toks):
            explainable.append((i, toks))
        else:
            results[i] = "no word of the document is in the model's vocabulary; nothing in it can be explained"
    if explainable:
        docs = classifier.explain_tokens([records[i].text for i, _ in explainable], [t for _, t in explainable],
                                         target=target, contrast=contrast, composite=composite)
        for (i, _), doc in zip(explainable, docs):
            results[i] = doc
    return results


@dataclass
class StreamReport:
    explained: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), in corpus order
    already_done: int = 0  # records before the resume point
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def documents_per_second(self) -> float:
        return self.explained / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        parts = [f"explained {self.explained} documents in {self.seconds:.1f} s ({self.documents_per_second:.1f} "
                 f"documents/s), peak memory {self.peak_rss_mb:.0f} MB"]
        if self.already_done:
            parts.append(f"{_count(self.already_done, 'record')} before the resume point skipped")
        if self.invalid:
            parts.append(f"{_count(len(self.invalid), 'invalid record')} skipped")
        return "; ".join(parts)


def resume_point(out: Path) -> int:
    """The last source line written to `out` (0 when there is none). A last line cut off by an interruption is
    removed, so the file again holds whole records only."""
    if not out.exists():
        return 0
    last, keep = 0, 0
    with out.open("rb") as stream:
        for raw in stream:
            if not raw.endswith(b"\n"):
                break  # written only in part
            try:
                last = int(json.loads(raw)["line"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{out} holds a line that is not an lrptext record (at byte {keep}); it is not the "
                                 "output of an earlier run, so it cannot be resumed: choose another --out") from None
            keep += len(raw)
    if keep < out.stat().st_size:
        with out.open("r+b") as stream:
            stream.truncate(keep)
    return last


def _keep_rejects_up_to(rejects: Path, line: int) -> None:
    """Keeps the rejects of records up to the resume point `line`: the records after it are read again, so a
    resumed run would otherwise list an invalid record found after the last explained one twice. A last line
    cut off by an interruption goes too."""
    if not rejects.exists():
        return
    kept = []
    with rejects.open("rb") as stream:
        for raw in stream:
            if not raw.endswith(b"\n"):
                break
            try:
                at = int(json.loads(raw)["line"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{rejects} holds a line that is not an lrptext reject record; it is not the "
                                 "--rejects file of an earlier run, so it cannot be resumed: choose another "
                                 "--rejects") from None
            if at <= line:
                kept.append(raw)
    rejects.write_bytes(b"".join(kept))


def stream_corpus(classifier: TextClassifier, reader: CorpusReader | Iterable[Record], out: str | Path, *,
                  composite: str | None = None, target: int | None = None, contrast: int | None = None,
                  batch_size: int = 64, resume: bool = False, strict: bool = False,
                  rejects: str | Path | None = None, progress: bool | None = None,
                  on_invalid: Callable[[int, str], None] | None = None, format: str = "jsonl") -> StreamReport:
    """Explains every record of `reader` into the JSON-lines file `out`, one object per document with its source
    `line` (and `id`), appending batch by batch; with format="parquet", into a Parquet file of one row per word
    (lrptext.text.parquet, one row group per batch). resume: continue an interrupted `out` after its last line (and
    `rejects` from the same point); strict: stop at the first invalid record (InvalidRecordError) instead of
    skipping it; rejects: also write each invalid record's line and reason there (JSON lines); on_invalid(line,
    reason) hears of each as it comes."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if format not in ("jsonl", "parquet"):
        raise ValueError(f"format must be 'jsonl' or 'parquet', got {format!r}")
    out = Path(out)
    table = None
    if format == "parquet":
        from lrptext.text.parquet import ParquetSink

        table = ParquetSink(out, resume=resume)
    elif out.exists() and not resume:
        raise ValueError(f"{out} exists; pass --resume to continue it (documents already written are skipped) or "
                         "remove it first")
    start_after = table.last_line if table else resume_point(out) if resume else 0
    if resume and rejects:
        _keep_rejects_up_to(Path(rejects), start_after)
    report = StreamReport()
    began = time.perf_counter()
    bar = _progress(reader, progress)
    try:
        rejects_file = open(rejects, "a" if resume else "w", encoding="utf-8") if rejects else nullcontext()
        lines = out.open("a", encoding="utf-8") if table is None else nullcontext()
        with lines as sink, rejects_file as reject_sink:
            records = _after(reader, start_after, report)
            while batch := list(islice(records, batch_size)):
                results = explain_records(classifier, batch, composite=composite, target=target, contrast=contrast)
                explained = [(r, d) for r, d in zip(batch, results) if not isinstance(d, str)]
                for record, result in zip(batch, results):
                    if isinstance(result, str):
                        report.invalid.append((record.line, result))
                        if reject_sink:
                            reject_sink.write(json.dumps({"line": record.line, "id": record.id, "error": result},
                                                         ensure_ascii=False) + "\n")
                        if on_invalid:
                            on_invalid(record.line, result)
                        if strict:
                            if table is not None:  # the documents before it are kept, as in JSON lines
                                before = [(r, d) for r, d in explained if r.line < record.line]
                                table.write([d for _, d in before], [(r.line, r.id) for r, _ in before])
                            raise InvalidRecordError(f"line {record.line}: {result} (without --strict such records "
                                                     "are skipped and reported)")
                        continue
                    if table is None:
                        head = {"line": record.line, **({"id": record.id} if record.id is not None else {})}
                        sink.write(json.dumps({**head, **result.to_dict()}, ensure_ascii=False) + "\n")
                    report.explained += 1
                # a batch is on disk before the next starts: an interruption loses at most one
                if table is None:
                    sink.flush()
                else:
                    table.write([d for _, d in explained], [(r.line, r.id) for r, _ in explained])
                if reject_sink:
                    reject_sink.flush()
                if bar is not None:
                    bar.update(reader.position - bar.n)
                    bar.set_postfix(documents=report.explained, refresh=False)
    finally:
        if bar is not None:
            bar.close()
        if table is not None:
            table.close()
        report.seconds = time.perf_counter() - began
        report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _after(records: Iterable[Record], line: int, report: StreamReport) -> Iterator[Record]:
    for record in records:
        if record.line <= line:
            report.already_done += 1
            continue
        yield record


def _progress(reader: Any, enabled: bool | None):
    """A byte-based bar over the corpus file (exact for every format, no pass to count records first); tqdm
    shows it only on a terminal unless enabled is True."""
    if enabled is False or not isinstance(reader, CorpusReader):
        return None
    from tqdm import tqdm

    return tqdm(total=reader.size, unit="B", unit_scale=True, desc=reader.path.name, file=sys.stderr,
                disable=None if enabled is None else False)
