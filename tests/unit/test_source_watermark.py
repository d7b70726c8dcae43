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
