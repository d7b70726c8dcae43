"""Per-process counters in shared memory, read live by the coordinator.

One segment holds a slot of ``FIELDS`` int64 cells per child process. Each
child writes only its own slot (plain aligned stores, see ``engine.shm.atomics``);
the coordinator reads every slot for the progress line and the summary. Values
are monotonic counts except ``watermark`` (ms, or ``NO_WATERMARK``).
"""

from __future__ import annotations

from engine.shm import atomics
from engine.shm.segment import Segment

FIELDS = (
    "rows_in",
    "rows_out",
    "batches_in",
    "batches_out",
    "bytes_in",
    "bytes_out",
    "blocked_ns",  # time spent waiting for room in a full ring (backpressure)
    "watermark",
    "late_rows",  # rows dropped: behind the watermark
    "null_time_rows",  # rows dropped: a null event time (or join key)
    "out_of_range_rows",  # rows dropped: an event time outside engine.timeunits' range
    "dead_letter_rows",  # records a source sent to its dead-letter output
    "cpu_ns",  # CPU time of the process from Ready to its end, written then (engine.child)
    "max_rss_bytes",  # the process's peak resident memory, written at its end
)
_INDEX = {name: i for i, name in enumerate(FIELDS)}
NO_WATERMARK = -(2**63)
_SLOT = 16  # cells per slot (>= len(FIELDS))


class Counters:
    """A block of counter slots. ``create`` (coordinator) or ``attach`` (child)."""

    def __init__(self, segment: Segment, slots: int) -> None:
        self.segment = segment
        self.slots = slots
        self._cells = atomics.i64_cells(segment.data()[: slots * _SLOT * 8])

    @classmethod
    def create(cls, slots: int) -> Counters:
        capacity = 1024
        while capacity < slots * _SLOT * 8:
            capacity <<= 1
        c = cls(Segment.create(capacity), slots)
        for slot in range(slots):
            c.set(slot, "watermark", NO_WATERMARK)
        return c

    @classmethod
    def attach(cls, name: str, slots: int) -> Counters:
        return cls(Segment.attach(name), slots)

    @property
    def name(self) -> str:
        return self.segment.name

    def add(self, slot: int, field: str, amount: int) -> None:
        i = slot * _SLOT + _INDEX[field]
        self._cells[i] += amount

    def set(self, slot: int, field: str, value: int) -> None:
        self._cells[slot * _SLOT + _INDEX[field]] = value

    def get(self, slot: int, field: str) -> int:
        return int(self._cells[slot * _SLOT + _INDEX[field]])

    def snapshot(self, slot: int) -> dict[str, int]:
        return {name: self.get(slot, name) for name in FIELDS}

    def close(self) -> None:
        self._cells.release()
        self.segment.close()
