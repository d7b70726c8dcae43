"""Split a batch by key hash into one batch per Ring 0 worker (the shuffle), for any key type.

Contract: ``partition_ids(columns, n)`` gives each row a worker in ``[0, n)``
that depends only on the row's key *values* — not on the batch, the process,
the run, the Arrow width or layout of the column — so the same key reaches the
same worker in every source process, after every restart and recovery. Equal
keys of different integer widths (an ``int32`` join key against an ``int64``
one), ``string`` and ``large_string``, ``binary`` and its variants, plain and
dictionary-encoded columns all hash alike. Null keys all meet in one worker
(integer-like nulls hash as 0, others as one fixed value). Vectorised: no Python per row.

The hash of one column, per type (``engine.hashing.column_hash``):

* integers of every width, booleans, timestamps, dates, times, durations: the
  value as an int64 — the same function the engine has always used for
  integer keys (Fibonacci hashing, ``(h ^ v) * 0x9E3779B97F4A7C15`` per column,
  then the high 32 bits), so checkpoints taken before keep their layout;
* floats: the float64 bit pattern, with -0.0 as 0.0 and one NaN;
* decimals: the 64-bit words of the value, mixed;
* strings and binaries: a polynomial over the bytes, mod 2^64, computed with
  prefix sums over the data buffer, then mixed with the length (murmur3's
  finaliser);
* dictionary-encoded columns: the hash of each dictionary value, taken by index.

Several key columns combine in order, so ``(a, b)`` and ``(b, a)`` differ.
``split`` then groups the rows by worker with a stable radix argsort, one
``take``, and zero-copy slices. Not guaranteed: any particular worker for a
key, or balance for adversarial keys; the spread of real keys is measured in
``bench.pipeline`` (max/mean rows per worker).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.errors import ConfigError
from engine.hashing import key_hash
from engine.typenames import KEY_TYPES, is_key_type


def check_key_type(t: pa.DataType, where: str) -> None:
    """Raise ConfigError unless rows can be partitioned by a column of type ``t``."""
    if not is_key_type(t):
        raise ConfigError(
            f"{where}: cannot partition by a column of type {t} (keys are {KEY_TYPES})"
        )


def partition_ids(keys: np.ndarray | list[np.ndarray] | list[pa.Array], n: int) -> np.ndarray:
    """Worker index (uint16) per row from one or several key columns (numpy or Arrow)."""
    cols = keys if isinstance(keys, list) else [keys]
    h = key_hash(cols, len(cols[0])) >> np.uint64(32)
    return (h % np.uint64(n)).astype(np.uint16)


def split(batch: pa.RecordBatch, key: str | list[str], n: int) -> list[pa.RecordBatch]:
    """``n`` batches (some possibly empty); row order within each part is preserved."""
    if n == 1:
        return [batch]
    names = [key] if isinstance(key, str) else key
    parts = partition_ids([batch.column(k) for k in names], n)
    order = np.argsort(parts, kind="stable")  # radix sort for uint16
    counts = np.bincount(parts, minlength=n)
    taken = batch.take(pa.array(order))
    out, start = [], 0
    for c in counts.tolist():
        out.append(taken.slice(start, c))
        start += c
    return out
