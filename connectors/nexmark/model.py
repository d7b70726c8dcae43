"""The Nexmark event model: persons, auctions and bids as pure functions of (seed, index).

Follows the published Nexmark generator (Beam/Flink ``GeneratorConfig``), with
the changes noted; every draw is splitmix64 of ``(seed, event index, field)``,
so any split of the index range into chunks or instances gives the same rows.

* **Sequence.** Model events ``0, 1, 2, ...`` come in groups of 50 with fixed
  positions: offset 0 a person, 1-3 auctions, 4-49 bids (1 : 3 : 46). Group
  ``g`` holds events ``50 g .. 50 g + 49``.
* **Event time** of event ``i``: ``start_ms + i * 1000 // events_per_second``;
  with ``ooo_ms = d > 0`` plus a jitter uniform in ``[0, d]``. A row is then
  never more than ``d`` ms behind the largest event time before it, in the
  whole sequence or in any subsequence (one kind, one instance's chunks).
* **Person** (offset 0 of group ``g``): ``id = 1000 + g`` (the person counter);
  ``name`` "First Last" from the reference's name lists; ``email_address``
  ``xxxx@yyy.com``; ``credit_card`` 16 digits in four groups of four; ``city``
  and ``state`` from the reference's lists (independent draws); ``extra`` pads
  the row to ~200 bytes.
* **Auction** (offset ``1 + r``): ``id = 1000 + 3 g + r``. ``seller``: with
  probability 3/4 the hot seller, person ``(g // 100) * 100`` (at most 100
  groups old), else uniform over the newest 1000 persons. ``category`` =
  10 + uniform(5); ``initial_bid`` a price draw, ``reserve`` = initial_bid +
  another; ``expires`` = date_time + 1 + uniform(2 h) ms, where h is the event
  time 1666 events span (so ~100 auctions are open at a time); ``item_name``
  3-19 and ``description`` 3-99 random characters; ``extra`` pads to ~500 bytes.
* **Bid** (offsets 4-49): ``auction``: with probability 1/2 the hot auction
  ``(last // 100) * 100``, else uniform over the newest 100 auctions;
  ``bidder``: with probability 3/4 the hot bidder ``(g // 100) * 100 + 1``
  (capped at the newest person), else uniform over the newest 1000 persons;
  ``price`` a price draw; ``channel``: 9/10 one of four hot channels (Google,
  Facebook, Baidu, Apple), else ``channel-<n>`` (n < 10 000), each channel
  with its fixed ``url``; ``extra`` pads to ~100 bytes (54-81 characters).
* **Price**: ``100 * 10 ** (6 u)`` cents for ``u`` uniform in [0, 1) — $1 to
  $1M, log-uniform — from an integer table with linear interpolation, so no
  libm call decides a cent.

Changes from the reference: ids are always of persons/auctions that already
exist (the reference's lead of 10 "future" ids is dropped), so every
``bid.auction``, ``bid.bidder`` and ``auction.seller`` names an earlier event;
string columns are takes from fixed vocabularies (``vocab``), not fresh random
text per row; the inter-event delay is the constant ``1000 / events_per_second``.

Not guaranteed: event-time order when ``ooo_ms > 0``; that an auction is still
open (``expires``) when a bid on it arrives — the reference does not check it
either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from connectors.nexmark import vocab
from connectors.nexmark.vocab import below_hi, below_lo, splitmix64
from engine.errors import ConfigError

GROUP = 50
FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
CATEGORIES = 5
HOT_RATIO = 100  # a hot person/auction changes every 100 of them
ACTIVE_PERSONS = 1000
IN_FLIGHT_AUCTIONS = 100
DEFAULT_START_MS = 1_700_000_000_000
MAX_OOO_MS = 2**31

# kind -> (offset of its first event in a group, events per group)
LAYOUT: dict[str, tuple[int, int]] = {"person": (0, 1), "auction": (1, 3), "bid": (4, 46)}

_TS = pa.timestamp("ms")
SCHEMAS: dict[str, pa.Schema] = {
    "person": pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("email_address", pa.string()),
            ("credit_card", pa.string()),
            ("city", pa.string()),
            ("state", pa.string()),
            ("date_time", _TS),
            ("extra", pa.string()),
        ]
    ),
    "auction": pa.schema(
        [
            ("id", pa.int64()),
            ("item_name", pa.string()),
            ("description", pa.string()),
            ("initial_bid", pa.int64()),
            ("reserve", pa.int64()),
            ("date_time", _TS),
            ("expires", _TS),
            ("seller", pa.int64()),
            ("category", pa.int64()),
            ("extra", pa.string()),
        ]
    ),
    "bid": pa.schema(
        [
            ("auction", pa.int64()),
            ("bidder", pa.int64()),
            ("price", pa.int64()),
            ("channel", pa.string()),
            ("url", pa.string()),
            ("date_time", _TS),
            ("extra", pa.string()),
        ]
    ),
}

_PRICE_BITS = 12
_PRICE_TABLE = np.array(
    [round(100 * 10 ** (6 * j / 2**_PRICE_BITS)) for j in range(2**_PRICE_BITS + 1)],
    dtype=np.int64,
)
_JITTER_FIELD = 15


def count_before(kind: str, index: int) -> int:
    """How many events of ``kind`` the model sequence has before event ``index``."""
    first, width = LAYOUT[kind]
    groups, offset = divmod(index, GROUP)
    return groups * width + min(max(offset - first, 0), width)


def nth_index(kind: str, k: int) -> int:
    """The model index of the ``k``-th (0-based) event of ``kind``."""
    first, width = LAYOUT[kind]
    return (k // width) * GROUP + first + k % width


def indices(kind: str, start: int, stop: int) -> np.ndarray:
    """The model indices (int64, ascending) of the ``kind`` events in ``[start, stop)``."""
    first, width = LAYOUT[kind]
    k = np.arange(count_before(kind, start), count_before(kind, stop), dtype=np.int64)
    return (k // width) * GROUP + first + k % width


def _seed_key(seed: int) -> np.uint64:
    return splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]


def _draw(i: np.ndarray, key: np.uint64, field: int) -> np.ndarray:
    """64 random bits per event for one field: splitmix64((i << 4 | field) ^ key)."""
    return splitmix64(((i << np.uint64(4)) | np.uint64(field)) ^ key)


def _price(h: np.ndarray) -> np.ndarray:
    j = (h >> np.uint64(64 - _PRICE_BITS)).astype(np.int64)
    frac = ((h >> np.uint64(32)) & np.uint64(0xFFFFF)).astype(np.int64)
    low = _PRICE_TABLE[j]
    return low + (((_PRICE_TABLE[j + 1] - low) * frac) >> 20)


def _recent(h: np.ndarray, newest: np.ndarray, window: int) -> np.ndarray:
    """Uniform over the ``window`` newest base-0 ids ``<= newest`` (high bits of ``h``)."""
    count = newest + 1
    active = np.minimum(count, window)
    return count - active + below_hi(h, active.astype(np.uint64)).astype(np.int64)


def _pick(pool: pa.Array, h: np.ndarray) -> pa.Array:
    return pool.take(below_hi(h, len(pool)).astype(np.int64))


def _timestamps(ms: np.ndarray) -> pa.Array:
    return pa.array(ms, pa.int64()).view(_TS)


def _event_ms(
    i: np.ndarray, u: np.ndarray, key: np.uint64, eps: int, start_ms: int, ooo_ms: int
) -> np.ndarray:
    ms = start_ms + (i * 1000) // eps
    if ooo_ms:
        ms += below_hi(_draw(u, key, _JITTER_FIELD), ooo_ms + 1).astype(np.int64)
    return ms


def _credit_cards(h: np.ndarray) -> pa.StringArray:
    """``dddd dddd dddd dddd`` from 16 decimal digits of ``h``."""
    n = len(h)
    powers = np.uint64(10) ** np.arange(15, -1, -1, dtype=np.uint64)
    digits = ((h % np.uint64(10**16))[:, None] // powers) % np.uint64(10)
    chars = np.full((n, 19), ord(" "), dtype=np.uint8)
    columns = [c for c in range(19) if c % 5 != 4]
    chars[:, columns] = digits.astype(np.uint8) + ord("0")
    offsets = np.arange(0, 19 * n + 1, 19, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


Columns = dict[str, Callable[[], pa.Array]]  # a kind's columns, each built only when asked


class _Draws:
    """The per-field draws of a chunk's events, each computed at most once, when first read."""

    def __init__(self, u: np.ndarray, key: np.uint64) -> None:
        self.u, self.key = u, key
        self.done: dict[int, np.ndarray] = {}

    def __getitem__(self, field: int) -> np.ndarray:
        if field not in self.done:
            self.done[field] = _draw(self.u, self.key, field)
        return self.done[field]


