"""Batching: small batches become max_rows ones; leftovers come out after max_wait."""

from __future__ import annotations

import pyarrow as pa
import pytest

from engine.errors import ConfigError, SchemaMismatchError
from ring1.batching import Batcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rows(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(range(start, start + n), pa.int64())})


def values(batches: list[pa.RecordBatch]) -> list[int]:
    return [v for b in batches for v in b.column("x").to_pylist()]


def test_batching_small_batches_concatenated_up_to_max_rows() -> None:
    b = Batcher(max_rows=10, max_wait_s=1.0, clock=FakeClock())
    assert b.add(rows(0, 4)) == []
    assert b.add(rows(4, 4)) == []
    ready = b.add(rows(8, 4))
    assert [r.num_rows for r in ready] == [10] and values(ready) == list(range(10))
    assert b.pending_rows == 2
    assert values([b.take()]) == [10, 11]  # type: ignore[list-item]
    assert b.take() is None


def test_batching_large_batch_cut_into_max_rows_pieces_in_order() -> None:
    b = Batcher(max_rows=4, max_wait_s=1.0, clock=FakeClock())
    b.add(rows(0, 1))
    ready = b.add(rows(1, 12))
    assert [r.num_rows for r in ready] == [4, 4, 4]
    assert values(ready) == list(range(12)) and b.pending_rows == 1


def test_batching_a_large_batch_with_nothing_pending_goes_on_as_it_is() -> None:
    """At least half ``max_rows``: not gathered (no copy); cut where larger, a small last
    piece kept for the next rows."""
    b = Batcher(max_rows=10, max_wait_s=1.0, clock=FakeClock())
    half = rows(0, 5)
    assert b.add(half) == [half] and b.pending_rows == 0
    ready = b.add(rows(5, 27))  # 10 + 10 + 7: the 7 go on too (at least half)
    assert [r.num_rows for r in ready] == [10, 10, 7] and values(ready) == list(range(5, 32))
    ready = b.add(rows(32, 23))  # 10 + 10 + 3: the 3 wait
    assert [r.num_rows for r in ready] == [10, 10] and b.pending_rows == 3
    ready = b.add(rows(55, 9))  # something is pending: gathered as before
    assert [r.num_rows for r in ready] == [10] and values(ready) == list(range(52, 62))
    assert b.pending_rows == 2


def test_batching_full_batch_alone_passes_through_without_copy() -> None:
    b = Batcher(max_rows=5, max_wait_s=1.0, clock=FakeClock())
    batch = rows(0, 5)
    (out,) = b.add(batch)
    assert out is batch


def test_batching_due_after_max_wait_from_the_oldest_pending_row() -> None:
    clock = FakeClock()
    b = Batcher(max_rows=100, max_wait_s=0.5, clock=clock)
    assert not b.due() and b.deadline() is None
    b.add(rows(0, 3))
    assert b.deadline() == 100.5
    clock.now = 100.3
    b.add(rows(3, 3))
    assert not b.due()
    clock.now = 100.5
    assert b.due()
    out = b.take()
    assert out is not None and values([out]) == list(range(6))
    assert not b.due() and b.deadline() is None


def test_batching_leftover_after_full_batch_waits_from_its_arrival() -> None:
    clock = FakeClock()
    b = Batcher(max_rows=4, max_wait_s=1.0, clock=clock)
    b.add(rows(0, 1))
    clock.now = 100.9
    assert len(b.add(rows(1, 4))) == 1
    clock.now = 101.5
    assert not b.due()  # the leftover row arrived at 100.9
    clock.now = 101.9
    assert b.due()


def test_batching_empty_batches_ignored() -> None:
    b = Batcher(max_rows=4, max_wait_s=0.0, clock=FakeClock())
    assert b.add(rows(0, 0)) == [] and not b.due() and b.take() is None


def test_batching_zero_wait_is_due_at_once() -> None:
    b = Batcher(max_rows=4, max_wait_s=0.0, clock=FakeClock())
    b.add(rows(0, 1))
    assert b.due()


def test_batching_other_schema_rejected() -> None:
    b = Batcher(max_rows=4, max_wait_s=1.0, clock=FakeClock())
    b.add(rows(0, 1))
    with pytest.raises(SchemaMismatchError, match="differs"):
        b.add(pa.record_batch({"y": [1.0]}))


@pytest.mark.parametrize(
    ("max_rows", "max_wait_s", "message"), [(0, 1.0, "max_rows=0"), (1, -1.0, "max_wait_s=-1.0")]
)
def test_batching_bad_limits_rejected(max_rows: int, max_wait_s: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Batcher(max_rows, max_wait_s)
