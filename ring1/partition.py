"""Split a batch by key hash into one batch per Ring 0 worker (the shuffle).

``partition = (key * 0x9E3779B97F4A7C15 mod 2^64) >> 32 mod n``: Fibonacci
hashing spreads consecutive keys; the same key always lands on the same
worker. Vectorised: a stable radix argsort of the small partition ids, one
``take``, then zero-copy slices.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def partition_ids(keys: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (keys.astype(np.int64, copy=False).view(np.uint64) * _GOLDEN) >> np.uint64(32)
    return (h % np.uint64(n)).astype(np.uint16)


def split(batch: pa.RecordBatch, key: str, n: int) -> list[pa.RecordBatch]:
    """``n`` batches (some possibly empty); row order within each part is preserved."""
    if n == 1:
        return [batch]
    parts = partition_ids(batch.column(key).to_numpy(), n)
    order = np.argsort(parts, kind="stable")  # radix sort for uint16
    counts = np.bincount(parts, minlength=n)
    taken = batch.take(pa.array(order))
    out, start = [], 0
    for c in counts.tolist():
        out.append(taken.slice(start, c))
        start += c
    return out
