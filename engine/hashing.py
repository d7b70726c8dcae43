"""64-bit hashes of key values, by value only, vectorised (no Python per row).

``column_hash(column)`` hashes one key column of any key type (``ring1.partition``
documents the rule per type and routes rows by it; ``ring0`` operators index keys by
it). Strings and binaries:

``bytes_hash(array)`` of a string/binary array (any layout: plain, large, view,
fixed-size) gives one uint64 per value that depends only on the value's bytes:
the bytes as little-endian 64-bit words (the last one zero-padded), ``H =
sum(word_j * Q**j) mod 2**64``, mixed with the length by murmur3's finaliser
(``fmix``). The same value hashes alike in every batch, process and release
(``ring1.partition`` routes rows by it). Null slots get whatever their bytes
give: callers mask them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError
from engine.typenames import KEY_TYPES, is_key_type

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(0x100000001B3)  # FNV's 64-bit prime: the polynomial's base (Q)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_SEED = np.uint64(0x2545F4914F6CDD1D)
_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(9)], np.uint64)  # the first r bytes
_QPOW = np.ones(1, np.uint64)  # _PRIME ** j mod 2^64 (j: a word's place in its string)


def fmix(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(33)
        h *= _M1
        h ^= h >> np.uint64(33)
        h *= _M2
        h ^= h >> np.uint64(33)
    return h


def bytes_hash(arr: pa.Array) -> np.ndarray:
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
            h ^= np.uint64(longest) * GOLDEN + _SEED  # the length term, one constant
            return fmix(h)
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
        h ^= lengths.astype(np.uint64) * GOLDEN + _SEED
    return fmix(h)


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
        raise ConfigError(f"a key column of type {t} cannot be hashed (keys are {KEY_TYPES})")
    return _nulls(arr, h)


def key_hash(columns: Sequence[np.ndarray | pa.Array | pa.ChunkedArray], rows: int) -> np.ndarray:
    """The uint64 hash of each row's key: the columns' ``column_hash`` combined in order
    (``(h ^ v) * GOLDEN``), so ``(a, b)`` and ``(b, a)`` differ; ``rows`` zeros for no
    column. A numpy column holds integers (the historical entry point)."""
    h = None
    with np.errstate(over="ignore"):
        for col in columns:
            if isinstance(col, np.ndarray):
                v = col.astype(np.int64, copy=False).view(np.uint64)
            else:
                v = column_hash(col)
            h = v * GOLDEN if h is None else (h ^ v) * GOLDEN  # (0 ^ v) == v: one pass less
    return np.zeros(rows, np.uint64) if h is None else h


def _nulls(arr: pa.Array, h: np.ndarray) -> np.ndarray:
    if arr.null_count and not pa.types.is_null(arr.type):
        h = h.copy() if not h.flags.writeable else h
        h[np.asarray(pc.is_null(arr))] = _NULL
    return h
