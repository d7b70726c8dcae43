"""Watermarks: the event-time lower bound, made by sources and combined by consumers.

Producer side (a source, ``SourceWatermark``): the watermark is the largest
event time seen so far (in range, ``engine.timeunits``) minus the source's
``max_out_of_orderness_ms``; it only moves forward. A source whose rows come from
partitions read side by side (Kafka) names the columns that identify a partition
(``Source.partition_columns``): then each partition has its own largest event
time, and the watermark is the smallest of those of the partitions that still
have rows to read (``Source.pending_partitions()``; none pending: the largest of
all), and does not move while a pending partition has delivered no row yet. A
partition that has been read to its end does not hold the watermark back: a row
it receives later, older than the watermark, is late. Rows read but not handed
on yet (a runtime's batcher, ``partitions_in``) keep their partitions pending,
and the pending set can shrink without a new row (a partition found to be at
its end), so a runtime calls ``refresh(pending)`` while it waits for data.

Consumer side (a worker or a sink, ``Watermarks``): the watermark is the
minimum over inputs; an input that ended counts as +infinity, one that
stopped (``stop``: it resumes in a later run) holds its last watermark and
never goes idle; an input silent for longer than its idle timeout stops
holding the minimum back until it delivers a frame again (its late rows are
then late: the price of not waiting forever). ``current()`` is None while
some live input has not sent a watermark yet.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from engine.timeunits import max_event_ms

NONE = -(2**63)
DONE = 2**63 - 1


class SourceWatermark:
    """Max event time seen minus the allowed out-of-orderness (``advance`` per batch)."""

    def __init__(self, column: str | None, lag_ms: int, split: tuple[str, ...] = ()) -> None:
        self.column = column
        self.lag_ms = lag_ms
        self.max_ms: int | None = None
        self.split = split  # the columns naming a row's partition (module docstring)
        self.part_max: dict[tuple[Any, ...], int] = {}

    def advance(
        self, batch: pa.RecordBatch, pending: set[tuple[Any, ...]] | None = None
    ) -> int | None:
        """The new watermark if ``batch`` moved it, else None (``pending``: the partitions
        with rows still to read, when the source has partitions)."""
        if self.column is None or not batch.num_rows:
            return None
        if self.split and pending is not None:
            top = self._per_partition(batch, pending)
        else:
            top = max_event_ms(batch.column(self.column))
        return self._moved(top)

    def state(self) -> dict[str, Any] | None:
        """What a checkpoint keeps (JSON): the largest event time handed on (None while a
        partition holds it back), and per partition the largest read. Kept even before
        any watermark was handed on: a partition read to its end before the checkpoint
        delivers no row after it, so its largest event time is known from here only."""
        if self.column is None or (self.max_ms is None and not self.part_max):
            return None
        return {"max_ms": self.max_ms, "parts": [[list(k), v] for k, v in self.part_max.items()]}

    def restore(self, state: dict[str, Any] | None) -> int | None:
        """Back to ``state`` (from ``state()``); the watermark to hand on again, if any."""
        if not state or self.column is None:
            return None
        self.max_ms = None if state.get("max_ms") is None else int(state["max_ms"])
        self.part_max = {tuple(k): int(v) for k, v in state.get("parts", [])}
        return None if self.max_ms is None else self.max_ms - self.lag_ms

    def refresh(self, pending: set[tuple[Any, ...]]) -> int | None:
        """The new watermark if a change of ``pending`` alone moved it (no new row), else None."""
        if self.column is None or not self.split:
            return None
        return self._moved(self._low(pending))

    def partitions_in(self, batches: list[pa.RecordBatch]) -> set[tuple[Any, ...]]:
        """The partitions that have rows in ``batches``."""
        out: set[tuple[Any, ...]] = set()
        for batch in batches if self.split else ():
            parts, code = self._codes(batch)
            _, first = np.unique(code, return_index=True)  # a row of each partition
            out.update(_key_at(parts, int(row)) for row in first)
        return out

    def _moved(self, top: int | None) -> int | None:
        if top is None or (self.max_ms is not None and top <= self.max_ms):
            return None
        self.max_ms = top
        return top - self.lag_ms

    def _codes(self, batch: pa.RecordBatch) -> tuple[list[Any], np.ndarray]:
        """The split columns dictionary-encoded, and one integer per row naming its partition."""
        parts = [batch.column(c).dictionary_encode() for c in self.split]
        code = np.zeros(batch.num_rows, np.int64)
        for p in parts:
            code = code * len(p.dictionary) + p.indices.to_numpy(zero_copy_only=False)
        return parts, code

    def _per_partition(self, batch: pa.RecordBatch, pending: set[tuple[Any, ...]]) -> int | None:
        times = batch.column(self.column)
        parts, code = self._codes(batch)
        for c in np.unique(code):
            rows = np.flatnonzero(code == c)
            top = max_event_ms(times.take(rows))
            if top is not None:
                key = _key_at(parts, int(rows[0]))
                self.part_max[key] = max(top, self.part_max.get(key, top))
        return self._low(pending)

    def _low(self, pending: set[tuple[Any, ...]]) -> int | None:
        if any(k not in self.part_max for k in pending):
            return None  # a partition with rows to read has not delivered one yet
        live = [self.part_max[k] for k in pending]
        return min(live) if live else max(self.part_max.values(), default=None)


def _key_at(parts: list[Any], row: int) -> tuple[Any, ...]:
    """The partition of row ``row``, from its dictionary-encoded split columns."""
    return tuple(p.dictionary[p.indices[row].as_py()].as_py() for p in parts)


class Watermarks:
    """The minimum over a consumer's inputs (see the module docstring)."""

    def __init__(self, idle_timeout_s: list[float]) -> None:
        n = len(idle_timeout_s)
        self.marks = [NONE] * n
        self.idle_timeout = list(idle_timeout_s)  # 0 = never idle
        self.last_seen = [time.monotonic()] * n
        self.ended = [False] * n
        self.emitted = NONE  # the last watermark handed to the operators

    def seen(self, i: int) -> None:
        self.last_seen[i] = time.monotonic()

    def update(self, i: int, value: int) -> None:
        self.marks[i] = max(self.marks[i], value)

    def end(self, i: int) -> None:
        self.ended[i] = True
        self.marks[i] = DONE

    def stop(self, i: int) -> None:
        """Input ``i`` stopped for now: its watermark stays where it is (its rows resume)."""
        self.idle_timeout[i] = 0.0

    def current(self) -> int | None:
        now = time.monotonic()
        live = [
            m for i, m in enumerate(self.marks)
            if not self.ended[i]
            and not (self.idle_timeout[i] and now - self.last_seen[i] > self.idle_timeout[i])
        ]  # fmt: skip
        if not live:
            return DONE if all(self.ended) else None
        low = min(live)
        return None if low == NONE else low

    def advance(self) -> int | None:
        """The new watermark if it moved past the last one handed out, else None."""
        low = self.current()
        if low is None or low <= self.emitted or low == DONE:
            return None
        self.emitted = low
        return low
