"""The Kafka sink's durable side: its staging topic, and what already reached the target.

``Staging(settings, topic, where)``: a topic of one partition that holds, for each
epoch, the epoch's encoded records (``encode.RECORDS``) as Arrow IPC chunks of at
most ``CHUNK_BYTES``, written by an idempotent producer with ``acks=all``.
``write(epoch, records)`` queues chunks; ``flush()`` waits until every chunk is
acknowledged and returns the staging offsets ``[start, end)`` written since the last
flush (raising for any that failed); ``read(start, end)`` yields the records back.

``landed(settings, topic, starts, tag, timeout_s)``: for each target partition, how
many records carrying the header ``ringstream.epoch = tag`` are at or after offset
``starts[p]``, read as a ``read_committed`` consumer reads them.

``ensure_topic(admin, topic, partitions, where)`` creates a topic (or finds it) and
returns its partition count. ``aborted_visible(producer, settings, topic, group)``
tells whether the broker shows aborted transactions' records to ``read_committed``
readers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from connectors.kafka.encode import RECORDS
from engine.errors import ConfigError, DataError, TransientError

CHUNK_BYTES = 512 * 1024  # a staging record; brokers take 1 MB by default
MAX_MESSAGE = 8 * 1024 * 1024  # the producers' message.max.bytes (one large row)
EPOCH_HEADER = "ringstream.epoch"
# Staged chunks are LZ4-compressed (JSON values shrink 4-6x): the broker stores and
# replicates a fraction of the bytes, at about 1 GB/s of one core to compress. Readers
# decompress whatever the writer chose (Arrow IPC says so in each message).
_IPC = pa.ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4_frame") else None)


def ensure_topic(admin: Any, topic: str, partitions: int | None, where: str) -> int:
    """The partition count of ``topic``; with ``partitions`` it is created when missing."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    meta = _metadata(admin, where)
    t = meta.topics.get(topic)
    if (t is None or t.error is not None) and partitions is not None:
        for f in admin.create_topics([NewTopic(topic, partitions, -1)]).values():
            try:
                f.result(30)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise ConfigError(f"{where}: cannot create topic {topic!r}: {exc}") from exc
        deadline = time.monotonic() + 10
        while t is None or t.error is not None or not t.partitions:
            if time.monotonic() > deadline:
                raise TransientError(f"{where}: topic {topic!r} was created but is not listed")
            time.sleep(0.05)
            t = _metadata(admin, where).topics.get(topic)
    if t is None or t.error is not None:
        raise ConfigError(
            f"{where}.topic: topic {topic!r} does not exist (create it, or set "
            "create = true and partitions = N)"
        )
    return len(t.partitions)


def _metadata(admin: Any, where: str) -> Any:
    try:
        return admin.list_topics(timeout=10)
    except Exception as exc:
        raise TransientError(f"{where}: cannot reach Kafka: {exc}") from exc


