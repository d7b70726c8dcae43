"""Dense pane accumulators: a tumbling or hopping window's panes counted in arrays.

``DensePanes.for_slots(op)`` returns None unless the window can take this path: close
mode, panes (tumbling or hopping, not input windows), one key column, aggregates
that are counts, sums, averages, mins and maxes of non-decimal columns (no changelog
input). Then, per pane, one array per partial column indexed by ``key - low``:

* ``add(pane, table)`` adds a batch whose rows all belong to ``pane`` (``np.bincount``
  for counts and sums, ``np.minimum.at``/``np.maximum.at`` for mins and maxes) and
  returns True; it returns False, adding nothing, when the batch cannot be counted
  exactly (a key that is not an integer without nulls, a value null or NaN, a key
  range past ``MAX_CELLS``, an integer sum that float64 might round): the caller
  then takes the table path for that batch.
* ``take(pane)`` removes the pane's arrays and returns them as one partial table,
  the rows and columns ``Plan.partial`` would give for the same rows (the caller
  merges it with the pane's other partials); ``peek()`` gives every pane's table
  without removing it (for a snapshot).

The arrays grow when a later batch of the pane brings keys outside its range.
An integer sum is kept in float64 while ``sum(max|v| * rows)`` stays below 2**53,
so it is exact; past that the pane's arrays are handed over as a table first (its
sums are exact int64 from then on, merged by the table path). Float sums add batch
by batch in row order, as the table path's merges do. The W1 window step went from
13 ns to about 6 ns an event with it (``bench.w1``). ``RS_DENSE_PATH=0`` turns it off
together with ``ring0.operators.dense``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ring0.operators import dense

MAX_CELLS = 1 << 20  # keys of one pane: 8 MB an array at most (and 4 cells a row seen)
_EXACT = float(2**53)


class _Pane:
    """One pane's arrays: ``count`` and one per sum/min/max part, index ``key - low``."""

    def __init__(self, low: int, span: int, plan: list[tuple[str, str, Any]]) -> None:
        self.low, self.span, self.plan = low, span, plan
        self.count = np.zeros(span, np.int64)
        self.acc = {name: _empty(kind, dtype, span) for name, kind, dtype in plan}
        self.bound = 0.0  # sum over batches of max|v| * rows, of the integer sums
        self.rows = 0

    def grow(self, low: int, high: int) -> None:
        new_low = min(low, self.low)
        new_span = max(high, self.low + self.span - 1) - new_low + 1
        at = self.low - new_low
        count = np.zeros(new_span, np.int64)
        count[at : at + self.span] = self.count
        for name, kind, dtype in self.plan:
            grown = _empty(kind, dtype, new_span)
            grown[at : at + self.span] = self.acc[name]
            self.acc[name] = grown
        self.count, self.low, self.span = count, new_low, new_span


def _empty(kind: str, dtype: Any, span: int) -> np.ndarray:
    """An accumulator no value has touched: 0 for a sum, the type's top for a min, ..."""
    if kind == "sum":
        return np.zeros(span, np.float64)
    top = np.inf if dtype.kind == "f" else np.iinfo(dtype).max
    bottom = -np.inf if dtype.kind == "f" else np.iinfo(dtype).min
    return np.full(span, top if kind == "min" else bottom, dtype)


