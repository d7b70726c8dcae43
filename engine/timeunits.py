"""Event time: units, milliseconds, and the range of times the engine can compute with.

Event time is a column of integers (milliseconds) or timestamps of any unit. Operators
and watermarks work in int64 milliseconds. A window end (``start + size``), a lateness
bound (``watermark - allowed``) and a unit conversion must not overflow int64, so the
engine accepts event times in ``[MIN_EVENT_MS, MAX_EVENT_MS]`` (about ±146 million
years). A row whose time is outside is *out of range*: a window or join step drops it and
counts it (``out_of_range_rows``, shown in the summary like late and null-time rows), and
it does not move the watermark. Rows that only pass through (filter, project, a sink)
keep whatever time they have.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MIN_EVENT_MS = -(2**62)
MAX_EVENT_MS = 2**62 - 1
PER_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}  # (mul, div)


def _unit(t: pa.DataType) -> tuple[int, int]:
    return PER_MS[t.unit] if pa.types.is_timestamp(t) else (1, 1)


def to_ms(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """Times as int64 ms (timestamps floored) and a mask of the rows in range (None: all).

    Nulls must have been removed. Values whose ms would fall outside
    ``[MIN_EVENT_MS, MAX_EVENT_MS]`` are flagged, never overflowed: their ms are garbage.
    """
    mul, div = _unit(values.type)
    # uint64 beyond int64 wraps to negative here, and is then out of range like any other
    raw = np.asarray(pc.cast(values, pa.int64(), safe=False).to_numpy(), dtype=np.int64)
    if len(raw) == 0:
        return raw, None
    low, high = MIN_EVENT_MS // mul, MAX_EVENT_MS // mul
    ok = None
    if values.type == pa.uint64():  # above int64's range before the cast
        ok = ~np.asarray(pc.greater(values, pa.scalar(high, pa.uint64())), dtype=bool)
    if int(raw.min()) < low or int(raw.max()) > high or ok is not None:
        ok = (raw >= low) & (raw <= high) & (True if ok is None else ok)
        if ok.all():
            ok = None
        else:
            raw = np.where(ok, raw, 0)
    if mul > 1:
        raw = raw * mul
    elif div > 1:
        raw = raw // div
    return raw, ok


def max_event_ms(column: pa.Array | pa.ChunkedArray) -> int | None:
    """The largest in-range event time of a column in ms; None if there is none (all null)."""
    mul, div = _unit(column.type)
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.int64())
    top = pc.max(column).as_py()
    if top is None:
        return None
    high = MAX_EVENT_MS // mul
    if top > high:  # hostile or broken data: the largest value that is in range
        top = pc.max(pc.filter(column, pc.less_equal(column, pa.scalar(high, column.type))))
        top = top.as_py()
        if top is None:
            return None
    if top < MIN_EVENT_MS // mul:
        return None
    return top * mul if mul > 1 else top // div
