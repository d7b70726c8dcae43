"""A bounded (or unbounded) synthetic event generator: ts, key, value.

Event ``i`` is a pure function of ``(seed, i)``, so any split of the index range
into batches or parallel instances yields the same events, and a replay from
an offset yields the same rows again:

* ``ts``    int64, event time in ms: ``start_ms + i * 1000 // events_per_second``
  (events are in event-time order; ``events_per_second`` is event-time density,
  not a rate limit)
* ``key``   int64 in ``[0, keys)``: splitmix64(seed, i) mod keys
* ``value`` float64 in ``[0, 1)``: from a second splitmix64 draw

Parallel instances stride over batches: instance ``j`` of ``n`` produces
batches ``j, j + n, j + 2n, ...`` of ``batch_rows`` events each, so each
instance's event time only grows. Generation is vectorised (numpy uint64).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.errors import ConfigError

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64())])
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def generate(
    seed: int, start: int, stop: int, keys: int, events_per_second: int, start_ms: int = 0
) -> pa.RecordBatch:
    """Events ``[start, stop)`` of the stream ``seed`` as one batch."""
    i = np.arange(start, stop, dtype=np.uint64)
    with np.errstate(over="ignore"):
        a = _splitmix64(i ^ np.uint64(seed * 2 + 1))
        b = _splitmix64(i + np.uint64(seed) * _M1)
    ts = start_ms + (i.astype(np.int64) * 1000) // events_per_second
    key = (a % np.uint64(keys)).astype(np.int64)
    value = (b >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return pa.RecordBatch.from_arrays([pa.array(ts), pa.array(key), pa.array(value)], schema=SCHEMA)


class GeneratorSource:
    """One instance of the generator; ``offset`` is the next batch index it will produce."""

    def __init__(
        self,
        events: int,
        keys: int,
        batch_rows: int,
        seed: int = 1,
        events_per_second: int = 1_000_000,
        instance: int = 0,
        instances: int = 1,
    ) -> None:
        for name, value in (
            ("keys", keys),
            ("batch_rows", batch_rows),
            ("events_per_second", events_per_second),
            ("instances", instances),
        ):
            if value < 1:
                raise ConfigError(f"generator {name}={value} must be >= 1")
        if events < 0:
            raise ConfigError(f"generator events={events} must be >= 0 (0 = unbounded)")
        self.events = events  # 0 = unbounded
        self.keys = keys
        self.batch_rows = batch_rows
        self.seed = seed
        self.events_per_second = events_per_second
        self.instance = instance
        self.instances = instances
        self.offset = instance  # batch index

    def schema(self) -> pa.Schema:
        return SCHEMA

    def poll_batch(self) -> pa.RecordBatch | None:
        """The next batch, or None once a bounded generator is exhausted."""
        start = self.offset * self.batch_rows
        stop = start + self.batch_rows
        if self.events:
            if start >= self.events:
                return None
            stop = min(stop, self.events)
        self.offset += self.instances
        return generate(self.seed, start, stop, self.keys, self.events_per_second)
