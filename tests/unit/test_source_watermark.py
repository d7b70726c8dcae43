"""SourceWatermark: one watermark per source, or one per partition (Kafka) with the
smallest of the pending partitions' emitted."""

from __future__ import annotations

import pyarrow as pa

from connectors.kafka.consumer import unread
from engine.stream.watermarks import SourceWatermark


def batch(rows: list[tuple[str, int, int]]) -> pa.RecordBatch:
    t, p, ms = zip(*rows, strict=True)
    return pa.RecordBatch.from_pydict({"_topic": list(t), "_partition": pa.array(p, pa.int32()),
                                       "ms": list(ms)})  # fmt: skip


def test_one_watermark_is_the_largest_event_time_minus_the_lag() -> None:
    w = SourceWatermark("ms", 10)
    assert w.advance(batch([("a", 0, 100), ("a", 1, 50)])) == 90
    assert w.advance(batch([("a", 1, 60)])) is None  # never back


def test_per_partition_the_smallest_pending_partition_holds_it() -> None:
    w = SourceWatermark("ms", 0, ("_topic", "_partition"))
    both = {("a", 0), ("a", 1)}
    # partition 1 has rows to read but delivered none yet: no watermark
    assert w.advance(batch([("a", 0, 500), ("a", 0, 900)]), both) is None
    assert w.advance(batch([("a", 1, 100), ("a", 0, 950)]), both) == 100
    assert w.advance(batch([("a", 1, 300)]), both) == 300
    # partition 1 read to its end: it no longer holds the watermark back
    assert w.advance(batch([("a", 0, 960)]), {("a", 0)}) == 960
    # nothing pending: the largest of all
    assert w.advance(batch([("a", 0, 970)]), set()) == 970
    # two topics with the same partition numbers are different partitions
    w = SourceWatermark("ms", 0, ("_topic", "_partition"))
    two = {("a", 0), ("b", 0)}
    assert w.advance(batch([("a", 0, 70), ("b", 0, 40)]), two) == 40


def test_a_partition_is_unread_until_its_position_reaches_the_high_watermark() -> None:
    owned = {"a:0", "a:1", "a:2", "a:3"}
    positions = {"a:0": 10, "a:1": 5}
    high = {"a:0": 10, "a:1": 9, "a:2": 4}  # a:3 not known yet
    assert unread(owned, positions, high, earliest=True) == {("a", 1), ("a", 2), ("a", 3)}
    assert unread(owned, positions, high, earliest=False) == {("a", 1), ("a", 3)}
    assert unread({"a:4"}, {}, {"a:4": 0}, earliest=True) == set()  # empty partition


def test_a_partition_found_at_its_end_moves_the_watermark_without_a_new_row() -> None:
    w = SourceWatermark("ms", 5, ("_topic", "_partition"))
    both = {("a", 0), ("a", 1)}
    assert w.advance(batch([("a", 0, 100), ("a", 1, 400)]), both) == 95
    assert w.refresh(both) is None  # nothing changed
    assert w.refresh({("a", 1)}) == 395  # partition 0 is at its end: partition 1 decides
    assert w.refresh(set()) is None  # the largest of all is 400 as well: no move
    assert SourceWatermark("ms", 0).refresh(set()) is None  # one watermark: only rows move it


def test_rows_held_back_keep_their_partitions_pending() -> None:
    w = SourceWatermark("ms", 0, ("_topic", "_partition"))
    held = [batch([("a", 1, 10), ("b", 1, 20)]), batch([("a", 1, 30)])]
    assert w.partitions_in(held) == {("a", 1), ("b", 1)}
    assert w.partitions_in([]) == set()
    assert SourceWatermark("ms", 0).partitions_in(held) == set()  # no partitions named
    # partition 1's rows were read (the source says nothing is pending) but are held:
    assert w.advance(batch([("a", 0, 900)]), set() | {("a", 1)}) is None
    assert w.advance(batch([("a", 1, 30)]), set()) == 900


def test_the_state_restores_the_watermark_and_each_partition() -> None:
    w = SourceWatermark("ms", 10, ("_topic", "_partition"))
    assert w.state() is None  # nothing handed on yet
    w.advance(batch([("a", 0, 100), ("a", 1, 400)]), {("a", 0), ("a", 1)})
    state = w.state()
    again = SourceWatermark("ms", 10, ("_topic", "_partition"))
    assert again.restore(state) == 90  # handed on again at start
    assert again.restore(None) is None
    # restored: the partitions read before count, and the watermark never goes back
    assert again.advance(batch([("a", 0, 50)]), {("a", 0), ("a", 1)}) is None
    assert again.advance(batch([("a", 0, 300)]), {("a", 0), ("a", 1)}) == 290
    assert again.refresh(set()) == 390


def test_a_partition_read_before_any_watermark_is_kept_by_the_checkpoint() -> None:
    """Partition 0 is read to its end while partition 1 has delivered nothing (no
    watermark yet). A checkpoint then a restart must still know partition 0's largest
    event time: it will deliver no row again, and without it the watermark would wait
    for it forever (found in the Kafka kill -9 test: windows never closed)."""
    w = SourceWatermark("ms", 0, ("_topic", "_partition"))
    assert w.advance(batch([("a", 0, 700)]), {("a", 0), ("a", 1)}) is None
    state = w.state()
    assert state == {"max_ms": None, "parts": [[["a", 0], 700]]}
    again = SourceWatermark("ms", 0, ("_topic", "_partition"))
    assert again.restore(state) is None  # nothing was handed on: nothing to hand on again
    # after the restart partition 0 is still pending (its end not known yet), 1 delivers:
    assert again.advance(batch([("a", 1, 500)]), {("a", 0), ("a", 1)}) == 500
    assert again.refresh({("a", 0)}) == 700
