"""Documents of a corpus file, read one record at a time: plain text (one document per line), JSON lines or CSV.

Every record carries the line it starts on, so a bad one is reported where it is, and a run can resume after the
last line it wrote. Invalid records are yielded too, with the reason, never dropped: the caller decides whether
to skip them or to stop."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lrptext.text.checks import check_text

FORMATS = ("lines", "jsonl", "csv")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line of the source file where the record starts
    text: str | None  # None when the record is invalid
    id: Any = None  # the value of the id field (JSON lines, CSV) when one was asked for
    error: str | None = None  # why the record cannot be explained

    @property
    def valid(self) -> bool:
        return self.error is None


def checked(line: int, text: Any, id: Any = None) -> Record:
    """A record of `text`, or an invalid one saying why it cannot be explained (not a string, empty, too long)."""
    try:
        return Record(line, check_text(text, line), id)
    except (TypeError, ValueError) as error:
        return Record(line, None, id, str(error).replace(f"document {line} ", "the document ", 1))


def format_of(path: str | Path) -> str | None:
    """The corpus format a file name implies (None: not a corpus suffix)."""
    return SUFFIXES.get(Path(path).suffix.lower())


class CorpusReader:
    """Iterates the records of one corpus file. `position` is the byte offset read so far (for progress)."""

    def __init__(self, path: str | Path, format: str, *, text_field: str = "text", id_field: str | None = None,
                 encoding: str = "utf-8"):
        if format not in FORMATS:
            raise ValueError(f"unknown corpus format {format!r}; choose one of {', '.join(FORMATS)}")
        self.path, self.format, self.encoding = Path(path), format, encoding
        self.text_field, self.id_field = text_field, id_field
        self.size = self.path.stat().st_size
        self.position = 0

    def __iter__(self) -> Iterator[Record]:
        with self.path.open("rb") as stream:
            lines = self._decoded_lines(stream)
            if self.format == "lines":
                yield from self._plain(lines)
            elif self.format == "jsonl":
                yield from self._json_lines(lines)
            else:
                yield from self._csv(lines)

    def _decoded_lines(self, stream: BinaryIO) -> Iterator[str]:
        # Undecodable bytes become lone surrogates, so a bad line is reported as such instead of ending the run.
        for raw in stream:
            self.position += len(raw)
            yield raw.decode(self.encoding, errors="surrogateescape")

    def _record(self, line: int, text: Any, id: Any = None) -> Record:
        if isinstance(text, str) and _undecodable(text):
            return Record(line, None, id, f"the document is not valid {self.encoding}; re-encode the file or "
                                          "pass its encoding (--encoding)")
        return checked(line, text, id)

    def _plain(self, lines: Iterator[str]) -> Iterator[Record]:
        for number, line in enumerate(lines, 1):
            yield self._record(number, line.rstrip("\r\n"))

    def _json_lines(self, lines: Iterator[str]) -> Iterator[Record]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue  # blank lines separate nothing in JSON lines; they are not records
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                reason = (f"not valid {self.encoding}" if _undecodable(line)
                          else f"not valid JSON ({error.msg} at column {error.colno})")
                yield Record(number, None, None, reason)
                continue
            if not isinstance(value, dict):
                yield Record(number, None, None, f"a JSON {type(value).__name__}, expected an object with a "
                                                  f"'{self.text_field}' field")
                continue
            id = value.get(self.id_field) if self.id_field else None
            if self.text_field not in value:
                yield Record(number, None, id, f"no '{self.text_field}' field (fields: {', '.join(value) or 'none'}); "
                                               "pass --text-field NAME")
                continue
            yield self._record(number, value[self.text_field], id)

    def _csv(self, lines: Iterator[str]) -> Iterator[Record]:
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            return
        if self.text_field not in header:
            raise ValueError(f"{self.path}: the CSV header has no column '{self.text_field}' (columns: "
                             f"{', '.join(header)}); pass --text-field NAME")
        if self.id_field and self.id_field not in header:
            raise ValueError(f"{self.path}: the CSV header has no column '{self.id_field}' for --id-field "
                             f"(columns: {', '.join(header)})")
        text_at = header.index(self.text_field)
        id_at = header.index(self.id_field) if self.id_field else None
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. an unterminated quote swallowed the rest of the file
                yield Record(start, None, None, f"not valid CSV ({error})")
                return
            if row:
                id = row[id_at] if id_at is not None and id_at < len(row) else None
                if len(row) != len(header):
                    yield Record(start, None, id, f"{len(row)} fields where the header has {len(header)}")
                else:
                    yield self._record(start, row[text_at], id)
            start = reader.line_num + 1


def _undecodable(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)
