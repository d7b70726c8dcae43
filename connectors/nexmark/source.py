"""NexmarkSource: one event kind of the Nexmark model, polled in chunks of model events.

Options (the ``[[sources]]`` table; every key optional except ``kind``):

* ``kind``: ``"bid"``, ``"auction"`` or ``"person"`` — the one kind this
  source emits (run three sources for the three streams).
* ``events`` (10 000 000): model events of *all* kinds in the sequence; 0 =
  unbounded.
* ``seed`` (1), ``events_per_second`` (1 000 000: event-time density, not a
  rate limit), ``start_ms`` (1 700 000 000 000: event time of event 0),
  ``jitter_ms`` (0: event times in order; ``d`` > 0: each row up to ``d`` ms
  late, deterministically — see ``model``). Its old name,
  ``max_out_of_orderness_ms``, is also the runtime's watermark key: written
  flat in ``[[sources]]`` it sets the watermark's lag, as for every source;
  inside an explicit ``options = { ... }`` table it is still read as
  ``jitter_ms``.
* ``columns`` (all): the columns to generate, in this order; the others are
  never built. Generating a bid's strings (``channel``, ``url``, ``extra``) is
  about three quarters of the generator's time, so a query that reads
  ``auction`` and ``date_time`` runs its source about four times faster. The
  values do not depend on which columns are asked for.
* ``batch_rows`` (65 536): model events per chunk. Chunk ``c`` covers events
  ``[c * batch_rows, (c + 1) * batch_rows)``; a poll returns the chunk's rows
  of ``kind`` (~92 % of ``batch_rows`` for bids, 6 % auctions, 2 % persons).

Instance ``j`` of ``n`` polls chunks ``j, j + n, j + 2n, ...``, so each
instance's event time only grows (up to the jitter) and the instances together
emit every row once. Rows are a pure function of (seed, event index): any
``batch_rows``, any number of instances and any replay give the same rows.

Positions: ``checkpoint()`` is ``{"chunk": c}``, the next chunk this instance
will poll; when ``poll_batch(max_records)`` had to split a chunk because it
held more than ``max_records`` rows, it is ``{"chunk": c, "row": r}``: the
chunk being returned and the number of its rows already returned.
``restore`` accepts either.

Not guaranteed: restoring a checkpoint taken with another ``instances`` or
``batch_rows`` (a chunk that is not this instance's raises ``StateError``; a
changed ``batch_rows`` silently means other rows); that every poll returns
rows — a chunk without rows of ``kind`` is skipped, and a poll that skipped
many returns ``None`` without being finished.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.nexmark.model import (
    DEFAULT_START_MS,
    MAX_OOO_MS,
    SCHEMAS,
    count_before,
    generate_events,
    nth_index,
    select,
)
from connectors.options import Options
from engine.errors import ConfigError, StateError

_SKIP_LIMIT = 64  # empty chunks one poll may skip before it returns None


class NexmarkOptions(Options, frozen=True):
    kind: Literal["bid", "auction", "person"]
    events: Annotated[int, Meta(ge=0)] = 10_000_000  # 0 = unbounded
    seed: int = 1
    events_per_second: Annotated[int, Meta(ge=1)] = 1_000_000
    batch_rows: Annotated[int, Meta(ge=1)] = 65_536
    start_ms: int = DEFAULT_START_MS
    jitter_ms: Annotated[int, Meta(ge=0, le=MAX_OOO_MS)] = 0
    columns: list[str] | None = None  # None: every column of the kind
    # Its old name is the runtime's watermark key: only an explicit options table reached it.
    renamed: ClassVar[dict[str, str]] = {"max_out_of_orderness_ms": "jitter_ms"}


class NexmarkSource(Source):
    """One instance of one Nexmark stream (see the module docstring for options and positions)."""

    kind: str
    events: int
    seed: int
    events_per_second: int
    batch_rows: int
    start_ms: int
    ooo_ms: int

    options_type = NexmarkOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        opts: NexmarkOptions = self.options
        self.kind = opts.kind
        self.events = opts.events
        self.seed = opts.seed
        self.events_per_second = opts.events_per_second
        self.batch_rows = opts.batch_rows
        self.start_ms = opts.start_ms
        self.ooo_ms = opts.jitter_ms
        self.columns = opts.columns
        try:
            self._schema = SCHEMAS[self.kind] if self.columns is None else select(
                self.kind, self.columns)  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(f"sources.{config.name}.columns: {exc}") from None
        self._chunk = config.instance  # the next chunk to generate
        self._pending: pa.RecordBatch | None = None  # a chunk's rows, some not returned yet
        self._pending_chunk = -1  # the chunk _pending holds
        self._row = 0  # rows of _pending already returned
        self._records = 0

    def schema(self) -> pa.Schema:
        return self._schema

    def supports_replay(self) -> bool:
        return True

    def _chunk_bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.batch_rows
        stop = start + self.batch_rows
        return start, (min(stop, self.events) if self.events else stop)

    def _exhausted(self, chunk: int) -> bool:
        return bool(self.events) and chunk * self.batch_rows >= self.events

    def finished(self) -> bool:
        return self._pending is None and self._exhausted(self._chunk)

    def data_ready(self, timeout_s: float) -> bool:
        return not self.finished()

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        limit = max(max_records, 1)
        skipped = 0
        while self._pending is None:
            if self._exhausted(self._chunk) or skipped == _SKIP_LIMIT:
                return None
            start, stop = self._chunk_bounds(self._chunk)
            self._chunk += self.config.instances
            if count_before(self.kind, stop) > count_before(self.kind, start):
                self._pending = self._generate(start, stop)
                self._pending_chunk, self._row = self._chunk - self.config.instances, 0
            skipped += 1
        batch = self._pending.slice(self._row, limit)
        self._row += batch.num_rows
        row_end = self._row
        if self._row == self._pending.num_rows:
            self._pending = None
        self._records += batch.num_rows
        # offset: the model index of the batch's last row
        last = count_before(self.kind, self._chunk_bounds(self._pending_chunk)[0]) + row_end - 1
        return SourceBatch(batch, offset=nth_index(self.kind, last))

    def _generate(self, start: int, stop: int) -> pa.RecordBatch:
        return generate_events(
            self.kind,
            self.seed,
            start,
            stop,
            self.events_per_second,
            start_ms=self.start_ms,
            ooo_ms=self.ooo_ms,
            columns=self.columns,
        )

    def checkpoint(self) -> SourceCheckpoint:
        if self._pending is not None:
            return SourceCheckpoint({"chunk": self._pending_chunk, "row": self._row})
        return SourceCheckpoint({"chunk": self._chunk})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        position = checkpoint.position
        chunk, row = position.get("chunk"), position.get("row", 0)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
            raise StateError(f"nexmark source {self.config.name!r}: bad checkpoint {position!r}")
        if isinstance(row, bool) or not isinstance(row, int) or row < 0:
            raise StateError(f"nexmark source {self.config.name!r}: bad checkpoint {position!r}")
        n = self.config.instances
        if chunk % n != self.config.instance:
            raise StateError(
                f"nexmark source {self.config.name!r}: checkpoint chunk={chunk} is not "
                f"instance {self.config.instance} of {n}'s (chunk % instances must equal it)"
            )
        self._pending = None
        self._row = 0
        self._chunk = chunk
        if row:
            start, stop = self._chunk_bounds(chunk)
            batch = self._generate(start, stop)
            if row > batch.num_rows:
                raise StateError(
                    f"nexmark source {self.config.name!r}: checkpoint row={row} is past "
                    f"chunk {chunk}'s {batch.num_rows} rows"
                )
            self._chunk = chunk + n
            if row < batch.num_rows:
                self._pending, self._pending_chunk, self._row = batch, chunk, row

    def metrics(self) -> dict[str, float]:
        out = {"records": float(self._records), "chunk": float(self._chunk)}
        if self.events:  # bounded: model events of this instance's chunks done (for progress)
            n, j = self.config.instances, self.config.instance
            chunks = -(-self.events // self.batch_rows)
            mine = len(range(j, chunks, n))
            out["progress_total"] = float(mine)
            out["progress_done"] = float(min(mine, (self._chunk - j) // n))
        return out
