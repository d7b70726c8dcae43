"""Kafka record values as Arrow columns: ``raw`` bytes, ``text``, ``json``, or your own decoder.

``Decoder(format, schema, where)`` turns a list of values (bytes, or None for a
tombstone) into a batch of value columns plus the records it could not read:

* ``raw``: one column ``value`` (binary), as received.
* ``text``: one column ``value`` (string); a value that is not UTF-8 is a bad record.
* ``json``: one object per record, columns by name (``schema`` declared in the
  engine's type names, or inferred from the first objects the source reads);
  a value that does not parse or does not fit (a field of the wrong type, a
  field the schema lacks) is a bad record naming it. The whole list is parsed
  in one call: by msgspec when every column is a nullable int64, float64, string
  or bool (``connectors.json_structs``: about 300 ns per 100-byte record where
  Arrow's reader takes 430), else or when that fails by Arrow's reader. Records
  are tried one at a time when both fail, when a record does not open its line
  with ``{`` (so that an empty record and one holding two objects cannot make
  the count come out right with the rows shifted), or when Arrow's strings are
  not UTF-8 (it does not check); a record either reader takes is kept (a field
  given twice: its last value).
* ``"package.module:function"``: your function takes the list of values and
  returns a ``pyarrow.RecordBatch`` with one row per value (the same schema
  every time), or raises for the batch.

A tombstone (a null value) is a row whose value columns are all null.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from connectors.files.records import json_text_batch
from connectors.json_structs import NotRead, StructRows
from engine.errors import ConfigError


class Decoder:
    def __init__(self, fmt: str, schema: pa.Schema | None, where: str) -> None:
        self.fmt, self.where = fmt, where
        self.schema = schema
        self.custom: Callable[[list[bytes | None]], pa.RecordBatch] | None = None
        # the msgspec path, when the JSON schema allows it (declared here, or inferred)
        self.fast = StructRows.for_schema(schema) if fmt == "json" and schema is not None else None
        if fmt == "raw":
            self.schema = pa.schema([("value", pa.binary())])
        elif fmt == "text":
            self.schema = pa.schema([("value", pa.string())])
        elif fmt != "json":
            from engine.importing import load_object

            fn = load_object(fmt, f"{where}.format", dotted=True, error=ConfigError)
            if not callable(fn):
                raise ConfigError(f"{where}.format = {fmt!r} is not a function")
            self.custom = fn

    def infer(self, values: list[bytes | None]) -> pa.Schema:
        """The columns of JSON objects (the first that parse), or the custom decoder's."""
        if self.schema is not None:
            return self.schema
        if self.custom is not None:
            self.schema = self.custom([v for v in values[:1]]).schema
            return self.schema
        sample = [v for v in values if v and _is_object(v)][:1000]  # bad ones are named later
        if not sample:
            raise ConfigError(
                f"{self.where}: no record to infer a JSON schema from; declare one: "
                'schema = { id = "bigint", name = "text", ... }'
            )
        table = None
        for some in (sample, sample[:1]):  # records that disagree: the first one decides
            data = b"\n".join(v.replace(b"\n", b" ") for v in some) + b"\n"
            try:
                table = pajson.read_json(io.BytesIO(data))
                break
            except pa.ArrowException as exc:
                why = exc
        if table is None:
            raise ConfigError(f"{self.where}: cannot infer a JSON schema from the first "
                              f"records ({why}); declare one with schema = {{ ... }}")  # fmt: skip
        self.schema = table.schema
        self.fast = StructRows.for_schema(self.schema)
        return self.schema

    def decode(self, values: list[bytes | None]) -> tuple[pa.RecordBatch, list[tuple[int, str]]]:
        """The value columns of the good records, and ``(index, why)`` of each bad one."""
        assert self.schema is not None
        if self.fmt == "raw":
            return pa.record_batch([pa.array(values, pa.binary())], schema=self.schema), []
        if self.custom is not None:
            batch = self.custom(values)
            if batch.num_rows != len(values):
                raise ConfigError(
                    f"{self.where}: the decoder returned {batch.num_rows} rows "
                    f"for {len(values)} records"
                )
            return batch, []
        if self.fmt == "text":
            raw = pa.array(values, pa.binary())
            try:
                return pa.record_batch([raw.cast(pa.string())], schema=self.schema), []
            except pa.ArrowInvalid:
                bad = [
                    (i, "not UTF-8") for i, v in enumerate(values) if v is not None and not _utf8(v)
                ]
                dropped = {i for i, _ in bad}
                keep = [v for i, v in enumerate(values) if i not in dropped]
                cols = [pa.array(keep, pa.binary()).cast(pa.string())]
                return pa.record_batch(cols, schema=self.schema), bad
        return self._json(values)

    def _json(self, values: list[bytes | None]) -> tuple[pa.RecordBatch, list[tuple[int, str]]]:
        try:
            return self._parse(values), []
        except (pa.ArrowException, ValueError):
            pass
        good, bad = [], []
        for i, v in enumerate(values):
            try:
                good.append(self._parse([v]))
            except (pa.ArrowException, ValueError) as exc:
                bad.append((i, _why(v, exc)))
        return (pa.concat_batches(good) if good else self._parse([])), bad

    def _parse(self, values: list[bytes | None]) -> pa.RecordBatch:
        """The values as JSON lines, joined once and read by Arrow without a copy."""
        assert self.schema is not None
        if not values:
            return pa.RecordBatch.from_arrays(
                [pa.array([], f.type) for f in self.schema], schema=self.schema
            )
        lines = [b"{}" if v is None else v for v in values] if None in values else values
        data = b"\n".join(lines)
        buf = np.frombuffer(data, np.uint8)  # (numpy counts bytes 5x faster than bytes.count)
        newline = buf == 10
        if np.count_nonzero(newline) != len(lines) - 1 or b"\r" in data:
            # a pretty-printed value: one line each
            data = b"\n".join(v.replace(b"\n", b" ").replace(b"\r", b" ") for v in lines)
            buf = np.frombuffer(data, np.uint8)
            newline = buf == 10
        # Every record must open its line with "{": an empty or blank record beside one
        # holding two objects would pass the count below with the rows shifted against
        # their offsets. Such a batch is read one record at a time.
        if len(lines) > 1 and (buf[0] != 123 or (newline[:-1] & (buf[1:] != 123)).any()):
            raise ValueError("a record is not one object on a line")
        if self.fast is not None:
            try:
                return self.fast.batch(data, len(lines))
            except NotRead:
                pass
        return json_text_batch(data, len(lines), self.schema)


def _is_object(v: bytes) -> bool:
    try:
        return isinstance(json.loads(v), dict)
    except ValueError:
        return False


def _utf8(v: bytes) -> bool:
    try:
        v.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _why(value: Any, exc: Exception) -> str:
    if isinstance(value, bytes) and not _utf8(value):
        return "not UTF-8"
    try:
        json.loads(value)
    except (ValueError, TypeError):
        return "not a JSON object"
    return f"does not fit the schema: {str(exc).splitlines()[0]}"
