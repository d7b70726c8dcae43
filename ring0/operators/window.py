"""Keyed aggregations over event-time windows: tumbling, hopping, session and "input" windows.

The worker drives ``WindowAggregate`` as every operator (``ring0.operators.base``): ``process``
and ``on_watermark`` in any interleaving, then ``finish``; ``snapshot`` between calls;
``restore`` on a fresh instance before any other call. Times are ms (a timestamp column is
converted, flooring). Windows, half-open ``[start, end)``:

* tumbling ``[k*size, (k+1)*size)``: a row at exactly a window's end is in the next window.
* hopping ``[k*slide, k*slide + size)``: each row is in ``size/slide`` windows. State is kept
  per pane (``[k*slide, (k+1)*slide)``), never per window and row: a window is the merge of its
  panes' partials when it closes; a pane is freed when the last window that holds it closes.
* session, per key: rows whose consecutive times (in time order) differ by at most ``gap_ms``
  form one session ``[first, last + gap_ms)``. A batch's rows and the key's open sessions are
  merged as intervals, so a row may join two open sessions into one.
* input: rows already carry ``window_start``/``window_end`` (another window aggregation's
  output, e.g. per worker; int or timestamp, kept as they are); rows of the same window and
  key are merged (e.g. the global max). Event time is ``window_end``; ``time`` must name a
  column of the input but is not read (pass "window_end").

A window closes when ``watermark >= window_end + allowed_lateness_ms``. A row is late when every
window it belongs to has closed — for sessions: when ``ts + gap_ms + allowed_lateness_ms <=
watermark``, or when it would join a session that has closed (so the result always equals a
batch computation over the rows that were not late; closed sessions are remembered per key, as
the last event time, until no row can reach them). Late rows are dropped and counted
(``late_rows``); with ``keep_late`` ``take_late()`` returns them. A hopping-window row that is
late for some of its windows only counts in the others. Rows with a null time are dropped and
counted (``null_time_rows``).

emit="close": ``on_watermark`` returns one row per (window, key) of the windows it closes, in
ascending window end order; ``finish`` the same for every open window. emit="update": after
each ``process`` a changelog (``ring0.operators.changelog``) for every (window, key) the batch
touched (``_change`` int8 is the last column); session merges retract every merged session;
closing a window emits nothing and frees it.

Key columns: integers or strings, any number (``[]``: one group per window; null is a key).
Output columns: ``window_start``, ``window_end`` (int64 ms, or ``timestamp[ms]`` with the time
column's zone when it is a timestamp), the key columns, one per aggregate. The time column:
any integer type (ms) or a timestamp of any unit.

State (``snapshot``): ``meta`` (watermark and counters, one row), ``late`` (rows not yet taken
by ``take_late``), then ``slots`` (partial tables per pane or window, with their order kept so
float sums come out the same after a restore) or ``sessions`` and ``closed_sessions``.

Costs: per batch one ``group_by`` over its rows; close mode stores partials per pane and
merges them every 16 batches and on close (a hopping window merges its size/slide panes);
update mode merges into the touched windows' state (time linear in their groups; hopping
copies each pane partial to its size/slide windows); sessions also sort the batch with the
open sessions of its keys. Not guaranteed: batch boundaries, row order within a window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, StateError
from engine.timeunits import to_ms
from ring0.operators.aggregates import AggregateSpec, Plan, check_keys, key_fields, rows_table
from ring0.operators.base import Operator
from ring0.operators.changelog import CHANGE, changes, fold

_NONE = -(2**63)
_END = 2**63 - 1  # "every window": in-range times plus any size end before this
_COMPACT_AFTER = 16
MAX_DURATION_MS = 2**61  # sizes, slides, gaps, lateness: in-range times + this never overflow
TYPES = ("tumbling", "hopping", "session", "input")
_FORMAT = b"ringstream.window/1"


@dataclass(frozen=True)
class WindowSpec:
    """Which windows: tumbling(size_ms), hopping(size_ms, slide_ms), session(gap_ms), input."""

    type: str
    size_ms: int = 0
    slide_ms: int = 0
    gap_ms: int = 0

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ConfigError(f"window type {self.type!r} is not one of {list(TYPES)}")
        if self.type in ("tumbling", "hopping") and self.size_ms <= 0:
            raise ConfigError(f"{self.type} window size_ms={self.size_ms} must be > 0")
        if self.type == "hopping" and (self.slide_ms <= 0 or self.size_ms % self.slide_ms):
            raise ConfigError(
                f"hopping window size_ms={self.size_ms} must be a multiple of "
                f"slide_ms={self.slide_ms} (> 0)"
            )
        if self.type == "session" and self.gap_ms <= 0:
            raise ConfigError(f"session window gap_ms={self.gap_ms} must be > 0")
        for name in ("size_ms", "slide_ms", "gap_ms"):
            if getattr(self, name) > MAX_DURATION_MS:
                raise ConfigError(f"window {name}={getattr(self, name)} must be <= 2**61")


class WindowAggregate(Operator):
    """Aggregates per (window, key); see the module docstring for the contract."""

    def __init__(
        self,
        key: list[str],
        time: str,
        window: WindowSpec,
        aggregates: Sequence[AggregateSpec],
        input_schema: pa.Schema,
        emit: str = "close",
        allowed_lateness_ms: int = 0,
        keep_late: bool = False,
    ) -> None:
        if emit not in ("close", "update"):
            raise ConfigError(f"emit={emit!r} must be 'close' or 'update'")
        if allowed_lateness_ms < 0:
            raise ConfigError(f"allowed_lateness_ms={allowed_lateness_ms} must be >= 0")
        if allowed_lateness_ms > MAX_DURATION_MS:
            raise ConfigError(f"allowed_lateness_ms={allowed_lateness_ms} must be <= 2**61")
        self.window, self.emit, self.lateness = window, emit, allowed_lateness_ms
        self.keep_late, self.input_schema, self.time = keep_late, input_schema, time
        self.key = list(key)
        bounds = ["window_start", "window_end"] if window.type == "input" else [time]
        check_keys(self.key, input_schema)
        for col in [time, *bounds]:
            if input_schema.get_field_index(col) < 0:
                raise ConfigError(
                    f"column {col!r} is not in the input (columns: {input_schema.names})"
                )
        for col in bounds:
            t = input_schema.field(col).type
            if not (pa.types.is_integer(t) or pa.types.is_timestamp(t)):
                raise ConfigError(
                    f"event-time column {col!r} must be an integer (ms) or a timestamp, got {t}"
                )
        self.plan = Plan(aggregates, input_schema)
        if window.type == "input":
            self._bound_types = [input_schema.field(c).type for c in bounds]
        else:
            t = input_schema.field(time).type
            bt = pa.timestamp("ms", t.tz) if pa.types.is_timestamp(t) else pa.int64()
            self._bound_types = [bt, bt]
        self._time_col = bounds[-1]
        self._key_fields = key_fields(self.key, input_schema)
        self._keys = [f.name for f in self._key_fields]
        fields = [
            pa.field("window_start", self._bound_types[0]),
            pa.field("window_end", self._bound_types[1]),
            *(input_schema.field(k) for k in self.key),
            *self.plan.output_fields,
        ]
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"output column names {dup} occur twice; rename with 'as'")
        self._result_schema = pa.schema([pa.field(f.name, f.type) for f in fields])
        self._out = self._result_schema.append(CHANGE) if emit == "update" else self._result_schema
        self.watermark = _NONE
        self.late_rows = 0
        self.null_time_rows = 0
        self.out_of_range_rows = 0
        self._late: list[pa.RecordBatch] = []
        self._impl: _Slots | _Sessions = (
            _Sessions(self) if window.type == "session" else _Slots(self)
        )

    @property
    def output_schema(self) -> pa.Schema:
        return self._out

    @property
    def open_windows(self) -> int:
        """Open panes (tumbling, hopping), windows (input) or sessions."""
        return self._impl.open_count()

    # -- the Operator calls --------------------------------------------------------------------

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        cols = ["window_start", "window_end"] if self.window.type == "input" else [self.time]
        nulls = sum(batch.column(c).null_count for c in cols)
        if nulls:
            valid = pc.is_valid(batch.column(cols[0]))
            for c in cols[1:]:
                valid = pc.and_(valid, pc.is_valid(batch.column(c)))
            batch = batch.filter(valid)
            self.null_time_rows += len(valid) - batch.num_rows
        if batch.num_rows == 0:
            return []
        t, in_range = to_ms(batch.column(self._time_col))
        if in_range is not None:
            self.out_of_range_rows += int(np.count_nonzero(~in_range))
            batch, t = batch.filter(pa.array(in_range)), t[in_range]
            if batch.num_rows == 0:
                return []
        table, reach = self._impl.assign(rows_table(batch, self.key, self.plan), batch, t)
        if self.watermark != _NONE and int(reach.min()) + self.lateness <= self.watermark:
            late = reach + self.lateness <= self.watermark
            if late.any():
                self._drop(batch, late)
                keep = pa.array(~late)
                batch, table = batch.filter(keep), table.filter(keep)
                if table.num_rows == 0:
                    return []
        out, late = self._impl.process(table)
        if late is not None:
            self._drop(batch, late)
        return out

    def on_watermark(self, watermark: int) -> list[pa.RecordBatch]:
        if watermark <= self.watermark:
            return []
        before, self.watermark = self.watermark, watermark
        return self._impl.close(before, watermark)

    def finish(self) -> list[pa.RecordBatch]:
        return self._impl.finish()

    def take_late(self) -> list[pa.RecordBatch]:
        late, self._late = self._late, []
        return late

    def snapshot(self) -> dict[str, pa.Table]:
        meta = pa.table(
            {
                "watermark": [self.watermark],
                "late_rows": [self.late_rows],
                "null_time_rows": [self.null_time_rows],
                "out_of_range_rows": [self.out_of_range_rows],
            }
        ).replace_schema_metadata({"format": _FORMAT})
        late = pa.Table.from_batches(self._late, schema=self.input_schema)
        return {"meta": meta, "late": late, **self._impl.snapshot()}

    def restore(self, state: dict[str, pa.Table]) -> None:
        expected = {"meta", "late", *self._impl.tables()}
        meta = state.get("meta")
        if set(state) != expected or meta is None or meta.num_rows != 1:
            raise StateError(
                f"window state has tables {sorted(state)}, expected {sorted(expected)}"
            )
        if (meta.schema.metadata or {}).get(b"format") != _FORMAT:
            raise StateError(f"window state format {meta.schema.metadata!r} is not {_FORMAT!r}")
        row = meta.to_pylist()[0]
        self.watermark, self.late_rows = row["watermark"], row["late_rows"]
        self.null_time_rows = row["null_time_rows"]
        self.out_of_range_rows = row.get("out_of_range_rows", 0)
        self._late = _checked(state["late"], self.input_schema, "late").to_batches()
        self._impl.restore(state)

    # -- shared by the window kinds ------------------------------------------------------------

    def _drop(self, batch: pa.RecordBatch, late: np.ndarray) -> None:
        self.late_rows += int(late.sum())
        if self.keep_late:
            rows = batch.filter(pa.array(late))
            self._late.append(pa.RecordBatch.from_arrays(rows.columns, schema=self.input_schema))

    def _result(self, groups: pa.Table, start: pa.Array, end: pa.Array) -> pa.Table:
        """Output rows (without ``_change``) of merged partial rows with their window bounds
        (int64: ms, or for input windows the columns' raw values)."""
        bounds = zip(self._bound_types, (start, end), strict=True)
        arrays = [pc.cast(a, t) for t, a in bounds]
        arrays += [groups.column(k) for k in self._keys[: len(self.key)]]
        values = self.plan.finalize(groups)
        arrays += [values[f.name] for f in self.plan.output_fields]
        return pa.Table.from_arrays(arrays, schema=self._result_schema)

    def _closed(self, results: list[pa.Table]) -> list[pa.RecordBatch]:
        results = [r for r in results if r.num_rows]
        return pa.concat_tables(results).combine_chunks().to_batches() if results else []

    def _changelog(self, before: pa.Table | None, after: pa.Table) -> list[pa.RecordBatch]:
        return changes(before, after, self._out)

    def _partial_schema(self, group: list[pa.Field]) -> pa.Schema:
        return pa.schema(group + self._key_fields + self.plan.partial_fields())


def _checked(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    if not table.schema.equals(schema):
        raise StateError(
            f"window state table {name!r} has schema {table.schema}, expected {schema}"
        )
    return table


def _runs(columns: list[np.ndarray]) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of equal values in sorted columns."""
    n = len(columns[0])
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for c in columns:
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change).tolist()
    return list(zip(starts, [*starts[1:], n], strict=True))


def _split(table: pa.Table, cols: list[str]) -> list[tuple[tuple[int, ...], pa.Table]]:
    """``table`` cut into one zero-copy slice per distinct value of the int columns ``cols``."""
    if table.num_rows == 0:
        return []
    values = [table.column(c).to_numpy() for c in cols]
    if all(v.min() == v.max() for v in values):
        return [(tuple(int(v[0]) for v in values), table)]
    order = np.lexsort(values[::-1])
    table, values = table.take(pa.array(order)), [v[order] for v in values]
    return [
        (tuple(int(v[lo]) for v in values), table.slice(lo, hi - lo)) for lo, hi in _runs(values)
    ]


class _Slots:
    """Tumbling, hopping and input windows: partial tables per slot (a pane, or a window).

    Close mode: a slot is a pane (tumbling: pane = window; input: the row's window) holding a
    list of partial tables, merged every ``_COMPACT_AFTER``. Update mode: a slot is a window
    holding one merged table (hopping: a batch's pane partials are copied to their windows)."""

    def __init__(self, op: WindowAggregate) -> None:
        self.op, self.input = op, op.window.type == "input"
        self.size = op.window.size_ms
        hopping = op.window.type == "hopping"
        self.slide = op.window.slide_ms if hopping else op.window.size_ms
        self.cols = ["__w", "__e"] if self.input else ["__w"]
        self.group = self.cols + op._keys
        self.slots: dict[tuple[int, ...], list[pa.Table]] = {}
        self.schema = op._partial_schema([pa.field(c, pa.int64()) for c in self.cols])

    def open_count(self) -> int:
        return len(self.slots)

    def assign(
        self, table: pa.Table, batch: pa.RecordBatch, t: np.ndarray
    ) -> tuple[pa.Table, np.ndarray]:
        if self.input:
            for c, name in (("__w", "window_start"), ("__e", "window_end")):
                table = table.append_column(c, pc.cast(batch.column(name), pa.int64()))
            return table, t
        pane = t - t % self.slide  # numpy % floors: negative times land right too
        return table.append_column("__w", pa.array(pane)), pane + self.size

    def _end_ms(self, slot: tuple[int, ...]) -> int:
        if not self.input:
            return slot[0] + self.size
        t = self.op._bound_types[1]
        return int(to_ms(pa.array([slot[1]], t))[0][0])

    def process(self, table: pa.Table) -> tuple[list[pa.RecordBatch], None]:
        part = self.op.plan.partial(table, self.group)
        if self.op.emit == "close":
            for slot, piece in _split(part, self.cols):
                parts = self.slots.setdefault(slot, [])
                parts.append(piece)
                if len(parts) >= _COMPACT_AFTER:
                    self.slots[slot] = [self._merge(parts, self.group)]
            return [], None
        if self.slide != self.size:
            part = self._fan_out(part)
        windows = [slot for slot, _ in _split(part.select(self.cols), self.cols)]
        old = [self.slots[w][0] for w in windows if w in self.slots]
        state = pa.concat_tables(old) if old else None
        merged, before, after = fold(self.op.plan, state, part, self.group)
        for slot, piece in _split(merged, self.cols):
            self.slots[slot] = [piece]
        return self.op._changelog(self._results(before), self._results(after)), None

    def _fan_out(self, part: pa.Table) -> pa.Table:
        """Pane partials copied to each open window that holds the pane (update mode)."""
        pane = part.column("__w").to_numpy()
        copies = []
        for j in range(self.size // self.slide):
            start = pane - j * self.slide
            keep = start + self.size + self.op.lateness > self.op.watermark
            copy = part.set_column(0, "__w", pa.array(start))
            copies.append(copy if keep.all() else copy.filter(pa.array(keep)))
        return pa.concat_tables(copies)

    def _results(self, groups: pa.Table | None) -> pa.Table | None:
        if groups is None:
            return None
        start = groups.column("__w")
        end = groups.column("__e") if self.input else pc.add(start, self.size)
        return self.op._result(groups, start, end)

    def _merge(self, parts: list[pa.Table], group: list[str]) -> pa.Table:
        return self.op.plan.merge(pa.concat_tables(parts), group)[0]

    def close(self, before: int, watermark: int) -> list[pa.RecordBatch]:
        low = before - self.op.lateness if before != _NONE else _NONE
        return self._close(low, watermark - self.op.lateness)

    def finish(self) -> list[pa.RecordBatch]:
        low = self.op.watermark - self.op.lateness if self.op.watermark != _NONE else _NONE
        return self._close(low, _END)

    def _close(self, low: int, high: int) -> list[pa.RecordBatch]:
        """Emit (close mode) the windows whose end is in ``(low, high]``; free what they held."""
        if self.op.emit == "update" or self.input:
            ready = sorted((self._end_ms(s), s) for s in self.slots if self._end_ms(s) <= high)
            results = []
            for _, slot in ready:
                parts = self.slots.pop(slot)
                if self.op.emit == "close":
                    results.append(self._results(self._merge(parts, self.group)))
            return self.op._closed([r for r in results if r is not None])
        panes = sorted(s[0] for s in self.slots)
        results = []
        for start in self._window_starts(panes, low, high):
            lo, hi = np.searchsorted(panes, [start, start + self.size])
            tables = []
            for p in panes[lo:hi]:
                parts = self.slots[(p,)]
                if len(parts) > 1:
                    parts = self.slots[(p,)] = [self._merge(parts, self.group)]
                tables.append(parts[0])
            merged = self._merge(tables, self.op._keys) if len(tables) > 1 else tables[0]
            n = merged.num_rows
            starts = pa.array(np.full(n, start, dtype=np.int64))
            results.append(self.op._result(merged, starts, pc.add(starts, self.size)))
        for p in panes:
            if p + self.size <= high:
                del self.slots[(p,)]
        return self.op._closed(results)

    def _window_starts(self, panes: list[int], low: int, high: int) -> list[int]:
        """Starts of the windows with an end in ``(low, high]`` that hold one of ``panes``."""
        first = -(-(low - self.size + 1) // self.slide) * self.slide  # end > low
        last = (high - self.size) // self.slide * self.slide  # end <= high
        spans: list[list[int]] = []
        for p in panes:  # pane p is in the windows starting at p - size + slide ... p
            a, b = max(p - self.size + self.slide, first), min(p, last)
            if a > b:
                continue
            if spans and a <= spans[-1][1] + self.slide:
                spans[-1][1] = max(spans[-1][1], b)
            else:
                spans.append([a, b])
        return [s for a, b in spans for s in range(a, b + 1, self.slide)]

    def tables(self) -> list[str]:
        return ["slots"]

    def snapshot(self) -> dict[str, pa.Table]:
        tables = []
        for slot in sorted(self.slots):
            for i, part in enumerate(self.slots[slot]):
                index = pa.array(np.full(part.num_rows, i, dtype=np.int32))
                tables.append(part.append_column("__part", index))
        schema = self.schema.append(pa.field("__part", pa.int32()))
        return {"slots": pa.concat_tables(tables) if tables else schema.empty_table()}

    def restore(self, state: dict[str, pa.Table]) -> None:
        schema = self.schema.append(pa.field("__part", pa.int32()))
        table = _checked(state["slots"], schema, "slots")
        self.slots = {}
        if table.num_rows == 0:
            return
        cols = [*self.cols, "__part"]
        values = [table.column(c).to_numpy() for c in cols]
        for lo, hi in _runs(values):
            slot = tuple(int(v[lo]) for v in values[:-1])
            self.slots.setdefault(slot, []).append(table.slice(lo, hi - lo).drop_columns("__part"))


class _Sessions:
    """Session windows: one table of open sessions (keys, ``__s`` first and ``__l`` last event
    time, partials) and one of closed ones (keys, ``__l``) that rows may not join."""

    def __init__(self, op: WindowAggregate) -> None:
        self.op, self.gap = op, op.window.gap_ms
        self.schema = op._partial_schema([])
        keys = [self.schema.field(k) for k in op._keys]
        bounds = [pa.field("__s", pa.int64()), pa.field("__l", pa.int64())]
        self.schema = pa.schema(keys + bounds + list(self.schema)[len(keys) :])
        self.closed_schema = pa.schema([*keys, pa.field("__l", pa.int64())])
        self.open = self.schema.empty_table()
        self.closed = self.closed_schema.empty_table()

    def open_count(self) -> int:
        return self.open.num_rows

    def assign(
        self, table: pa.Table, batch: pa.RecordBatch, t: np.ndarray
    ) -> tuple[pa.Table, np.ndarray]:
        return table.append_column("__t", pa.array(t)), t + self.gap

    def process(self, table: pa.Table) -> tuple[list[pa.RecordBatch], np.ndarray | None]:
        """1. sort the rows with the open and closed sessions of their keys by (key, start);
        2. rows within gap of a closed session are late; 3. the rest and the open sessions
        merge where intervals [start, last + gap] overlap; 4. aggregate the rows per merged
        group and merge in the open sessions they touched."""
        keys, n = self.op._keys, table.num_rows
        cand, rest = _of_keys(self.open, table, keys)
        tomb, _ = _of_keys(self.closed, table, keys)
        t = table.column("__t").to_numpy()
        starts = np.concatenate([t, cand.column("__s").to_numpy(), tomb.column("__l").to_numpy()])
        lasts = np.concatenate([t, cand.column("__l").to_numpy(), tomb.column("__l").to_numpy()])
        kind = np.repeat(np.array([2, 1, 0], dtype=np.int8), [n, cand.num_rows, tomb.num_rows])
        items = pa.concat_tables([table.select(keys), cand.select(keys), tomb.select(keys)])
        order = _sort_items(items.combine_chunks(), starts, kind)  # 1.
        items = items.take(pa.array(order))
        kind, starts, lasts = kind[order], starts[order], lasts[order]
        first_of_key = _key_starts(items)
        keep = kind != 0
        if tomb.num_rows:  # 2.
            keep &= ~self._reach_closed(kind, starts, lasts, first_of_key)
        kept = np.flatnonzero(keep)
        item = order[kept]
        is_row = item < n
        if not is_row.any():
            return [], np.ones(n, dtype=bool)
        segment = (np.cumsum(first_of_key) - 1)[kept]  # 3.
        starts, ends = starts[kept], lasts[kept] + self.gap
        new = np.ones(len(kept), dtype=bool)
        new[1:] = (segment[1:] != segment[:-1]) | (starts[1:] > _segment_cummax(ends, segment)[:-1])
        gid = np.cumsum(new) - 1
        row_gid = np.full(n, -1, dtype=np.int64)
        row_gid[item[is_row]] = gid[is_row]
        touched = np.zeros(int(gid[-1]) + 1, dtype=bool)
        touched[gid[is_row]] = True
        sess_gid = np.full(cand.num_rows, -1, dtype=np.int64)
        sess_gid[item[~is_row] - n] = gid[~is_row]
        late = row_gid < 0  # 4.
        rows = table.filter(pa.array(~late)) if late.any() else table
        rows = rows.append_column("__g", pa.array(row_gid[~late]))
        part = self.op.plan.partial(rows, ["__g"], [("__t", "min", "__s"), ("__t", "max", "__l")])
        hit = touched[sess_gid]
        old, untouched = cand.filter(pa.array(hit)), cand.filter(pa.array(~hit))
        old_g = old.append_column("__g", pa.array(sess_gid[hit])).select(part.column_names)
        both = pa.concat_tables([part, old_g])
        merged, _ = self.op.plan.merge(both, ["__g"], [("__s", "min"), ("__l", "max")])
        merged_keys = items.take(pa.array(kept[new])).take(merged.column("__g"))
        for k in keys:
            merged = merged.append_column(k, merged_keys.column(k))
        merged = merged.select(self.schema.names)
        self.open = pa.concat_tables([rest, untouched, merged])
        out = []
        if self.op.emit == "update":
            out = self.op._changelog(self._results(old), self._results(merged))
        return out, (late if late.any() else None)

    def _reach_closed(
        self, kind: np.ndarray, starts: np.ndarray, lasts: np.ndarray, first_of_key: np.ndarray
    ) -> np.ndarray:
        """Rows (kind 2) within gap of the closed session (kind 0) sorted before them in their
        key, if any (it is the key's latest closed session: every row not late is after it)."""
        pos = np.arange(len(kind))
        closed_at = np.maximum.accumulate(np.where(kind == 0, pos, -1))
        key_at = np.maximum.accumulate(np.where(first_of_key, pos, 0))
        reach = lasts[np.maximum(closed_at, 0)] + self.gap
        return (kind == 2) & (closed_at >= key_at) & (starts <= reach)

    def _results(self, sessions: pa.Table) -> pa.Table:
        start = sessions.column("__s")
        return self.op._result(sessions, start, pc.add(sessions.column("__l"), self.gap))

    def close(self, before: int, watermark: int) -> list[pa.RecordBatch]:
        ends = self.open.column("__l").to_numpy() + self.gap
        closing = ends + self.op.lateness <= watermark
        done = self.open.filter(pa.array(closing))
        self.open = self.open.filter(pa.array(~closing))
        keys = self.op._keys
        closed = pa.concat_tables([self.closed, done.select(self.closed_schema.names)])
        if done.num_rows:
            closed = closed.group_by(keys, use_threads=False).aggregate([("__l", "max")])
            closed = closed.rename_columns([c.removesuffix("_max") for c in closed.column_names])
            closed = closed.select(self.closed_schema.names)
        # A closed session is reachable while a row with ts > watermark - gap - lateness
        # could be within gap of its last event.
        reachable = closed.column("__l").to_numpy() + 2 * self.gap + self.op.lateness > watermark
        self.closed = closed.filter(pa.array(reachable))
        return self._emit(done)

    def finish(self) -> list[pa.RecordBatch]:
        done, self.open = self.open, self.schema.empty_table()
        return self._emit(done)

    def _emit(self, done: pa.Table) -> list[pa.RecordBatch]:
        if self.op.emit == "update" or done.num_rows == 0:
            return []
        done = done.sort_by([("__l", "ascending")])  # end = last + gap
        return self.op._closed([self._results(done)])

    def tables(self) -> list[str]:
        return ["sessions", "closed_sessions"]

    def snapshot(self) -> dict[str, pa.Table]:
        return {"sessions": self.open, "closed_sessions": self.closed}

    def restore(self, state: dict[str, pa.Table]) -> None:
        self.open = _checked(state["sessions"], self.schema, "sessions")
        self.closed = _checked(state["closed_sessions"], self.closed_schema, "closed_sessions")


def _of_keys(state: pa.Table, table: pa.Table, keys: list[str]) -> tuple[pa.Table, pa.Table]:
    """``state`` split into rows whose (single) key occurs in ``table`` and the rest."""
    if state.num_rows == 0 or len(keys) > 1:
        return state, state.slice(0, 0)
    hit = pc.is_in(state.column(keys[0]), value_set=pc.unique(table.column(keys[0])))
    return state.filter(hit), state.filter(pc.invert(hit))


def _key_starts(items: pa.Table) -> np.ndarray:
    """True where a row's key columns differ from the previous row's (nulls equal nulls)."""
    n = items.num_rows
    first = np.zeros(n, dtype=bool)
    if n:
        first[0] = True
    for col in items.columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if col.null_count == 0 and pa.types.is_integer(col.type):
            v = col.to_numpy()
            first[1:] |= v[1:] != v[:-1]
            continue
        a, b = col.slice(1), col.slice(0, n - 1)
        differ = pc.fill_null(pc.not_equal(a, b), False).to_numpy(zero_copy_only=False)
        nulls = col.is_null().to_numpy(zero_copy_only=False)
        first[1:] |= differ | (nulls[1:] != nulls[:-1])
    return first


def _sort_items(keys: pa.Table, starts: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Order of items by (key columns, start, kind); ties in all three are in any order."""
    col = keys.column(0)
    if keys.num_columns == 1 and pa.types.is_integer(col.type) and col.null_count == 0:
        k = np.asarray(col.to_numpy(), dtype=np.int64)
        k_lo, s_lo = int(k.min()), int(starts.min())
        k_span, s_span = int(k.max()) - k_lo + 1, int(starts.max()) - s_lo + 1
        if k_span * s_span * 3 < 2**62:  # one int64 sort key
            return np.argsort((k - k_lo) * (s_span * 3) + (starts - s_lo) * 3 + kind)
    table = keys.append_column("__s", pa.array(starts)).append_column("__kind", pa.array(kind))
    sort_keys = [(name, "ascending") for name in table.column_names]
    return np.asarray(pc.sort_indices(table, sort_keys=sort_keys).to_numpy())


def _segment_cummax(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting where ``segment`` (sorted) changes."""
    if len(values) == 0:
        return values
    lo, span = int(values.min()), int(values.max()) - int(values.min()) + 1
    if span * (int(segment[-1]) + 1) < 2**62:  # lift each segment above the ones before
        lifted = (values - lo) + segment * span
        return np.maximum.accumulate(lifted) - segment * span + lo
    out = values.copy()
    d = 1
    while d < len(out):
        same = segment[d:] == segment[:-d]
        out[d:] = np.maximum(out[d:], np.where(same, out[:-d], _NONE))
        d *= 2
    return out
