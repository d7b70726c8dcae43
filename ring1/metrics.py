"""Counters of one connector: records, bytes, errors, retries, polls, poll/write latency.

``ConnectorMetrics`` is plain Python state updated once per poll or write
(never per row). Poll latency goes into a fixed array of power-of-two
buckets: bucket ``i`` holds latencies in ``(2**(i-1), 2**i]`` microseconds
(bucket 0: up to 1 µs; the last bucket also takes everything longer), so
``p50``/``p99`` are upper bounds accurate to a factor of two, at a constant
cost and size. ``as_dict()`` gives the flat dict of numbers that
``Source.metrics``/``Sink.metrics`` return and the runtime publishes.

Not guaranteed: exact quantiles; thread safety (one connector thread).
"""

from __future__ import annotations

import math

import numpy as np

BUCKETS = 28  # up to 2**27 µs ≈ 134 s; longer polls land in the last bucket
BOUNDS_S = np.array([2.0**i / 1e6 for i in range(BUCKETS)])  # upper bound of each bucket


class ConnectorMetrics:
    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0
        self.errors = 0
        self.retries = 0
        self.polls = 0
        self.empty_polls = 0
        self.last_offset: int | None = None
        self.latency_counts = np.zeros(BUCKETS, dtype=np.int64)

    def record_poll(
        self, latency_s: float, rows: int = 0, nbytes: int = 0, offset: int | None = None
    ) -> None:
        """One poll that took ``latency_s`` and returned ``rows`` rows (0: nothing)."""
        self.polls += 1
        if rows:
            self.records += rows
            self.bytes += nbytes
        else:
            self.empty_polls += 1
        if offset is not None:
            self.last_offset = offset
        self.latency_counts[bucket(latency_s)] += 1

    def record_write(self, rows: int, nbytes: int, latency_s: float | None = None) -> None:
        """One write of ``rows`` rows (a sink); its latency joins the same histogram."""
        self.records += rows
        self.bytes += nbytes
        if latency_s is not None:
            self.latency_counts[bucket(latency_s)] += 1

    def record_error(self) -> None:
        self.errors += 1

    def record_retry(self) -> None:
        self.retries += 1

    def latency_quantile(self, q: float) -> float:
        """Upper bound (seconds) of the bucket holding quantile ``q`` of poll latency; 0 if none."""
        total = int(self.latency_counts.sum())
        if total == 0:
            return 0.0
        rank = max(1, math.ceil(q * total))
        i = int(np.searchsorted(np.cumsum(self.latency_counts), rank))
        return float(BOUNDS_S[min(i, BUCKETS - 1)])

    def as_dict(self) -> dict[str, float]:
        out = {
            "records": float(self.records),
            "bytes": float(self.bytes),
            "errors": float(self.errors),
            "retries": float(self.retries),
            "polls": float(self.polls),
            "empty_polls": float(self.empty_polls),
            "poll_latency_p50_s": self.latency_quantile(0.50),
            "poll_latency_p99_s": self.latency_quantile(0.99),
        }
        if self.last_offset is not None:
            out["last_offset"] = float(self.last_offset)
        return out


def bucket(latency_s: float) -> int:
    """The histogram bucket of one latency: ``ceil(log2(µs))``, clipped to the array."""
    us = latency_s * 1e6
    if us <= 1.0:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log2(us)))
