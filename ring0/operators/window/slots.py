"""Tumbling, hopping and input windows: partial aggregates per slot (pane or window).

A slot is a pane ``[k*slide, (k+1)*slide)`` (tumbling: slide = size) or, for input
windows, a ``(window_start, window_end)`` pair. Close mode keeps a list of partial
tables per slot (merged every ``COMPACT_AFTER`` batches and on close: a hopping window
merges its size/slide panes); update mode keeps one merged table per window and emits
a changelog per batch.

Input windows in close mode are the exception: they can be as many as the rows (one
window per auction, from its opening to its expiry), so they share one slot, ``()``: a
list of partial tables of every open window, merged every ``COMPACT_AFTER`` batches; a
close merges the list once and emits every window whose end has passed, in one table.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.timeunits import to_ms
from ring0.operators.changelog import fold
from ring0.operators.window.dense_panes import DensePanes
from ring0.operators.window.tables import COMPACT_AFTER, END, NONE, Owner, checked, runs, split_by


class Slots:
    """Tumbling, hopping and input windows: partial tables per slot (a pane, or a window).

    Close mode: a slot is a pane (tumbling: pane = window; input: the row's window) holding a
    list of partial tables, merged every ``COMPACT_AFTER``. Update mode: a slot is a window
    holding one merged table (hopping: a batch's pane partials are copied to their windows)."""

    def __init__(self, op: Owner) -> None:
        self.op, self.input = op, op.window.type == "input"
        self.size = op.window.size_ms
        hopping = op.window.type == "hopping"
        self.slide = op.window.slide_ms if hopping else op.window.size_ms
        self.cols = ["__w", "__e"] if self.input else ["__w"]
        self.group = self.cols + op.keys
        self.slots: dict[tuple[int, ...], list[pa.Table]] = {}
        self.schema = op.partial_schema([pa.field(c, pa.int64()) for c in self.cols])
        self.dense = DensePanes.for_slots(op, self.schema)
        self.pane: int | None = None  # the one pane of the batch ``assign`` saw, if one
        self.mixed = self.input and op.emit == "close"  # every window in the one slot ()

    def open_count(self) -> int:
        if self.mixed:
            parts = [p.select(self.cols) for p in self.slots.get((), [])]
            if not parts:
                return 0
            return pa.concat_tables(parts).group_by(self.cols).aggregate([]).num_rows
        return len(set(self.slots) | {(p,) for p in (self.dense.panes if self.dense else ())})

    def _spill(self, pane: int) -> None:
        """A dense pane's arrays handed over as the slot's last partial table."""
        part = self.dense.take(pane) if self.dense is not None else None
        if part is not None and part.num_rows:
            self.slots.setdefault((pane,), []).append(part)

    def _dense_add(self, pane: int, table: pa.Table) -> bool:
        """``table``'s rows (all of ``pane``) into the pane's arrays; a pane whose slot holds
        tables is loaded from them first (then they go), so sums keep their order."""
        assert self.dense is not None
        held = self.slots.get((pane,)) if pane not in self.dense.panes else None

        def seed() -> pa.Table:
            assert held is not None
            return self._merge(held, self.group) if len(held) > 1 else held[0]

        if not self.dense.add(pane, table, seed if held else None):
            return False
        if held:
            del self.slots[(pane,)]
        return True

    def _dense(self, table: pa.Table) -> pa.Table | None:
        """What of ``table`` the arrays did not take (None: all of it was taken)."""
        if self.pane is not None:
            return None if self._dense_add(self.pane, table) else table
        panes = table.column("__w").to_numpy()
        starts = np.unique(panes)
        if len(starts) > 4:  # (a batch over many panes: the table path)
            return table
        rest = []
        for p in starts.tolist():
            part = table.filter(pa.array(panes == p))  # rows keep their order
            if not self._dense_add(p, part):
                rest.append(part)
        return pa.concat_tables(rest) if rest else None

    def assign(
        self, table: pa.Table, batch: pa.RecordBatch, t: np.ndarray
    ) -> tuple[pa.Table, np.ndarray]:
        if self.input:
            for c, name in (("__w", "window_start"), ("__e", "window_end")):
                table = table.append_column(c, pc.cast(batch.column(name), pa.int64()))
            return table, t
        first, last = int(t.min()), int(t.max())
        self.pane = None
        if first // self.slide == last // self.slide:  # one pane (most batches): no division
            start = self.pane = first - first % self.slide
            pane = np.full(len(t), start, np.int64)
            return table.append_column("__w", pa.array(pane)), np.full(len(t), start + self.size)
        pane = t - t % self.slide  # numpy % floors: negative times land right too
        return table.append_column("__w", pa.array(pane)), pane + self.size

    def _end_ms(self, slot: tuple[int, ...]) -> int:
        if not self.input:
            return slot[0] + self.size
        t = self.op.bound_types[1]
        return int(to_ms(pa.array([slot[1]], t))[0][0])

    def process(self, table: pa.Table) -> tuple[list[pa.RecordBatch], None]:
        if self.dense is not None:
            left = self._dense(table)  # close mode: the rows of panes counted in arrays
            if left is None:
                return [], None
            table = left
        part = self.op.plan.partial(table, self.group)
        if self.mixed:
            parts = self.slots.setdefault((), [])
            parts.append(part)
            if len(parts) >= COMPACT_AFTER:
                self.slots[()] = [self._merge(parts, self.group)]
            return [], None
        if self.op.emit == "close":
            for slot, piece in split_by(part, self.cols):
                self._spill(slot[0])  # (the arrays hold this pane's earlier rows)
                parts = self.slots.setdefault(slot, [])
                parts.append(piece)
                if len(parts) >= COMPACT_AFTER:
                    self.slots[slot] = [self._merge(parts, self.group)]
            return [], None
        if self.slide != self.size:
            part = self._fan_out(part)
        windows = [slot for slot, _ in split_by(part.select(self.cols), self.cols)]
        old = [self.slots[w][0] for w in windows if w in self.slots]
        state = pa.concat_tables(old) if old else None
        merged, before, after = fold(self.op.plan, state, part, self.group)
        for slot, piece in split_by(merged, self.cols):
            self.slots[slot] = [piece]
        return self.op.changelog(self._results(before), self._results(after)), None

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
        return self.op.result(groups, start, end)

    def _merge(self, parts: list[pa.Table], group: list[str]) -> pa.Table:
        return self.op.plan.merge(pa.concat_tables(parts), group)[0]

    def close(self, before: int, watermark: int) -> list[pa.RecordBatch]:
        low = before - self.op.lateness if before != NONE else NONE
        return self._close(low, watermark - self.op.lateness)

    def finish(self) -> list[pa.RecordBatch]:
        low = self.op.watermark - self.op.lateness if self.op.watermark != NONE else NONE
        return self._close(low, END)

    def _close(self, low: int, high: int) -> list[pa.RecordBatch]:
        """Emit (close mode) the windows whose end is in ``(low, high]``; free what they held."""
        if self.mixed:
            return self._close_input(high)
        if self.op.emit == "update" or self.input:
            ready = sorted((self._end_ms(s), s) for s in self.slots if self._end_ms(s) <= high)
            results = []
            for _, slot in ready:
                parts = self.slots.pop(slot)
                if self.op.emit == "close":
                    results.append(self._results(self._merge(parts, self.group)))
            return self.op.closed([r for r in results if r is not None])
        for p in [p for p in (self.dense.panes if self.dense else ()) if p + self.slide <= high]:
            self._spill(p)  # in a window that closes now
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
            merged = self._merge(tables, self.op.keys) if len(tables) > 1 else tables[0]
            n = merged.num_rows
            starts = pa.array(np.full(n, start, dtype=np.int64))
            results.append(self.op.result(merged, starts, pc.add(starts, self.size)))
        for p in panes:
            if p + self.size <= high:
                del self.slots[(p,)]
                if self.dense is not None:
                    self.dense.unseedable.discard(p)
        return self.op.closed(results)

    def _close_input(self, high: int) -> list[pa.RecordBatch]:
        """Input windows, close mode: emit every window whose end is at most ``high``."""
        parts = self.slots.get(())
        if not parts:
            return []
        merged = self._merge(parts, self.group) if len(parts) > 1 else parts[0]
        ends = pc.cast(merged.column("__e"), self.op.bound_types[1])
        due = to_ms(ends)[0] <= high
        rest = merged.filter(pa.array(~due)) if due.any() else merged
        if rest.num_rows:
            self.slots[()] = [rest]
        else:
            del self.slots[()]
        if not due.any():
            return []
        return self.op.closed([self._results(merged.filter(pa.array(due)))])

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
        slots = {k: list(v) for k, v in self.slots.items()}
        for pane, part in self.dense.peek() if self.dense else ():  # arrays, saved as tables
            slots.setdefault((pane,), []).append(part)
        for slot in sorted(slots):
            for i, part in enumerate(slots[slot]):
                index = pa.array(np.full(part.num_rows, i, dtype=np.int32))
                tables.append(part.append_column("__part", index))
        schema = self.schema.append(pa.field("__part", pa.int32()))
        return {"slots": pa.concat_tables(tables) if tables else schema.empty_table()}

    def restore(self, state: dict[str, pa.Table]) -> None:
        schema = self.schema.append(pa.field("__part", pa.int32()))
        table = checked(state["slots"], schema, "slots")
        self.slots = {}
        if self.dense is not None:
            self.dense.forget()
        if table.num_rows == 0:
            return
        cols = [*self.cols, "__part"]
        if self.mixed:  # one slot: its parts in order (the windows of each are mixed)
            for lo, hi in runs([table.column("__part").to_numpy()]):
                self.slots.setdefault((), []).append(
                    table.slice(lo, hi - lo).drop_columns("__part")
                )
            return
        values = [table.column(c).to_numpy() for c in cols]
        for lo, hi in runs(values):
            slot = tuple(int(v[lo]) for v in values[:-1])
            self.slots.setdefault(slot, []).append(table.slice(lo, hi - lo).drop_columns("__part"))


