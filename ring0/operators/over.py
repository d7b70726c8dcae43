"""Aggregates over each row's last rows of its key, in event-time order (a rows "over" frame).

``RowsOver(key, time, order_by, rows, aggregates, input_schema)`` is SQL's
``agg(x) OVER (PARTITION BY key ORDER BY time, order_by ROWS BETWEEN rows - 1 PRECEDING
AND CURRENT ROW)`` over a stream (Nexmark q6: the average of each seller's last 10
closing prices). Every input row that is not dropped comes out exactly once, with one
more column per aggregate, computed over that row and the ``rows - 1`` rows of the same
key before it in (time, order_by) order — fewer at the start of a key.

Contract (one thread, the calls of ``ring0.operators.base``):

* ``process(batch)`` emits nothing. A row with ``time < watermark`` is late: dropped and
  counted (``late_rows``); a null time is dropped and counted (``null_time_rows``), a
  time outside ``engine.timeunits``' range too (``out_of_range_rows``). Other rows are
  copied and wait.
* ``on_watermark(wm)``: the waiting rows with ``time < wm`` are complete (no on-time row
  can come before them any more). They are ordered by key, then ``time``, then the
  ``order_by`` columns (ascending, nulls last), then arrival, and emitted with their
  aggregates; each key keeps its last ``rows - 1`` values as its history. A row with
  ``time == wm`` waits for a later watermark (a window closing at ``wm`` may still emit
  one). ``finish()`` emits every waiting row.
* Aggregates: ``count``, ``count(x)``, ``sum(x)``, ``avg(x)``, ``min(x)``, ``max(x)``,
  ``x`` an integer or floating-point column of the input (compute an expression in a
  ``project`` step first). Nulls are skipped; over a frame with no non-null ``x``,
  ``sum``, ``avg``, ``min``, ``max`` are null. An integer ``sum`` is exact (int64); one
  past int64's range stops the run (``DataError`` naming the aggregate). ``avg`` is a
  double (an integer sum divided by the count, as SQL engines do).
* ``snapshot``/``restore``: the waiting rows, each key's history (key columns, an order
  number, the aggregates' input values) and the watermark and counters.

State: the waiting rows (those not yet behind the watermark), plus ``rows - 1`` values
per key ever seen (a key is never forgotten: its next row still needs them). Cost: per
watermark, the ready rows times ``rows`` (frames are evaluated as ``rows``-wide strides),
plus the history of the keys they touch, found through a hash index (``KeyIndex``), never
a pass over every key. ``rows`` is at most ``MAX_ROWS`` (100,000): a frame that long is
a window's job.

Not guaranteed: the order among rows equal in key, time and ``order_by`` when they come
from different workers (arrival order): name ``order_by`` columns that make each key's
rows unique for an exactly reproducible result. The output order is by key, then frame
order, within a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, DataError, StateError
from engine.hashing import key_hash
from engine.timeunits import to_ms
from ring0.operators.aggregate_spec import AggregateSpec
from ring0.operators.base import Operator
from ring0.operators.grouping import group_by
from ring0.operators.join.common import grow
from ring0.operators.join.key_index import KeyIndex
from ring0.operators.join.tables import take_rows
from ring0.operators.keys import check_keys

FUNCTIONS = ("count", "sum", "avg", "min", "max")
_FORMAT = b"ringstream.over/1"
_BLOCK = 1 << 22  # frame cells evaluated at once (rows x frame width)
MAX_ROWS = 100_000  # a frame costs ``rows`` per row: longer ones belong in a window
_META = pa.schema(
    [("watermark", pa.int64()), ("late_rows", pa.int64()), ("null_time_rows", pa.int64()),
     ("out_of_range_rows", pa.int64())]
)  # fmt: skip


class RowsOver(Operator):
    """Per row: aggregates over it and the ``rows - 1`` rows of its key before it."""

    needs_every_row = True

    def __init__(
        self,
        key: Sequence[str],
        time: str,
        order_by: Sequence[str],
        rows: int,
        aggregates: Sequence[AggregateSpec],
        input_schema: pa.Schema,
    ) -> None:
        self.key, self.time, self.order_by = list(key), time, list(order_by)
        check_keys(self.key, input_schema)
        for col in [time, *self.order_by]:
            if input_schema.get_field_index(col) < 0:
                raise ConfigError(f"column {col!r} is not in the input ({input_schema.names})")
        t = input_schema.field(time).type
        if not (pa.types.is_integer(t) or pa.types.is_timestamp(t)):
            raise ConfigError(f"time column {time!r} must be an integer (ms) or a timestamp: {t}")
        if not isinstance(rows, int) or not 1 <= rows <= MAX_ROWS:
            raise ConfigError(f"rows={rows!r} must be an integer from 1 to {MAX_ROWS:,}")
        self.rows, self.input_schema, self.aggs = rows, input_schema, list(aggregates)
        self.values = _check_aggregates(self.aggs, input_schema)  # input columns, in order
        fields = [_output_field(a, input_schema) for a in self.aggs]
        self._out = pa.schema([*input_schema, *fields])
        self._history_schema = pa.schema(
            [*(pa.field(f"__k{i}", input_schema.field(k).type) for i, k in enumerate(self.key)),
             *(pa.field(f"__v{i}", input_schema.field(c).type) for i, c in enumerate(self.values))]
        )  # fmt: skip
        self.watermark: int | None = None
        self.late_rows = self.null_time_rows = self.out_of_range_rows = 0
        self._waiting: list[tuple[pa.Table, np.ndarray]] = []
        self._history = self._history_schema.empty_table()
        self._alive = np.empty(0, bool)  # per history row: still its key's (grows in place)
        self._alive_store: np.ndarray | None = None
        self._index = KeyIndex()

    @property
    def output_schema(self) -> pa.Schema:
        return self._out

    # -- the Operator calls ------------------------------------------------------------------

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        table = pa.Table.from_batches([batch])
        column = table.column(self.time)
        keep = np.ones(table.num_rows, bool)
        if column.null_count:
            keep = pc.is_valid(column).to_numpy(zero_copy_only=False)
            self.null_time_rows += int(table.num_rows - np.count_nonzero(keep))
        ms, ok = to_ms(pc.fill_null(column, 0) if column.null_count else column)
        if ok is not None:
            self.out_of_range_rows += int(np.count_nonzero(keep & ~ok))
            keep &= ok
        if self.watermark is not None:
            late = keep & (ms < self.watermark)
            self.late_rows += int(np.count_nonzero(late))
            keep &= ~late
        idx = np.flatnonzero(keep)
        if idx.size:
            self._waiting.append((table.take(pa.array(idx)), ms[idx]))
        return []

    def on_watermark(self, watermark: int) -> list[pa.RecordBatch]:
        if self.watermark is not None and watermark <= self.watermark:
            return []
        self.watermark = watermark
        return self._release(lambda ms: ms < watermark)

    def finish(self) -> list[pa.RecordBatch]:
        return self._release(lambda ms: np.ones(ms.size, bool))

    # -- evaluation --------------------------------------------------------------------------

    def _release(self, due) -> list[pa.RecordBatch]:  # type: ignore[no-untyped-def]
        if not self._waiting:
            return []
        table = pa.concat_tables([t for t, _ in self._waiting]).combine_chunks()
        ms = np.concatenate([m for _, m in self._waiting])
        ready = due(ms)
        rest = np.flatnonzero(~ready)
        self._waiting = [(table.take(pa.array(rest)), ms[rest])] if rest.size else []
        if not ready.any():
            return []
        table = table.take(pa.array(np.flatnonzero(ready)))
        return self._evaluate(table)

    def _evaluate(self, new: pa.Table) -> list[pa.RecordBatch]:
        order = [(c, "ascending") for c in [self.time, *self.order_by]]
        new = new.take(pc.sort_indices(new, sort_keys=order))  # nulls last: the default
        hashes = key_hash([new.column(k) for k in self.key], new.num_rows)
        _, found = self._index.find(np.unique(hashes))
        found = np.unique(found[self._alive[found]]) if found.size else found
        old = take_rows(self._history, found)  # in history order: oldest first per key
        both = pa.concat_tables([old, self._history_like(new)])
        gid = self._groups(both)
        sorted_at = np.lexsort((np.arange(both.num_rows), gid))  # stable: old, then new
        gid_s = gid[sorted_at]
        starts = np.flatnonzero(np.r_[True, gid_s[1:] != gid_s[:-1]])
        lengths = np.diff(np.r_[starts, gid_s.size])
        seg_start = np.repeat(starts, lengths)
        seg_end = np.repeat(starts + lengths, lengths)
        frames: dict[str, _Frames] = {}
        results = [self._aggregate(a, both, sorted_at, seg_start, frames) for a in self.aggs]
        is_new = sorted_at >= old.num_rows
        out_rows = sorted_at[is_new] - old.num_rows
        mask = pa.array(is_new)
        columns = [*new.take(pa.array(out_rows)).columns, *(r.filter(mask) for r in results)]
        out = pa.Table.from_arrays(columns, schema=self._out)
        self._remember(found, both, sorted_at[np.arange(gid_s.size) >= seg_end - (self.rows - 1)])
        return out.to_batches()

    def _aggregate(
        self, spec: AggregateSpec, both: pa.Table, at: np.ndarray, seg_start: np.ndarray,
        columns: dict[str, _Frames],
    ) -> pa.Array:  # fmt: skip
        if spec.column is None:  # count(*): the frame's length
            pos = np.arange(at.size)
            return pa.array(pos - np.maximum(seg_start, pos - self.rows + 1) + 1, pa.int64())
        f = columns.get(spec.column)
        if f is None:  # the aggregates of one column share its frames
            name = self._value_names()[self.values.index(spec.column)]
            f = columns[spec.column] = _Frames(both.column(name), at, seg_start, self.rows)
        count = f.get("count")
        if spec.fn == "count":
            return pa.array(count, pa.int64())
        empty = count == 0
        if spec.fn in ("sum", "avg"):
            total = f.get("sum")
            if f.overflows():
                raise DataError(f"{spec.text}: a sum over {self.rows} rows is past int64")
            if spec.fn == "avg":
                with np.errstate(invalid="ignore", divide="ignore"):
                    return pa.array(total / np.maximum(count, 1), pa.float64(), mask=empty)
            return pa.array(total, self._out.field(spec.name).type, mask=empty)
        best = pa.array(f.get(spec.fn), pa.int64() if f.is_int else pa.float64(), mask=empty)
        return best.cast(self._out.field(spec.name).type)

    # -- history: each key's last rows - 1 values --------------------------------------------

    def _value_names(self) -> list[str]:
        return [f"__v{i}" for i in range(len(self.values))]

    def _history_like(self, table: pa.Table) -> pa.Table:
        cols = [table.column(c) for c in [*self.key, *self.values]]
        return pa.Table.from_arrays(cols, schema=self._history_schema)

    def _groups(self, both: pa.Table) -> np.ndarray:
        if not self.key:
            return np.zeros(both.num_rows, np.int64)
        keys = both.select([f"__k{i}" for i in range(len(self.key))])
        gid = group_by(keys, list(keys.column_names), {}, need_gid=True)[1]
        assert gid is not None
        return gid

    def _remember(self, replaced: np.ndarray, both: pa.Table, tail: np.ndarray) -> None:
        """The history rows at ``replaced`` give way to ``both``'s rows at ``tail``."""
        self._alive[replaced] = False
        kept = both.take(pa.array(np.sort(tail))) if self.rows > 1 else both.slice(0, 0)
        base = self._history.num_rows
        self._history = pa.concat_tables([self._history, kept])
        more = np.ones(kept.num_rows, bool)
        self._alive, self._alive_store = grow(self._alive, self._alive_store, more)
        keys = [kept.column(i) for i in range(len(self.key))]
        self._index.add(key_hash(keys, kept.num_rows), base)
        dead = self._alive.size - int(np.count_nonzero(self._alive))
        if dead > max(65_536, self._alive.size // 2) or self._history.num_columns and len(
            self._history.column(0).chunks
        ) > 256:
            self._compact()

    def _compact(self) -> None:
        self._index.keep(self._alive)
        self._history = self._history.filter(pa.array(self._alive)).combine_chunks()
        self._alive = np.ones(self._history.num_rows, bool)

    # -- state -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, pa.Table]:
        self._compact()
        waiting = [t for t, _ in self._waiting]
        meta = pa.table(
            [[self.watermark], [self.late_rows], [self.null_time_rows], [self.out_of_range_rows]],
            schema=_META.with_metadata({b"format": _FORMAT}),
        )
        return {
            "waiting": pa.concat_tables(waiting) if waiting else self.input_schema.empty_table(),
            "history": self._history,
            "meta": meta,
        }

    def restore(self, state: dict[str, pa.Table]) -> None:
        if set(state) != {"waiting", "history", "meta"}:
            raise StateError(f"RowsOver state has tables {sorted(state)}, expected "
                             "['history', 'meta', 'waiting']")  # fmt: skip
        meta = state["meta"]
        if (meta.schema.metadata or {}).get(b"format") != _FORMAT or meta.num_rows != 1:
            raise StateError(f"RowsOver state 'meta' is not {_FORMAT.decode()}: {meta.schema}")
        for name, schema in (("waiting", self.input_schema), ("history", self._history_schema)):
            if not state[name].schema.equals(schema, check_metadata=False):
                raise StateError(f"RowsOver state {name!r} has schema {state[name].schema}, "
                                 f"expected {schema} (the pipeline changed?)")  # fmt: skip
        row = meta.to_pylist()[0]
        self.watermark = row["watermark"]
        self.late_rows, self.null_time_rows = row["late_rows"], row["null_time_rows"]
        self.out_of_range_rows = row["out_of_range_rows"]
        waiting = state["waiting"].combine_chunks()
        self._waiting = []
        if waiting.num_rows:
            self._waiting = [(waiting, to_ms(waiting.column(self.time))[0])]
        self._history = state["history"].combine_chunks()
        self._alive = np.ones(self._history.num_rows, bool)
        keys = [self._history.column(i) for i in range(len(self.key))]
        self._index.reset(key_hash(keys, self._history.num_rows))


