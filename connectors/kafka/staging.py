"""The Kafka sink's markers: its staging topic, and what already reached the target.

``Staging(settings, topic, where)``: a topic of one partition, written by an
idempotent producer with ``acks=all``. ``announce(epoch)`` sends one small record for
the epoch; ``marked(epoch)`` returns its offsets ``[start, end)`` once acknowledged:
the epoch's place in a sequence that only grows (the sink's marker group commits
``end``).
``read(epoch, start, end)`` yields the records that a sink from before the spool
staged there (Arrow IPC chunks keyed by the epoch), for a committable it left.

``landed(settings, topic, starts, tag, timeout_s)``: for each target partition, how
many records carrying the header ``ringstream.epoch = tag`` are at or after offset
``starts[p]``, read as a ``read_committed`` consumer reads them.

``committed_offset(consumer, topic, part, group, where)``: the group's committed
offset (the sink's marker; -1 for none), waiting while a transaction settles.
``end_offsets(consumer, topic, partitions, where)``: each partition's end offset.

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

from engine.errors import ConfigError, TransientError

MAX_MESSAGE = 8 * 1024 * 1024  # the producers' message.max.bytes (one large row)
EPOCH_HEADER = "ringstream.epoch"


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
        self.marks: dict[int, int | str] = {}  # epoch -> its marker's offset, or why not
        self.last = -1  # the offset of the last marker handed out

    def announce(self, epoch: int) -> None:
        """Send the epoch's marker record now (at its first row), so that ``marked`` at
        ``pre_commit`` finds it acknowledged instead of waiting a broker round trip."""
        def delivered(err: Any, msg: Any) -> None:
            self.marks[epoch] = str(err) if err is not None else msg.offset()

        self.marks[epoch] = ""  # sent; its callback runs at a poll or flush
        while True:
            try:
                self.producer.produce(self.topic, str(epoch).encode(), b"marker", partition=0,
                                      on_delivery=delivered)  # fmt: skip
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def marked(self, epoch: int, timeout_s: float = 60) -> tuple[int, int]:
        """The epoch's marker ``[start, end)`` once acknowledged; always after every marker
        handed out before (a marker sent before the last one acknowledged is sent again)."""
        for _ in range(2):
            if epoch not in self.marks:
                self.announce(epoch)
            self.producer.flush(timeout_s)
            got = self.marks.get(epoch)
            if not isinstance(got, int):  # "" (no answer yet) or the error
                why = got or f"not acknowledged within {timeout_s:.0f} s"
                raise TransientError(f"{self.where}: epoch {epoch}'s marker: {why}")
            if got > self.last:
                self.last = got
                for e in [e for e in self.marks if e <= epoch]:
                    del self.marks[e]
                return got, got + 1
            del self.marks[epoch]
        raise TransientError(f"{self.where}: epoch {epoch}'s marker came before an earlier one")

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


def committed_offset(consumer: Any, topic: str, part: int, group: str, where: str) -> int:
    from confluent_kafka import TopicPartition

    deadline = time.monotonic() + 30
    while True:
        try:
            [tp] = consumer.committed([TopicPartition(topic, part)], 10)
            return tp.offset if tp.error is None else -1
        except Exception as exc:  # an unstable offset: a transaction still settling
            if time.monotonic() > deadline:
                raise TransientError(
                    f"{where}: cannot read the commit marker of {group!r}: {exc}"
                ) from exc
            time.sleep(0.2)


def end_offsets(consumer: Any, topic: str, partitions: int, where: str) -> dict[str, int]:
    from confluent_kafka import TopicPartition

    out = {}
    for p in range(partitions):
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), 10, cached=False)
        except Exception as exc:
            raise TransientError(f"{where}: cannot read the end of {topic!r} [{p}]: {exc}") from exc
        out[str(p)] = int(high)
    return out


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
