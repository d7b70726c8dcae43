"""Dense pane accumulators: a tumbling or hopping window's panes counted in arrays.

``DensePanes.for_slots(op, schema)`` returns None unless the window can take this
path: close mode, panes (tumbling or hopping, not input windows), one key column,
aggregates that are counts, sums, averages, mins and maxes of non-decimal columns
(no changelog input). Then, per pane, one array per partial column indexed by
``key - low``:

* ``add(pane, table, seed)`` adds the rows of a batch that belong to ``pane``
  (``np.bincount`` for counts and sums, ``np.minimum.at``/``np.maximum.at`` for
  mins and maxes) and returns True; it returns False, changing nothing, when the
  rows cannot be counted exactly (a key that is not an integer without nulls, a
  null value, a NaN where a min or max reads it, keys too sparse for arrays, an
  integer sum that float64 might round), and the caller takes the table path.
  A pane whose slot already holds partial tables is first loaded from ``seed()``
  (the slot's tables merged; the caller then drops them): a pane's sums are always
  added in the order its batches arrived, as the table path adds them, so float
  sums come out bit for bit the same.
* ``take(pane)`` removes the pane's arrays and returns them as one partial table,
  the rows and columns ``Plan.partial`` gives (the caller puts it after the
  slot's tables: when the window closes, and before a batch of the pane takes the
  table path); ``peek()`` gives every ``(pane, table)`` without removing it (a snapshot).

Limits: a pane's key range is at most ``4 * rows + 1024`` cells (the rows it
counted) and all open panes together at most ``MAX_CELLS``. An integer sum stays
in float64 while ``max|seed| + sum(max|v| * rows)`` is below 2**53, so it is exact.
``RS_DENSE_PATH=0`` turns the path off together with ``ring0.operators.dense``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ring0.operators import dense

MAX_CELLS = 1 << 22  # all open panes together: 32 MB an array kind at most
_EXACT = float(2**53)


class _Pane:
    """One pane's arrays: ``count`` and one per sum/min/max part, index ``key - low``."""

    def __init__(self, low: int, span: int, plan: list[tuple[str, str, Any]]) -> None:
        self.low, self.span, self.plan = low, span, plan
        self.count = np.zeros(span, np.int64)
        self.acc = {name: _empty(kind, dtype, span) for name, kind, dtype in plan}
        self.bound = 0.0  # a bound on the magnitude of every integer sum
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


def _fits(low: int, high: int, rows: int) -> bool:
    return high - low + 1 <= 4 * rows + 1024


