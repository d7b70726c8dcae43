"""The Ring 0 worker process: run the operator graph over its key partition.

Inputs: one ring per source instance for each input of the query (port 0, or
ports 0/1 for a join), each carrying this worker's key partition. Outputs: one
ring per sink reading a stream the worker makes ("main" or a late output). A
plan with no Ring 0 work (``engine.wiring``: direct) sends the rows straight to
the sinks: the worker's inputs then carry only barriers, watermarks and the end,
it has no output ring, and it takes part in every epoch as usual.
``Worker`` is an ``engine.stream.Consumer``; per event:

* ``on_data`` → the graph; its output goes to the "main" rings, late rows of
  a window with a late output go to that output's rings.
* ``on_watermark`` (the minimum over inputs moved) → the graph emits what it
  closes; the watermark is forwarded.
* ``on_barrier(N)`` (every live input delivered BARRIER(N): epoch step 3) →
  snapshot the graph into this worker's state file of epoch N
  (``engine.checkpoint.snapshot``), report it (``Checkpointed``), and forward
  BARRIER(N) to every output before any frame of epoch N + 1.
* ``finish`` (every input ended) → the graph's remaining windows, EOS
  forwarded. If an input was stopped by a drain (``EOS_STOPPED``, checkpoints
  on), nothing open is closed: the graph is snapshotted as this worker's part
  of the final epoch (reported like a barrier's, no barrier forwarded) and
  ``EOS_STOPPED`` is forwarded; the next run restores that state.

The worker does no I/O but ring reads/writes and its state files. On start it
restores the state file the last manifest recorded for it, if any.
Counters (shared memory, read by the coordinator): rows and batches in and
out, watermark, rows dropped as late, with a null time or out of range.
"""

from __future__ import annotations

import time

import msgspec
import pyarrow as pa

from engine import control, faults
from engine.checkpoint import snapshot
from engine.checkpoint.manifest import StateFileRef
from engine.counters import Counters
from engine.shm import FrameKind, Ring
from engine.stream.consumer import Consumer
from engine.stream.inputs import EOS_END, EOS_STOPPED, InputSet
from engine.stream.watermarks import Watermarks

_EOS = int(FrameKind.EOS)


class Worker(Consumer):
    def __init__(self, spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
        plan = spec.plan(pipeline)
        self.spec, self.counters, self.conn, self.slot = spec, counters, conn, spec.slot
        self.graph = plan.worker_graph()
        self.store = spec.store()
        restore = msgspec.json.decode(spec.restore, type=StateFileRef | None)
        super().__init__(
            InputSet(spec.in_rings), Watermarks(spec.in_idle_s or [0.0] * len(spec.in_rings))
        )
        if restore is not None:
            self.marks.emitted = snapshot.load(self.store, restore, self.graph)
        self.tick_s = 0.05 if any(spec.in_idle_s) else None
        self.out_rings = [Ring.attach(n) for n in spec.out_rings]
        self.writers = [r.writer() for r in self.out_rings]
        self.streams: dict[str, list] = {}
        for w, stream in zip(self.writers, spec.out_streams, strict=True):
            w.write_schema(plan.output_schema if stream == "main" else plan.late_schemas[stream])
            self.streams.setdefault(stream, []).append(w)
        self.main = self.streams.get("main", [])
        self.ports = spec.in_ports or [0] * len(spec.in_rings)
        self.epoch = spec.first_epoch  # the open epoch: the one after the last aligned barrier

    # -- events ---------------------------------------------------------------------------
    def on_data(self, input: int, batch: pa.RecordBatch) -> None:
        self._emit(self.graph.process(batch, self.ports[input]))
        self._emit_late()
        self.counters.add(self.slot, "rows_in", batch.num_rows)
        self.counters.add(self.slot, "batches_in", 1)

    def on_watermark(self, watermark: int) -> None:
        self._emit(self.graph.on_watermark(watermark))
        self._emit_late()
        for w in self.writers:
            w.write_watermark(watermark)
        c, slot = self.counters, self.slot
        c.set(slot, "watermark", watermark)
        self._publish_drops()
        c.set(slot, "blocked_ns", sum(w.blocked_ns for w in self.writers))

    def on_barrier(self, epoch: int) -> None:
        self._checkpoint(epoch)
        self.epoch = epoch + 1

    def finish(self) -> None:
        end = EOS_END
        if self.stopped and self.store is not None:  # drained: open windows resume later
            self._checkpoint(self.epoch, barrier=False)
            end = EOS_STOPPED
        else:
            self._emit(self.graph.finish())
            self._emit_late()
        self._publish_drops()
        for w in self.writers:
            w.put(_EOS, b"", end)
            w.close()
        for r in self.out_rings:
            r.close()
        self.inputs.close()

    def run(self) -> None:
        self.consume()
        self.finish()

    # -- helpers --------------------------------------------------------------------------
    def _emit(self, batches: list[pa.RecordBatch], to: list | None = None) -> None:
        for b in batches:
            if not b.num_rows:
                continue
            for w in self.main if to is None else to:
                w.write_batches(b)
            self.counters.add(self.slot, "rows_out", b.num_rows)
            self.counters.add(self.slot, "batches_out", 1)

    def _emit_late(self) -> None:
        for name, batches in self.graph.take_late().items():
            self._emit(batches, self.streams.get(name, []))

    def _publish_drops(self) -> None:
        for name, n in self.graph.dropped().items():
            self.counters.set(self.slot, name, n)

    def _checkpoint(self, epoch: int, barrier: bool = True) -> None:
        """Epoch step 3: state file, then the barrier downstream, then the report."""
        started = time.monotonic_ns()
        ref = None
        if self.store is not None:
            ref = snapshot.save(
                self.store, epoch, "worker", self.spec.index, self.graph, self.marks.emitted
            )
        if barrier:
            for w in self.writers:
                w.write_barrier(epoch)
        control.send(
            self.conn,
            control.Checkpointed(
                epoch, "worker", self.spec.index, state=ref, watermark=self.marks.emitted,
                metrics={
                    "alignment_ms": self.aligner.alignment_ns / 1e6,
                    "snapshot_ms": (time.monotonic_ns() - started) / 1e6,
                    "state_bytes": float(ref.bytes) if ref else 0.0,
                },
            ),
        )  # fmt: skip
        faults.reached("worker.after_snapshot", epoch)
