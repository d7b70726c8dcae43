"""The Kafka source's consumer: made from the options, read by a thread of its own.

``make_consumer(options, group, where)`` builds a confluent-kafka ``Consumer`` (no
auto-commit: offsets are committed only for committed epochs; a short fetch-queue
backoff, ``FETCH_QUEUE_BACKOFF_MS``), after ``reach`` found a bootstrap address that
takes a connection. ``topic_partitions`` lists the partitions of the named topics
(checked to exist), ``sample_values`` reads the first values of some partitions (to
infer a JSON schema) and leaves nothing assigned; ``last_offsets`` finds each
partition's last offset in a list of messages.

``ConsumerThread(consumer, where, group, queue_batches)`` runs ``consume`` in a
thread and hands lists of messages to ``queue`` (bounded: a full queue stops the
reading, which is backpressure). The client's calls wait for each other, so every
other call goes through this thread too: ``request_commit(offsets, then)`` (from the
source's thread: the commit runs between two ``consume`` calls, or while a full queue
waits, then ``then()``; the caller does not wait: a commit the source waited for
stalled it up to 20 ms an epoch while the queue was full; ``close`` makes the commits
still queued before it closes the consumer), the high watermarks for the lag and the
pending partitions (``high``, refreshed every second from the fetch answers; never
from a ListOffsets request, which Tansu answers with the last batch's first offset
plus one, far below the log's end: a partition would look read to its end while most
of it was unread), and
``hold(released, timeout_s)``, which a rebalance callback (running in this
thread) calls to wait for ``released`` while still serving commits. A failure of
``consume`` is kept in ``failure`` for the source to raise.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from engine import log
from engine.errors import ConfigError, TransientError

#: librdkafka prefetches until its local queue holds ``queued.min.messages`` (100,000),
#: then fetches nothing for ``fetch.queue.backoff.ms``. With its default, 1,000 ms, the
#: source (which drains 100,000 records in about 0.2 s) then waited with an empty queue
#: for most of each second: about 150 K records/s whatever the CPU. 100 ms is shorter
#: than that drain, so the queue is refilled before it runs dry. ``config`` overrides it.
FETCH_QUEUE_BACKOFF_MS = 100


def reach(bootstrap: str, where: str, timeout_s: float = 3.0) -> None:
    """Raise ``TransientError`` at once when no bootstrap address takes a TCP connection
    (librdkafka would retry for the whole metadata timeout, logging every attempt)."""
    why: Exception | None = None
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition("://")[2].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout_s).close()
            return
        except (OSError, ValueError, UnicodeError) as exc:  # refused, unknown host, bad port
            why = exc
    raise TransientError(f"{where}: cannot reach Kafka at {bootstrap}: {why}")


def make_consumer(o: Any, group: str, where: str) -> Any:
    from confluent_kafka import Consumer

    reach(str(o.config.get("bootstrap.servers", o.bootstrap)), where)
    settings = {
        "bootstrap.servers": o.bootstrap, "group.id": group,
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": o.start, "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000, "enable.partition.eof": False,
        "max.poll.interval.ms": max(300_000, 2 * o.rebalance_timeout_ms),
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        **o.config,
    }  # fmt: skip
    try:
        return Consumer(settings)
    except Exception as exc:
        raise ConfigError(f"{where}: bad consumer settings: {exc}") from exc


def topic_partitions(consumer: Any, o: Any, where: str) -> list[tuple[str, int]]:
    """``(topic, partition)`` of every topic named (or the ``partitions`` listed), sorted."""
    try:
        meta = consumer.list_topics(timeout=10)
    except Exception as exc:
        raise TransientError(f"{where}: cannot reach Kafka at {o.bootstrap}: {exc}") from exc
    found = []
    for topic in o.topics:
        t = meta.topics.get(topic)
        if t is None or t.error is not None:
            raise ConfigError(f"{where}.topics: topic {topic!r} does not exist at {o.bootstrap} "
                              f"(topics: {sorted(meta.topics)[:20]})")  # fmt: skip
        ids = sorted(t.partitions)
        if o.partitions is not None:
            missing = sorted(set(o.partitions) - set(ids))
            if missing:
                raise ConfigError(f"{where}.partitions: topic {topic!r} has no partition "
                                  f"{missing} (it has {ids})")  # fmt: skip
            ids = sorted(o.partitions)
        found += [(topic, p) for p in ids]
    return found


def sample_values(consumer: Any, parts: list[tuple[str, int]], limit: int = 1000) -> list[Any]:
    """Up to ``limit`` values from the start of ``parts`` (within about a second once some
    came, five at most); the consumer is left with nothing assigned."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
    values: list[Any] = []
    deadline = time.monotonic() + 5
    while len(values) < limit and time.monotonic() < deadline:
        for m in consumer.consume(limit, 0.2):
            if m.error() is None and m.value() is not None:
                values.append(m.value())
        if values and time.monotonic() > deadline - 4:
            break
    consumer.unassign()
    return values


