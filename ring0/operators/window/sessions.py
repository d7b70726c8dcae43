"""Session windows, per key: rows within ``gap_ms`` of each other form one session.

One table of open sessions (keys, ``__s`` first and ``__l`` last event time,
partials) and one of closed ones (keys, ``__l``) that later rows may not join. A
batch's rows and the open sessions of its keys are merged as intervals (a row may
join two open sessions into one).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ring0.operators.window.tables import NONE, Owner, checked


class Sessions:
    """Session windows: one table of open sessions (keys, ``__s`` first and ``__l`` last event
    time, partials) and one of closed ones (keys, ``__l``) that rows may not join."""

    def __init__(self, op: Owner) -> None:
        self.op, self.gap = op, op.window.gap_ms
        self.schema = op.partial_schema([])
        keys = [self.schema.field(k) for k in op.keys]
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
        keys, n = self.op.keys, table.num_rows
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
            out = self.op.changelog(self._results(old), self._results(merged))
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
        return self.op.result(sessions, start, pc.add(sessions.column("__l"), self.gap))

    def close(self, before: int, watermark: int) -> list[pa.RecordBatch]:
        ends = self.open.column("__l").to_numpy() + self.gap
        closing = ends + self.op.lateness <= watermark
        done = self.open.filter(pa.array(closing))
        self.open = self.open.filter(pa.array(~closing))
        keys = self.op.keys
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
        return self.op.closed([self._results(done)])

    def tables(self) -> list[str]:
        return ["sessions", "closed_sessions"]

    def snapshot(self) -> dict[str, pa.Table]:
        return {"sessions": self.open, "closed_sessions": self.closed}

    def restore(self, state: dict[str, pa.Table]) -> None:
        self.open = checked(state["sessions"], self.schema, "sessions")
        self.closed = checked(state["closed_sessions"], self.closed_schema, "closed_sessions")


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
        out[d:] = np.maximum(out[d:], np.where(same, out[:-d], NONE))
        d *= 2
    return out