def _persons(i: np.ndarray, h: _Draws, ms: np.ndarray, eps: int) -> Columns:
    group = i // GROUP
    return {
        "id": lambda: pa.array(FIRST_PERSON_ID + group, pa.int64()),
        "name": lambda: _pick(vocab.names(), h[0]),
        "email_address": lambda: _pick(vocab.emails(), h[1]),
        "credit_card": lambda: _credit_cards(h[2]),
        "city": lambda: vocab.cities().take(below_lo(h[0], len(vocab.US_CITIES)).astype(np.int64)),
        "state": lambda: vocab.states().take(below_lo(h[1], len(vocab.US_STATES)).astype(np.int64)),
        "date_time": lambda: _timestamps(ms),
        "extra": lambda: _pick(vocab.extras("person"), h[3]),
    }


def _auctions(i: np.ndarray, h: _Draws, ms: np.ndarray, eps: int) -> Columns:
    group = i // GROUP

    def seller() -> np.ndarray:
        hot = below_lo(h[0], 4) > 0
        return np.where(hot, (group // HOT_RATIO) * HOT_RATIO, _recent(h[0], group, ACTIVE_PERSONS))

    def expires() -> pa.Array:
        horizon_ms = (IN_FLIGHT_AUCTIONS * GROUP // 3) * 1000 // eps
        return _timestamps(ms + 1 + below_hi(h[3], max(2 * horizon_ms, 1)).astype(np.int64))

    return {
        "id": lambda: pa.array(FIRST_AUCTION_ID + group * 3 + (i % GROUP) - 1, pa.int64()),
        "item_name": lambda: _pick(vocab.item_names(), h[4]),
        "description": lambda: _pick(vocab.descriptions(), h[5]),
        "initial_bid": lambda: pa.array(_price(h[2]), pa.int64()),
        "reserve": lambda: pa.array(_price(h[2]) + _price(h[1]), pa.int64()),
        "date_time": lambda: _timestamps(ms),
        "expires": expires,
        "seller": lambda: pa.array(FIRST_PERSON_ID + seller(), pa.int64()),
        "category": lambda: pa.array(
            FIRST_CATEGORY_ID + below_lo(h[3], CATEGORIES).astype(np.int64), pa.int64()
        ),
        "extra": lambda: _pick(vocab.extras("auction"), h[6]),
    }


def _bids(i: np.ndarray, h: _Draws, ms: np.ndarray, eps: int) -> Columns:
    group = i // GROUP

    def auction() -> np.ndarray:
        last_auction = group * 3 + 2
        return np.where(
            below_lo(h[0], 2) > 0,
            (last_auction // HOT_RATIO) * HOT_RATIO,
            _recent(h[0], last_auction, IN_FLIGHT_AUCTIONS),
        )

    def bidder() -> np.ndarray:
        return np.where(
            below_lo(h[1], 4) > 0,
            np.minimum((group // HOT_RATIO) * HOT_RATIO + 1, group),
            _recent(h[1], group, ACTIVE_PERSONS),
        )

    @functools.cache
    def channel() -> np.ndarray:  # for the channel and its url
        hot = len(vocab.HOT_CHANNELS)
        return np.where(
            below_lo(h[3], 10) > 0, below_hi(h[3], hot), hot + below_hi(h[3], vocab.CHANNELS)
        ).astype(np.int64)

    return {
        "auction": lambda: pa.array(FIRST_AUCTION_ID + auction(), pa.int64()),
        "bidder": lambda: pa.array(FIRST_PERSON_ID + bidder(), pa.int64()),
        "price": lambda: pa.array(_price(h[2]), pa.int64()),
        "channel": lambda: vocab.channels_and_urls()[0].take(channel()),
        "url": lambda: vocab.channels_and_urls()[1].take(channel()),
        "date_time": lambda: _timestamps(ms),
        "extra": lambda: _pick(vocab.extras("bid"), h[4]),
    }


_BUILDERS = {"person": _persons, "auction": _auctions, "bid": _bids}


def generate_events(
    kind: str,
    seed: int,
    start: int,
    stop: int,
    events_per_second: int,
    start_ms: int = DEFAULT_START_MS,
    ooo_ms: int = 0,
    columns: Sequence[str] | None = None,
) -> pa.RecordBatch:
    """The rows of ``kind`` among model events ``[start, stop)``, in index order: every
    column, or only ``columns`` (the others are not generated; the values are the same)."""
    if kind not in LAYOUT:
        raise ConfigError(f"nexmark kind={kind!r} must be one of {sorted(LAYOUT)}")
    if not 0 <= start <= stop:
        raise ConfigError(f"nexmark event range [{start}, {stop}) must have 0 <= start <= stop")
    if events_per_second < 1:
        raise ConfigError(f"nexmark events_per_second={events_per_second} must be >= 1")
    if not 0 <= ooo_ms <= MAX_OOO_MS:
        raise ConfigError(f"nexmark max_out_of_orderness_ms={ooo_ms} must be in [0, 2**31]")
    i = indices(kind, start, stop)
    u = i.astype(np.uint64)
    key = _seed_key(seed)
    ms = _event_ms(i, u, key, events_per_second, start_ms, ooo_ms)
    built = _BUILDERS[kind](i, _Draws(u, key), ms, events_per_second)
    schema = SCHEMAS[kind] if columns is None else select(kind, columns)
    return pa.RecordBatch.from_arrays([built[f.name]() for f in schema], schema=schema)


def select(kind: str, columns: Sequence[str]) -> pa.Schema:
    """The schema of ``kind``'s ``columns``, in the order given; unknown names are refused."""
    full = SCHEMAS[kind]
    unknown = [c for c in columns if c not in full.names]
    if unknown:
        raise ConfigError(f"nexmark kind={kind!r} has no column {unknown[0]!r}; "
                          f"its columns are {full.names}")  # fmt: skip
    twice = sorted({c for c in columns if list(columns).count(c) > 1})
    if twice:
        raise ConfigError(f"nexmark columns lists {twice[0]!r} more than once")
    if not columns:
        raise ConfigError("nexmark columns is empty; leave it out for every column")
    return pa.schema([full.field(c) for c in columns])