def last_offsets(topics: list[str], one_topic: bool, parts: np.ndarray,
                 offsets: np.ndarray) -> dict[tuple[str, int], int]:  # fmt: skip
    """``(topic, partition)`` -> the offset of its last message. A partition's messages
    come in offset order, in runs: the last of each run, the later run winning."""
    run = parts.astype(np.int64)
    if not one_topic:
        codes = pa.array(topics, pa.string()).dictionary_encode().indices
        run = run | (codes.to_numpy(zero_copy_only=False).astype(np.int64) << 32)
    ends = [*np.flatnonzero(run[1:] != run[:-1]).tolist(), len(run) - 1]
    return {(topics[i], int(parts[i])): int(offsets[i]) for i in ends}


class ConsumerThread:
    """See the module docstring."""

    def __init__(self, consumer: Any, where: str, group: str, queue_batches: int,
                 owned: Callable[[], list[str]]) -> None:  # fmt: skip
        self.consumer, self.where, self.group = consumer, where, group
        self.owned = owned
        self.queue: queue.Queue[list[Any]] = queue.Queue(maxsize=queue_batches)
        self.commits: queue.Queue[tuple[dict[str, int], Callable[[], None] | None]] = (
            queue.Queue())  # fmt: skip
        self.high: dict[str, int] = {}
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kafka-consumer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def request_commit(self, offsets: dict[str, int], then: Callable[[], None] | None = None
                       ) -> None:  # fmt: skip
        """Have this thread commit ``offsets`` to the group, then call ``then``; no wait."""
        self.commits.put((offsets, then))  # in order after any still queued
        if not self.thread.is_alive():  # (closed, or failed: the source raises at its poll)
            self.serve_commits()

    def serve_commits(self) -> None:
        while True:
            try:
                offsets, then = self.commits.get_nowait()
            except queue.Empty:
                return
            try:
                self.commit(offsets)
            finally:
                if then is not None:
                    then()

    def commit(self, offsets: dict[str, int]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        parts = [TopicPartition(k.rpartition(":")[0], int(k.rpartition(":")[2]), v)
                 for k, v in offsets.items()]  # fmt: skip
        if not parts:
            return
        try:
            self.consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:  # a partition this instance no longer owns: harmless
            log.say("kafka_commit", f"{self.where}: committing offsets to group "
                    f"{self.group!r}: {exc}", level=30)  # fmt: skip

    def hold(self, released: threading.Event, timeout_s: float) -> bool:
        """Wait (in a rebalance callback) for ``released``, serving commits; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not released.wait(0.02) and time.monotonic() < deadline and not self.stop.is_set():
            self.serve_commits()
        self.serve_commits()
        return released.is_set()

    def _run(self) -> None:
        watermarks_at = 0.0
        try:
            while not self.stop.is_set():
                self.serve_commits()
                if time.monotonic() - watermarks_at > 1.0:
                    watermarks_at = time.monotonic()
                    self._watermarks()
                msgs = self.consumer.consume(2_000, 0.1)
                while msgs and not self.stop.is_set():
                    try:
                        self.queue.put(msgs, timeout=0.02)
                        break
                    except queue.Full:  # commits still go out while the queue is full
                        self.serve_commits()
        except BaseException as exc:  # handed to the next poll
            self.failure = exc

    def _watermarks(self) -> None:
        from confluent_kafka import TopicPartition

        for k in self.owned():
            topic, _, p = k.rpartition(":")
            tp = TopicPartition(topic, int(p))
            with contextlib.suppress(Exception):
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:  # none before the partition's first fetch answer
                    self.high[k] = high

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(10)
        if not self.thread.is_alive():  # the last epochs' offsets, to the group
            with contextlib.suppress(Exception):
                self.serve_commits()
        with contextlib.suppress(Exception):
            self.consumer.close()


def unread(owned: set[str], positions: dict[str, int], high: dict[str, int],
           earliest: bool) -> set[tuple[str, int]]:  # fmt: skip
    """The ``(topic, partition)`` of the ``owned`` partitions (``topic:partition``) with
    records not returned yet: the next offset below the high watermark; the high
    watermark not known yet; or no offset yet, records there and reading from the
    earliest."""
    out = set()
    for k in owned:
        h, at = high.get(k), positions.get(k)
        if h is None or (at is None and h > 0 and earliest) or (at is not None and at < h):
            topic, _, p = k.rpartition(":")
            out.add((topic, int(p)))
    return out
