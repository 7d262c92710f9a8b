"""Word rows of a streamed corpus into one Parquet file, resumable like the JSON-lines output.

A Parquet file is only readable once its footer is written, so a file being appended to cannot survive an
interruption. Each batch is therefore written as a complete part file beside the output (OUT.parts/, each part
written under a temporary name and renamed into place, so any interruption, even a kill, leaves only whole parts),
and the parts are gathered into OUT, one row group per batch, when the run ends, normally, by an error or by
Ctrl-C. --resume starts from the parts and from a finished OUT alike: OUT goes back into the parts as the first
one, and the run continues after the largest `line` they hold."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrptext.text.document import DocumentExplanation
from lrptext.text.table import arrow_schema, arrow_table, require_extra

PART = "{:06d}.parquet"


class ParquetSink:
    """out: the Parquet file; resume: continue what an earlier run left (OUT and/or OUT.parts/) instead of
    refusing to touch it."""

    def __init__(self, out: str | Path, *, resume: bool = False):
        self.pq = require_extra("pyarrow.parquet", "Parquet output")
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.schema = arrow_schema()
        if not resume and (self.out.exists() or self.parts.exists()):
            found = self.out if self.out.exists() else self.parts
            raise ValueError(f"{found} exists; pass --resume to continue it (documents already written are skipped) "
                             "or remove it first")
        self.last_line = self._recover() if resume else 0
        self.count = len(self._part_files())

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []

    def _check(self, path: Path) -> None:
        try:
            schema = self.pq.read_schema(path)
        except Exception:  # pyarrow's errors for a file that is no Parquet or has no footer differ by version
            schema = None
        if schema is None or not schema.equals(self.schema, check_metadata=False):
            raise ValueError(f"{path} is not a word table written by lrptext (columns {', '.join(self.schema.names)});"
                             " it is not the output of an earlier run, so it cannot be resumed: choose another --out")

    def _last_line(self, paths: Sequence[Path]) -> int:
        lines = [self.pq.read_table(p, columns=["line"]).column("line").to_pylist() for p in paths]
        return max((line for part in lines for line in part if line is not None), default=0)

    def _recover(self) -> int:
        """The last source line already written, after putting what an earlier run left into whole parts."""
        for leftover in [*self.parts.glob("*.tmp"), self.out.with_name(self.out.name + ".tmp")]:
            leftover.unlink(missing_ok=True)  # written only in part
        parts = self._part_files()
        for part in parts:
            self._check(part)
        if self.out.exists():
            self._check(self.out)
            if parts:  # stopped after gathering the parts into OUT and before removing them: OUT holds them all
                if self._last_line([self.out]) < self._last_line(parts):
                    raise ValueError(f"{self.out} and {self.parts} disagree (the parts go further than the file); "
                                     "move one of them away and run again with --resume")
                shutil.rmtree(self.parts)
            self.parts.mkdir()
            os.replace(self.out, self.parts / PART.format(0))
            parts = self._part_files()
        return self._last_line(parts)

    def write(self, docs: Sequence[DocumentExplanation], sources: Sequence[tuple[int, Any]]) -> None:
        """One batch of documents, with (line, id) each, as a whole part on disk before this returns."""
        if not docs:
            return
        self.parts.mkdir(exist_ok=True)
        final = self.parts / PART.format(self.count)
        while final.exists():
            self.count += 1
            final = self.parts / PART.format(self.count)
        temporary = final.with_suffix(".tmp")
        self.pq.write_table(arrow_table(docs, sources), temporary)
        os.replace(temporary, final)
        self.count += 1

    def close(self) -> None:
        """Gathers the parts into OUT, one row group each, then removes them (an empty table when none)."""
        temporary = self.out.with_name(self.out.name + ".tmp")
        with self.pq.ParquetWriter(temporary, self.schema) as writer:
            for part in self._part_files():
                source = self.pq.ParquetFile(part)
                for group in range(source.num_row_groups):
                    writer.write_table(source.read_row_group(group))
        os.replace(temporary, self.out)
        if self.parts.exists():
            shutil.rmtree(self.parts)


def write_documents(docs: Sequence[DocumentExplanation], out: str | Path, *, ids: Sequence[Any]) -> None:
    """Documents explained in one go (not a corpus) as one Parquet table; `line` is null, `id` from `ids`."""
    pq = require_extra("pyarrow.parquet", "Parquet output")
    pq.write_table(arrow_table(docs, [(None, key) for key in ids]), Path(out))
