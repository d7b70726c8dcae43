"""The Ring 1 source process: the runtime around one source instance.

``SourceRunner.run()`` loops, one thread, and calls one method per event:

* control messages first — ``Barrier(N)`` → ``on_barrier(N)`` (epoch step 2:
  the position after the last row already written is reported, then
  BARRIER(N) goes into every ring — between two polls, so the barrier splits
  the stream exactly at that position); ``NotifyCommitted(N)`` →
  ``on_committed(N)`` (the connector's ``notify_committed``); ``Stop`` (a
  drain) → ``on_stop()``;
* ``poll_batch`` through the connector guard (``ring1.guard``: transient
  errors retried with backoff, health, metrics), then ``on_data(batch)`` for
  each batch the batcher completes (``batch_max_rows``/``batch_max_wait_ms``):
  the batch is split by the partition key's hash into one part per worker
  (``ring1.partition``; round-robin by batch for a global query; all to the
  instance's own worker for a changelog with no key: ``engine.placement``), each part
  written to its worker's ring (cut to fit by ``write_batches``; a full ring
  waits: backpressure) — or, for a plan with no Ring 0 work, the whole batch to
  each "main" sink's ring (``engine.wiring``: direct) — then a WATERMARK
  (``engine.stream.SourceWatermark``)
  into every ring (a partitioned source's rows still in the batcher keep their
  partitions pending; while it waits for data, the watermark is refreshed every
  ``REFRESH_WATERMARK_S``, as a partition found at its end may let it move);
* records the connector could not read (``SourceBatch.bad``) → ``on_bad``:
  the run fails naming the record (``on_error = "fail"``) or they go, as rows
  of ``connectors.base.DEAD_LETTER_SCHEMA``, to the rings of the sinks that
  read the source's dead-letter output (``on_error = "dead_letter"``); either
  way they are counted;
* ``finished()`` or a drain → ``finish()``: the final position is reported,
  then EOS into every ring. After a drain of a source that has more, with
  checkpoints on, the EOS says ``EOS_STOPPED``: downstream keeps its state
  open for the next run instead of closing every window.

A connector that raises is reported with its name and traceback (the child
wrapper sends ``Failed``). Every second or so the connector's metrics go to
the coordinator (``Metrics``).
"""

from __future__ import annotations

import time

import msgspec
import pyarrow as pa

from connectors import registry
from connectors.base import BadRecord, ConnectorConfig, SourceCheckpoint, dead_letter_batch
from engine import control, faults
from engine.counters import Counters
from engine.errors import BadRecordError, SchemaMismatchError
from engine.shm import FrameKind, Ring
from engine.stream.inputs import EOS_END, EOS_STOPPED
from engine.stream.watermarks import SourceWatermark
from ring1.batching import Batcher
from ring1.guard import ConnectorGuard
from ring1.partition import split

_EOS = int(FrameKind.EOS)
METRICS_EVERY_S = 1.0
REFRESH_WATERMARK_S = 0.1  # how often an idle source asks which partitions are pending


