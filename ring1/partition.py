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


def partition_ids(keys: np.ndarray | list[np.ndarray], n: int) -> np.ndarray:
    """Worker index per row from one or several integer key columns (nulls hash as 0)."""
    cols = keys if isinstance(keys, list) else [keys]
    with np.errstate(over="ignore"):
        h = np.zeros(len(cols[0]), dtype=np.uint64)
        for col in cols:
            h = (h ^ col.astype(np.int64, copy=False).view(np.uint64)) * _GOLDEN
        h >>= np.uint64(32)
    return (h % np.uint64(n)).astype(np.uint16)


def _key_array(batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        col = col.fill_null(0)
    return col.to_numpy(zero_copy_only=False)


def split(batch: pa.RecordBatch, key: str | list[str], n: int) -> list[pa.RecordBatch]:
    """``n`` batches (some possibly empty); row order within each part is preserved."""
    if n == 1:
        return [batch]
    names = [key] if isinstance(key, str) else key
    parts = partition_ids([_key_array(batch, k) for k in names], n)
    order = np.argsort(parts, kind="stable")  # radix sort for uint16
    counts = np.bincount(parts, minlength=n)
    taken = batch.take(pa.array(order))
    out, start = [], 0
    for c in counts.tolist():
        out.append(taken.slice(start, c))
        start += c
    return out