class _Frames:
    """One value column in frame order, and its per-frame count, sum, min and max, each
    computed once however many aggregates ask for it."""

    def __init__(
        self, column: pa.ChunkedArray, at: np.ndarray, seg_start: np.ndarray, rows: int
    ) -> None:
        self.valid = pc.is_valid(column).to_numpy(zero_copy_only=False)[at]
        self.is_int = pa.types.is_integer(column.type)
        raw = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)[at]
        self.raw = raw.astype(np.int64 if self.is_int else np.float64)
        self.seg_start, self.rows = seg_start, rows
        self._done: dict[str, np.ndarray] = {}

    def get(self, fn: str) -> np.ndarray:
        if fn not in self._done:
            if fn == "count":
                values, fill, how = self.valid.astype(np.int64), 0, "sum"
            else:
                if fn == "sum":
                    fill = 0
                elif self.is_int:
                    fill = np.iinfo(np.int64).max if fn == "min" else np.iinfo(np.int64).min
                else:
                    fill = np.inf if fn == "min" else -np.inf
                values, how = np.where(self.valid, self.raw, fill), fn
            self._done[fn] = _frames(values, self.seg_start, self.rows, how, fill)
        return self._done[fn]

    def overflows(self) -> bool:
        """Whether an integer frame sum went past int64 (it wraps): checked in float only
        when ``rows`` times the largest magnitude could reach it."""
        if not self.is_int or self.raw.size == 0:
            return False
        magnitudes = np.abs(self.raw.astype(np.float64))
        if float(magnitudes.max()) * self.rows < 2.0**62:
            return False
        wide = np.where(self.valid, self.raw.astype(np.float64), 0.0)
        return bool(np.any(np.abs(_frames(wide, self.seg_start, self.rows, "sum", 0.0)) >= 2.0**63))


