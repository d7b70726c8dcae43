"""KeyIndex against a brute-force list of (hash, position): adds, trims, finds (pending rows
looked up in reverse or indexed), tail merges."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ring0.operators.join import key_index
from ring0.operators.join.key_index import KeyIndex


def pairs(found: tuple[np.ndarray, np.ndarray]) -> Counter[tuple[int, int]]:
    return Counter(zip(found[0].tolist(), found[1].tolist(), strict=True))


@pytest.mark.parametrize("tail_min", [1, 7, 16_384])
def test_key_index_finds_what_a_brute_force_buffer_holds(
    monkeypatch: pytest.MonkeyPatch, tail_min: int
) -> None:
    """Random batches (few distinct hashes: many equal ones), random trims: every find is
    exactly the pairs of equal hashes in the buffer as it is after the same steps."""
    monkeypatch.setattr(key_index, "TAIL_MIN", tail_min)  # 1: the tail merges into main often
    rng = np.random.default_rng(tail_min)
    index, buffer = KeyIndex(), np.empty(0, np.uint64)
    for step in range(300):
        new = rng.integers(0, 40, size=int(rng.integers(1, 60))).astype(np.uint64)
        index.add(new, buffer.size)
        buffer = np.concatenate([buffer, new])
        if step % 7 == 3:  # a trim keeps an arbitrary subset, renumbered in order
            mask = rng.random(buffer.size) < 0.7
            index.keep(mask)
            buffer = buffer[mask]
        # probes fewer and more than the rows pending: looked up in reverse, or indexed first
        probe = rng.integers(0, 45, size=int(rng.integers(0, 120))).astype(np.uint64)
        want = Counter((i, j) for i, h in enumerate(probe.tolist())
                       for j in np.flatnonzero(buffer == h).tolist())  # fmt: skip
        assert pairs(index.find(probe)) == want, step
        assert len(index) == buffer.size


def test_key_index_reset_and_empty() -> None:
    index = KeyIndex()
    assert pairs(index.find(np.array([1], np.uint64))) == Counter()
    index.reset(np.array([5, 3, 5], np.uint64))
    assert pairs(index.find(np.array([5, 4], np.uint64))) == Counter({(0, 0): 1, (0, 2): 1})
    index.keep(np.array([False, True, True]))
    assert pairs(index.find(np.array([5, 3], np.uint64))) == Counter({(0, 1): 1, (1, 0): 1})
