"""Messages of one replication session as rows of whole transactions (the CDC source's core).

``ChangeDecoder(...)`` is made for each session (``START_REPLICATION``): relation
descriptions start empty, and every transaction whose commit record lies before
``lsn`` (the position already returned) is skipped. ``handle(msg)`` takes one
``pgoutput`` message: a change adds rows to the open transaction (``txn``), its
commit moves them to ``rows`` (complete transactions, ready to return) and
advances ``ready_lsn`` to the end of the transaction. ``in_txn`` is true between a
begin and its commit: a caller returns ``rows`` only then, so that no epoch splits
a transaction.

Each row follows ``connectors.postgres.rows``: an insert is +1, a delete -1 (the
old row), an update -1 (old) and +1 (new); a TOASTed value an update left
unchanged is taken from the old row. A change to a row of a resumed snapshot's
region applies only if its transaction committed at or after the region's
snapshot (``regions``: ``[table index, after key or None, lsn]``, in position
order). Errors that stop the run (a column added, a type changed, a TRUNCATE with
``on_truncate = "fail"``, a missing old row) are ``ConnectorError`` naming the
table and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.postgres import pgoutput
from connectors.postgres.catalog import Table
from connectors.postgres.columns import Column, sort_key
from connectors.postgres.pgoutput import UNCHANGED, lsn_text
from connectors.postgres.rows import ChangeRows
from engine.errors import ConnectorError


@dataclass
class _Rel:
    """A relation of the stream that this source captures: where its columns go."""

    table: int  # index in the configured tables
    name: str
    index: list[int] | None  # output column -> relation column (-1: none); None: the same
    keys: list[int]  # relation columns of the primary key
    width: int


class ChangeDecoder:
    """See the module docstring."""

    def __init__(self, where: str, tables: list[Table], columns: list[Column], rows: ChangeRows,
                 txn: ChangeRows, regions: list[list[Any]], lsn: int, on_truncate: str,
                 stats: dict[str, int]) -> None:  # fmt: skip
        self.where, self.tables, self.columns = where, tables, columns
        self.rows, self.txn, self.stats = rows, txn, stats
        self.on_truncate = on_truncate
        self.by_name = {t.name: i for i, t in enumerate(tables)}
        self.sort_keys = [[sort_key(t.column(k)) for k in t.key] for t in tables]
        self.regions = regions
        self.cutoff = max((r[2] for r in regions), default=0)
        self.region_keys = [None if r[1] is None else self._key(r[0], r[1]) for r in regions]
        self.rels: dict[int, _Rel | None] = {}
        self.lsn = lsn  # transactions committed before this were returned already
        self.ready_lsn = lsn
        self.in_txn = self.skipping = False
        self.txn_lsn = lsn
        self.txn_time: int | None = None
        rows.clear()
        txn.clear()

    def handle(self, msg: Any) -> None:
        """One replication message: rows join the transaction; its commit makes them ready."""
        payload = msg.payload
        if payload[0] == 73 and not self.skipping:  # an insert, the common case: no objects
            rel = self.rels.get(int.from_bytes(payload[1:5], "big"))
            if rel is not None and payload[5:6] == b"N":
                self.stats["changes"] += 1
                self._row(rel, "insert", msg.data_start, 1, pgoutput.insert_values(payload))
                return
        m = pgoutput.decode(payload)
        if isinstance(m, pgoutput.Begin):
            self.in_txn, self.txn_lsn, self.txn_time = True, m.final_lsn, m.commit_time_us
            self.skipping = m.final_lsn < self.lsn  # returned before a restart or reconnect
            self.txn.clear()
        elif isinstance(m, pgoutput.Commit):
            self.in_txn = False
            if self.skipping:
                self.stats["skipped"] += 1
            elif len(self.txn):
                self.rows.extend(self.txn)
                self.txn.clear()
                self.stats["transactions"] += 1
            self.ready_lsn = max(self.ready_lsn, m.end_lsn)
        elif isinstance(m, pgoutput.Relation):
            self._relation(m)
        elif isinstance(m, (pgoutput.Insert, pgoutput.Update, pgoutput.Delete)):
            if not self.skipping:
                self._change(m, msg.data_start)
        elif isinstance(m, pgoutput.Truncate):
            self._truncate(m)

    def _relation(self, r: pgoutput.Relation) -> None:
        i = self.by_name.get(r.qualified)
        if i is None:
            self.rels[r.relid] = None
            return
        table = self.tables[i]
        known = dict(zip((c.name for c in table.columns), table.oids, strict=True))
        for c in r.columns:
            if c.name not in known:
                raise ConnectorError(
                    f"{self.where}: table {table.name} gained column {c.name!r} (at or before "
                    f"{lsn_text(self.txn_lsn)}): the output schema was fixed when the pipeline "
                    "started. Restart the pipeline to capture the new column (earlier rows get "
                    "null in it) once its sinks accept it, or drop the column"
                )
            if known[c.name] != c.type_oid:
                raise ConnectorError(
                    f"{self.where}: column {c.name!r} of {table.name} changed type (oid "
                    f"{known[c.name]} -> {c.type_oid}): restart the pipeline to capture the new "
                    "type once its sinks accept it"
                )
        names = [c.name for c in r.columns]
        index = [names.index(c.name) if c.name in names else -1 for c in self.columns]
        same = index == list(range(len(names))) and len(names) == len(self.columns)
        keys = [names.index(k) for k in table.key if k in names]
        self.rels[r.relid] = _Rel(i, table.name, None if same else index, keys, len(names))

    def _change(self, m: Any, lsn: int) -> None:
        """An insert, update or delete as rows of the open transaction."""
        rel = self.rels.get(m.relid)
        if rel is None:
            if m.relid not in self.rels:
                raise ConnectorError(
                    f"{self.where}: a change to relation {m.relid} came "
                    "before its description (protocol error)"
                )
            return
        self.stats["changes"] += 1
        if isinstance(m, pgoutput.Insert):
            self._row(rel, "insert", lsn, 1, m.new)
            return
        old = m.old
        if old is None or m.old_is_key:
            raise ConnectorError(
                f"{self.where}: {type(m).__name__.lower()} of {rel.name} at {lsn_text(lsn)} "
                "came without the old row: the table's REPLICA IDENTITY is not FULL "
                f"(ALTER TABLE {self.tables[rel.table].sql} REPLICA IDENTITY FULL)"
            )
        if isinstance(m, pgoutput.Delete):
            self._row(rel, "delete", lsn, -1, old)
            return
        new = m.new
        if UNCHANGED in new:
            new = [o if v is UNCHANGED else v for v, o in zip(new, old, strict=True)]
        self._row(rel, "update", lsn, -1, old)
        self._row(rel, "update", lsn, 1, new)

    def _row(self, rel: _Rel, op: str, lsn: int, change: int, values: list[Any]) -> None:
        if self.txn_lsn < self.cutoff and not self._applies(rel, values):
            return
        if rel.index is not None:
            values = [values[k] if k >= 0 else None for k in rel.index]
        self.txn.add(rel.name, op, lsn, self.txn_time, change, values)

    def _applies(self, rel: _Rel, values: list[Any]) -> bool:
        """A change to a row of a resumed snapshot's region applies only if its transaction
        committed at or after that region's snapshot (module docstring)."""
        key = None
        for region, rkey in zip(reversed(self.regions), reversed(self.region_keys), strict=True):
            t, after, lsn = region
            if rel.table < t:
                continue
            if rel.table == t and after is not None:
                if key is None:
                    key = self._key(rel.table, [values[k] for k in rel.keys], raw=True)
                if not key > rkey:
                    continue
            return self.txn_lsn >= lsn
        return True

    def _key(self, table: int, values: list[Any], raw: bool = False) -> tuple[Any, ...]:
        decode = (lambda v: v.decode() if isinstance(v, bytes) else v) if raw else (lambda v: v)
        return tuple(f(decode(v)) for f, v in zip(self.sort_keys[table], values, strict=True))

    def _truncate(self, m: pgoutput.Truncate) -> None:
        names = [r.name for relid in m.relids if (r := self.rels.get(relid)) is not None]
        if not names or self.skipping:
            return
        if self.on_truncate == "skip":
            self.stats["truncates_skipped"] += 1
            return
        raise ConnectorError(
            f"{self.where}: TRUNCATE of {names} in the transaction at {lsn_text(self.txn_lsn)}: "
            "the rows it removed are not in the change stream, so no retraction can be emitted. "
            'Set on_truncate = "skip" to go on without them, or start over with a new checkpoint '
            "directory (a new snapshot)"
        )