class SourceRunner:
    def __init__(self, spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
        cfg = pipeline.source_named(spec.name)
        plan = spec.plan(pipeline)
        self.cfg, self.spec, self.conn = cfg, spec, conn
        self.counters, self.slot = counters, spec.slot
        self.label = f"source {cfg.name!r} ({cfg.type}) instance {spec.index}"
        self.guard = ConnectorGuard.from_config(self.label, cfg, self._report_health)
        self.source = registry.resolve_source(cfg.type)()
        config = ConnectorConfig(
            cfg.name, dict(cfg.options), spec.index, cfg.parallelism, on_error=cfg.on_error,
            cpus=tuple(spec.ring1_cpus),
        )  # fmt: skip
        self.guard.call("open", lambda: self.source.open(config))
        restore = msgspec.json.decode(spec.restore)
        if restore is not None:
            self.guard.call("restore", lambda: self.source.restore(SourceCheckpoint(restore)))
        self.schema = plan.source_schemas[cfg.name]
        self.steps = plan.source_chain(cfg.name)  # stateless steps run here, before the split
        self.rings = [Ring.attach(name) for name in spec.out_rings]
        self.writers = [r.writer() for r in self.rings]
        for w in self.writers:
            w.write_schema(plan.ring_schema(cfg.name))
        self.dl_rings = [Ring.attach(name) for name in spec.dead_letter_rings]
        self.dl_writers = [r.writer() for r in self.dl_rings]
        # a plan with no Ring 0 work: rows straight to the sinks (the workers' rings then
        # carry only barriers and watermarks; engine.wiring)
        self.direct_rings = [Ring.attach(name) for name in spec.direct_rings]
        self.direct = [r.writer() for r in self.direct_rings]
        for w in self.direct:
            w.write_schema(plan.ring_schema(cfg.name))
        self.marked = [*self.writers, *self.direct]  # every ring a watermark goes into
        self.key = plan.partition_keys.get(cfg.name)
        self.batcher = Batcher(cfg.batch_max_rows, cfg.batch_max_wait_ms / 1000)
        self.watermark = SourceWatermark(cfg.event_time, cfg.max_out_of_orderness_ms,
                                         tuple(self.source.partition_columns))  # fmt: skip
        self.restored_mark = self.watermark.restore(msgspec.json.decode(spec.restore_marks))
        self.replayable = self.source.supports_replay()
        self.rr = spec.index  # round-robin target of a global query
        self.stopping = False
        self.last_epoch = spec.first_epoch - 1
        self._metrics_at = time.monotonic()
        self._refresh_at = 0.0

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        source, batcher = self.source, self.batcher
        self._send_watermark(self.restored_mark)  # the checkpoint's: nothing read may be older
        while True:
            self.on_control()
            if self.stopping:
                break
            if source.checkpoint_requested():
                control.send(self.conn, control.RequestCheckpoint("source", self.spec.index))
            batch = self.poll()
            if batch is None:
                if source.finished():
                    break
                if batcher.due():
                    self._flush()
                self._refresh_watermark()
                self.guard.call("data_ready", lambda: source.data_ready(self._idle_wait()))
            else:
                for ready in batcher.add(batch):
                    self.on_data(ready)
                if batcher.due():
                    self._flush()
            self._maybe_send_metrics()
        self.finish()

    def on_control(self) -> None:
        while self.conn.poll():
            msg = control.recv(self.conn)
            if isinstance(msg, control.Barrier):
                self.on_barrier(msg.epoch)
            elif isinstance(msg, control.NotifyCommitted):
                self.on_committed(msg.epoch)
            elif isinstance(msg, control.Stop):
                self.on_stop()

    # -- events ---------------------------------------------------------------------------
    def on_barrier(self, epoch: int) -> None:
        """Epoch step 2: report the position after every row written so far, then BARRIER(N)."""
        self._report_position(epoch, finished=False)
        for w in (*self.marked, *self.dl_writers):
            w.write_barrier(epoch)
        self.last_epoch = epoch

    def on_committed(self, epoch: int) -> None:
        self.guard.call("notify_committed", lambda: self.source.notify_committed(epoch))

    def on_stop(self) -> None:
        self.stopping = True

    def poll(self) -> pa.RecordBatch | None:
        """One ``poll_batch`` through the guard; bad records go to ``on_bad``."""
        started = time.monotonic()
        try:
            got = self.guard.call(
                "poll_batch", lambda: self.source.poll_batch(self.cfg.batch_max_rows)
            )
        except BadRecordError as exc:  # the connector failed on a record itself: say how to go on
            exc.args = (f"{exc}{self._hint()}", *exc.args[1:])
            raise
        rows, size = (got.batch.num_rows, got.batch.nbytes) if got is not None else (0, 0)
        self.guard.metrics.record_poll(
            time.monotonic() - started, rows, size, got.offset if got is not None else None
        )
        if got is None:
            return None
        if got.bad:
            self.on_bad(got.bad)
        return got.batch if rows else None

    def on_bad(self, records: list[BadRecord]) -> None:
        """Records the connector could not read: fail the run, or dead-letter and count them."""
        if self.cfg.on_error == "fail":
            first = records[0]
            more = f" (and {len(records) - 1} more in this batch)" if len(records) > 1 else ""
            raise BadRecordError(
                f"{self.label}: bad record: {first.describe()}{more}{self._hint()}", first
            )
        batch = dead_letter_batch(self.cfg.name, records)
        for w in self.dl_writers:
            w.write_batches(batch)
        self.counters.add(self.slot, "dead_letter_rows", len(records))

    def _hint(self) -> str:
        return (
            f'. Fix the input, or set on_error = "dead_letter" on sources.{self.cfg.name} to '
            "send such records to a dead-letter output and go on"
        )

    def on_data(self, batch: pa.RecordBatch) -> None:
        """Partition, write to the workers' rings (direct: the sinks'), then the watermark."""
        if batch.schema is not self.schema and batch.schema != self.schema:
            if not batch.schema.equals(self.schema, check_metadata=False):
                raise SchemaMismatchError(
                    f"{self.label}: a batch has schema {batch.schema} but the source declared "
                    f"{self.schema}"
                )
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)
        c, slot, size = self.counters, self.slot, batch.nbytes
        c.add(slot, "rows_in", batch.num_rows)
        c.add(slot, "batches_in", 1)
        c.add(slot, "bytes_in", size)
        for out in self.steps.process(batch) if self.steps is not None else [batch]:
            if self.direct:  # every "main" sink gets every row
                for w in self.direct:
                    w.write_batches(out)
            elif not self.key:  # round-robin by batch; [] (a changelog, no key): one worker
                self.writers[self.rr % len(self.writers)].write_batches(out)
                self.rr += self.key is None
            else:
                parts = split(out, self.key, len(self.writers))
                for w, part in zip(self.writers, parts, strict=True):
                    w.write_batches(part)
            c.add(slot, "rows_out", out.num_rows)
            c.add(slot, "batches_out", 1)
            c.add(slot, "bytes_out", size if out is batch else out.nbytes)
        pending = self._pending() if self.watermark.split else None
        self._send_watermark(self.watermark.advance(batch, pending))  # every row read counts
        c.set(slot, "blocked_ns", sum(w.blocked_ns for w in self.marked))

    def _pending(self) -> set[tuple[object, ...]]:
        """The partitions with rows not handed on yet: unread, or waiting in the batcher."""
        held = self.watermark.partitions_in(self.batcher.held())
        return self.source.pending_partitions() | held

    def _refresh_watermark(self) -> None:
        """While waiting for data: a partition found at its end may let the watermark move."""
        if self.watermark.split and time.monotonic() >= self._refresh_at:
            self._refresh_at = time.monotonic() + REFRESH_WATERMARK_S
            self._send_watermark(self.watermark.refresh(self._pending()))

    def _send_watermark(self, wm: int | None) -> None:
        if wm is not None:
            for w in self.marked:
                w.write_watermark(wm)
            self.counters.set(self.slot, "watermark", wm)

    def finish(self) -> None:
        """The final position (nothing after it), then EOS: ``EOS_STOPPED`` after a drain."""
        self._report_position(self.last_epoch + 1, finished=True)
        stopped = self.stopping and not self.source.finished() and bool(self.spec.checkpoint_dir)
        for w in (*self.marked, *self.dl_writers):
            w.put(_EOS, b"", EOS_STOPPED if stopped else EOS_END)
            w.close()
        for r in (*self.rings, *self.direct_rings, *self.dl_rings):
            r.close()
        self._send_metrics()
        self.guard.call("close", self.source.close, retry=False)

    # -- helpers --------------------------------------------------------------------------
    def _idle_wait(self) -> float:
        """How long to wait for data: until pending rows are due, at most 50 ms."""
        due = self.batcher.deadline()
        if due is None:
            return 0.05
        return min(0.05, max(0.0005, due - time.monotonic()))

    def _flush(self) -> None:
        pending = self.batcher.take()
        if pending is not None:
            self.on_data(pending)

    def _report_position(self, epoch: int, finished: bool) -> None:
        self._flush()  # the barrier (or the end) must follow every row the position covers
        position = None
        if self.replayable:
            cp = self.guard.call("checkpoint", self.source.checkpoint, retry=False)
            self.source.position_recorded(epoch, cp)
            position = cp.position
        control.send(
            self.conn,
            control.Checkpointed(
                epoch, "source", self.spec.index, position=position, finished=finished,
                exhausted=finished and self.source.finished(), metrics=self._metrics(),
                marks=self.watermark.state() if self.replayable else None,
            ),
        )  # fmt: skip
        faults.reached("source.after_checkpoint", epoch)

    def _metrics(self) -> dict[str, float]:
        return self.guard.report(self.source)

    def _maybe_send_metrics(self) -> None:
        if time.monotonic() - self._metrics_at >= METRICS_EVERY_S:
            self._send_metrics()

    def _send_metrics(self) -> None:
        self._metrics_at = time.monotonic()
        latency = self.guard.metrics.latency_counts.tolist()
        control.send(
            self.conn, control.Metrics("source", self.spec.index, self._metrics(), latency)
        )

    def _report_health(self, state: str, error: str) -> None:
        control.send(self.conn, control.Health("source", self.spec.index, state, error))