class DensePanes:
    def __init__(self, key: str, parts: list[Any], schema: pa.Schema) -> None:
        self.key, self.parts, self.schema = key, parts, schema
        self.panes: dict[int, _Pane] = {}
        self.unseedable: set[int] = set()  # panes whose tables do not fit arrays
        self.added = 0  # batches counted in arrays (tests, profiles)
        self.plan = [(p.name, p.kind, np.dtype(_numpy_type(p, schema))) for p in parts
                     if p.kind in ("sum", "min", "max")]  # fmt: skip

    @classmethod
    def for_slots(cls, op: Any, schema: pa.Schema) -> DensePanes | None:
        plan = op.plan
        if op.emit != "close" or op.window.type == "input" or plan.weight is not None:
            return None
        if len(op.keys) != 1 or any(p.kind not in ("sum", "nn", "min", "max") for p in plan.parts):
            return None
        for p in plan.parts:
            t = p.type
            if p.kind != "nn" and not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                return None  # decimal sums stay exact and overflow-checked in the table path
            if t == pa.uint64() or pa.types.is_float16(t):
                return None
        return cls(op.keys[0], list(plan.parts), schema)

    def cells(self) -> int:
        return sum(s.span for s in self.panes.values())

    def add(self, pane: int, table: pa.Table, seed: Callable[[], pa.Table] | None) -> bool:
        if not dense.ENABLED or table.num_rows == 0:
            return False
        col = table.column(self.key)
        if col.null_count or not pa.types.is_integer(col.type) or col.type == pa.uint64():
            return False
        k = col.to_numpy().astype(np.int64, copy=False)
        n = len(k)
        low, high = int(k.min()), int(k.max())
        values: dict[str, np.ndarray] = {}
        for p in self.parts:
            c = table.column(p.src)
            if c.null_count:
                return False  # a count of non-null values, a sum skipping nulls: the table path
            if p.kind != "nn" and p.src not in values:
                values[p.src] = c.to_numpy()
        bound = 0.0
        for p in self.parts:
            v = values.get(p.src)
            if v is None:
                continue
            if v.dtype.kind == "f" and p.kind in ("min", "max") and np.isnan(v).any():
                return False  # (numpy's min/max and Arrow's differ on NaN; a sum is NaN in both)
            if p.kind == "sum" and v.dtype.kind != "f":
                bound += dense.magnitude(v) * n
        s = self.panes.get(pane)
        fresh = s is None
        if fresh and seed is not None:
            if pane in self.unseedable:
                return False
            s = self._seeded(seed(), low, high, n)
            if s is None:
                self.unseedable.add(pane)  # (not merged again for every batch)
                return False
        if s is not None:
            low, high = min(low, s.low), max(high, s.low + s.span - 1)
        old = 0 if fresh or s is None else s.span
        rows = n + (s.rows if s is not None else 0)
        if not _fits(low, high, rows) or self.cells() - old + high - low + 1 > MAX_CELLS:
            return False
        if (s.bound if s is not None else 0.0) + bound >= _EXACT:
            return False
        if s is None:
            s = _Pane(low, high - low + 1, self.plan)
        elif low < s.low or high >= s.low + s.span:
            s.grow(low, high)
        if fresh:
            self.panes[pane] = s
        s.bound += bound
        s.rows += n
        idx = k - s.low if s.low else k
        s.count += np.bincount(idx, minlength=s.span)
        with np.errstate(all="ignore"):  # (a float sum may reach inf, as Arrow's does)
            for p in self.parts:
                if p.kind == "sum":
                    s.acc[p.name] += np.bincount(idx, weights=values[p.src], minlength=s.span)
                elif p.kind in ("min", "max"):
                    fn = np.minimum if p.kind == "min" else np.maximum
                    fn.at(s.acc[p.name], idx, values[p.src])
        self.added += 1
        return True

    def _seeded(self, merged: pa.Table, low: int, high: int, n: int) -> _Pane | None:
        """A pane (not registered) loaded from the slot's partial tables merged (one row a
        key), or None when they do not fit arrays exactly."""
        k = merged.column(self.key)
        if k.null_count or merged.num_rows == 0:
            return None
        keys = k.to_numpy().astype(np.int64, copy=False)
        count = merged.column("__n").to_numpy()
        lo, hi = int(keys.min()), int(keys.max())
        if not _fits(min(low, lo), max(high, hi), int(count.sum()) + n):
            return None
        if self.cells() + max(high, hi) - min(low, lo) + 1 > MAX_CELLS:
            return None
        s = _Pane(lo, hi - lo + 1, self.plan)
        idx = keys - s.low
        s.count[idx] = count
        s.rows = int(count.sum())
        for p in self.parts:
            col = merged.column(p.name)
            if col.null_count:
                return None
            v = col.to_numpy()
            if p.kind == "nn":
                if not np.array_equal(v, count):
                    return None  # some values were null: counted apart from the rows
                continue
            if p.kind in ("min", "max") and v.dtype.kind == "f" and np.isnan(v).any():
                return None  # (a group of NaN only: numpy would keep it, Arrow skip it)
            if p.kind == "sum" and v.dtype.kind != "f":
                big = float(dense.magnitude(v))
                if big >= _EXACT:
                    return None
                s.bound = max(s.bound, big)
            s.acc[p.name][idx] = v
        return s

    def forget(self) -> None:
        self.panes, self.unseedable = {}, set()

    def take(self, pane: int) -> pa.Table | None:
        self.unseedable.discard(pane)
        s = self.panes.pop(pane, None)
        return None if s is None else self._table(pane, s)

    def peek(self) -> list[tuple[int, pa.Table]]:
        return [(pane, self._table(pane, s)) for pane, s in sorted(self.panes.items())]

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


def _numpy_type(p: Any, schema: pa.Schema) -> Any:
    return np.float64 if p.kind == "sum" else p.type.to_pandas_dtype()
