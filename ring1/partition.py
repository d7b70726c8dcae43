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
import pyarrow.compute as pc

from engine.errors import ConfigError
from engine.typenames import KEY_TYPES, is_key_type

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(0x100000001B3)  # FNV's 64-bit prime: the polynomial's base (Q)
_NULL = np.uint64(0x5BD1E9955BD1E995)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_SEED = np.uint64(0x2545F4914F6CDD1D)
_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(9)], np.uint64)  # the first r bytes
_QPOW = np.ones(1, np.uint64)  # _PRIME ** j mod 2^64 (j: a word's place in its string)


def _fmix(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(33)
        h *= _M1
        h ^= h >> np.uint64(33)
        h *= _M2
        h ^= h >> np.uint64(33)
    return h


def _bytes_hash(arr: pa.Array) -> np.ndarray:
    """Hash of each value of a string/binary array (nulls: whatever; masked later).

    The value: the string's bytes as little-endian 64-bit words (the last one
    zero-padded), ``H = sum(word_j * Q**j) mod 2**64``, mixed with the length
    by ``_fmix``. Three ways to compute the same H — one length (strided
    views of the buffer), short strings (one pass per word position), long ones (one term per
    word, prefix sums) — so a value hashes alike whatever its batch holds.
    """
    if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)
            or pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)):
        arr = arr.cast(pa.large_binary())  # views, fixed-size binary  # fmt: skip
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    bufs = arr.buffers()
    raw = np.frombuffer(bufs[1], np.int64 if wide else np.int32)
    raw = raw[arr.offset : arr.offset + len(arr) + 1]
    first, last = int(raw[0]), int(raw[-1])
    data = np.frombuffer(bufs[2], np.uint8)[first:last] if bufs[2] is not None and last > first \
        else np.zeros(0, np.uint8)  # fmt: skip
    lengths = np.diff(raw)
    n, longest = len(arr), int(lengths.max(initial=0))
    words = (longest + 7) // 8
    q = _qpow(words)
    with np.errstate(over="ignore"):
        if n and longest and int(lengths.min()) == longest:  # one length: strided loads
            h = _fixed_words(data, n, longest, words, q)
            h ^= np.uint64(longest) * _GOLDEN + _SEED  # the length term, one constant
            return _fmix(h)
        elif longest <= 64:  # short strings: one pass per word position
            starts, lengths = raw[:-1].astype(np.int64) - first, lengths.astype(np.int64)
            flat, m = _shifted(data)
            h = np.zeros(n, np.uint64)
            for j in range(words):
                pos = starts + 8 * j
                word = flat.take((pos & 7) * m + np.minimum(pos >> 3, m - 1))
                h += (word & _MASKS.take(np.clip(lengths - 8 * j, 0, 8))) * q[j]
        else:  # long strings: one term per word, then sums per string
            starts, lengths = raw[:-1].astype(np.int64) - first, lengths.astype(np.int64)
            flat, m = _shifted(data)
            count = (lengths + 7) // 8
            first_word = np.concatenate([[0], np.cumsum(count)])
            sid = np.repeat(np.arange(n), count)
            j = np.arange(int(first_word[-1])) - first_word[sid]
            pos = starts[sid] + 8 * j
            word = flat.take((pos & 7) * m + np.minimum(pos >> 3, m - 1))
            terms = (word & _MASKS.take(np.clip(lengths[sid] - 8 * j, 0, 8))) * q[j]
            sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])
            h = sums[first_word[1:]] - sums[first_word[:-1]]
        h ^= lengths.astype(np.uint64) * _GOLDEN + _SEED
    return _fmix(h)


def _fixed_words(data: np.ndarray, n: int, size: int, words: int, q: np.ndarray) -> np.ndarray:
    """H of ``n`` values of ``size`` bytes each, back to back in ``data``: word ``j`` of every
    value is one strided, unaligned view of the buffer (no copy); only the last rows, whose
    last word would read past the end, go through a small zero-padded copy."""
    h = np.zeros(n, np.uint64)
    safe = max(0, min(n, (len(data) - 8 * words) // size + 1))  # rows read wholly in bounds
    tail = np.zeros((n - safe) * size + 8 * words, np.uint8)
    tail[: (n - safe) * size] = data[safe * size :]
    for j in range(words):
        mask = _MASKS[min(8, size - 8 * j)]
        for rows, buf, out in ((safe, data, h[:safe]), (n - safe, tail, h[safe:])):
            if rows:
                word = np.ndarray((rows,), np.uint64, buf, offset=8 * j, strides=(size,))
                word = word & mask
                word *= q[j]
                out += word
    return h


def _shifted(data: np.ndarray) -> tuple[np.ndarray, int]:
    """The bytes as 64-bit words starting at every offset mod 8, flattened: the word at
    byte ``p`` is ``flat[(p & 7) * m + (p >> 3)]`` (an unaligned load, vectorised)."""
    padded = np.zeros(len(data) + 16, np.uint8)
    padded[: len(data)] = data
    m = len(padded) // 8 - 1
    out = np.empty((8, m), np.uint64)
    for s in range(8):
        out[s] = np.frombuffer(padded.data, np.uint64, count=m, offset=s)
    return out.ravel(), m


def _qpow(n: int) -> np.ndarray:
    """``Q ** j mod 2**64`` for j < n."""
    global _QPOW
    if len(_QPOW) < n:
        with np.errstate(over="ignore"):
            grown = np.cumprod(np.full(max(n, 2 * len(_QPOW)), _PRIME, np.uint64))
        _QPOW = np.concatenate([np.ones(1, np.uint64), grown[:-1]])
    return _QPOW


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
            h = _fmix((h ^ raw[:, w]) * _GOLDEN)
    return h


def _float_hash(arr: pa.Array) -> np.ndarray:
    v = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).copy()
    v[v == 0.0] = 0.0  # -0.0 == 0.0
    v[np.isnan(v)] = np.nan  # one NaN
    return _fmix(v.view(np.uint64).copy())


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


def column_hash(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, bool]:
    """(per-row uint64 hash, whether it is the integer path's raw int64 value)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_dictionary(t) and is_integer_like(t.value_type):
        return column_hash(arr.cast(t.value_type))
    if pa.types.is_dictionary(t):
        values, _ = column_hash(arr.dictionary)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.intp)
        h = values[idx] if len(values) else np.zeros(len(arr), np.uint64)
    elif is_integer_like(t):  # nulls as 0, as the integer path always did
        return _int64(arr).view(np.uint64), True
    elif pa.types.is_floating(t):
        h = _float_hash(arr)
    elif pa.types.is_decimal(t):
        h = _decimal_hash(arr)
    elif pa.types.is_null(t):
        h = np.full(len(arr), _NULL, np.uint64)
    elif is_key_type(t):  # strings and binaries of every layout
        h = _bytes_hash(arr)
    else:
        check_key_type(t, "key column")
        raise AssertionError(t)  # pragma: no cover (check_key_type raised)
    return _nulls(arr, h), False


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
                v, _ = column_hash(col)
            h = v * _GOLDEN if h is None else (h ^ v) * _GOLDEN  # (0 ^ v) == v: one pass less
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
