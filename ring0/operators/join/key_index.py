"""A sorted index of one join side's buffered key hashes: buffer positions by hash.

Contract. Rows join the end of the side's buffer, so ``add(hashes, base)`` gives the
hashes of positions ``base, base + 1, ...``; ``keep(mask)`` removes the positions where
``mask`` is false and renumbers the rest in order (as the buffer does); ``find(hashes)``
returns every (probe row, buffered position) pair with equal hashes. Equal hashes need
not be equal keys: the caller compares keys when hashes can collide.

Cost. The index has two sorted parts, ``main`` and a ``tail`` of recent rows. A batch
is merged into the tail; the tail is merged into main once it holds more than
``sqrt(main rows x batch rows)`` rows (at least ``TAIL_MIN``). A batch of ``b`` rows on a
buffer of ``n`` then moves about ``2 sqrt(n b)`` entries, not ``n`` as one sorted array
would (800 K buffered rows, 4 K-row batches: about 7x fewer). ``find`` searches both
parts; ``keep`` is linear in the buffer (the caller trims in steps, not per batch).

Not guaranteed: the order of the pairs ``find`` returns.
"""

from __future__ import annotations

import math

import numpy as np

TAIL_MIN = 16_384

_NO_HASHES = np.empty(0, np.uint64)
_NO_POSITIONS = np.empty(0, np.int64)


class KeyIndex:
    """Buffer positions sorted by key hash, in a main part and a small tail."""

    def __init__(self) -> None:
        self.main = (_NO_HASHES, _NO_POSITIONS)
        self.tail = (_NO_HASHES, _NO_POSITIONS)

    def __len__(self) -> int:
        return self.main[0].size + self.tail[0].size

    def reset(self, hashes: np.ndarray) -> None:
        """The index of a whole buffer (positions ``0 .. len(hashes) - 1``)."""
        order = np.argsort(hashes, kind="stable").astype(np.int64)
        self.main = (hashes[order], order)
        self.tail = (_NO_HASHES, _NO_POSITIONS)

    def add(self, hashes: np.ndarray, base: int) -> None:
        """Rows at positions ``base ..`` (after every position already indexed)."""
        order = np.argsort(hashes, kind="stable")
        tail = _merge(self.tail, hashes[order], order.astype(np.int64) + base)
        limit = max(TAIL_MIN, math.isqrt(self.main[0].size * max(hashes.size, 1)))
        if tail[0].size > limit:
            self.main, self.tail = _merge(self.main, *tail), (_NO_HASHES, _NO_POSITIONS)
        else:
            self.tail = tail

    def keep(self, mask: np.ndarray) -> None:
        """Only the positions where ``mask`` (one per buffered row) is true, renumbered."""
        if mask.all():
            return
        renumber = np.cumsum(mask) - 1
        parts = []
        for hashes, positions in (self.main, self.tail):
            kept = mask[positions]
            parts.append((hashes[kept], renumber[positions[kept]]))
        self.main, self.tail = parts

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probe row, buffered position) of every pair with equal hashes."""
        probes, positions = [], []
        for sorted_hashes, where in (self.main, self.tail):
            if sorted_hashes.size == 0:
                continue
            lo = np.searchsorted(sorted_hashes, hashes, side="left")
            count = np.searchsorted(sorted_hashes, hashes, side="right") - lo
            total = int(count.sum())
            if total == 0:
                continue
            probes.append(np.repeat(np.arange(hashes.size, dtype=np.int64), count))
            first = np.repeat(lo - (np.cumsum(count) - count), count)
            positions.append(where[first + np.arange(total, dtype=np.int64)])
        if not probes:
            return _NO_POSITIONS, _NO_POSITIONS
        if len(probes) == 1:
            return probes[0], positions[0]
        return np.concatenate(probes), np.concatenate(positions)


def _merge(
    part: tuple[np.ndarray, np.ndarray], hashes: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``part`` with sorted ``hashes`` (and their positions) merged in, after equal ones."""
    at = np.searchsorted(part[0], hashes, side="right")
    return np.insert(part[0], at, hashes), np.insert(part[1], at, positions)
