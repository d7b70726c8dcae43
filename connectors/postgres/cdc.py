"""The PostgreSQL change-capture source (``type = "postgres_cdc"``): a snapshot, then every
change, exactly once downstream.

Pipeline::

    [[sources]]
    name = "orders"
    type = "postgres_cdc"
    dsn = "postgresql://user@127.0.0.1:5432/shop"
    tables = ["public.orders", "public.customers"]
    # slot = "ringstream_orders"        # default: ringstream_<source name>
    # publication = "ringstream_orders" # default: the slot's name
    # snapshot = true                   # backfill the tables' current rows first

Rows have the columns of ``connectors.postgres.rows`` (``_table``, ``_op``,
``_lsn``, ``_commit_time``, the tables' columns, ``_change``): the changelog
convention of the operators (an update is a ``-1`` row with the old values and
a ``+1`` row with the new).

**Set-up** (on the first start, when ``create = true``): the publication is
created (or extended) for the tables, each table gets ``REPLICA IDENTITY
FULL`` (``replica_identity_full``: a delete or update must carry the whole old
row for its retraction), then the logical replication slot (``pgoutput``).
``open`` checks, without changing anything, what the server must allow:
``wal_level = logical``, a role with ``REPLICATION``, tables that exist with
columns of mapped types (``connectors.postgres.columns``); each failure names
what to configure.

**Snapshot**: the slot is created with an exported snapshot, and the tables are
read in that snapshot (``connectors.postgres.snapshot``), chunk by chunk in
primary-key order, one chunk per poll; the stream then starts at the slot's
consistent point, so no change is lost or applied twice at the seam. The
position records the last chunk returned: a restart resumes after it. The
resumed part is read in a new snapshot, exported by a temporary slot at a later
point L; a region ``(table, after key, L)`` is recorded, and a streamed change
to a row of that region is applied only if its transaction committed at or
after L (earlier ones are already in what the region's snapshot read). Rows of
a table without a primary key are read in one chunk.

**Live**: ``pgoutput`` messages of committed transactions in commit order
(``connectors.postgres.pgoutput``). A transaction's rows are returned only once
its commit has arrived, and all in one poll: an epoch's barrier falls between
polls, so it never splits a transaction. The position is the end of the last
transaction returned (``lsn``); a transaction that ends at or before it is
skipped after a restart or a reconnect. The slot's ``confirmed_flush_lsn`` is
moved to a position only by ``notify_committed`` of the epoch that recorded
it (``send_feedback(force=True)``): the server keeps every change not yet
committed downstream, so the input is at-least-once and the output exactly
once. When idle, the position follows the server's keepalive (every
transaction before it was sent), so the slot's lag falls to about zero.

**Lag**: a thread samples ``pg_current_wal_lsn() - confirmed_flush_lsn`` on a
short-lived connection of its own every ``lag_interval_ms``; ``metrics()``
reports it as ``lag_bytes`` (the Prometheus endpoint's
``ringstream_connector_lag{unit="bytes"}``).

**Decisions**: a column added to a captured table (or one whose type changed)
stops the run with an error that names it: the output schema is fixed when a
pipeline starts, and sinks and operator state were built for it. Restarting the
pipeline adopts the new schema (earlier rows have null in the new column) when
its sinks accept it. A dropped column is null from then on. ``TRUNCATE`` of a
captured table fails the run (``on_truncate = "fail"``: the rows it removed are
unknown, so no retraction can be emitted) or is skipped and counted
(``"skip"``). A source reads one slot: ``parallelism`` must be 1. ``snapshot_only = true`` makes a
backfill job: the snapshot (through a temporary slot, so nothing is left on the
server; no publication needed), then the source is finished and the run ends.

Without a checkpoint to restore, a slot of the configured name that exists is
dropped and created again (a fresh start takes a fresh snapshot), or, with
``snapshot = false``, read from its confirmed position. With a checkpoint, the
slot must still exist: a dropped slot is an error (the changes it held are gone).

Why psycopg2: it is the one maintained Python driver with the streaming
replication protocol (psycopg 3 has none).
"""

from __future__ import annotations

import contextlib
import re
import select
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.options import Options
from connectors.postgres import catalog, pgoutput
from connectors.postgres.columns import sort_key
from connectors.postgres.pgoutput import UNCHANGED, lsn_text, parse_lsn
from connectors.postgres.rows import META, ChangeRows, output_columns, output_schema
from connectors.postgres.snapshot import SnapshotReader
from engine import log
from engine.errors import CheckpointError, ConfigError, ConnectorError, TransientError

