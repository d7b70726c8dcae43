"""Records into the Kafka sink's transaction: the produce loop, and epochs sent early.

``send(producer, topic, batches, mine, skip, fault)`` produces ``encode.RECORDS``
batches (value, key, partition; a record's own timestamp and headers, with the
headers ``mine`` added) and returns how many it sent. ``skip`` maps a partition to
how many of its first records to leave out (already readable: a resend after an
aborted transaction on a broker that shows them); ``fault`` is the count after which
the fault point ``kafka_sink.mid_transaction`` fires (-1: never).

``Early`` is the sink's state for sending an epoch's records **as they are
written**, into a transaction begun for that epoch alone, instead of all at once
at ``commit_epoch``: the broker stores them while the pipeline goes on, and the
commit only waits for the last ones and the marker. The contract, which keeps the
exactly-once argument of ``connectors.kafka.sink`` unchanged:

* The open transaction (``epoch``) holds a **prefix** of that one epoch's records,
  in the order of its spool file: ``sent`` of them. The spool stays the durable
  copy; the transaction is only a head start that a crash loses (the next producer
  with the transactional id aborts it) and ``commit_epoch`` then redoes from the
  spool, as it always did.
* It is begun only when every earlier epoch is committed (a producer has one
  transaction at a time). Until then an epoch's records wait in ``backlog`` (in
  memory, at most ``cap`` bytes for all epochs; past that the epoch is
  ``stopped``: nothing more of it is sent early, and the commit sends the rest from
  the spool).
* A transaction open for more than half the transaction timeout is given up
  (aborted, the epoch ``stopped``) rather than risk the broker aborting it under
  the producer, which fences it.
* Any failure while sending early stops the epoch and drops the transaction; it is
  never an error of ``write_batch``.

Not guaranteed: an epoch sent early may still be sent again at its commit (after
an abort): on Kafka the aborted records are never readable; on a broker that shows
them, the sink's epoch header lets the resend skip them (``staging.landed``).
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from connectors.kafka.staging import MAX_MESSAGE
from engine import faults
from engine.errors import ConnectorError, TransientError
from engine.shm.arrow_codec import copy_out


class Early:
    def __init__(self, topic: str, timeout_s: float, cap: int = 64 << 20) -> None:
        self.topic, self.timeout_s, self.cap = topic, timeout_s, cap
        self.epoch: int | None = None  # the epoch whose transaction is open
        self.sent = 0
        self.began = 0.0
        self.backlog: dict[int, list[pa.RecordBatch]] = {}
        self.held = 0  # bytes in the backlog
        self.stopped: set[int] = set()

    def open(self, epoch: int) -> None:
        self.epoch, self.sent, self.began = epoch, 0, time.monotonic()

    def stale(self) -> bool:
        return time.monotonic() - self.began > self.timeout_s / 2

    def hold(self, epoch: int, records: pa.RecordBatch) -> None:
        if epoch in self.stopped:
            return
        if self.held + records.nbytes > self.cap:
            self.stop(epoch)
            return
        # a copy: the records may share buffers with the written batch (a key column cast
        # to binary is a view), ring memory that is written over once write_batch returns
        self.backlog.setdefault(epoch, []).append(copy_out(records))
        self.held += records.nbytes

    def take(self, epoch: int) -> list[pa.RecordBatch]:
        batches = self.backlog.pop(epoch, [])
        self.held -= sum(b.nbytes for b in batches)
        return batches

    def stop(self, epoch: int) -> None:
        """Nothing more of ``epoch`` goes early (what was sent stays sent)."""
        self.stopped.add(epoch)
        self.take(epoch)
        if self.epoch == epoch:
            self.epoch = None

    def write(self, producer: Any, epoch: int, records: pa.RecordBatch, blocked: bool) -> bool:
        """Send ``records`` of ``epoch`` now if its transaction is open (or can begin: none
        open, ``blocked`` False), else hold them. False: ``producer`` must be replaced."""
        if epoch in self.stopped:
            return True
        if self.epoch == epoch:
            return self._send(producer, records)
        if self.epoch is None and not blocked:
            return self.begin(producer, epoch, [*self.take(epoch), records])  # in order
        self.hold(epoch, records)
        return True

    def begin(self, producer: Any, epoch: int, batches: list[pa.RecordBatch]) -> bool:
        from confluent_kafka import KafkaException

        try:
            producer.begin_transaction()
        except KafkaException:
            self.stop(epoch)  # the commit sends it from the spool, and reports
            return False
        self.open(epoch)
        return all([self._send(producer, records) for records in batches])

    def _send(self, producer: Any, records: pa.RecordBatch) -> bool:
        from confluent_kafka import KafkaException

        if self.epoch is None:  # (given up by an earlier batch)
            return True
        if self.stale():
            return self.abort(producer)
        try:
            self.sent += send(producer, self.topic, [records], [], {}, -1)
            producer.poll(0)
            return True
        except KafkaException:
            return self.abort(producer)

    def abort(self, producer: Any) -> bool:
        """Give up the open transaction (its epoch goes from the spool at its commit).
        False: the abort failed; the producer must be replaced."""
        assert self.epoch is not None
        self.stop(self.epoch)
        try:
            producer.abort_transaction(10)
            return True
        except Exception:
            return False

    def forget(self, since: int | None = None, epoch: int | None = None) -> None:
        """Drop the state of ``epoch``, or of every epoch ``>= since``."""
        for n in {*self.backlog, *self.stopped, *([self.epoch] if self.epoch else [])}:
            if n == epoch or (since is not None and n >= since):
                self.take(n)
                self.stopped.discard(n)
                if self.epoch == n:
                    self.epoch = None


def send(
    producer: Any, topic: str, batches: Any, mine: list[Any], skip: dict[int, int], fault: int,
    epoch: int = 0,
) -> int:  # fmt: skip
    produce, sent = producer.produce, 0
    seen = dict.fromkeys(skip, 0)
    for records in batches:
        cols = [records.column(i).to_pylist() for i in range(3)]
        simple = (
            not skip
            and fault < 0
            and not any(records.column(i).null_count < records.num_rows for i in (3, 4))
        )
        if simple:  # no timestamps or headers of its own, nothing to skip: the fast loop
            h = mine or None
            for value, key, p in zip(*cols, strict=True):
                try:
                    produce(topic, value, key, p, headers=h)
                except BufferError:
                    retry(producer, topic, value, key, p, 0, h)
            sent += records.num_rows
            continue
        cols += [records.column(i).to_pylist() for i in (3, 4)]
        for value, key, p, ts, headers in zip(*cols, strict=True):
            if skip:
                seen[p] = seen.get(p, 0) + 1
                if seen[p] <= skip.get(p, 0):
                    continue
            h = (mine or None) if headers is None else [
                (x["key"], x["value"]) for x in headers] + mine  # fmt: skip
            try:
                produce(topic, value, key, p, timestamp=ts or 0, headers=h)
            except BufferError:
                retry(producer, topic, value, key, p, ts or 0, h)
            sent += 1
            if sent == fault:
                producer.flush()
                faults.reached("kafka_sink.mid_transaction", epoch)
    return sent


def after(batches: Any, rows: int) -> Any:
    """The records of ``batches`` after the first ``rows``."""
    for b in batches:
        if rows >= b.num_rows:
            rows -= b.num_rows
            continue
        yield b.slice(rows) if rows else b
        rows = 0


def retry(producer: Any, topic: str, value: Any, key: Any, p: int, ts: int, h: Any) -> None:
    """``produce`` again once the client's queue has room."""
    while True:
        producer.poll(0.05)
        try:
            producer.produce(topic, value, key, p, timestamp=ts, headers=h)
            return
        except BufferError:
            continue


