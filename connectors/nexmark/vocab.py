"""Fixed string vocabularies of the Nexmark model, and the hash it draws with.

Every string column of a Nexmark row is one ``take`` from a vocabulary built
here: small word lists from the reference generator (first and last names, US
cities and states, hot channels) and pools of random lowercase text whose
lengths follow the reference generator's rules (``nextString``: 3 to
``max - 1`` characters, about one in thirteen a space; ``nextExtra``: padding
to the average row size, ±20 %). Vocabularies are constants of the model:
they are built on first use from fixed keys, the same in every process and on
every run, independent of the stream's seed (the seed picks *which* entry).

Not guaranteed: that two rows with the same string came from the same draw —
a pool holds ``POOL`` entries, so equal strings repeat by design.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)

POOL = 8192  # entries in each random-text pool

FIRST_NAMES = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah"]
FIRST_NAMES += ["Deiter", "Walter"]
LAST_NAMES = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones"]
LAST_NAMES += ["Noris"]
US_CITIES = ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend"]
US_CITIES += ["Redmond", "Seattle", "Kent", "Cheyenne"]
US_STATES = ["AZ", "CA", "ID", "OR", "WA", "WY"]
HOT_CHANNELS = ["Google", "Facebook", "Baidu", "Apple"]
CHANNELS = 10_000  # the cold channels: "channel-<n>"


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (a bijection of 64-bit words)."""
    with np.errstate(over="ignore"):
        z = x * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def below_hi(h: np.ndarray, m: np.ndarray | int) -> np.ndarray:
    """A draw in ``[0, m)`` from the high 32 bits of ``h`` (``m`` < 2**32; multiply-shift)."""
    return ((h >> _S32) * np.asarray(m, dtype=np.uint64)) >> _S32


def below_lo(h: np.ndarray, m: int) -> np.ndarray:
    """A draw in ``[0, m)`` from the low 32 bits of ``h`` (independent of ``below_hi``)."""
    return ((h & _LOW32) * np.uint64(m)) >> _S32


def _alphabet(space: str) -> np.ndarray:
    """256-entry byte map: a uniform byte becomes a-z, or ``space`` about one time in 13."""
    table = np.frombuffer(bytes(ord("a") + k % 26 for k in range(256)), dtype=np.uint8).copy()
    if space:
        table[::13] = ord(space)
    return table


def _text(nbytes: int, key: int, space: str) -> np.ndarray:
    words = splitmix64(np.arange((nbytes + 7) // 8, dtype=np.uint64) ^ np.uint64(key))
    return _alphabet(space)[words.view(np.uint8)[:nbytes]]


def _pool(key: int, lo: int, hi: int, count: int = POOL, space: str = " ") -> pa.StringArray:
    """``count`` random strings of ``lo`` to ``hi - 1`` characters, back to back in one buffer.

    ``space`` replaces about one character in 13 (``""``: letters only).
    """
    lengths = below_hi(splitmix64(np.arange(count, dtype=np.uint64) + np.uint64(key)), hi - lo)
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(lengths.astype(np.int32) + lo, out=offsets[1:])
    data = _text(int(offsets[-1]), key * 7919 + 1, space)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))


def _join(*parts: pa.Array | str) -> pa.StringArray:
    return pc.binary_join_element_wise(*parts, "")


def extra_range(average_row: int, other_fields: int) -> tuple[int, int]:
    """The reference ``nextExtra`` rule: pad a row to ``average_row`` bytes, ±20 %."""
    want = max(average_row - other_fields, 0)
    delta = round(want * 0.2)
    return want - delta, want + max(delta, 1)


@cache
def names() -> pa.StringArray:
    """All ``first last`` names, index = first * len(LAST_NAMES) + last."""
    first = np.repeat(np.array(FIRST_NAMES), len(LAST_NAMES))
    last = np.tile(np.array(LAST_NAMES), len(FIRST_NAMES))
    return pa.array(np.char.add(np.char.add(first, " "), last).tolist(), pa.string())


@cache
def emails() -> pa.StringArray:
    """``nextString(7)@nextString(5).com`` addresses (letters only)."""
    return _join(_pool(11, 3, 7, space=""), "@", _pool(12, 3, 5, space=""), ".com")


@cache
def item_names() -> pa.StringArray:
    return _pool(21, 3, 20)


@cache
def descriptions() -> pa.StringArray:
    return _pool(22, 3, 100)


@cache
def extras(kind: str) -> pa.StringArray:
    """Padding strings; lengths from ``extra_range`` with the kind's typical other fields."""
    key, rng = {
        "person": (31, extra_range(200, 69)),
        "auction": (32, extra_range(500, 118)),
        "bid": (33, extra_range(100, 32)),
    }[kind]
    return _pool(key, rng[0], rng[1])


@cache
def cities() -> pa.StringArray:
    return pa.array(US_CITIES, pa.string())


@cache
def states() -> pa.StringArray:
    return pa.array(US_STATES, pa.string())


@cache
def channels_and_urls() -> tuple[pa.StringArray, pa.StringArray]:
    """Channel ``k`` and its URL: ``k < 4`` the hot channels, then ``channel-<n>``.

    A URL is ``https://www.nexmark.com/<a>/<b>/<c>/item.htm?query=1`` (three
    ``_``-spaced random words); a cold channel's adds ``&channel_id=<n>``.
    """
    count = len(HOT_CHANNELS) + CHANNELS
    words = [_pool(41 + k, 3, 5, count, "_") for k in range(3)]
    base = _join("https://www.nexmark.com/", words[0], "/", words[1], "/", words[2])
    base = _join(base, "/item.htm?query=1")
    n = pa.array(np.arange(CHANNELS, dtype=np.int64)).cast(pa.string())
    cold_channels = _join("channel-", n)
    cold_urls = _join(base.slice(len(HOT_CHANNELS)), "&channel_id=", n)
    channels = pa.concat_arrays([pa.array(HOT_CHANNELS, pa.string()), cold_channels])
    urls = pa.concat_arrays([base.slice(0, len(HOT_CHANNELS)), cold_urls])
    return channels, urls