_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
POLL_BUDGET_S = 0.02  # at most this long reading messages in one poll


class PostgresCdcOptions(Options, frozen=True):
    dsn: Annotated[str, Meta(min_length=1)]
    tables: Annotated[list[str], Meta(min_length=1)]
    slot: str | None = None  # default: ringstream_<source name>
    publication: str | None = None  # default: the slot's name
    snapshot: bool = True
    snapshot_only: bool = False  # a backfill: the snapshot, then the source is finished
    chunk_rows: Annotated[int, Meta(ge=1)] = 100_000
    create: bool = True
    replica_identity_full: bool = True
    on_truncate: Literal["fail", "skip"] = "fail"
    lag_interval_ms: Annotated[int, Meta(ge=10)] = 1000


@dataclass
class _Rel:
    """A relation of the stream that this source captures: where its columns go."""

    table: int  # index in the configured tables
    name: str
    index: list[int] | None  # output column -> relation column (-1: none); None: the same
    keys: list[int]  # relation columns of the primary key
    width: int


class PostgresCdcSource(Source):
    """See the module docstring."""

    options_type = PostgresCdcOptions

    # -- open: checks only, nothing is created ----------------------------------------------
    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        o: PostgresCdcOptions = self.options
        self.where = where = f"sources.{config.name}"
        if config.instances != 1:
            raise ConfigError(
                f"{where}.parallelism: one process reads a replication slot; set parallelism = 1"
            )
        self.slot = o.slot or f"ringstream_{config.name.lower()}"
        self.publication = o.publication or self.slot
        for key, value in (("slot", self.slot), ("publication", self.publication)):
            if not _NAME.match(value):
                raise ConfigError(
                    f"{where}.{key} = {value!r}: a slot or publication name is "
                    "1-63 characters of a-z, 0-9 and _"
                )
        self.ctl = self._connect()
        catalog.check_server(self.ctl, where)
        self.tables = [catalog.table(self.ctl, name, where) for name in o.tables]
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.tables: a table is listed twice: {o.tables}")
        self.columns = output_columns(self.tables, where)
        self._schema = output_schema(self.columns)
        self.by_name = {t.name: i for i, t in enumerate(self.tables)}
        self.sort_keys = [[sort_key(t.column(k)) for k in t.key] for t in self.tables]
        self.rows = ChangeRows(self.columns, self._schema)  # complete transactions
        self.txn = ChangeRows(self.columns, self._schema)  # the transaction being read
        self.restored: dict[str, Any] | None = None
        self.started = False
        self.stream: Any = None
        self.reader: SnapshotReader | None = None
        self.peeked: Any = None
        self.recorded: dict[int, int] = {}  # epoch -> position, until committed
        self.acked = 0
        self.lsn, self.snap, self.regions = 0, None, []
        self.stats = {
            "changes": 0,
            "transactions": 0,
            "snapshot_rows": 0,
            "skipped": 0,
            "truncates_skipped": 0,
        }
        self.lag = _LagSampler(o.dsn, self.slot, o.lag_interval_ms / 1000)

    def _connect(self, replication: bool = False) -> Any:
        import psycopg2
        import psycopg2.extras

        factory = psycopg2.extras.LogicalReplicationConnection if replication else None
        try:
            conn = psycopg2.connect(self.options.dsn, connection_factory=factory)
        except psycopg2.OperationalError as exc:
            hint = (
                " (a replication connection: pg_hba.conf must allow it for this role)"
                if replication
                else ""
            )
            raise TransientError(
                f"{self.where}: cannot connect to PostgreSQL{hint}: {str(exc).strip()}"
            ) from exc
        if not replication:
            conn.autocommit = True
        return conn

    def schema(self) -> pa.Schema:
        return self._schema

    def supports_replay(self) -> bool:
        return True

    # -- positions ----------------------------------------------------------------------------
    def checkpoint(self) -> SourceCheckpoint:
        if not self.started:  # a barrier before the first poll: the start position
            self._guarded(self._start)
        return SourceCheckpoint(
            {
                "tables": [t.name for t in self.tables],
                "slot": self.slot,
                "lsn": self.lsn,
                "snapshot": self.snap,
                "regions": self.regions,
            }
        )

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        p = checkpoint.position
        try:
            tables, slot = list(p["tables"]), p["slot"]
            lsn, snap, regions = int(p["lsn"]), p["snapshot"], list(p["regions"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.where}: checkpoint position {p!r} is not one of this source's ({exc})"
            ) from None
        if tables != [t.name for t in self.tables] or slot != self.slot:
            raise ConfigError(
                f"{self.where}: the checkpoint captured tables {tables} through slot {slot!r}; "
                f"the pipeline now says {[t.name for t in self.tables]} and {self.slot!r}. "
                "Start over with a new checkpoint directory to take a new snapshot"
            )
        self.restored = {"lsn": lsn, "snapshot": snap, "regions": regions}

    def position_recorded(self, epoch: int, checkpoint: SourceCheckpoint) -> None:
        self.recorded[epoch] = int(checkpoint.position["lsn"])

    def notify_committed(self, epoch: int) -> None:
        done = [e for e in self.recorded if e <= epoch]
        if not done:
            return
        position = max(self.recorded.pop(e) for e in done)
        if position > self.acked and self.stream is not None and self.snap is None:
            try:
                self.stream_cursor.send_feedback(flush_lsn=position, force=True)
            except Exception as exc:  # the connection broke: the next poll reconnects
                self._drop_stream()
                raise TransientError(
                    f"{self.where}: acknowledging {lsn_text(position)}: {exc}"
                ) from exc
            self.acked = position
        elif position > self.acked:
            self.recorded[epoch] = position  # acknowledged once the stream is up

    # -- start: set up the server, then snapshot or stream ------------------------------------
    def _start(self) -> None:
        o: PostgresCdcOptions = self.options
        if o.snapshot_only:
            self._start_backfill()
            return
        catalog.ensure_full_identity(self.ctl, self.tables, o.replica_identity_full, self.where)
        catalog.ensure_publication(self.ctl, self.publication, self.tables, o.create, self.where)
        slot = catalog.slot(self.ctl, self.slot)
        if slot is not None and slot.active_pid is not None:
            raise ConnectorError(
                f"{self.where}: replication slot {self.slot!r} is in use by "
                f"server process {slot.active_pid} (another pipeline?)"
            )
        if slot is not None and slot.plugin != "pgoutput":
            raise ConfigError(
                f"{self.where}: replication slot {self.slot!r} uses plugin "
                f"{slot.plugin!r}, not pgoutput; name another slot"
            )
        self.snap, self.regions = None, []
        if self.restored is not None:
            if slot is None:
                raise ConnectorError(
                    f"{self.where}: replication slot {self.slot!r} no longer exists: the "
                    f"changes after {lsn_text(self.restored['lsn'])} that it held are lost to "
                    "this pipeline. Start over with a new checkpoint directory (a new snapshot)"
                )
            self.lsn, self.regions = self.restored["lsn"], self.restored["regions"]
            if self.restored["snapshot"] is not None:
                self.snap = dict(self.restored["snapshot"])
                self._begin_snapshot(temporary=True)
        else:
            if slot is not None and o.snapshot:
                log.say(
                    "cdc_slot_recreated",
                    f"{self.where}: no checkpoint to resume: dropping "
                    f"replication slot {self.slot!r} to take a fresh snapshot",
                )
                catalog.sql(self.ctl, "SELECT pg_drop_replication_slot(%s)", (self.slot,))
                slot = None
            if slot is not None:
                self.lsn = parse_lsn(slot.confirmed_lsn or "0/0")
            elif o.snapshot:
                self.snap = {"table": 0, "after": None}
                self._begin_snapshot(temporary=False)
            else:
                conn = self._connect(True)
                try:
                    self.lsn = self._create_slot(conn, temporary=False, export=False)[0]
                finally:
                    conn.close()
            self.regions = [[0, None, self.lsn]]
        self.cutoff = max(r[2] for r in self.regions)
        self.region_keys = [None if r[1] is None else self._key(r[0], r[1]) for r in self.regions]
        self.acked = self.lsn
        self.lag.start()
        self.started = True

    def _start_backfill(self) -> None:
        """``snapshot_only``: the tables as they are now, through a temporary slot; then done."""
        r = self.restored
        self.regions = list(r["regions"]) if r is not None else []
        self.snap = dict(r["snapshot"]) if r is not None and r["snapshot"] else None
        if r is None:
            self.snap = {"table": 0, "after": None}
        if self.snap is not None:
            self._begin_snapshot(temporary=True)
            self.lsn = self.regions[0][2]
        self.cutoff, self.region_keys = 0, []
        self.started = True

    def finished(self) -> bool:
        return self.options.snapshot_only and self.started and self.snap is None

    def _create_slot(self, conn: Any, temporary: bool, export: bool) -> tuple[int, str | None]:
        name = f"{self.slot}_t{int(time.time() * 1000) % 10**9}" if temporary else self.slot
        what = (
            ("TEMPORARY " if temporary else "")
            + "LOGICAL pgoutput "
            + ("EXPORT_SNAPSHOT" if export else "NOEXPORT_SNAPSHOT")
        )
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE_REPLICATION_SLOT {name} {what}")
                _, lsn, snapshot, _ = cur.fetchone()
        except Exception as exc:
            raise ConnectorError(
                f"{self.where}: cannot create replication slot {name!r}: "
                f"{str(exc).strip()} (max_replication_slots free?)"
            ) from exc
        return parse_lsn(lsn), snapshot

    def _begin_snapshot(self, temporary: bool) -> None:
        """A snapshot exported by the slot (or, to resume, by a temporary slot: a new region)."""
        conn = self._connect(True)
        try:
            lsn, name = self._create_slot(conn, temporary, export=True)
            self.reader = SnapshotReader(self.options.dsn, name, self.ctl)
        finally:
            conn.close()  # the snapshot stays: the reader's transaction imported it
        if temporary:
            self.regions.append([self.snap["table"], self.snap["after"], lsn])
            if self.options.snapshot_only:
                del self.regions[1:]  # no stream follows: only the first one's position shows
        else:
            self.lsn = lsn
        log.say(
            "cdc_snapshot",
            f"{self.where}: snapshot at {lsn_text(lsn)} from table "
            f"{self.tables[self.snap['table']].name}"
            + (" (resumed)" if self.snap["table"] or self.snap["after"] is not None else ""),
        )

    # -- polls --------------------------------------------------------------------------------
    def poll_batch(self, max_records: int) -> SourceBatch | None:
        if self.finished():
            return None
        return self._guarded(self._poll, max_records)

    def _poll(self, max_records: int) -> SourceBatch | None:
        if not self.started:
            self._start()
        if self.snap is not None:
            return self._snapshot_chunk(max_records)
        return self._stream_poll(max_records)

    def _guarded(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; a lost connection becomes a ``TransientError`` (the runtime retries)
        after every connection is dropped, so that the retry starts clean."""
        import adbc_driver_manager.dbapi as adbc_errors
        import psycopg2

        try:
            return fn(*args)
        except (
            psycopg2.OperationalError,
            psycopg2.InterfaceError,
            adbc_errors.OperationalError,
            adbc_errors.InterfaceError,
        ) as exc:
            self._reset()
            raise TransientError(
                f"{self.where}: connection to PostgreSQL lost: "
                f"{str(exc).strip()}; resuming after the last position "
                "returned"
            ) from exc

    def _reset(self) -> None:
        """Drop every connection; the next poll starts again from the position returned."""
        self._drop_stream()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.started and self.snap is not None:  # a new snapshot from where this one was
            self.restored = {"lsn": self.lsn, "snapshot": self.snap, "regions": self.regions}
            self.started = False
        with contextlib.suppress(Exception):
            self.ctl.close()
        self.ctl = self._connect()

    def _snapshot_chunk(self, max_records: int) -> SourceBatch:
        assert self.snap is not None and self.reader is not None
        i = self.snap["table"]
        table = self.tables[i]
        rows, after = self.reader.chunk(
            table, self.snap["after"], min(self.options.chunk_rows, max_records)
        )
        n = rows.num_rows
        cols = [
            constant_text(table.name, n),
            constant_text("insert", n),
            pa.array(np.full(n, self.regions[0][2], np.int64)),
            pa.nulls(n, META[3].type),
        ]
        have = set(rows.column_names)
        cols += [
            rows.column(c.name) if c.name in have else pa.nulls(n, c.arrow) for c in self.columns
        ]
        cols.append(pa.array(np.ones(n, np.int8)))
        out = pa.Table.from_arrays(cols, schema=self._schema).combine_chunks()
        self.stats["snapshot_rows"] += n
        if after is not None:
            self.snap = {"table": i, "after": after}
        elif i + 1 < len(self.tables):
            self.snap = {"table": i + 1, "after": None}
        else:
            self.snap = None
            self.reader.close()
            self.reader = None
            log.say(
                "cdc_snapshot_done",
                f"{self.where}: snapshot done ({self.stats['snapshot_rows']} rows); "
                + ("finished" if self.options.snapshot_only else "streaming changes"),
            )
        batches = out.to_batches()  # one (after combine_chunks), none when the chunk is empty
        return SourceBatch(batches[0] if batches else _empty(self._schema))

    def _stream_poll(self, max_records: int) -> SourceBatch | None:
        if self.stream is None:
            self._start_stream()
        deadline = time.monotonic() + POLL_BUDGET_S
        while True:
            msg = self._read()
            if msg is None:
                break
            self._handle(msg)
            if (len(self.rows) >= max_records and not self.in_txn) or time.monotonic() > deadline:
                break
        if msg is None and not self.in_txn and not self.rows:  # idle: follow the keepalives
            self.ready_lsn = max(self.ready_lsn, self.stream_cursor.wal_end)
        self.lsn = max(self.lsn, self.ready_lsn)
        if not self.rows:
            return None
        batch, bad = self.rows.build()
        return SourceBatch(batch, offset=self.lsn, bad=bad)

    def _read(self) -> Any:
        if self.peeked is not None:
            msg, self.peeked = self.peeked, None
            return msg
        return self.stream_cursor.read_message()

    def _start_stream(self) -> None:
        conn = self._connect(True)
        cur = conn.cursor()
        try:
            cur.start_replication(
                slot_name=self.slot,
                decode=False,
                start_lsn=self.lsn,
                options={"proto_version": "1", "publication_names": self.publication},
            )
        except Exception:
            conn.close()
            raise
        self.stream, self.stream_cursor = conn, cur
        self.rels: dict[int, _Rel | None] = {}
        self.in_txn, self.ready_lsn, self.skipping = False, self.lsn, False

    def _drop_stream(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
        self.stream = None
        self.peeked = None
        self.rows.clear()
        self.txn.clear()

    # -- messages -----------------------------------------------------------------------------
    def _handle(self, msg: Any) -> None:
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
        if self.options.on_truncate == "skip":
            self.stats["truncates_skipped"] += 1
            return
        raise ConnectorError(
            f"{self.where}: TRUNCATE of {names} in the transaction at {lsn_text(self.txn_lsn)}: "
            "the rows it removed are not in the change stream, so no retraction can be emitted. "
            'Set on_truncate = "skip" to go on without them, or start over with a new checkpoint '
            "directory (a new snapshot)"
        )

    # -- waiting, health, metrics -------------------------------------------------------------
    def data_ready(self, timeout_s: float) -> bool:
        if self.finished():
            return False
        if not self.started or self.snap is not None or self.rows or self.peeked is not None:
            return True
        if self.stream is None:
            time.sleep(min(timeout_s, 0.01))
            return True
        try:
            self.peeked = self.stream_cursor.read_message()
            if self.peeked is not None:
                return True
            ready, _, _ = select.select([self.stream], [], [], timeout_s)
        except Exception:
            self._drop_stream()  # the next poll reconnects and says why if it cannot
            return True
        return bool(ready)

    def health_check(self) -> bool:
        try:
            catalog.sql(self.ctl, "SELECT 1")
        except Exception:
            with contextlib.suppress(Exception):
                self.ctl.close()
            self.ctl = self._connect()
        return True

    def metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.stats.items()}
        if self.lag.bytes is not None:
            out["lag_bytes"] = float(self.lag.bytes)
        return out

    def close(self) -> None:
        self.lag.stop()
        self._drop_stream()
        if self.reader is not None:
            self.reader.close()
        with contextlib.suppress(Exception):
            self.ctl.close()


def constant_text(value: str, n: int) -> pa.Array:
    """A string array of ``n`` times ``value``, built from buffers (no Python list)."""
    data = value.encode()
    offsets = np.arange(0, (n + 1) * len(data), len(data), dtype=np.int32)[: n + 1]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


class _LagSampler:
    """``lag_bytes`` sampled every ``interval_s`` on a short-lived connection of its own."""

    def __init__(self, dsn: str, slot: str, interval_s: float) -> None:
        self.dsn, self.slot, self.interval_s = dsn, slot, interval_s
        self.bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cdc-lag", daemon=True)
            self._thread.start()

    def sample(self) -> int | None:
        import psycopg2

        conn = psycopg2.connect(self.dsn, connect_timeout=5)
        try:
            conn.autocommit = True
            return catalog.lag_bytes(conn, self.slot)
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a missed sample; the next one may work
                self.bytes = self.sample()

    def stop(self) -> None:
        self._stop.set()