def failed(producer: Any, exc: Exception, what: str, txid: str) -> bool:
    """After a transaction failed with ``exc``: raise ``ConnectorError`` when the producer
    failed for good (fenced: another process took its transactional id), else abort the
    transaction; True when the producer must be replaced (its state is unknown)."""
    from confluent_kafka import KafkaException

    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if err is not None and err.fatal():
        raise ConnectorError(
            f"{what}: the transactional producer {txid!r} failed for good "
            f"({err.name()}: {err.str()}); if it was fenced, another process uses this id "
            "(a second instance of this pipeline? give each its own id)"
        ) from exc
    if err is None or not err.txn_requires_abort():
        return True
    try:
        producer.abort_transaction(30)
        return False
    except Exception:  # the retry starts a new producer
        return True


def transactional(settings: dict[str, Any], txid: str, timeout_ms: int, where: str) -> Any:
    """A started transactional producer: ``init_transactions`` has fenced an earlier one
    with ``txid`` and settled (aborted) its open transaction."""
    from confluent_kafka import KafkaException, Producer

    p = Producer(
        {
            **settings,
            "transactional.id": txid,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": MAX_MESSAGE,
            "transaction.timeout.ms": timeout_ms,
            "delivery.report.only.error": True,  # a failure also fails the commit
        }
    )
    try:
        p.init_transactions(60)
    except KafkaException as exc:
        raise TransientError(
            f"{where}: cannot start the transactional producer {txid!r}: {exc}"
        ) from exc
    return p