def _frames(values: np.ndarray, seg_start: np.ndarray, rows: int, fn: str, fill) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Per position ``i``: ``fn`` (sum, min, max) of ``values[max(seg_start[i], i - rows + 1)``
    to ``i``, inclusive."""
    n, pad = values.size, rows - 1
    out = np.empty(n, values.dtype)
    padded = np.concatenate([np.full(pad, fill, values.dtype), values])
    strided = np.lib.stride_tricks.sliding_window_view(padded, rows)  # [i] = values[i-pad..i]
    offsets = np.arange(rows) - pad
    step = max(1, _BLOCK // rows)
    reduce = {"sum": np.sum, "min": np.min, "max": np.max}[fn]
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        pos = np.arange(lo, hi)[:, None] + offsets
        cells = np.where(pos >= seg_start[lo:hi, None], strided[lo:hi], fill)
        out[lo:hi] = reduce(cells, axis=1)
    return out


def _check_aggregates(aggs: Sequence[AggregateSpec], schema: pa.Schema) -> list[str]:
    values: list[str] = []
    names = set(schema.names)
    for a in aggs:
        if a.fn not in FUNCTIONS:
            raise ConfigError(f"{a.text}: an over step computes {list(FUNCTIONS)}")
        if a.name in names:
            raise ConfigError(f"{a.text}: output column {a.name!r} is already a column")
        names.add(a.name)
        if a.column is None:
            continue
        if schema.get_field_index(a.column) < 0:
            raise ConfigError(
                f"{a.text}: {a.column!r} is not a column of the input ({schema.names}); "
                "compute an expression in a project step first"
            )
        t = schema.field(a.column).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise ConfigError(f"{a.text}: {a.column!r} has type {t}; it must be a number")
        if a.column not in values:
            values.append(a.column)
    if not aggs:
        raise ConfigError("aggregates: an over step needs at least one")
    return values


def _output_field(a: AggregateSpec, schema: pa.Schema) -> pa.Field:
    if a.fn == "count":
        return pa.field(a.name, pa.int64(), nullable=False)
    t = schema.field(a.column).type
    if a.fn == "avg":
        return pa.field(a.name, pa.float64())
    if a.fn == "sum":
        return pa.field(a.name, pa.int64() if pa.types.is_integer(t) else pa.float64())
    return pa.field(a.name, t)
