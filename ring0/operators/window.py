"""Keyed tumbling-window aggregation, two-phase: partials per batch, merged on close.

Contract (the worker calls, in any interleaving):

* ``process(batch)`` — computes partial aggregates per (window, key) for the
  batch, vectorised (``Table.group_by``), and adds them to the window's state.
  Rows of windows the watermark has already closed are late: dropped and
  counted in ``late_rows``; rows without event time are dropped and counted in
  ``null_time_rows``.
* ``advance(watermark)`` — returns the result batches of every window whose
  end is <= ``watermark``, and frees their state. Lower watermarks are ignored.
* ``flush()`` — end of a bounded stream: emits every open window.

Partials of one window are re-aggregated when it closes (sum of counts, sum
of sums, min of mins, max of maxes); a window that collects many partials is
compacted on the way, so its state stays about one table. Output columns:
``window_start``, ``window_end`` (ms, int64), the key, then one column per
aggregate (``count``, ``sum_<col>``, ``min_<col>``, ``max_<col>``,
``avg_<col>``); one batch per window, windows in ascending order, keys unordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError

FUNCTIONS = ("count", "sum", "min", "max", "avg")
_COMPACT_AFTER = 16
_MERGE = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}
_PARTIAL = {"sum": "sum", "min": "min", "max": "max", "avg": "sum"}  # avg = sum / count


@dataclass(frozen=True)
class Aggregate:
    fn: str
    column: str | None = None  # None for count

    @property
    def name(self) -> str:
        return "count" if self.fn == "count" else f"{self.fn}_{self.column}"


class TumblingWindowAggregate:
    def __init__(
        self,
        key: str,
        time: str,
        size_ms: int,
        aggregates: Sequence[Aggregate],
        input_schema: pa.Schema,
    ) -> None:
        check(key, time, size_ms, aggregates, input_schema)
        self.key, self.time, self.size = key, time, size_ms
        self._input = input_schema
        self.aggregates = list(aggregates)
        # Partial state: (column, fn) pairs; count always (avg needs it).
        self._state: list[tuple[str, str]] = []
        for a in self.aggregates:
            fn = _PARTIAL.get(a.fn)
            if fn is not None and (a.column, fn) not in self._state:
                self._state.append((a.column, fn))  # type: ignore[arg-type]
        self._state_names = ["count"] + [f"{c}_{fn}" for c, fn in self._state]
        self._windows: dict[int, list[pa.Table]] = {}
        self.watermark = -(2**63)
        self.late_rows = 0
        self.null_time_rows = 0

    def process(self, batch: pa.RecordBatch) -> None:
        """Phase 1: partial aggregates of one batch, per (window, key)."""
        ts_col = batch.column(self.time)
        if ts_col.null_count:
            valid = pc.is_valid(ts_col)
            self.null_time_rows += ts_col.null_count
            batch = batch.filter(valid)
            ts_col = batch.column(self.time)
        if batch.num_rows == 0:
            return
        ts = ts_col.to_numpy()
        start = ts - ts % self.size  # numpy % floors, so negative times land right too
        if self.watermark > -(2**63):
            on_time = start + self.size > self.watermark
            kept = int(on_time.sum())
            if kept < batch.num_rows:
                self.late_rows += batch.num_rows - kept
                if kept == 0:
                    return
                batch, start = batch.filter(pa.array(on_time)), start[on_time]
        columns = {"window": pa.array(start), self.key: batch.column(self.key)}
        for c, _ in self._state:
            columns.setdefault(c, batch.column(c))
        partial = (
            pa.table(columns)
            .group_by(["window", self.key], use_threads=False)
            .aggregate([([], "count_all")] + self._state)
        )
        names = ["window", self.key, "count_all"] + [f"{c}_{fn}" for c, fn in self._state]
        partial = partial.select(names).rename_columns(["window", self.key] + self._state_names)
        first, last = int(start.min()), int(start.max())
        if first == last:
            self._add(first, partial)
            return
        # Several windows: sort the (small) partial once and cut a zero-copy slice for each
        # window that occurs; never loop over the empty windows between first and last.
        partial = partial.sort_by("window")
        windows = partial.column("window").to_numpy()
        present, offsets = np.unique(windows, return_index=True)
        ends = [*offsets[1:].tolist(), len(windows)]
        for w, lo, hi in zip(present.tolist(), offsets.tolist(), ends, strict=True):
            self._add(w, partial.slice(lo, hi - lo))

    def _add(self, window: int, part: pa.Table) -> None:
        parts = self._windows.setdefault(window, [])
        parts.append(part)
        if len(parts) >= _COMPACT_AFTER:
            self._windows[window] = [self._merge(parts)]

    def _merge(self, parts: list[pa.Table]) -> pa.Table:
        """Phase 2: re-aggregate partials of one window into one table."""
        table = pa.concat_tables(parts)
        fns = [("count", "sum")] + [(f"{c}_{fn}", _MERGE[fn]) for c, fn in self._state]
        merged = table.group_by(["window", self.key], use_threads=False).aggregate(fns)
        merged = merged.select(["window", self.key] + [f"{n}_{fn}" for n, fn in fns])
        return merged.rename_columns(["window", self.key] + self._state_names)

    def _emit(self, window: int) -> pa.RecordBatch:
        state = self._merge(self._windows.pop(window))
        out: dict[str, pa.ChunkedArray] = {
            "window_start": state.column("window"),
            "window_end": pc.add(state.column("window"), self.size),
            self.key: state.column(self.key),
        }
        for a in self.aggregates:
            if a.fn == "count":
                out[a.name] = state.column("count")
            elif a.fn == "avg":
                total = pc.cast(state.column(f"{a.column}_sum"), pa.float64())
                out[a.name] = pc.divide(total, pc.cast(state.column("count"), pa.float64()))
            else:
                out[a.name] = state.column(f"{a.column}_{a.fn}")
        return pa.table(out).combine_chunks().to_batches()[0]

    def advance(self, watermark: int) -> list[pa.RecordBatch]:
        """Close and emit every window that ends at or before ``watermark``."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        ready = sorted(w for w in self._windows if w + self.size <= watermark)
        return [self._emit(w) for w in ready]

    def flush(self) -> list[pa.RecordBatch]:
        """Emit every open window (end of a bounded stream)."""
        return [self._emit(w) for w in sorted(self._windows)]

    @property
    def output_schema(self) -> pa.Schema:
        fields = [
            pa.field("window_start", pa.int64()),
            pa.field("window_end", pa.int64()),
            pa.field(self.key, self._input.field(self.key).type),
        ]
        for a in self.aggregates:
            if a.fn == "count":
                t = pa.int64()
            elif a.fn == "avg":
                t = pa.float64()
            else:
                t = self._input.field(a.column).type  # type: ignore[arg-type]
                if a.fn == "sum":
                    t = pa.float64() if pa.types.is_floating(t) else pa.int64()
            fields.append(pa.field(a.name, t))
        return pa.schema(fields)

    @property
    def open_windows(self) -> int:
        return len(self._windows)


def check(
    key: str, time: str, size_ms: int, aggregates: Sequence[Aggregate], schema: pa.Schema
) -> None:
    """Validate a window aggregation against its input schema (at validate time, not mid-run)."""
    if size_ms <= 0:
        raise ConfigError(f"window size_ms={size_ms} must be > 0")
    if not aggregates:
        raise ConfigError("a window aggregation needs at least one aggregate")
    for col in (key, time, *(a.column for a in aggregates if a.column)):
        if schema.get_field_index(col) < 0:
            raise ConfigError(f"column {col!r} is not in the input (columns: {schema.names})")
    for a in aggregates:
        if a.fn not in FUNCTIONS:
            raise ConfigError(f"aggregate {a.fn!r} is not one of {list(FUNCTIONS)}")
        if a.fn != "count" and a.column is None:
            raise ConfigError(f"aggregate {a.fn!r} needs a column")
    if not pa.types.is_integer(schema.field(time).type):
        raise ConfigError(
            f"event-time column {time!r} must be an integer (ms), got {schema.field(time).type}"
        )
