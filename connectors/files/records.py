"""One file's records, one at a time, with their line numbers and raw bytes (the careful path).

The files source reads with Arrow's vectorised readers; when one of them fails
(a value that does not fit the schema, a line with the wrong number of fields,
a field longer than a block, bytes that are not UTF-8), the rest of that file
is read here instead, a record at a time, so that every good record still
becomes a row and every bad one is named exactly: its file, line, column,
value and raw text (``connectors.base.BadRecord``).

``scan(path, fmt, max_record_bytes)`` yields ``Record``s in file order: CSV
records parsed by Python's ``csv`` module (quoted fields may span lines; the
header is not a record; blank lines are skipped, as Arrow skips them), or
non-blank JSON lines. A record longer than ``max_record_bytes`` is yielded
with ``error`` set and the rest of the file becomes one last bad record (the
parser cannot find where the next record starts). Bytes that are not UTF-8
are kept (``surrogateescape``): the conversion names them.

``Converter`` turns runs of records into Arrow with the same options as the
vectorised readers; a run that fails is cut in halves until each failing
record is alone (``O(bad × log n)`` conversions), and that record is checked
column by column to name the one that fails.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from connectors.base import BadRecord

Segment = pa.RecordBatch | list[BadRecord]  # a run of good rows, or bad records, in order
_BOM = b"\xef\xbb\xbf"

csv.field_size_limit(sys.maxsize)  # record size is bounded by max_record_bytes instead


@dataclass
class Record:
    line: int  # its first line, 1-based
    raw: bytes  # as read, with its line end(s)
    fields: list[str] | None = None  # CSV: the fields Python's csv parser found
    error: str | None = None  # structurally bad: no conversion will be tried


class _Lines:
    """A binary file's lines as text for ``csv.reader``, remembering the raw bytes of each."""

    def __init__(self, f: io.BufferedReader, limit: int) -> None:
        self.f, self.limit = f, limit
        self.line = 0
        self.raw: list[bytes] = []
        self.size = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        b = self.f.readline(self.limit + 1)
        if not b:
            raise StopIteration
        if self.line == 0 and b.startswith(_BOM):
            b = b[len(_BOM) :]
        self.line += 1
        self.raw.append(b)
        self.size += len(b)
        if self.size > self.limit:
            raise _TooLong
        return b.decode("utf-8", "surrogateescape")

    def take(self) -> bytes:
        raw, self.raw, self.size = b"".join(self.raw), [], 0
        return raw


class _TooLong(Exception):
    pass


def read_header(path: Path) -> list[str] | None:
    """The field names of a CSV file's first record (None for an empty file)."""
    with open(path, "rb") as f:
        lines = _Lines(f, 1 << 30)
        try:
            first = next(csv.reader(lines))
        except (StopIteration, csv.Error):
            return None
    return first


def scan(path: Path, fmt: str, max_record_bytes: int) -> Iterator[Record]:
    """Every record of the file, in order (see the module docstring)."""
    with open(path, "rb") as f:
        if fmt == "csv":
            yield from _scan_csv(f, max_record_bytes)
        else:
            yield from _scan_jsonl(f, max_record_bytes)


def _too_long(line: int, raw: bytes, limit: int) -> Record:
    return Record(line, raw[:4096], error=f"record longer than max_record_bytes={limit}")


def _rest(f: io.BufferedReader, line: int) -> Record:
    rest = f.read(4096)
    return Record(line, rest, error="the rest of the file, after a record too long to parse")


def _scan_csv(f: io.BufferedReader, limit: int) -> Iterator[Record]:
    lines = _Lines(f, limit)
    reader = csv.reader(lines)
    header = True
    while True:
        start = lines.line + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _TooLong:
            yield _too_long(start, lines.take(), limit)
            yield _rest(f, lines.line + 1)
            return
        except csv.Error as exc:
            yield Record(start, lines.take(), error=f"cannot parse as CSV: {exc}")
            reader = csv.reader(lines)  # a fresh parser from the next line on
            continue
        raw = lines.take()
        if header:
            header = False
            continue
        if fields:  # a blank line is no record
            yield Record(start, raw, fields)


def _scan_jsonl(f: io.BufferedReader, limit: int) -> Iterator[Record]:
    line = 0
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        line += 1
        if line == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if len(raw) > limit and not raw.endswith(b"\n"):
            yield _too_long(line, raw, limit)
            yield _rest(f, line + 1)
            return
        if raw.strip():
            yield Record(line, raw)


