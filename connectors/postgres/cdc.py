"""The PostgreSQL change-capture source (``type = "postgres_cdc"``): a snapshot, then every
change, exactly once downstream (the README's "PostgreSQL change capture" for users).

Rows: ``connectors.postgres.rows`` (``_table``, ``_op``, ``_lsn``, ``_commit_time``,
the tables' columns, ``_change`` ±1: an update is -1 old, +1 new).

* ``open`` only reads: ``wal_level = logical``, a role that may replicate, tables
  whose columns map (``columns``), each failure naming what to configure. The first
  poll (or barrier) sets up: ``REPLICA IDENTITY FULL`` (a retraction needs the old
  row), the publication, then the slot (``catalog``).
* **Snapshot**: the slot is created with an exported snapshot; the tables are read in
  it by primary-key chunks (``snapshot``), one chunk per poll, and the position
  records the last chunk. A restart mid-snapshot reads the rest in a new snapshot (a
  temporary slot's, at L) and records a region ``(table, after key, L)``: changes to
  rows of the region committed before L are skipped (``changes``).
* **Live**: whole transactions per poll (``changes``), so a barrier never splits one.
  The position is the end of the last transaction returned; after a restart or a
  reconnect, what ends at or before it is skipped. The slot is acknowledged
  (``send_feedback(force=True)``) only at ``notify_committed`` of the epoch that
  recorded the position: at-least-once input, exactly-once output. Idle, the
  position follows the server's keepalives, so the lag falls to about zero.
* **Lag**: ``lag`` samples the slot on its own connection; ``metrics()['lag_bytes']``.
* A lost connection (a server restart) is a ``TransientError`` after every
  connection is dropped: the runtime's retry starts again from the position returned.
* ``snapshot_only = true``: a backfill through a temporary slot; then finished.
* Without a checkpoint, an existing slot of the name is dropped and created again (a
  fresh snapshot), or with ``snapshot = false`` read from its confirmed position. With
  a checkpoint, a dropped slot is an error. One slot, one process: ``parallelism = 1``.
* Schema changes and TRUNCATE: ``changes`` (refused with a message; ``on_truncate``).

Why psycopg2: the one maintained Python driver with the streaming replication
protocol (psycopg 3 has none).
"""

from __future__ import annotations

import contextlib
import select
import time
from typing import Any

import pyarrow as pa

from connectors.base import ConnectorConfig, PendingPositions, Source, SourceBatch, SourceCheckpoint
from connectors.postgres import catalog
from connectors.postgres.cdc_options import PostgresCdcOptions, slot_names
from connectors.postgres.changes import ChangeDecoder
from connectors.postgres.lag import LagSampler
from connectors.postgres.pgoutput import lsn_text, parse_lsn
from connectors.postgres.rows import ChangeRows, output_columns, output_schema, snapshot_batch
from connectors.postgres.snapshot import SnapshotReader
from engine import log
from engine.errors import CheckpointError, ConfigError, TransientError

POLL_BUDGET_S = 0.02  # at most this long reading messages in one poll


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
        self.slot, self.publication = slot_names(o, config)
        self.ctl = self._connect()
        catalog.check_server(self.ctl, where)
        self.tables = [catalog.table(self.ctl, name, where) for name in o.tables]
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.tables: a table is listed twice: {o.tables}")
        self.columns = output_columns(self.tables, where)
        self._schema = output_schema(self.columns)
        self.rows = ChangeRows(self.columns, self._schema)  # complete transactions
        self.txn = ChangeRows(self.columns, self._schema)  # the transaction being read
        self.restored: dict[str, Any] | None = None
        self.started = False
        self.stream: Any = None
        self.decoder: ChangeDecoder | None = None
        self.reader: SnapshotReader | None = None
        self.peeked: Any = None
        self.recorded = PendingPositions()  # epoch -> position, until committed
        self.acked = 0
        self.lsn, self.snap, self.regions = 0, None, []
        counts = ("changes", "transactions", "snapshot_rows", "skipped", "truncates_skipped")
        self.stats = dict.fromkeys(counts, 0)
        self.lag = LagSampler(o.dsn, self.slot, o.lag_interval_ms / 1000)

    def _connect(self, replication: bool = False) -> Any:
        return catalog.connect(self.options.dsn, replication, self.where)

    def schema(self) -> pa.Schema:
        return self._schema

    def supports_replay(self) -> bool:
        return True

    # -- positions ----------------------------------------------------------------------------
    def checkpoint(self) -> SourceCheckpoint:
        if not self.started:  # a barrier before the first poll: the start position
            self._guarded(self._start)
        tables = [t.name for t in self.tables]
        return SourceCheckpoint({"tables": tables, "slot": self.slot, "lsn": self.lsn,
                                 "snapshot": self.snap, "regions": self.regions})  # fmt: skip

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
        self.recorded.record(epoch, int(checkpoint.position["lsn"]))

    def notify_committed(self, epoch: int) -> None:
        position = self.recorded.committed(epoch)
        if position is None:
            return
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
            self.recorded.record(epoch, position)  # acknowledged once the stream is up

    # -- start: set up the server, then snapshot or stream ------------------------------------
    def _start(self) -> None:
        o: PostgresCdcOptions = self.options
        if o.snapshot_only:
            self._start_backfill()
            return
        catalog.ensure_full_identity(self.ctl, self.tables, o.replica_identity_full, self.where)
        catalog.ensure_publication(self.ctl, self.publication, self.tables, o.create, self.where)
        slot = catalog.slot(self.ctl, self.slot)
        catalog.check_slot(slot, self.slot, self.restored, self.where)
        self.snap, self.regions = None, []
        if self.restored is not None:
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
        self.started = True

    def finished(self) -> bool:
        return self.options.snapshot_only and self.started and self.snap is None

    def _create_slot(self, conn: Any, temporary: bool, export: bool) -> tuple[int, str | None]:
        name = f"{self.slot}_t{int(time.time() * 1000) % 10**9}" if temporary else self.slot
        return catalog.create_slot(conn, name, temporary, export, self.where)

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
        batch = snapshot_batch(table.name, rows, self.columns, self._schema, self.regions[0][2])
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
        return SourceBatch(batch)

    def _stream_poll(self, max_records: int) -> SourceBatch | None:
        if self.stream is None:
            self._start_stream()
        d = self.decoder
        assert d is not None
        deadline = time.monotonic() + POLL_BUDGET_S
        while True:
            msg = self._read()
            if msg is None:
                break
            d.handle(msg)
            if (len(self.rows) >= max_records and not d.in_txn) or time.monotonic() > deadline:
                break
        if msg is None and not d.in_txn and not self.rows:  # idle: follow the keepalives
            d.ready_lsn = max(d.ready_lsn, self.stream_cursor.wal_end)
        self.lsn = max(self.lsn, d.ready_lsn)
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
        self.decoder = ChangeDecoder(self.where, self.tables, self.columns, self.rows, self.txn,
                                     self.regions, self.lsn, self.options.on_truncate,
                                     self.stats)  # fmt: skip

    def _drop_stream(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
        self.stream = None
        self.peeked = None
        self.rows.clear()
        self.txn.clear()

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
