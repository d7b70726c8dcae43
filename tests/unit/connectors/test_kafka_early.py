"""``connectors.kafka.produce``: the state of epochs sent early, and the rest of an epoch
after what was sent (pure; the broker-side behaviour is in
``tests/integration/test_kafka_sink_early.py``)."""

from __future__ import annotations

import pyarrow as pa

from connectors.kafka.produce import Early, after


def batch(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(start, start + n))], names=["v"])


def test_after_skips_a_prefix_across_batch_boundaries() -> None:
    batches = [batch(0, 3), batch(3, 4), batch(7, 2)]
    for k in range(10):
        rest = [v for b in after(batches, k) for v in b.column(0).to_pylist()]
        assert rest == list(range(k, 9))


def test_the_backlog_is_capped_and_an_epoch_over_it_is_stopped() -> None:
    one = batch(0, 1000)
    e = Early("t", timeout_s=60, cap=one.nbytes * 2)
    e.hold(2, one)
    e.hold(2, one)
    assert e.held == 2 * one.nbytes and len(e.backlog[2]) == 2
    e.hold(3, one)  # over the cap: epoch 3 goes from the spool at its commit
    assert 3 in e.stopped and 3 not in e.backlog
    e.hold(3, one)  # and stays stopped
    assert 3 not in e.backlog
    assert e.take(2) == [one, one] and e.held == 0


def test_forget_drops_one_epoch_or_every_one_since() -> None:
    e = Early("t", timeout_s=60)
    e.open(4)
    e.hold(5, batch(0, 10))
    e.hold(6, batch(0, 10))
    e.stop(7)
    e.forget(epoch=5)
    assert sorted(e.backlog) == [6] and e.epoch == 4
    e.forget(since=5)
    assert e.backlog == {} and e.stopped == set() and e.epoch == 4 and e.held == 0
    e.forget(since=4)
    assert e.epoch is None


def test_a_transaction_is_stale_past_half_the_timeout() -> None:
    e = Early("t", timeout_s=0.0)
    e.open(1)
    assert e.stale()
    f = Early("t", timeout_s=60)
    f.open(1)
    assert not f.stale()


class Recorder:
    """Stands in for the producer: what ``begin`` and ``produce`` were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def begin_transaction(self) -> None:
        self.calls.append(("begin", None))

    def produce(self, topic: str, value: bytes, key: object, p: int, headers: object) -> None:
        self.calls.append(("produce", value))

    def poll(self, timeout: float) -> int:
        return 0


def records(values: list[bytes]) -> pa.RecordBatch:
    from connectors.kafka.encode import RECORDS

    n = len(values)
    return pa.RecordBatch.from_arrays(
        [pa.array(values, pa.binary()), pa.nulls(n, pa.binary()), pa.array([0] * n, pa.int32()),
         pa.nulls(n, pa.int64()), pa.nulls(n, RECORDS.field("headers").type)],  # fmt: skip
        schema=RECORDS,
    )


def test_a_transaction_begun_by_a_write_sends_what_the_epoch_held_first() -> None:
    e, p = Early("t", timeout_s=60), Recorder()
    assert e.write(p, 2, records([b"a", b"b"]), blocked=True)  # epoch 1 not committed
    assert p.calls == [] and 2 in e.backlog
    assert e.write(p, 2, records([b"c"]), blocked=False)  # (its commit sent nothing)
    assert p.calls == [("begin", None), ("produce", b"a"), ("produce", b"b"), ("produce", b"c")]
    assert (e.epoch, e.sent, e.backlog, e.held) == (2, 3, {}, 0)


def test_records_held_for_a_later_epoch_are_a_copy_of_ring_memory() -> None:
    """A key column cast to binary is a view of the written batch, whose ring memory is
    written over once ``write_batch`` returns: what waits in the backlog owns its bytes."""
    import numpy as np

    from connectors.kafka.encode import RECORDS


    ring = np.frombuffer(bytearray(b"key-akey-b"), np.uint8)  # stands in for a ring frame
    keys = pa.Array.from_buffers(pa.binary(), 2, [None, pa.py_buffer(np.array([0, 5, 10],
                                 np.int32)), pa.py_buffer(ring)])  # fmt: skip
    n = 2
    records = pa.RecordBatch.from_arrays(
        [pa.array([b"{}", b"{}"]), keys, pa.array([0, 1], pa.int32()),
         pa.array([None, None], RECORDS.field(3).type), pa.nulls(n, RECORDS.field(4).type)],
        schema=RECORDS,
    )  # fmt: skip
    early = Early("t", 60.0)
    early.hold(2, records)
    ring[:] = ord("x")  # the frame is released and written over
    (held,) = early.take(2)
    assert held.column(1).to_pylist() == [b"key-a", b"key-b"]


def test_the_collect_sink_keeps_a_copy_of_each_batch() -> None:
    import numpy as np

    from connectors.base import ConnectorConfig
    from connectors.testing.collect import CollectingSink

    memory = np.arange(4, dtype=np.int64)
    batch = pa.record_batch([pa.Array.from_buffers(pa.int64(), 4, [None, pa.py_buffer(memory)])],
                            names=["x"])  # fmt: skip
    s = CollectingSink()
    s.open(ConnectorConfig("c", {}))
    s.begin_epoch(1)
    s.write_batch(batch)
    memory[:] = -1
    assert s.written[0].column("x").to_pylist() == [0, 1, 2, 3]
