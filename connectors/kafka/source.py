"""The Kafka source (``type = "kafka"``): partitions of topics as rows, offsets in the manifest.

Pipeline::

    [[sources]]
    name = "clicks"
    type = "kafka"
    bootstrap = "127.0.0.1:9092"
    topics = ["clicks"]              # or pattern = "^clicks-.*" (with a group)
    group = "clickstats"             # a consumer group: Kafka divides the partitions
    format = "json"                  # raw | text | json | "package.module:function"
    schema = { user = "text", page = "text", ms = "bigint" }   # json; else inferred
    event_time = "_timestamp"        # the record's timestamp (or a column of the value)

Rows have the value's columns (``connectors.kafka.decode``), then ``_topic``,
``_partition`` (int32), ``_offset`` (int64), ``_timestamp`` (timestamp[ms,
UTC]: the record's), ``_key`` (binary, or string with ``key_format =
"text"``) and, with ``headers = true``, ``_headers`` (list of key/value).

**Partitions.** Without ``group``, the source reads every partition of its
topics (or the ``partitions`` listed), divided between its ``parallelism``
instances (instance ``i`` of ``n`` takes every ``n``-th of the sorted list).
With ``group``, every instance (and every other engine instance of the same
pipeline, on any machine) joins the consumer group and Kafka divides the
partitions.

**Offsets.** The position (``checkpoint``) is the next offset of every
partition this instance reads; the manifest holds it, so recovery restores it
exactly. When an epoch commits (``notify_committed``), its offsets are also
committed to the group (``group``, default ``ringstream_<source name>``), for
tools that watch the group and for whoever reads the partition next. A
partition starts at the larger of the manifest's offset and the group's
committed one (a partition another instance read meanwhile is not read again),
else at ``start`` (``earliest`` or ``latest``).

**Rebalances** (group mode). When Kafka takes partitions away, the consumer
(which runs in a thread of its own) stops handing out their records, asks for a
checkpoint at once (``checkpoint_requested``) and holds the revocation until an
epoch that covers every record it returned from them has committed and its
offsets are committed to the group: the next owner starts exactly after the
last record this instance made durable. If no epoch commits within
``rebalance_timeout_ms`` (checkpoints off, a stalled pipeline), the offsets
returned so far are committed and a warning says that those records are now
at-least-once.

``data_ready`` waits on the consumer thread's queue (no timer); ``metrics()`` has
``lag_records`` (high watermark minus position, summed) and each partition's lag.

A record that cannot be decoded is a bad record naming topic, partition and
offset: the run stops (``on_error = "fail"``) or it is dead-lettered.

Why confluent-kafka: librdkafka's client (idempotence, transactions, consumer
groups) behind a thin Python layer, the fastest maintained one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Annotated, Any, Literal

import pyarrow as pa
from msgspec import Meta

from connectors.base import (
    BadRecord,
    ConnectorConfig,
    PendingPositions,
    Source,
    SourceBatch,
    SourceCheckpoint,
)
from connectors.kafka.columns import HEADERS, STAMP, MessageColumns
from connectors.kafka.consumer import (
    ConsumerThread,
    last_offsets,
    make_consumer,
    sample_values,
    topic_partitions,
    unread,
)
from connectors.kafka.decode import Decoder
from connectors.options import Options
from engine import log
from engine.affinity import spawning_on
from engine.errors import CheckpointError, ConfigError, ConnectorError, TransientError
from engine.typenames import parse_schema

META_NAMES = ("_topic", "_partition", "_offset", "_timestamp", "_key", "_headers")


class KafkaSourceOptions(Options, frozen=True):
    bootstrap: Annotated[str, Meta(min_length=1)]
    topics: list[str] = []
    pattern: str | None = None
    group: str | None = None
    partitions: list[int] | None = None
    format: str = "json"
    schema: dict[str, str] | None = None
    key_format: Literal["raw", "text"] = "raw"
    headers: bool = False
    start: Literal["earliest", "latest"] = "earliest"
    rebalance_timeout_ms: Annotated[int, Meta(ge=100)] = 30_000
    queue_batches: Annotated[int, Meta(ge=1)] = 8
    config: dict[str, str | int | float | bool] = {}  # librdkafka settings, as they are


def _key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class KafkaSource(Source):
    """See the module docstring."""

    options_type = KafkaSourceOptions
    partition_columns = ("_topic", "_partition")  # a watermark per partition

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        o: KafkaSourceOptions = self.options
        self.where = where = f"sources.{config.name}"
        if bool(o.topics) == bool(o.pattern):
            raise ConfigError(f"{where}: name the topics (topics = [...]) or a pattern, not both")
        if o.pattern is not None and o.group is None:
            raise ConfigError(f"{where}.pattern: a pattern needs a consumer group (group = ...)")
        if o.partitions is not None and o.group is not None:
            raise ConfigError(f"{where}.partitions: fixed partitions or a group, not both")
        self.group = o.group or f"ringstream_{config.name}"
        given = parse_schema(o.schema, f"{where}.schema") if o.schema else None
        self.decoder = Decoder(o.format, given, where)
        with spawning_on(config.cpus):  # librdkafka's threads: on every Ring 1 CPU
            self.consumer = make_consumer(o, self.group, where)
        try:
            parts = topic_partitions(self.consumer, o, where) if o.topics else []  # they exist
            if self.decoder.schema is None:
                if o.pattern is not None:
                    raise ConfigError(f"{where}: declare the schema (schema = {{ ... }}) when "
                                      "reading a topic pattern")  # fmt: skip
                self.decoder.infer(sample_values(self.consumer, parts))
            self._schema = self._output_schema()
        except BaseException:  # no client left retrying in the background
            self.consumer.close()
            raise
        self.positions: dict[str, int] = {}  # partition -> next offset, of records returned
        self.restored: dict[str, int] = {}
        self.owned: set[str] = set()
        self.pending: list[Any] = []
        self.columns = MessageColumns(o.topics if o.pattern is None else None, o.key_format,
                                      o.headers)  # fmt: skip
        self.lock = threading.Lock()
        self.revoking: set[str] = set()
        self.revoke_mark: int | None = None
        self.released = threading.Event()
        self.revocations = 0  # _on_revoke calls: which hold a release ends
        self.checkpoints = 0  # checkpoint() calls: an epoch's index
        self.recorded = PendingPositions()  # epoch -> (checkpoint index, offsets)
        self.want_checkpoint = False
        self.reader: ConsumerThread | None = None

    def _output_schema(self) -> pa.Schema:
        o: KafkaSourceOptions = self.options
        value = self.decoder.schema
        assert value is not None
        clash = [n for n in value.names if n in META_NAMES]
        if clash:
            raise ConfigError(f"{self.where}: value columns {clash} clash with the source's own")
        fields = [
            *value,
            pa.field("_topic", pa.string()),
            pa.field("_partition", pa.int32()),
            pa.field("_offset", pa.int64()),
            pa.field("_timestamp", STAMP),
            pa.field("_key", pa.string() if o.key_format == "text" else pa.binary()),
        ]
        if o.headers:
            fields.append(pa.field("_headers", HEADERS))
        return pa.schema(fields)

    def schema(self) -> pa.Schema:
        return self._schema

    def supports_replay(self) -> bool:
        return True

    # -- positions ----------------------------------------------------------------------------
    def checkpoint(self) -> SourceCheckpoint:
        self.checkpoints += 1
        with self.lock:
            return SourceCheckpoint({"offsets": dict(self.positions)})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        try:
            offsets = {str(k): int(v) for k, v in checkpoint.position["offsets"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{self.where}: checkpoint position {checkpoint.position!r} "
                f"is not one of this source's ({exc})"
            ) from None
        self.restored = offsets

    def position_recorded(self, epoch: int, checkpoint: SourceCheckpoint) -> None:
        self.recorded.record(epoch, (self.checkpoints, dict(checkpoint.position["offsets"])))

    def notify_committed(self, epoch: int) -> None:
        got = self.recorded.committed(epoch)
        if got is None:
            return
        index, offsets = got
        assert self.reader is not None
        with self.lock:
            release = self.revoke_mark is not None and index > self.revoke_mark
            revocation = self.revocations
        self.reader.request_commit(offsets, (lambda: self._release(revocation)) if release
                                   else None)  # fmt: skip

    def _release(self, revocation: int) -> None:
        """After the commit (in the consumer's thread): end the hold of ``revocation``, not
        of a later one, which no committed epoch covers yet."""
        with self.lock:
            if revocation == self.revocations:
                self.released.set()

    # -- start: assign or subscribe, then the consumer thread ---------------------------------
    def _start(self) -> None:
        from confluent_kafka import TopicPartition

        o: KafkaSourceOptions = self.options
        self.reader = ConsumerThread(self.consumer, self.where, self.group, o.queue_batches,
                                     lambda: sorted(self.owned))  # fmt: skip
        if o.group is None:
            every = topic_partitions(self.consumer, o, self.where)
            parts = [
                TopicPartition(t, p)
                for t, p in every[self.config.instance :: self.config.instances]
            ]
            self._positioned(parts)
            self.consumer.assign(parts)
        else:
            topics = [o.pattern] if o.pattern else list(o.topics)
            self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.reader.start()

    def _positioned(self, parts: list[Any]) -> None:
        """Each partition's start: max(manifest offset, group's committed offset), else
        ``start`` (left to ``auto.offset.reset``)."""
        committed = {}
        with contextlib.suppress(Exception):
            for tp in self.consumer.committed(parts, timeout=10):
                if tp.offset >= 0:
                    committed[_key(tp.topic, tp.partition)] = tp.offset
        with self.lock:
            for tp in parts:
                k = _key(tp.topic, tp.partition)
                best = max(self.restored.get(k, -1), committed.get(k, -1))
                if best >= 0:
                    tp.offset = best
                    self.positions[k] = best
                self.owned.add(k)

    def _on_assign(self, consumer: Any, parts: list[Any]) -> None:
        self._positioned(parts)
        consumer.assign(parts)

    def _on_revoke(self, consumer: Any, parts: list[Any]) -> None:
        """Hold the revocation until an epoch covering every record returned from ``parts``
        has committed (its offsets then committed to the group), or the timeout."""
        assert self.reader is not None
        keys = {_key(tp.topic, tp.partition) for tp in parts}
        with self.lock:
            self.revoking, self.want_checkpoint = keys, True
            self.revocations += 1
            self.released.clear()
        if self.reader.stop.is_set():  # closing: the group keeps the last committed epoch's
            pass
        elif not self.reader.hold(self.released, self.options.rebalance_timeout_ms / 1000):
            with self.lock:
                offsets = {k: v for k, v in self.positions.items() if k in keys}
            self.reader.commit(offsets)
            log.say("kafka_rebalance", f"{self.where}: no epoch committed within "
                    f"{self.options.rebalance_timeout_ms} ms of a rebalance; the offsets read "
                    f"from {sorted(keys)} were committed without one: those records are "
                    "at-least-once", level=30)  # fmt: skip
        with self.lock:
            for k in keys:
                self.positions.pop(k, None)
                self.owned.discard(k)
            self.revoking, self.revoke_mark = set(), None
        consumer.unassign()

    # -- polls --------------------------------------------------------------------------------
    def checkpoint_requested(self) -> bool:
        if self.want_checkpoint:
            self.want_checkpoint = False
            return True
        return False

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        if self.reader is None:
            self._start()
        assert self.reader is not None
        if self.reader.failure is not None:
            raise TransientError(f"{self.where}: the consumer failed: {self.reader.failure}")
        msgs = self.pending
        self.pending = []
        while len(msgs) < max_records:
            try:
                msgs += self.reader.queue.get_nowait()
            except queue.Empty:
                break
        if len(msgs) > max_records:
            msgs, self.pending = msgs[:max_records], msgs[max_records:]
        with self.lock:
            if self.revoking and self.revoke_mark is None:
                self.revoke_mark = self.checkpoints  # the next checkpoint covers what was returned
            skip = self.revoking | ({k for k in self.positions} - self.owned)
        return self._batch(msgs, skip) if msgs else None

    def _batch(self, msgs: list[Any], skip: set[str]) -> SourceBatch | None:
        """Errors, revoked partitions, then the columns: each field read for the whole
        list at once (its method mapped over it), no Python code run per message."""
        from confluent_kafka import Message

        good = msgs
        if any(map(Message.error, msgs)):  # (a KafkaError is true; no error is None)
            errors = list(map(Message.error, msgs))
            for err in errors:
                if err is not None:
                    self._error(err)
            good = [m for m, err in zip(msgs, errors, strict=True) if err is None]
        if skip:  # revoked partitions: their next owner reads them
            good = [m for m in good if _key(m.topic(), m.partition()) not in skip]
        if not good:
            return None
        r = self.columns.read(good)
        body, bad = self.decoder.decode(r.values)
        meta = r.without([i for i, _ in bad]) if bad else r.meta
        batch = pa.RecordBatch.from_arrays([*body.columns, *meta], schema=self._schema)
        last = last_offsets(r.topics, r.one_topic, r.parts, r.offsets)
        with self.lock:
            for (topic, part), offset in last.items():
                self.positions[_key(topic, part)] = offset + 1
        records = [BadRecord(f"{r.topics[i]}/{r.parts[i]}", why, line=int(r.offsets[i]),
                             raw=r.values[i]) for i, why in bad]  # fmt: skip
        return SourceBatch(batch, partition=int(r.parts[-1]), offset=int(r.offsets[-1]),
                           bad=records)  # fmt: skip

    def _error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal() or not err.retriable():
            raise ConnectorError(f"{self.where}: Kafka: {err.str()}")
        raise TransientError(f"{self.where}: Kafka: {err.str()}")

    def data_ready(self, timeout_s: float) -> bool:
        if self.reader is None or self.pending or self.reader.failure is not None:
            return True
        try:
            self.pending = self.reader.queue.get(timeout=timeout_s)
            return True
        except queue.Empty:
            return False

    def pending_partitions(self) -> set[tuple[str, int]]:
        with self.lock:
            owned, positions = self.owned - self.revoking, dict(self.positions)
        high = dict(self.reader.high) if self.reader is not None else {}
        return unread(owned, positions, high, self.options.start == "earliest")

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        total = 0
        with self.lock:
            positions = dict(self.positions)
        for k, high in list(self.reader.high.items() if self.reader else ()):
            lag = max(0, high - positions.get(k, 0))
            total += lag
            topic, _, p = k.rpartition(":")
            out[f"partition_lag_{topic}_{p}"] = float(lag)
        out["lag_records"] = float(total)
        return out

    def close(self) -> None:
        self.released.set()
        if self.reader is not None:
            self.reader.close()
        else:
            with contextlib.suppress(Exception):
                self.consumer.close()
