"""The Kafka sink (``type = "kafka"``): rows as records, exactly once for ``read_committed``.

Pipeline::

    [[sinks]]
    name = "out"
    type = "kafka"
    bootstrap = "127.0.0.1:9092"
    topic = "clicks-per-user"
    format = "json"                  # json | text | raw | "package.module:function"
    key = "user"                     # the record key (default: _key when present)
    id = "clickstats.out"            # names its transactions (default: <pipeline>.<sink>)

Value, key, partition, timestamp and headers: ``connectors.kafka.encode``.

**How an epoch becomes visible, exactly once.** A Kafka transaction that a crashed
producer left open cannot be finished by another producer: the next one with its
``transactional.id`` aborts it. So no epoch may depend on such a transaction:

1. ``write_batch`` encodes the rows and appends them to the epoch's file in this
   sink's **spool** (``connectors.kafka.spool``: a directory of its own under the
   run's checkpoint directory, ``connectors/sink-<name>-<index>``).
2. ``pre_commit(n)`` seals the file (fsync, rename: epoch ``n``'s records are
   durable and invisible), then waits for the epoch's **marker record** (sent at its
   first row) in this sink's **staging topic** (one partition; ``staging_topic``,
   default ``ringstream.staging.<id>``; created when missing): its offset
   ``end - 1`` is the epoch's place in a sequence that only grows, across restarts
   and fresh starts alike. The committable (in manifest ``n``) holds the file, its
   record count, ``[start, end)`` and (where records are tagged, see 4.) each target
   partition's end offset before epoch ``n`` was copied.
3. ``commit_epoch(n)`` copies the records to the target in **one transaction**
   (``transactional.id = ringstream.<id>``) and commits in the same transaction the offset
   ``end`` of the staging partition for the group ``ringstream.sink.<id>``: the
   **marker** that epoch ``n`` is in the target. Then the spool files of epochs up
   to ``n`` are deleted.
4. A commit after a restart (manifest ``n`` written, then a crash) first starts the
   transactional producer, which fences the dead one and settles its transaction;
   then if the marker is at ``end`` or past it, epoch ``n`` is already there:
   nothing is sent. Otherwise the records are read back from the spool file and
   sent again, skipping, per partition, those already readable by a
   ``read_committed`` consumer with the epoch's header (found by reading from the
   recorded end offsets): on Kafka an aborted transaction's records are never
   readable, so all are sent again; on a broker that shows them (Tansu, used by
   the tests, does; ``staging.aborted_visible`` finds out at the first commit) every record
   carries the header ``ringstream.epoch = <id>:<n>``, so none is sent twice.

A committable from before the spool (its records in the staging topic, no
``spool`` key) is still read back from the topic. Without a checkpoint directory
the spool is a temporary directory, removed at ``close``.

``rollback_epoch`` deletes the spool files of the epochs rolled back: no manifest
names them. Two pipelines, or two
instances of one pipeline, need different ``id`` (the default has the pipeline's
name; give each instance of a scaled-out pipeline its own); a process that finds
its transactional id taken over (fenced) stops with an error saying so.

Why confluent-kafka: librdkafka's idempotent and transactional producer,
including ``send_offsets_to_transaction``, behind a thin Python layer. Why a local
spool rather than staging the records in a topic (as before): see ``spool``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from typing import Annotated, Any

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Sink, SinkCapabilities, WriteResult
from connectors.kafka.consumer import reach
from connectors.kafka.encode import RecordEncoder, check_sizes
from connectors.kafka.spool import Spool, temporary_dir
from connectors.kafka.staging import (
    EPOCH_HEADER,
    MAX_MESSAGE,
    Staging,
    aborted_visible,
    committed_offset,
    end_offsets,
    ensure_topic,
    landed,
)
from connectors.options import Options
from engine import faults, log
from engine.errors import ConfigError, ConnectorError, TransientError


class KafkaSinkOptions(Options, frozen=True):
    bootstrap: Annotated[str, Meta(min_length=1)]
    topic: Annotated[str, Meta(min_length=1)]
    format: str = "json"
    columns: list[str] | None = None
    key: str | None = None
    partition: str | None = None
    timestamp: str | None = None
    id: str | None = None
    staging_topic: str | None = None
    create: bool = False
    partitions: Annotated[int, Meta(ge=1)] = 1
    transaction_timeout_ms: Annotated[int, Meta(ge=1000)] = 60_000
    config: dict[str, str | int | float | bool] = {}  # librdkafka settings, as they are


class KafkaSink(Sink):
    """See the module docstring."""

    options_type = KafkaSinkOptions

    def open(self, config: ConnectorConfig) -> None:
        from confluent_kafka.admin import AdminClient

        super().open(config)
        o: KafkaSinkOptions = self.options
        self.where = where = f"sinks.{config.name}"
        self.id = o.id or f"{config.pipeline or 'pipeline'}.{config.name}"
        safe = re.sub(r"[^a-zA-Z0-9._-]", "_", self.id)[:180]
        digest = hashlib.sha256(self.id.encode()).hexdigest()[:8]
        self.txid = f"ringstream.{self.id}"
        self.marker_group = f"ringstream.sink.{self.id}"
        self.settings = {"bootstrap.servers": o.bootstrap, **o.config}
        reach(str(self.settings["bootstrap.servers"]), where)  # at once, not after timeouts
        admin = AdminClient(self.settings)
        self.partitions = ensure_topic(admin, o.topic, o.partitions if o.create else None, where)
        staging = o.staging_topic or f"ringstream.staging.{safe}.{digest}"
        ensure_topic(admin, staging, 1, f"{where}.staging_topic")
        if config.schema is None:
            raise ConfigError(f"{where}: the sink needs the stream's schema")
        self.encoder = RecordEncoder(config.schema, o, self.partitions, where)
        self.staging = Staging(self.settings, staging, where)
        self.temp_spool = "" if config.durable_dir else temporary_dir()
        self.spool = Spool(config.durable_dir or self.temp_spool, f"{where} (spool)")
        self.producer: Any = None  # the transactional one, started at the first commit
        self._marker_c: Any = None  # reads the marker; its group's metadata goes in each commit
        self.tagged: bool | None = None  # records carry their epoch (``_aborted_visible``)
        self.epoch, self.row = 0, 0
        self.committables: dict[int, dict[str, Any]] = {}
        self.tried: set[int] = set()  # epochs whose transaction this process began
        self.rows = self.bytes = self.committed_rows = 0

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(exactly_once=True, two_phase_commit=True, partitioned=True)

    # -- epochs -----------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.row = epoch, 0

    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        records = self.encoder.encode(batch, self.row)
        check_sizes(records, self.row, MAX_MESSAGE - 4096, self.where)
        if self.row == 0:
            self.staging.announce(self.epoch)
        self.row += batch.num_rows
        self.spool.write(self.epoch, records)
        self.rows += batch.num_rows
        self.bytes += records.nbytes
        return WriteResult(batch.num_rows, records.nbytes)

    def pre_commit(self, epoch: int) -> dict[str, Any] | None:
        spooled = self.spool.seal(epoch)
        c: dict[str, Any] = {"epoch": epoch, "id": self.id, "rows": self.row}
        if spooled is None and self.row:
            raise ConnectorError(f"{self.where}: epoch {epoch} wrote {self.row} rows but "
                                 "its spool file is not open (pre_commit out of turn?)")
        earlier = [{k: v for k, v in e.items() if k != "earlier"}
                   for n, e in sorted(self.committables.items()) if n < epoch]  # fmt: skip
        if earlier:  # not committed yet: a restart from this manifest commits them first
            c["earlier"] = earlier
        if spooled is not None:
            start, end = self.staging.marked(epoch)
            c["staging"] = [self.staging.topic, 0, start, end]
            c["spool"] = spooled
            if self.tagged is not False:  # only a tagged resend reads from them
                c["starts"] = self._ends()
        self.committables[epoch] = c
        return c

    def commit_epoch(self, epoch: int, committable: dict[str, Any] | None = None) -> None:
        for n in sorted(e for e in self.committables if e < epoch):  # not committed yet
            self._commit(n, self.committables[n])
        c = committable if committable is not None else self.committables.get(epoch)
        if c is not None:
            self._commit(epoch, c)

    def rollback_epoch(self, epoch: int) -> None:
        for n in [e for e in self.committables if e >= epoch]:
            self._forget(n)
        self.spool.drop(since=epoch)

    # -- the copy -----------------------------------------------------------------------------
    def _commit(self, epoch: int, c: dict[str, Any]) -> None:
        for e in c.get("earlier", ()):  # in order; each one's marker makes it idempotent
            if e["epoch"] < epoch:
                self._commit(e["epoch"], e)
        if "staging" not in c:  # nothing was written in this epoch
            self._forget(epoch, committed=True)
            return
        topic, part, start, end = c["staging"]
        producer = self._producer()  # fences a dead predecessor, settles its transaction
        if self._marker(topic, part) >= end:
            self._forget(epoch, committed=True)
            return
        tag = f"{c.get('id', self.id)}:{epoch}".encode()
        skip: dict[int, int] = {}
        here = epoch in self.committables  # pre-committed here: no transaction began elsewhere
        if self.tagged and (not here or epoch in self.tried):
            starts = {int(p): int(o) for p, o in c["starts"].items()}
            skip = landed(self.settings, self.options.topic, starts, tag)
            if any(skip.values()):
                log.say(
                    "kafka_sink_resume",
                    f"{self.where}: epoch {epoch}: {sum(skip.values())} records are already "
                    f"readable in {self.options.topic!r} (an aborted transaction the broker "
                    "shows); the rest are sent",
                    logging.WARNING,
                    sink=self.config.name,
                )
        if "spool" in c:  # read whole (memory-mapped) first: a damaged file is not transient
            batches: Any = list(self.spool.read(c["spool"], epoch))
        else:  # a committable from before the spool: its records are in the staging topic
            batches = self.staging.read(epoch, start, end)
        self.tried.add(epoch)
        try:
            producer.begin_transaction()
            sent = self._send(producer, batches, tag, skip, epoch, c.get("rows", 0))
            producer.flush()
            from confluent_kafka import TopicPartition

            meta = self._marker_consumer().consumer_group_metadata()
            producer.send_offsets_to_transaction([TopicPartition(topic, part, end)], meta, 30)
            producer.commit_transaction(60)
        except Exception as exc:
            self._failed(producer, epoch, exc)
        self.committed_rows += sent
        self._forget(epoch, committed=True)

    def _send(
        self, producer: Any, batches: Any, tag: bytes, skip: dict[int, int], epoch: int, rows: int
    ) -> int:
        topic, sent = self.options.topic, 0
        mine = [(EPOCH_HEADER, tag)] if self.tagged else []
        fault = rows // 2 if faults.armed("kafka_sink.mid_transaction", epoch) else -1
        produce = producer.produce
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
                        _retry(producer, topic, value, key, p, 0, h)
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
                    _retry(producer, topic, value, key, p, ts or 0, h)
                sent += 1
                if sent == fault:
                    producer.flush()
                    faults.reached("kafka_sink.mid_transaction", epoch)
        return sent

    def _failed(self, producer: Any, epoch: int, exc: Exception) -> None:
        from confluent_kafka import KafkaException

        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if err is not None and err.fatal():
            self.producer = None
            raise ConnectorError(
                f"{self.where}: epoch {epoch}: the transactional producer "
                f"{self.txid!r} failed for good ({err.name()}: {err.str()}); "
                "if it was fenced, another process uses this id (a second "
                "instance of this pipeline? give each its own id)"
            ) from exc
        if err is not None and err.txn_requires_abort():
            try:
                producer.abort_transaction(30)
            except Exception:  # the retry starts a new producer
                self.producer = None
        else:
            self.producer = None  # unknown state: a fresh producer settles it
        raise TransientError(f"{self.where}: epoch {epoch} not committed yet: {exc}") from exc

    def _forget(self, epoch: int, committed: bool = False) -> None:
        self.committables.pop(epoch, None)
        self.tried.discard(epoch)
        if committed:  # its records (and older epochs') are in the target: the files go
            self.spool.drop(upto=epoch)

    # -- Kafka helpers ------------------------------------------------------------------------
    def _producer(self) -> Any:
        if self.producer is None:
            from confluent_kafka import KafkaException, Producer

            p = Producer(
                {
                    **self.settings,
                    "transactional.id": self.txid,
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "queue.buffering.max.messages": 1_000_000,
                    "message.max.bytes": MAX_MESSAGE,
                    "transaction.timeout.ms": self.options.transaction_timeout_ms,
                }
            )
            try:
                p.init_transactions(60)
            except KafkaException as exc:
                raise TransientError(
                    f"{self.where}: cannot start the transactional producer {self.txid!r}: {exc}"
                ) from exc
            self.producer = p
            if self.tagged is None:
                self.tagged = aborted_visible(
                    p, self.settings, self.staging.topic, self.marker_group
                )
        return self.producer

    def _marker_consumer(self) -> Any:
        if self._marker_c is None:
            from confluent_kafka import Consumer

            self._marker_c = Consumer(
                {
                    **self.settings,
                    "group.id": self.marker_group,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
        return self._marker_c

    def _marker(self, topic: str, part: int) -> int:
        return committed_offset(self._marker_consumer(), topic, part, self.marker_group, self.where)

    def _ends(self) -> dict[str, int]:
        return end_offsets(self._marker_consumer(), self.options.topic, self.partitions, self.where)

    def metrics(self) -> dict[str, float]:
        return {
            "rows_staged": self.rows,
            "bytes_staged": self.bytes,
            "rows_committed": self.committed_rows,
        }

    def health_check(self) -> bool:
        self._marker_consumer().list_topics(self.options.topic, timeout=5)
        return True

    def close(self) -> None:
        self.spool.close()
        if self.temp_spool:
            shutil.rmtree(self.temp_spool, ignore_errors=True)
        self.staging.close()
        if self._marker_c is not None:
            self._marker_c.close()
        if self.producer is not None:
            self.producer.flush(10)


def _retry(producer: Any, topic: str, value: Any, key: Any, p: int, ts: int, h: Any) -> None:
    """``produce`` again once the client's queue has room."""
    while True:
        producer.poll(0.05)
        try:
            producer.produce(topic, value, key, p, timestamp=ts, headers=h)
            return
        except BufferError:
            continue

