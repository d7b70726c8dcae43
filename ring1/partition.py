"""Split a batch by key hash into one batch per Ring 0 worker (the shuffle), for any key type.

Contract: ``partition_ids(columns, n)`` gives each row a worker in ``[0, n)``
that depends only on the row's key *values* — not on the batch, the process,
the run, the Arrow width or layout of the column — so the same key reaches the
same worker in every source process, after every restart and recovery. Equal
keys of different integer widths (an ``int32`` join key against an ``int64``
one), ``string`` and ``large_string``, ``binary`` and its variants, plain and
dictionary-encoded columns all hash alike. Null keys all meet in one worker
(integer-like nulls hash as 0, others as one fixed value). Vectorised: no Python per row.

The hash of one column, per type (``column_hash``):

* integers of every width, booleans, timestamps, dates, times, durations: the
  value as an int64 — the same function the engine has always used for
  integer keys (Fibonacci hashing, ``(h ^ v) * 0x9E3779B97F4A7C15`` per column,
  then the high 32 bits), so checkpoints taken before keep their layout;
* floats: the float64 bit pattern, with -0.0 as 0.0 and one NaN;
* decimals: the 64-bit words of the value, mixed;
* strings and binaries (``engine.hashing``): a polynomial over the bytes, mod 2^64, computed with
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
import pyarrow.compute as pc

from engine.errors import ConfigError
from engine.hashing import GOLDEN, bytes_hash, fmix
from engine.typenames import KEY_TYPES, is_key_type

_NULL = np.uint64(0x5BD1E9955BD1E995)


def _int64(arr: pa.Array) -> np.ndarray:
    """The values as int64 (nulls filled), for the integer-like types."""
    t = arr.type
    if pa.types.is_boolean(t):
        arr = arr.cast(pa.int8())
    elif pa.types.is_temporal(t):
        arr = arr.view(pa.int64()) if t.bit_width == 64 else arr.view(pa.int32())
    elif pa.types.is_unsigned_integer(t) and t.bit_width == 64:
        return arr.fill_null(0).to_numpy(zero_copy_only=False).view(np.int64)
    if arr.null_count:
        arr = arr.fill_null(0)
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _decimal_hash(arr: pa.Array) -> np.ndarray:
    words = arr.type.byte_width // 8
    raw = np.frombuffer(arr.buffers()[1], np.uint64)
    raw = raw[arr.offset * words : (arr.offset + len(arr)) * words].reshape(-1, words)
    h = np.zeros(len(arr), np.uint64)
    with np.errstate(over="ignore"):
        for w in range(words):
            h = fmix((h ^ raw[:, w]) * GOLDEN)
    return h


def _float_hash(arr: pa.Array) -> np.ndarray:
    v = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).copy()
    v[v == 0.0] = 0.0  # -0.0 == 0.0
    v[np.isnan(v)] = np.nan  # one NaN
    return fmix(v.view(np.uint64).copy())


def is_integer_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_temporal(t)
        and not pa.types.is_interval(t)
    )


def check_key_type(t: pa.DataType, where: str) -> None:
    """Raise ConfigError unless rows can be partitioned by a column of type ``t``."""
    if not is_key_type(t):
        raise ConfigError(
            f"{where}: cannot partition by a column of type {t} (keys are {KEY_TYPES})"
        )


def column_hash(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The per-row uint64 hash of one key column (integer-like: the value itself)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_dictionary(t) and is_integer_like(t.value_type):
        return column_hash(arr.cast(t.value_type))
    if pa.types.is_dictionary(t):
        values = column_hash(arr.dictionary)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.intp)
        h = values[idx] if len(values) else np.zeros(len(arr), np.uint64)
    elif is_integer_like(t):  # nulls as 0, as the integer path always did
        return _int64(arr).view(np.uint64)
    elif pa.types.is_floating(t):
        h = _float_hash(arr)
    elif pa.types.is_decimal(t):
        h = _decimal_hash(arr)
    elif pa.types.is_null(t):
        h = np.full(len(arr), _NULL, np.uint64)
    elif is_key_type(t):  # strings and binaries of every layout
        h = bytes_hash(arr)
    else:
        check_key_type(t, "key column")
        raise AssertionError(t)  # pragma: no cover (check_key_type raised)
    return _nulls(arr, h)


def _nulls(arr: pa.Array, h: np.ndarray) -> np.ndarray:
    if arr.null_count and not pa.types.is_null(arr.type):
        h = h.copy() if not h.flags.writeable else h
        h[np.asarray(pc.is_null(arr))] = _NULL
    return h


def partition_ids(keys: np.ndarray | list[np.ndarray] | list[pa.Array], n: int) -> np.ndarray:
    """Worker index (uint16) per row from one or several key columns (numpy or Arrow)."""
    cols = keys if isinstance(keys, list) else [keys]
    with np.errstate(over="ignore"):
        h = None
        for col in cols:
            if isinstance(col, np.ndarray):  # integers, as numpy (the historical entry point)
                v = col.astype(np.int64, copy=False).view(np.uint64)
            else:
                v = column_hash(col)
            h = v * GOLDEN if h is None else (h ^ v) * GOLDEN  # (0 ^ v) == v: one pass less
        assert h is not None
        h >>= np.uint64(32)
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