class Staging:
    def __init__(self, settings: dict[str, Any], topic: str, where: str) -> None:
        from confluent_kafka import Producer

        self.settings, self.topic, self.where = settings, topic, where
        self.producer = Producer(
            {
                **settings,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": MAX_MESSAGE,
            }
        )
        self.offsets: list[int] = []
        self.errors: list[str] = []
        self.chunks = 0

    def write(self, epoch: int, records: pa.RecordBatch) -> None:
        for chunk in _chunks(records):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, RECORDS, options=_IPC) as w:
                w.write_batch(chunk)
            self._produce(sink.getvalue().to_pybytes(), str(epoch).encode())
            self.chunks += 1

    def _produce(self, value: bytes, epoch: bytes) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, value, epoch, partition=0, on_delivery=self._delivered
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.offsets.append(msg.offset())

    def flush(self, timeout_s: float = 60) -> tuple[int, int] | None:
        """``[start, end)`` of what was staged since the last flush, once all of it is
        acknowledged; None if nothing was."""
        left = self.producer.flush(timeout_s)
        errors, offsets, self.errors, self.offsets = self.errors, self.offsets, [], []
        if left:
            raise TransientError(
                f"{self.where}: {left} staging records of {self.topic!r} "
                f"not acknowledged within {timeout_s:.0f} s"
            )
        if errors:
            if any("MSG_SIZE_TOO_LARGE" in e or "too large" in e.lower() for e in errors):
                raise DataError(
                    f"{self.where}: a record is larger than the broker takes "
                    f"({errors[0]}); raise message.max.bytes"
                )
            raise TransientError(f"{self.where}: staging {self.topic!r} failed: {errors[0]}")
        if not offsets:
            return None
        return min(offsets), max(offsets) + 1

    def read(
        self, epoch: int, start: int, end: int, timeout_s: float = 60
    ) -> Iterator[pa.RecordBatch]:
        """The records staged for ``epoch`` at offsets ``[start, end)``, in order (others in
        that range, the sink's probe of the broker, are passed over)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                **self.settings,
                "group.id": "ringstream-staging-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "fetch.max.bytes": 4 * MAX_MESSAGE,
                "max.partition.fetch.bytes": 2 * MAX_MESSAGE,
            }
        )
        try:
            c.assign([TopicPartition(self.topic, 0, start)])
            at, deadline, key = start, time.monotonic() + timeout_s, str(epoch).encode()
            while at < end:
                if time.monotonic() > deadline:
                    raise TransientError(
                        f"{self.where}: staging {self.topic!r} offsets "
                        f"{at}..{end} not readable within {timeout_s:.0f} s"
                    )
                for m in c.consume(64, 0.5):
                    if m.error() is not None or m.offset() < at or m.offset() >= end:
                        continue
                    at = m.offset() + 1
                    if m.key() != key:
                        continue
                    deadline = time.monotonic() + timeout_s
                    yield from pa.ipc.open_stream(m.value())
        finally:
            c.close()

    def close(self) -> None:
        self.producer.flush(10)


def _chunks(records: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    n = records.num_rows
    if n == 0:
        return
    size = records.nbytes  # of the slice (the total buffer size is of the whole)
    if size <= CHUNK_BYTES or n == 1:
        yield records
        return
    half = n // 2
    yield from _chunks(records.slice(0, half))
    yield from _chunks(records.slice(half))


def landed(
    settings: dict[str, Any], topic: str, starts: dict[int, int], tag: bytes, timeout_s: float = 60
) -> dict[int, int]:
    """Per partition, the records tagged ``tag`` at or after ``starts[p]`` (module doc)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            **settings,
            "group.id": "ringstream-landed-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    found = dict.fromkeys(starts, 0)
    try:
        ends = {}
        for p in starts:
            _, ends[p] = c.get_watermark_offsets(TopicPartition(topic, p), 10, cached=False)
        todo = {p for p in starts if ends[p] > starts[p]}
        c.assign([TopicPartition(topic, p, starts[p]) for p in todo])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise TransientError(
                    f"cannot read {topic!r} partitions {sorted(todo)} to their "
                    f"end within {timeout_s:.0f} s (an open transaction of "
                    "another producer?)"
                )
            for m in c.consume(1000, 0.5):
                p = m.partition()
                if m.error() is not None:
                    if m.error().code() == m.error()._PARTITION_EOF:
                        todo.discard(p)
                    continue
                if m.offset() + 1 >= ends[p]:
                    todo.discard(p)
                for k, v in m.headers() or ():
                    if k == EPOCH_HEADER and v == tag:
                        found[p] += 1
    finally:
        c.close()
    return found


def aborted_visible(p: Any, settings: dict[str, Any], topic: str, group: str) -> bool:
    """Whether a ``read_committed`` reader sees the records of an aborted transaction
    (Tansu does, Kafka does not): then every record carries the header of its epoch,
    so that a resend after a crash can skip what readers already see. Found by
    aborting a transaction of one record in the staging topic and reading it."""
    from confluent_kafka import Consumer, TopicPartition

    got: list[int] = []
    p.begin_transaction()
    p.produce(
        topic,
        b"",
        b"probe",
        partition=0,
        on_delivery=lambda e, m: got.append(m.offset() if e is None else -1),
    )
    p.flush(30)
    p.abort_transaction(30)
    if not got or got[0] < 0:
        return True  # not known: the safe way
    c = Consumer(
        {
            **settings,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        c.assign([TopicPartition(topic, 0, got[0])])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in c.consume(1, 0.5):  # (16 would wait the whole 0.5 s for more)
                if m.error() is not None:
                    return False  # the end: the probe was not shown
                return m.offset() == got[0]
        return True
    finally:
        c.close()