class DensePanes:
    def __init__(self, key: str, parts: list[Any], schema: pa.Schema, spill: Any) -> None:
        self.key, self.parts, self.schema = key, parts, schema
        self.spill = spill  # (pane, partial table): a pane handed over before it is full
        self.panes: dict[int, _Pane] = {}
        self.added = 0  # batches counted in arrays (tests, profiles)

    @classmethod
    def for_slots(cls, op: Any, schema: pa.Schema, spill: Any) -> DensePanes | None:
        plan = op.plan
        if op.emit != "close" or op.window.type == "input" or plan.weight is not None:
            return None
        if len(op.keys) != 1 or any(p.kind not in ("sum", "nn", "min", "max") for p in plan.parts):
            return None
        if any(p.kind == "sum" and not (pa.types.is_integer(p.type) or pa.types.is_floating(p.type))
               for p in plan.parts):  # fmt: skip
            return None  # decimal sums stay exact and overflow-checked in the table path
        return cls(op.keys[0], list(plan.parts), schema, spill)

    def add(self, pane: int, table: pa.Table) -> bool:
        if not dense.ENABLED:
            return False
        col = table.column(self.key)
        if col.null_count or not pa.types.is_integer(col.type) or col.type == pa.uint64():
            return False
        k = col.to_numpy().astype(np.int64, copy=False)
        n = len(k)
        low, high = int(k.min()), int(k.max())
        values: dict[str, np.ndarray] = {}
        bound = 0.0
        extremes = {p.src for p in self.parts if p.kind in ("min", "max")}
        for p in self.parts:
            c = table.column(p.src)
            if c.null_count:
                return False  # a count of non-null values, a sum skipping nulls: the table path
            if p.kind == "nn" or p.src in values:
                continue
            t = c.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t)) or t == pa.uint64():
                return False
            v = c.to_numpy()
            if v.dtype.kind == "f" and p.src in extremes and np.isnan(v).any():
                return False  # (numpy's min/max and Arrow's differ on NaN; a sum is NaN in both)
            if p.kind == "sum" and v.dtype.kind != "f":
                bound += max(abs(int(v.min())), abs(int(v.max()))) * n
            values[p.src] = v
        if bound >= _EXACT:
            return False
        s = self.panes.get(pane)
        seen = n + (s.rows if s is not None else 0)
        if s is not None:
            low, high = min(low, s.low), max(high, s.low + s.span - 1)
        if high - low + 1 > min(MAX_CELLS, max(1 << 16, 4 * seen)):
            return False  # sparse keys: the hash table is smaller
        if s is not None and s.bound + bound >= _EXACT:  # hand it over, start the pane anew
            self.spill(pane, self.take(pane))
            s = None
        if s is None:
            s = self.panes[pane] = _Pane(low, high - low + 1, self._plan(values))
        elif low < s.low or high >= s.low + s.span:
            s.grow(low, high)
        s.bound += bound
        s.rows += n
        idx = k - s.low if s.low else k
        s.count += np.bincount(idx, minlength=s.span)
        for p in self.parts:
            if p.kind == "sum":
                s.acc[p.name] += np.bincount(idx, weights=values[p.src], minlength=s.span)
            elif p.kind in ("min", "max"):
                (np.minimum if p.kind == "min" else np.maximum).at(s.acc[p.name], idx,
                                                                   values[p.src])  # fmt: skip
        self.added += 1
        return True

    def _plan(self, values: dict[str, np.ndarray]) -> list[tuple[str, str, Any]]:
        return [(p.name, p.kind, values[p.src].dtype) for p in self.parts
                if p.kind in ("sum", "min", "max")]  # fmt: skip

    def take(self, pane: int) -> pa.Table | None:
        s = self.panes.pop(pane, None)
        return None if s is None else self._table(pane, s)

    def peek(self) -> list[pa.Table]:
        return [self._table(pane, s) for pane, s in sorted(self.panes.items())]

    def _table(self, pane: int, s: _Pane) -> pa.Table:
        present = np.flatnonzero(s.count)
        n = len(present)
        cols: dict[str, Any] = {
            "__w": pa.array(np.full(n, pane, np.int64)),
            self.key: pa.array(present + s.low, self.schema.field(self.key).type),
            "__n": pa.array(s.count[present], pa.int64()),
        }
        for p in self.parts:
            if p.kind == "nn":
                cols[p.name] = cols["__n"]
            elif p.kind == "sum" and pa.types.is_integer(p.type):
                cols[p.name] = pa.array(np.rint(s.acc[p.name][present]).astype(np.int64), p.type)
            else:
                cols[p.name] = pa.array(s.acc[p.name][present]).cast(p.type, safe=False)
        return pa.table(cols).cast(self.schema)
