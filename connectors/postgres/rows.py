"""Rows of the change-capture source, collected as text and built into Arrow batches.

The output schema (``output_schema``) is the same for every captured table::

    _table  string               schema.table the row belongs to
    _op     string               insert | update | delete (a snapshot row: insert)
    _lsn    int64                the change's WAL position (a snapshot row: the slot's start)
    _commit_time  timestamp[us, UTC]   when its transaction committed (a snapshot row: null)
    <the tables' columns, by name: a column several tables have must map to one type;
     a table without it leaves it null>
    _change int8                 +1 a row that is now there, -1 a row that is no longer
                                 (an update: -1 with the old row, then +1 with the new)

``ChangeRows.add`` keeps one row as raw text values (what ``pgoutput`` sends), in
output column order; ``ChangeRows.build`` converts each column once, vectorised
(``columns.from_text``). A value that does not convert becomes a ``BadRecord``
naming the table, the change's position, the column and the value, and its row
is left out of the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from connectors.base import BadRecord
from connectors.postgres.catalog import Table
from connectors.postgres.columns import Column, bad_rows, from_text
from connectors.postgres.pgoutput import lsn_text
from engine.errors import ConfigError, ConnectorError

META = [
    pa.field("_table", pa.string(), nullable=False),
    pa.field("_op", pa.string(), nullable=False),
    pa.field("_lsn", pa.int64(), nullable=False),
    pa.field("_commit_time", pa.timestamp("us", "UTC")),
]
CHANGE = pa.field("_change", pa.int8(), nullable=False)


def output_columns(tables: list[Table], where: str) -> list[Column]:
    """The union of the tables' columns, by name, in first-seen order."""
    seen: dict[str, tuple[Column, str]] = {}
    for t in tables:
        for c in t.columns:
            if c.name.startswith("_") and c.name in {f.name for f in META} | {"_change"}:
                raise ConfigError(
                    f"{where}.tables: {t.name} has a column {c.name!r}, a name the "
                    "source's own columns use"
                )
            if c.name in seen and seen[c.name][0].arrow != c.arrow:
                other, owner = seen[c.name]
                raise ConfigError(
                    f"{where}.tables: column {c.name!r} is {other.sql_type} in {owner} but "
                    f"{c.sql_type} in {t.name}: the tables share one output schema, so a column "
                    "name must have one type (capture them with two sources)"
                )
            seen.setdefault(c.name, (c, t.name))
    return [c for c, _ in seen.values()]


def output_schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([*META, *(c.field() for c in columns), CHANGE])


class ChangeRows:
    """Rows waiting to become one batch (see the module docstring)."""

    def __init__(self, columns: list[Column], schema: pa.Schema) -> None:
        self.columns, self.schema = columns, schema
        self.clear()

    def clear(self) -> None:
        self.values: list[list[Any]] = []
        self.meta: list[tuple[str, str, int, int | None, int]] = []

    def __len__(self) -> int:
        return len(self.meta)

    def add(
        self, table: str, op: str, lsn: int, time_us: int | None, change: int, values: list[Any]
    ) -> None:
        self.meta.append((table, op, lsn, time_us, change))
        self.values.append(values)

    def extend(self, other: ChangeRows) -> None:
        self.meta.extend(other.meta)
        self.values.extend(other.values)

    def build(self) -> tuple[pa.RecordBatch, list[BadRecord]]:
        """Every row added, as one batch, and the rows that did not convert."""
        n = len(self.meta)
        tables, ops, lsns, times, changes = zip(*self.meta, strict=True) if n else ([],) * 5
        texts = list(zip(*self.values, strict=True)) if n else [()] * len(self.columns)
        raws = [pa.array(values, pa.binary()) for values in texts]
        arrays: list[Any] = []
        bad: list[BadRecord] = []
        dropped = np.zeros(n, dtype=bool)
        for col, raw in zip(self.columns, raws, strict=True):
            try:
                arrays.append(from_text(col, raw))
            except (ValueError, pa.ArrowException) as exc:
                arrays.append(None)
                found = bad_rows(col, raw)
                if not found:
                    raise ConnectorError(f"column {col.name!r}: {exc}") from exc
                for row, value, why in found:
                    if not dropped[row]:
                        dropped[row] = True
                        bad.append(
                            BadRecord(
                                f"{tables[row]} at {lsn_text(lsns[row])}",
                                why,
                                column=col.name,
                                value=value,
                            )
                        )
        meta = [
            pa.array(tables, pa.string()),
            pa.array(ops, pa.string()),
            pa.array(lsns, pa.int64()),
            pa.array(times, pa.int64()).cast(META[3].type),
        ]
        change = pa.array(changes, pa.int8())
        if dropped.any():  # convert the failed columns again without the bad rows
            keep = pa.array(~dropped)
            meta, change = [m.filter(keep) for m in meta], change.filter(keep)
            arrays = [
                from_text(col, raw.filter(keep)) if a is None else a.filter(keep)
                for col, raw, a in zip(self.columns, raws, arrays, strict=True)
            ]
        cols = [*meta, *arrays, change]
        self.clear()
        return pa.RecordBatch.from_arrays(cols, schema=self.schema), bad


def constant_text(value: str, n: int) -> pa.Array:
    """A string array of ``n`` times ``value``, built from buffers (no Python list)."""
    data = value.encode()
    offsets = np.arange(0, (n + 1) * len(data), len(data), dtype=np.int32)[: n + 1]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def snapshot_batch(table: str, rows: pa.Table, columns: list[Column], schema: pa.Schema,
                   lsn: int) -> pa.RecordBatch:  # fmt: skip
    """A snapshot chunk of ``table`` as source rows: ``insert``, +1, at ``lsn``, no commit
    time; a column the table lacks is null."""
    n = rows.num_rows
    cols = [constant_text(table, n), constant_text("insert", n),
            pa.array(np.full(n, lsn, np.int64)), pa.nulls(n, META[3].type)]  # fmt: skip
    have = set(rows.column_names)
    cols += [rows.column(c.name) if c.name in have else pa.nulls(n, c.arrow) for c in columns]
    cols.append(pa.array(np.ones(n, np.int8)))
    batches = pa.Table.from_arrays(cols, schema=schema).combine_chunks().to_batches()
    return batches[0] if batches else empty_batch(schema)
