"""The 64-bit hash of string and binary values, by value only, vectorised (no Python per row).

``bytes_hash(array)`` of a string/binary array (any layout: plain, large, view,
fixed-size) gives one uint64 per value that depends only on the value's bytes:
the bytes as little-endian 64-bit words (the last one zero-padded), ``H =
sum(word_j * Q**j) mod 2**64``, mixed with the length by murmur3's finaliser
(``fmix``). The same value hashes alike in every batch, process and release
(``ring1.partition`` routes rows by it). Null slots get whatever their bytes
give: callers mask them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
