"""A sorted index of one join side's buffered key hashes: buffer positions by hash.

Contract. Rows join the end of the side's buffer, so ``add(hashes, base)`` gives the
hashes of positions ``base, base + 1, ...``; ``keep(mask)`` removes the positions where
``mask`` is false and renumbers the rest in order (as the buffer does); ``find(hashes)``
returns every (probe row, buffered position) pair with equal hashes. Equal hashes need
not be equal keys: the caller compares keys when hashes can collide.

Cost. The index has three parts: ``main`` and ``tail``, sorted, and ``pending``, the rows
added since they were last indexed, unsorted.

* ``add`` only appends to ``pending``: a side that receives many rows between two probes
  (bids between two batches of auctions) pays nothing to index them.
* ``find`` with ``p`` probes looks ``pending`` up the other way round when it holds at
  least ``p`` rows: the probes are sorted and each pending hash is searched among them,
  about ``pending x log p``. Once those look-ups have cost as much as indexing the
  pending rows would (sorting them, ``pending x log pending``, and merging them into the
  tail) — a side probed often while it grows — or when fewer rows are pending than
  probed, they are sorted into the tail, which is merged into main once it holds more
  than ``sqrt(main rows x rows added)`` (at least ``TAIL_MIN``): a batch of ``b`` on
  ``n`` indexed rows then moves about ``2 sqrt(n b)`` entries, not ``n``.
* The sorted parts are searched by their distinct hashes (one ``searchsorted`` per probe
  into the distinct values, not two into every entry: a side where one key repeats, a hot
  auction, is searched in its number of keys).
* ``keep`` is linear in the buffer (the caller trims in steps, not per batch).

Not guaranteed: the order of the pairs ``find`` returns.
"""

from __future__ import annotations

import math

import numpy as np

TAIL_MIN = 16_384

_NO_HASHES = np.empty(0, np.uint64)
_NO_POSITIONS = np.empty(0, np.int64)


class _Sorted:
    """Hashes sorted (equal ones in position order) with their positions, and the distinct
    hashes with the first entry and the count of each (computed when first searched)."""

    def __init__(self, hashes: np.ndarray = _NO_HASHES, positions: np.ndarray = _NO_POSITIONS):
        self.hashes, self.positions = hashes, positions
        self._distinct: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def size(self) -> int:
        return int(self.hashes.size)

    def merged(self, hashes: np.ndarray, positions: np.ndarray) -> _Sorted:
        """This part with sorted ``hashes`` (and their positions) merged in, after equal ones."""
        at = np.searchsorted(self.hashes, hashes, side="right")
        return _Sorted(np.insert(self.hashes, at, hashes), np.insert(self.positions, at, positions))

    def find(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self.hashes.size == 0:
            return None
        if self._distinct is None:
            new = np.empty(self.hashes.size, bool)
            new[0] = True
            np.not_equal(self.hashes[1:], self.hashes[:-1], out=new[1:])
            first = np.flatnonzero(new)
            counts = np.diff(np.append(first, self.hashes.size))
            self._distinct = (self.hashes[first], first, counts)
        values, first, counts = self._distinct
        at = np.searchsorted(values, probes)
        np.minimum(at, values.size - 1, out=at)
        count = np.where(values[at] == probes, counts[at], 0)
        pairs = _runs(first[at], count)
        return None if pairs is None else (pairs[0], self.positions[pairs[1]])


class KeyIndex:
    """Buffer positions by key hash: sorted ``main`` and ``tail``, unsorted ``pending``."""

    def __init__(self) -> None:
        self.main = self.tail = _Sorted()
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._scanned = 0.0  # cost of the reverse look-ups since the pending rows were indexed

    def __len__(self) -> int:
        return self.main.size + self.tail.size + self._pending_rows

    def reset(self, hashes: np.ndarray) -> None:
        """The index of a whole buffer (positions ``0 .. len(hashes) - 1``)."""
        order = np.argsort(hashes, kind="stable").astype(np.int64)
        self.main, self.tail = _Sorted(hashes[order], order), _Sorted()
        self._pending, self._pending_rows, self._scanned = [], 0, 0.0

    def add(self, hashes: np.ndarray, base: int) -> None:
        """Rows at positions ``base ..`` (after every position already indexed)."""
        if hashes.size:
            positions = np.arange(base, base + hashes.size, dtype=np.int64)
            self._pending.append((hashes, positions))
            self._pending_rows += hashes.size

    def keep(self, mask: np.ndarray) -> None:
        """Only the positions where ``mask`` (one per buffered row) is true, renumbered."""
        if mask.all():
            return
        renumber = np.cumsum(mask) - 1
        parts = []
        for part in (self.main, self.tail):
            kept = mask[part.positions]
            parts.append(_Sorted(part.hashes[kept], renumber[part.positions[kept]]))
        self.main, self.tail = parts
        if self._pending_rows:
            hashes, positions = self._pending_arrays()
            kept = mask[positions]
            self._pending = [(hashes[kept], renumber[positions[kept]])]
            self._pending_rows = int(np.count_nonzero(kept))

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probe row, buffered position) of every pair with equal hashes."""
        found = []
        pending = self._pending_rows
        if pending:
            index_cost = pending * math.log2(pending + 1) + self.tail.size
            if pending < hashes.size or self._scanned >= index_cost:
                self._index_pending()
            else:
                self._scanned += pending * math.log2(hashes.size + 1)
                found.append(self._reverse(hashes))
        found += [part.find(hashes) for part in (self.main, self.tail)]
        found = [f for f in found if f is not None]
        if not found:
            return _NO_POSITIONS, _NO_POSITIONS
        if len(found) == 1:
            return found[0]
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def _pending_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._pending) > 1:
            hashes = np.concatenate([h for h, _ in self._pending])
            positions = np.concatenate([p for _, p in self._pending])
            self._pending = [(hashes, positions)]
        return self._pending[0]

    def _reverse(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Pairs with the pending rows, found by searching each of them among the probes."""
        hashes, positions = self._pending_arrays()
        order = np.argsort(probes, kind="stable")
        ordered = probes[order]
        lo = np.searchsorted(ordered, hashes, side="left")
        pairs = _runs(lo, np.searchsorted(ordered, hashes, side="right") - lo)
        return None if pairs is None else (order[pairs[1]].astype(np.int64), positions[pairs[0]])

    def _index_pending(self) -> None:
        """Sort the pending rows into the tail (and the tail into main when it is long)."""
        hashes, positions = self._pending_arrays()
        added = hashes.size
        order = np.argsort(hashes, kind="stable")
        self.tail = self.tail.merged(hashes[order], positions[order])
        self._pending, self._pending_rows, self._scanned = [], 0, 0.0
        limit = max(TAIL_MIN, math.isqrt(self.main.size * max(added, 1)))
        if self.tail.size > limit:
            self.main = self.main.merged(self.tail.hashes, self.tail.positions)
            self.tail = _Sorted()


def _runs(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Run ``i`` is ``count[i]`` consecutive indices from ``start[i]``: (the run of each
    index, the indices), all runs in order; None when every run is empty."""
    total = int(count.sum())
    if total == 0:
        return None
    owner = np.repeat(np.arange(count.size, dtype=np.int64), count)
    offset = np.repeat(start - (np.cumsum(count) - count), count)
    return owner, offset + np.arange(total, dtype=np.int64)
