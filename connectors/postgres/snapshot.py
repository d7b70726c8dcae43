"""The backfill of the change-capture source: tables read in chunks by primary key,
inside one snapshot that a replication slot exported.

``SnapshotReader(dsn, snapshot_name)`` opens an ADBC connection whose
``REPEATABLE READ`` transaction imports the snapshot: every chunk then sees
the database exactly as it was at the slot's consistent point, whatever
commits meanwhile. ``chunk(table, after, rows)`` returns the next ``rows`` rows
of ``table`` in key order after the key ``after`` (None: from the start), as
Arrow columns of the source's types, and the key of its last row (None when
the table has no more). Text key columns are ordered ``COLLATE "C"`` (code
points), so the stream's keys can be compared with a chunk boundary in
Python (``columns.sort_key``). A table without a primary key is read in one
chunk.

Why ADBC: it reads a query result straight into Arrow (binary COPY), several
times faster than rows through psycopg2; the literal values of a boundary are
quoted by psycopg2's ``mogrify``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa

from connectors.postgres.catalog import Table
from connectors.postgres.columns import key_text


class SnapshotReader:
    def __init__(self, dsn: str, snapshot_name: str, ctl: Any) -> None:
        import adbc_driver_postgresql.dbapi as adbc

        self.ctl = ctl  # psycopg2, to quote literals
        self.conn = adbc.connect(dsn)
        with self.conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_name}'")

    def chunk(
        self, table: Table, after: list[Any] | None, rows: int
    ) -> tuple[pa.Table, list[Any] | None]:
        cols = ", ".join(c.select_sql() for c in table.columns)
        query = f"SELECT {cols} FROM {table.sql}"
        if table.key:
            keys = [self._ordered(table, k) for k in table.key]
            if after is not None:
                values = ", ".join(
                    self._literal(table, k, v) for k, v in zip(table.key, after, strict=True)
                )
                query += f" WHERE ({', '.join(keys)}) > ({values})"
            query += f" ORDER BY {', '.join(keys)} LIMIT {rows}"
        with self.conn.cursor() as cur:
            cur.execute(query)
            got = cur.fetch_arrow_table()
        out = pa.table(
            [c.from_snapshot(got.column(c.name)) for c in table.columns],
            names=[c.name for c in table.columns],
        )
        if not table.key or got.num_rows < rows:
            return out, None
        last = [key_text(got.column(k)[got.num_rows - 1].as_py()) for k in table.key]
        return out, last

    @staticmethod
    def _ordered(table: Table, key: str) -> str:
        quoted = '"' + key.replace('"', '""') + '"'
        col = table.column(key)
        return (
            f'{quoted} COLLATE "C"' if col.arrow == pa.string() and col.typtype != "e" else quoted
        )

    def _literal(self, table: Table, key: str, value: Any) -> str:
        col = table.column(key)
        with self.ctl.cursor() as cur:
            text = cur.mogrify("%s", (value,)).decode()
        literal = f"{text}::{col.sql_type}"
        if col.arrow == pa.string() and col.typtype != "e":
            literal += ' COLLATE "C"'
        return literal

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.rollback()
            self.conn.close()
