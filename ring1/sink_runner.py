"""The Ring 1 sink process: drain every producer's ring into one sink, with two-phase commit.

Its inputs are the rings of its stream: one per worker for ``"main"`` or a late
output, one per source instance for a dead-letter output, and for ``"main"`` of
a plan with no Ring 0 work one per source instance (``engine.wiring``: direct;
the watermark then applies the sources' idle timeouts). ``SinkRunner`` is an
``engine.stream.Consumer``; ``run()``:

1. ``recover()``: if the last manifest recorded an epoch N, re-drive
   ``commit_epoch(N, committable)`` (epoch step 6 again; idempotent; skipped when
   the manifest is marked committed: every sink confirmed it) and
   ``rollback_epoch(N + 1)`` (discard anything staged later), and confirm
   ``Committed(N)``; on a fresh start ``rollback_epoch(1)``. Then restore the
   final stage's state and ``begin_epoch``.
2. ``consume()``, one method per event:

   * ``on_data`` → the final stage (``[[query.final]]``, if any) → ``write_batch``;
   * ``on_watermark`` (minimum over inputs) → the final stage emits what closes;
   * ``on_barrier(N)`` (BARRIER(N) on every input: epoch step 4) →
     ``pre_commit(N)``, the final stage's state file, ``Checkpointed`` with the
     committable; ``begin_epoch(N + 1)``; reading goes on — the commit comes
     later as a ``Commit(N)`` message, once the coordinator wrote manifest N
     (step 5);
   * ``on_tick`` → control messages: ``Commit(N)`` → ``commit_epoch(N)`` and
     ``Committed(N)`` (step 6).

3. ``finish()`` (every input ended): the final stage finishes, the last epoch
   is pre-committed and reported, and the sink waits for its ``Commit`` before
   closing: a bounded run ends with everything committed. After a drain
   (``EOS_STOPPED``) the final stage does not finish: its state goes into the
   last epoch's report and the next run resumes it.

Every connector call goes through the guard (``ring1.guard``): ``commit_epoch``
and ``rollback_epoch`` (idempotent by contract) are retried on transient
errors; ``write_batch`` and ``pre_commit`` are not (a failed write may have
done part of its work: the run restarts from the last checkpoint instead).
Health transitions and, every second or so, metrics go to the coordinator.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pyarrow as pa

from connectors import registry
from connectors.base import ConnectorConfig
from engine import control, faults
from engine.checkpoint import snapshot
from engine.counters import Counters
from engine.stream.consumer import Consumer
from engine.stream.inputs import InputSet
from engine.stream.watermarks import Watermarks
from ring1.guard import ConnectorGuard

METRICS_EVERY_S = 1.0
CONTROL_EVERY_S = 0.01


class SinkRunner(Consumer):
    tick_s = 0.05

    def __init__(self, spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
        cfg = next(s for s in pipeline.sinks if s.name == spec.name)
        plan = spec.plan(pipeline)
        self.cfg, self.spec, self.conn = cfg, spec, conn
        self.counters, self.slot = counters, spec.slot
        self.label = f"sink {cfg.name!r} ({cfg.type})"
        self.guard = ConnectorGuard.from_config(self.label, cfg, self._report_health)
        self.final = plan.final_graph() if cfg.input == "main" else None
        self.sink = registry.resolve_sink(cfg.type)()
        own = f"connectors/sink-{cfg.name}-{spec.index}"
        config = ConnectorConfig(
            cfg.name, dict(cfg.options), spec.index, 1, plan.sink_schema(cfg.input),
            pipeline=pipeline.pipeline.name,
            durable_dir=str(Path(spec.checkpoint_dir) / own) if spec.checkpoint_dir else "",
            cpus=tuple(spec.ring1_cpus),
        )  # fmt: skip
        self.guard.call("open", lambda: self.sink.open(config))
        self.store = spec.store()
        self.restore = msgspec.json.decode(spec.restore, type=control.SinkRestore | None)
        idle = spec.in_idle_s or [0.0] * len(spec.in_rings)  # (direct: the sources' timeouts)
        super().__init__(InputSet(spec.in_rings), Watermarks(idle))
        self.epoch = spec.first_epoch  # the open epoch
        self._control_at = self._metrics_at = time.monotonic()

    def run(self) -> None:
        self.recover()
        self.consume()
        self.finish()

    def recover(self) -> None:
        """Re-drive the last manifest's commit and drop what is newer, restore the final stage."""
        r = self.restore
        if r is not None:
            if r.committed:  # every sink confirmed it: a re-drive could only find it done, or
                # (a Kafka sink whose marker offsets expired) fail on a spool file deleted then
                control.send(self.conn, control.Committed(r.epoch, "sink", self.spec.index))
            else:
                self._commit(r.epoch, r.committable)
            self.guard.call("rollback_epoch", lambda: self.sink.rollback_epoch(r.epoch + 1))
            if self.final is not None and r.state is not None:
                self.marks.emitted = snapshot.load(self.store, r.state, self.final)
        elif self.spec.first_epoch == 1:  # a fresh start: nothing staged by an earlier run survives
            self.guard.call("rollback_epoch", lambda: self.sink.rollback_epoch(1))
        self._begin(self.epoch)

    # -- events ---------------------------------------------------------------------------
    def on_data(self, input: int, batch: pa.RecordBatch) -> None:
        self._write(self.final.process(batch, 0) if self.final is not None else [batch])

    def on_watermark(self, watermark: int) -> None:
        if self.final is not None:
            self._write(self.final.on_watermark(watermark))
            self._publish_drops()
        self.counters.set(self.slot, "watermark", watermark)

    def _publish_drops(self) -> None:
        """The final stage's dropped rows, published as a worker publishes its own (at each
        watermark and at the end): the run's summary and metrics add them up."""
        assert self.final is not None
        for name, n in self.final.dropped().items():
            self.counters.set(self.slot, name, n)

    def on_barrier(self, epoch: int) -> None:
        self._pre_commit(epoch)
        self.epoch = epoch + 1
        self._begin(self.epoch)

    def on_tick(self) -> None:
        now = time.monotonic()
        if now - self._control_at > CONTROL_EVERY_S:
            self._control_at = now
            self._handle_control()
        if now - self._metrics_at >= METRICS_EVERY_S:
            self._send_metrics()

    def finish(self) -> None:
        if self.final is not None and not (self.stopped and self.store is not None):
            self._write(self.final.finish())
        if self.final is not None:
            self._publish_drops()
        self._pre_commit(self.epoch)  # the last epoch: everything after the last barrier
        self._handle_control(block_for=self.epoch)
        self.inputs.close()
        self._send_metrics()
        self.guard.call("close", self.sink.close, retry=False)

    # -- helpers --------------------------------------------------------------------------
    def _begin(self, epoch: int) -> None:
        self.guard.call("begin_epoch", lambda: self.sink.begin_epoch(epoch), retry=False)

    def _write(self, batches: list[pa.RecordBatch]) -> None:
        for b in batches:
            if not b.num_rows:
                continue
            started = time.monotonic()
            self.guard.call("write_batch", lambda b=b: self.sink.write_batch(b), retry=False)
            self.guard.metrics.record_write(b.num_rows, b.nbytes, time.monotonic() - started)
            c, slot = self.counters, self.slot
            c.add(slot, "rows_in", b.num_rows)
            c.add(slot, "batches_in", 1)
            c.add(slot, "bytes_in", b.nbytes)

    def _pre_commit(self, n: int) -> None:
        """Epoch step 4: stage the epoch, save the final stage, report the committable."""
        started = time.monotonic_ns()
        committable = self.guard.call("pre_commit", lambda: self.sink.pre_commit(n), retry=False)
        ref = None
        if self.final is not None and self.store is not None and self.final.stateful:
            ref = snapshot.save(
                self.store, n, "sink", self.spec.index, self.final, self.marks.emitted
            )
        control.send(
            self.conn,
            control.Checkpointed(
                n, "sink", self.spec.index, committable=committable, state=ref,
                metrics={"alignment_ms": self.aligner.alignment_ns / 1e6,
                         "pre_commit_ms": (time.monotonic_ns() - started) / 1e6},
            ),
        )  # fmt: skip
        faults.reached("sink.after_pre_commit", n)

    def _handle_control(self, block_for: int | None = None) -> None:
        """Apply ``Commit`` messages (step 6); with ``block_for``, until that epoch committed."""
        while True:
            if not self.conn.poll(0.05 if block_for is not None else 0):
                if block_for is None:
                    return
                continue
            msg = control.recv(self.conn)
            if isinstance(msg, control.Commit):
                self._commit(msg.epoch, msg.committable)
                if block_for is not None and msg.epoch >= block_for:
                    return

    def _commit(self, n: int, committable: dict | None) -> None:
        """Epoch step 6: make epoch ``n`` visible, then confirm it."""
        self.guard.call("commit_epoch", lambda: self.sink.commit_epoch(n, committable))
        faults.reached("sink.after_commit", n)
        control.send(self.conn, control.Committed(n, "sink", self.spec.index))

    def _send_metrics(self) -> None:
        self._metrics_at = time.monotonic()
        values = self.guard.report(self.sink)
        latency = self.guard.metrics.latency_counts.tolist()
        control.send(self.conn, control.Metrics("sink", self.spec.index, values, latency))

    def _report_health(self, state: str, error: str) -> None:
        control.send(self.conn, control.Health("sink", self.spec.index, state, error))
