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
    aborted = "probe"                # probe | hidden | shown: see "Sent early" below

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
   the tests, does; see ``aborted`` below) every record
   carries the header ``ringstream.epoch = <id>:<n>``, so none is sent twice.

**Sent early.** On a broker that hides an aborted transaction from
``read_committed`` readers (Kafka does), ``write_batch`` also sends the records at
once, into a transaction begun for that epoch alone when every earlier epoch is
committed (``connectors.kafka.produce.Early``); step 3 then sends only what is
left and commits, so the broker stores an epoch while the pipeline goes on rather
than all at the commit. Nothing else changes: a crash loses that transaction like
any other and step 4 redoes the epoch from the spool; a rollback aborts it. Where
aborted records are shown (Tansu), a rolled-back epoch's records would stay
readable, so there records go only at the commit. ``aborted = "probe"`` (the
default) finds out at the first write (``staging.aborted_visible``); ``"hidden"``
or ``"shown"`` says it instead: ``"hidden"`` on a broker that shows them breaks
exactly-once after a crash.

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
from typing import Annotated, Any, Literal

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Sink, SinkCapabilities, WriteResult
from connectors.kafka.consumer import reach
from connectors.kafka.encode import RecordEncoder, check_sizes
from connectors.kafka.produce import Early, after, failed, send, transactional
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
from engine.affinity import spawning_on
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
    aborted: Literal["probe", "hidden", "shown"] = "probe"  # to read_committed readers
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
        self.tagged = {"hidden": False, "shown": True}.get(o.aborted)  # None: probe
        self.epoch, self.row = 0, 0
        self.committables: dict[int, dict[str, Any]] = {}
        self.tried: set[int] = set()  # epochs whose transaction this process began
        self.early = Early(o.topic, o.transaction_timeout_ms / 1000)  # sent as written
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
        self._early(self.epoch, records)
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
        self._next_early()  # (whichever way the commit went: the next epoch's records wait)

    def rollback_epoch(self, epoch: int) -> None:
        if self.early.epoch is not None and self.early.epoch >= epoch:
            self._abort_early()
        self.early.forget(since=epoch)
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
        early = self.early.epoch == epoch and "spool" in c  # begun here: not committed yet
        if early and self.early.stale():
            self._abort_early()
            early, producer = False, self._producer()  # (a new one, where the abort failed)
        if not early and self._marker(topic, part) >= end:
            self._forget(epoch, committed=True)
            return
        tag = f"{c.get('id', self.id)}:{epoch}".encode()
        skip = {} if early else self._landed(epoch, c, tag)
        if early and self.early.sent >= c["spool"]["records"]:
            batches: Any = []  # all sent: the spool file is not read
        elif "spool" in c:  # read whole (memory-mapped) first: a damaged file is not transient
            batches = list(self.spool.read(c["spool"], epoch))
        else:  # a committable from before the spool: its records are in the staging topic
            batches = self.staging.read(epoch, start, end)
        self.tried.add(epoch)
        mine = [(EPOCH_HEADER, tag)] if self.tagged else []
        fault = faults.armed("kafka_sink.mid_transaction", epoch)
        try:
            if early:  # a prefix is in the open transaction already: the rest, then commit
                self.early.epoch = None
                sent = self.early.sent + send(producer, self.options.topic,
                                              after(batches, self.early.sent), mine, {}, -1)
                if fault:  # the transaction holds the epoch, uncommitted
                    producer.flush()
                    faults.reached("kafka_sink.mid_transaction", epoch)
            else:
                if self.early.epoch is not None:  # (another epoch's: it cannot come first)
                    self._abort_early()
                    producer = self._producer()
                producer.begin_transaction()
                half = c.get("rows", 0) // 2 if fault else -1
                sent = send(producer, self.options.topic, batches, mine, skip, half, epoch)
            producer.flush()
            from confluent_kafka import TopicPartition

            meta = self._marker_consumer().consumer_group_metadata()
            producer.send_offsets_to_transaction([TopicPartition(topic, part, end)], meta, 30)
            producer.commit_transaction(60)
        except Exception as exc:
            self.early.stop(epoch)
            if failed(producer, exc, f"{self.where}: epoch {epoch}", self.txid):
                self.producer = None  # unknown state: a fresh producer settles it
            raise TransientError(f"{self.where}: epoch {epoch} not committed yet: {exc}") from exc
        self.committed_rows += sent
        self._forget(epoch, committed=True)

    def _landed(self, epoch: int, c: dict[str, Any], tag: bytes) -> dict[int, int]:
        """Per partition, how many of the epoch's records are readable already: where a
        transaction of it may have begun (elsewhere, or here and aborted) on a broker that
        shows aborted records."""
        here = epoch in self.committables  # pre-committed here: no transaction began elsewhere
        if not self.tagged or (here and epoch not in self.tried):
            return {}
        if "starts" not in c:  # written with aborted = "hidden": nothing to look from
            log.say("kafka_sink_no_starts", f"{self.where}: epoch {epoch} was pre-committed "
                    'with aborted = "hidden"; records an aborted transaction left readable '
                    "are not looked for (all are sent)", logging.WARNING, sink=self.config.name)
            return {}
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
        return skip

    def _forget(self, epoch: int, committed: bool = False) -> None:
        self.committables.pop(epoch, None)
        self.tried.discard(epoch)
        if self.early.epoch == epoch:  # (committed already: found by its marker)
            self._abort_early()
        self.early.forget(epoch=epoch)
        if committed:  # its records (and older epochs') are in the target: the files go
            self.spool.drop(upto=epoch)

    # -- sending early (``connectors.kafka.produce.Early``) -------------------------------------
    def _early(self, epoch: int, records: pa.RecordBatch) -> None:
        if epoch in self.early.stopped:
            return
        try:
            self._producer()  # (at the first write: the probe runs with the producer's start)
        except (TransientError, ConnectorError):  # the commit tries again, and reports
            self.early.stop(epoch)
            return
        if self.tagged is not False:  # a reader would see an aborted epoch: sent at commit
            self.early.stop(epoch)
            return
        blocked = any(n < epoch for n in self.committables)  # its transaction comes first
        if not self.early.write(self.producer, epoch, records, blocked):
            self.producer = None  # its state is unknown: a fresh one settles it

    def _abort_early(self) -> None:
        if not self.early.abort(self.producer):
            self.producer = None

    def _next_early(self) -> None:
        """After a commit: begin the next epoch whose records wait, if none is pending before it."""
        n = min(self.early.backlog, default=None)
        if n is None or self.early.epoch is not None or self.producer is None:
            return
        if any(e < n for e in self.committables):
            return
        if not self.early.begin(self.producer, n, self.early.take(n)):
            self.producer = None

    # -- Kafka helpers ------------------------------------------------------------------------
    def _producer(self) -> Any:
        if self.producer is None:
            with spawning_on(self.config.cpus):  # librdkafka's threads: every Ring 1 CPU
                p = transactional(self.settings, self.txid, self.options.transaction_timeout_ms,
                                  self.where)  # fmt: skip
            if self.early.epoch is not None:  # its transaction went with the old producer
                self.early.stop(self.early.epoch)
            if self.tagged is None:
                from confluent_kafka import KafkaException

                try:
                    self.tagged = aborted_visible(
                        p, self.settings, self.staging.topic, self.marker_group
                    )
                except KafkaException as exc:  # tried again with the next producer
                    raise TransientError(f"{self.where}: the broker probe failed: {exc}") from exc
            self.producer = p
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
