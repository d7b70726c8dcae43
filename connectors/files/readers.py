"""Reading one file as segments: runs of good rows and bad records, in file order.

``FileReader(path, fmt, schema, batch_rows, start, max_record_bytes)`` reads the
file from record ``start`` (the records before it are skipped: whole Parquet row
groups without reading them). ``next()`` returns the next ``Segment`` — a
``RecordBatch`` of good rows in the schema's column order, or a list of
``BadRecord`` — or None at the end of the file. ``records`` counts the records
consumed so far, good and bad, from the start of the file (the position unit of
the files source).

* CSV and JSON lines go through Arrow's streaming readers (vectorised). A CSV
  file's columns are matched to the schema by name: the same names in another
  order are read as they are; a missing or extra column makes every record of
  the file bad ("the file's columns ... differ"), naming both lists. When the
  vectorised reader fails, the rest of the file is read by
  ``connectors.files.records`` a record at a time, and only the records that
  fail are bad.
* Parquet: a file's columns must have the schema's names and types (any
  order); otherwise every row is bad (its raw text is the row as JSON). A file
  that is not Parquet at all is one bad record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from connectors.base import BadRecord
from connectors.files.jsonl import encode_jsonl
from connectors.files.records import Converter, Record, Segment, read_header, scan
from engine.errors import CheckpointError

CHUNK = 8192  # records converted at once on the careful path


class FileReader:
    def __init__(
        self,
        path: Path,
        fmt: str,
        schema: pa.Schema,
        batch_rows: int,
        start: int,
        max_record_bytes: int,
    ) -> None:
        self.path, self.fmt, self.schema = path, fmt, schema
        self.batch_rows, self.max_record_bytes = batch_rows, max_record_bytes
        self.records = 0
        self._closers: list = []  # type: ignore[type-arg]
        self._segments = self._read(start)

    def next(self) -> Segment | None:
        return next(self._segments, None)

    def close(self) -> None:
        self._segments.close()
        for c in self._closers:
            c.close()
        self._closers = []

    # -- the reading ----------------------------------------------------------------------
    def _read(self, start: int) -> Iterator[Segment]:
        if self.fmt == "parquet":
            yield from self._parquet(start)
            return
        header = read_header(self.path) if self.fmt == "csv" else None
        if self.fmt == "csv" and header is not None and sorted(header) != sorted(self.schema.names):
            why = _columns_differ(header, self.schema.names)
            yield from self._careful(start, header, why)
            return
        try:
            for batch in self._fast():
                n = batch.num_rows
                if self.records + n <= start:
                    self.records += n
                    continue
                if self.records < start:
                    batch = batch.slice(start - self.records)
                    self.records = start
                self.records += batch.num_rows
                if batch.num_rows:
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)
        except pa.ArrowException:
            for c in self._closers:
                c.close()
            self._closers = []
            yield from self._careful(max(start, self.records), header)
            return
        if self.records < start:
            raise CheckpointError(f"{self.path} has fewer rows than the checkpoint says")

    def _fast(self) -> Iterator[pa.RecordBatch]:
        if self.fmt == "csv":
            reader = pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={f.name: f.type for f in self.schema},
                    include_columns=self.schema.names,
                ),
            )
        else:
            reader = pajson.open_json(
                self.path,
                read_options=pajson.ReadOptions(use_threads=False),
                parse_options=pajson.ParseOptions(
                    explicit_schema=self.schema, unexpected_field_behavior="error"
                ),
            )
        self._closers.append(reader)
        for batch in reader:
            for off in range(0, batch.num_rows, self.batch_rows):
                yield batch.slice(off, self.batch_rows)

    def _careful(
        self, start: int, header: list[str] | None, all_bad: str | None = None
    ) -> Iterator[Segment]:
        """Record by record from record ``start``; ``all_bad``: every record is bad, why."""
        convert = Converter(self.path, self.fmt, self.schema, header)
        index, chunk = 0, []
        for rec in scan(self.path, self.fmt, self.max_record_bytes):
            index += 1
            if index <= start:
                continue
            if all_bad is not None:
                rec = Record(rec.line, rec.raw, error=all_bad)
            chunk.append(rec)
            if len(chunk) >= min(CHUNK, self.batch_rows):
                yield from self._counted(convert.segments(chunk))
                chunk = []
        yield from self._counted(convert.segments(chunk))
        if index < start:
            raise CheckpointError(f"{self.path} has fewer rows than the checkpoint says")

    def _counted(self, segments: Iterator[Segment]) -> Iterator[Segment]:
        for seg in segments:
            self.records += seg.num_rows if isinstance(seg, pa.RecordBatch) else len(seg)
            yield seg

    def _parquet(self, start: int) -> Iterator[Segment]:
        try:
            # no pre-buffering: it holds whole column chunks of a row group in memory (source
            # RSS grew with the file); one thread: the source process has one pinned core
            pf = pq.ParquetFile(self.path, pre_buffer=False)
        except (pa.ArrowException, OSError) as exc:
            self.records = max(start, 1)
            if start == 0:
                yield [BadRecord(str(self.path), f"cannot read it as Parquet: {exc}")]
            return
        self._closers.append(pf)
        have = pf.schema_arrow
        want = {f.name: f.type for f in self.schema}
        got = {f.name: f.type for f in have}
        same = got == want
        meta, group, left = pf.metadata, 0, start
        while group < meta.num_row_groups and meta.row_group(group).num_rows <= left:
            left -= meta.row_group(group).num_rows
            group += 1
        self.records = start - left
        groups = list(range(group, meta.num_row_groups))
        batches = (
            pf.iter_batches(batch_size=self.batch_rows, row_groups=groups, use_threads=False)
            if groups
            else iter(())
        )
        for batch in batches:
            if left:
                drop = min(left, batch.num_rows)
                batch, left = batch.slice(drop), left - drop
                self.records += drop
            if not batch.num_rows:
                continue
            first = self.records + 1
            self.records += batch.num_rows
            if same:
                yield pa.RecordBatch.from_arrays(
                    [batch.column(n) for n in self.schema.names], schema=self.schema
                )
            else:
                why = _columns_differ(
                    [f"{f.name}: {f.type}" for f in have],
                    [f"{f.name}: {f.type}" for f in self.schema],
                )
                lines = encode_jsonl(batch).tobytes().splitlines()
                yield [
                    BadRecord(str(self.path), why, first + i, raw=line)
                    for i, line in enumerate(lines)
                ]
        if self.records < start:
            raise CheckpointError(f"{self.path} has fewer rows than the checkpoint says")


def _columns_differ(have: list[str], want: list[str]) -> str:
    return f"the file's columns ({', '.join(have)}) differ from the schema's ({', '.join(want)})"


def infer_schema(path: Path, fmt: str, where: str) -> pa.Schema | None:
    """The schema Arrow infers from ``path`` (None for a file with no rows and no header).

    Columns that are all null in what Arrow looked at become strings, and so do
    binary columns of a CSV or JSON file (bytes that are not UTF-8: the reader
    names each bad value later).
    """
    from engine.errors import ConfigError

    if path.stat().st_size == 0:
        return None
    try:
        if fmt == "parquet":
            schema = pq.ParquetFile(path).schema_arrow
        elif fmt == "csv":
            with pacsv.open_csv(path, read_options=pacsv.ReadOptions(use_threads=False)) as r:
                schema = r.schema
        else:
            with pajson.open_json(path, read_options=pajson.ReadOptions(use_threads=False)) as r:
                schema = r.schema
    except pa.ArrowException as exc:
        line = _first_bad_line(path, fmt)
        at = f" line {line}" if line is not None else ""
        raise ConfigError(
            f"{where}: cannot infer a schema from {path}{at}: {exc}; fix the file, or set "
            "schema = { column = \"type\", ... }"
        ) from None
    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_null(t) or (fmt != "parquet" and pa.types.is_binary(t)):
            t = pa.string()
        fields.append(pa.field(f.name, t, nullable=True))
    return pa.schema(fields)


def _first_bad_line(path: Path, fmt: str) -> int | None:
    """The first line of ``path`` that breaks the file's own shape (for inference errors)."""
    try:
        if fmt == "csv":
            header = read_header(path)
            for rec in scan(path, fmt, 1 << 30):
                if rec.error or len(rec.fields or ()) != len(header or ()):
                    return rec.line
        elif fmt == "jsonl":
            import json

            for rec in scan(path, fmt, 1 << 30):
                try:
                    if not isinstance(json.loads(rec.raw), dict):
                        return rec.line
                except ValueError:
                    return rec.line
    except OSError:
        return None
    return None