class Converter:
    """Records of one file to Arrow (as the vectorised reader would), naming every bad one."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema, header: list[str] | None) -> None:
        self.path, self.fmt, self.schema = path, fmt, schema
        self.header = header or schema.names
        self._convert = pacsv.ConvertOptions(
            column_types={f.name: f.type for f in schema}, include_columns=schema.names
        )

    def segments(self, records: list[Record]) -> Iterator[Segment]:
        """``records`` as runs of good rows and lists of bad records, in order."""
        good: list[Record] = []
        for r in records:
            fields = len(r.fields or ())
            if r.error is not None or (self.fmt == "csv" and fields != len(self.header)):
                yield from self._split(good)
                good = []
                yield [self._structural(r)]
            else:
                good.append(r)
        yield from self._split(good)

    def _split(self, records: list[Record]) -> Iterator[Segment]:
        if not records:
            return
        try:
            yield self._to_batch(records)
            return
        except (pa.ArrowException, ValueError) as exc:
            if len(records) == 1:
                yield [self._bad(records[0], exc)]
                return
        mid = len(records) // 2
        yield from self._split(records[:mid])
        yield from self._split(records[mid:])

    def _to_batch(self, records: list[Record]) -> pa.RecordBatch:
        if self.fmt == "csv":
            data = b"".join(r.raw if r.raw.endswith(b"\n") else r.raw + b"\n" for r in records)
            table = pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(
                    column_names=self.header, use_threads=False, block_size=len(data) + 64
                ),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=self._convert,
            )
        else:
            return json_lines_batch([r.raw.rstrip(b"\r\n") for r in records], self.schema)
        if table.num_rows != len(records):
            raise ValueError(f"{len(records)} records gave {table.num_rows} rows")
        (batch,) = table.combine_chunks().to_batches()
        return pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)

    def _structural(self, r: Record) -> BadRecord:
        error = r.error or (
            f"{len(r.fields or ())} fields, the header has {len(self.header)} "
            f"({', '.join(self.header)})"
        )
        return BadRecord(str(self.path), error, r.line, raw=r.raw)

    def _bad(self, r: Record, exc: Exception) -> BadRecord:
        """One record that failed: which column, which value, why."""
        reason = _short(exc)
        if self.fmt == "csv":
            assert r.fields is not None
            for f in self.schema:
                value = r.fields[self.header.index(f.name)]
                if not _csv_value_fits(f, value):
                    return BadRecord(
                        str(self.path), f"not a valid {f.type}", r.line, f.name, _text(value),
                        r.raw,
                    )  # fmt: skip
            return BadRecord(str(self.path), reason, r.line, raw=r.raw)
        try:
            obj = json.loads(r.raw.decode("utf-8", "surrogateescape"))
        except ValueError as e:
            return BadRecord(str(self.path), f"not valid JSON: {e}", r.line, raw=r.raw)
        if not isinstance(obj, dict):
            return BadRecord(str(self.path), "not a JSON object", r.line, raw=r.raw)
        for key in obj:
            if self.schema.get_field_index(key) < 0:
                return BadRecord(
                    str(self.path), f"unexpected field (columns: {', '.join(self.schema.names)})",
                    r.line, key, _text(json.dumps(obj[key])), r.raw,
                )  # fmt: skip
        for f in self.schema:
            if f.name in obj and not _json_value_fits(f, obj[f.name]):
                return BadRecord(
                    str(self.path), f"not a valid {f.type}", r.line, f.name,
                    _text(json.dumps(obj[f.name])), r.raw,
                )  # fmt: skip
        return BadRecord(str(self.path), reason, r.line, raw=r.raw)


def _csv_value_fits(field: pa.Field, value: str) -> bool:
    out = io.StringIO()
    csv.writer(out).writerow([value])
    data = out.getvalue().encode("utf-8", "surrogateescape")
    try:
        pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=[field.name], block_size=len(data) + 64),
            convert_options=pacsv.ConvertOptions(column_types={field.name: field.type}),
        )
    except (pa.ArrowException, ValueError):
        return False
    return True


def _json_value_fits(field: pa.Field, value: object) -> bool:
    data = json.dumps({field.name: value}).encode()
    try:
        pajson.read_json(
            io.BytesIO(data),
            parse_options=pajson.ParseOptions(explicit_schema=pa.schema([field])),
        )
    except (pa.ArrowException, ValueError):
        return False
    return True


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    return text.split(": ", 1)[1] if text.startswith("In CSV column") else text


def _text(s: str) -> str:
    """``s`` with bytes that were not UTF-8 shown as ``\\xNN`` (always valid text)."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def json_lines_batch(lines: list[bytes], schema: pa.Schema) -> pa.RecordBatch:
    """One JSON object per element (no line break inside) as one batch of ``schema``, parsed
    by Arrow in one call; a line that does not parse or fit (an unknown field, a value of
    another type) raises ``pyarrow.ArrowInvalid`` (or ``ValueError``)."""
    return json_text_batch(b"\n".join(lines), len(lines), schema)


def json_text_batch(data: bytes, rows: int, schema: pa.Schema) -> pa.RecordBatch:
    """``rows`` JSON objects, one per line of ``data``, as one batch of ``schema`` (read by
    Arrow without a copy). Dates and times are ISO-8601 text (``"2026-12-04"``,
    ``"13:05:07.123"``), read as text and then cast."""
    as_text = [i for i, f in enumerate(schema) if pa.types.is_date(f.type)
               or pa.types.is_time(f.type)]  # fmt: skip
    parse = schema
    for i in as_text:
        parse = parse.set(i, pa.field(schema.field(i).name, pa.string()))
    table = pajson.read_json(
        pa.BufferReader(data),
        read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 64),
        parse_options=pajson.ParseOptions(explicit_schema=parse,
                                          unexpected_field_behavior="error"),  # fmt: skip
    )
    if table.num_rows != rows:
        raise ValueError(f"{rows} records gave {table.num_rows} rows")
    (batch,) = table.combine_chunks().to_batches()
    if any(pa.types.is_string(f.type) for f in parse):
        batch.validate(full=True)  # Arrow's reader keeps strings that are not UTF-8
    columns = batch.columns
    for i in as_text:
        columns[i] = columns[i].cast(schema.field(i).type)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
