"""The Ring 0 worker process: run the operator graph over its key partition.

Inputs: one ring per (source instance) for each input of the query (port 0,
or ports 0/1 for a join), each carrying this worker's key partition.
Outputs: one ring per sink; each sink reads one stream ("main" or a late
output). Per frame:

* DATA → the graph; its output goes to the "main" rings, late rows of a
  window with a late output go to that output's rings.
* WATERMARK → the minimum over inputs (``ring0.alignment.Watermarks``); when
  it moves, the graph emits what it closes and the watermark is forwarded.
* BARRIER(N) → alignment (``Aligner``): that input pauses until every live
  input has delivered BARRIER(N); then the worker snapshots the graph into
  ``<checkpoint dir>/epoch-N/worker-<i>.state`` (temp → fsync → rename,
  checksum), reports it to the coordinator (``Checkpointed``) and forwards
  BARRIER(N) to every output before it reads any frame of epoch N + 1.
* EOS on every input → ``finish()`` (the remaining windows), EOS forwarded.
  If an input was stopped by a drain (``EOS_STOPPED``, checkpoints on), the
  worker does not close what is open: it snapshots the graph as its part of
  the final epoch (reported like a barrier's, no barrier forwarded) and
  forwards ``EOS_STOPPED``; the next run restores that state and goes on.

The worker does no I/O but ring reads/writes and its state files. On start
it restores the state file the last manifest recorded for it, if any.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pyarrow as pa

from engine import control, faults
from engine.counters import Counters
from engine.shm import FrameKind, Ring
from ring0.alignment import NONE, Aligner, Watermarks, drive
from ring0.inputs import EOS_END, EOS_STOPPED, InputSet

_EOS = int(FrameKind.EOS)
_META = "worker/meta"


def restore_graph(graph, restore: dict | None) -> int:  # type: ignore[no-untyped-def]
    """Load the state file a manifest recorded; returns the restored watermark."""
    if not restore:
        return NONE
    from engine.checkpoint.state import read_state

    state = read_state(Path(restore["path"]), restore["checksum"])
    meta = state.pop(_META, None)
    graph.restore(state)
    if meta is not None and meta.num_rows:
        return int(meta.column("watermark")[0].as_py())
    return NONE


def snapshot_graph(graph, path: Path, watermark: int) -> dict:  # type: ignore[no-untyped-def]
    from engine.checkpoint.state import write_state

    tables = graph.snapshot()
    tables[_META] = pa.table({"watermark": pa.array([watermark], pa.int64())})
    ref = write_state(path, tables)
    return {"path": str(path), "bytes": int(ref.bytes), "checksum": ref.checksum}


def run_worker(spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
    plan = spec.plan(pipeline)
    graph = plan.worker_graph()
    restored = restore_graph(graph, msgspec.json.decode(spec.restore))
    inputs = InputSet(spec.in_rings)
    aligner = Aligner(inputs)
    marks = Watermarks(spec.in_idle_s or [0.0] * len(spec.in_rings))
    marks.emitted = restored
    idle = any(spec.in_idle_s)
    out_rings = [Ring.attach(n) for n in spec.out_rings]
    writers = [r.writer() for r in out_rings]
    streams: dict[str, list] = {}
    for w, stream in zip(writers, spec.out_streams, strict=True):
        w.write_schema(plan.output_schema if stream == "main" else plan.late_schemas[stream])
        streams.setdefault(stream, []).append(w)
    main = streams.get("main", [])
    slot = spec.slot
    ckpt_dir = Path(spec.checkpoint_dir) if spec.checkpoint_dir else None

    def emit(batches, to=main) -> None:  # type: ignore[no-untyped-def]
        for b in batches:
            if not b.num_rows:
                continue
            for w in to:
                w.write_batch(b)
            counters.add(slot, "rows_out", b.num_rows)
            counters.add(slot, "batches_out", 1)

    def emit_late() -> None:
        for name, batches in graph.take_late().items():
            emit(batches, streams.get(name, []))

    def on_watermark(wm: int) -> None:
        emit(graph.on_watermark(wm))
        emit_late()
        for w in writers:
            w.write_watermark(wm)
        counters.set(slot, "watermark", wm)
        counters.set(slot, "late_rows", graph.late_rows)
        counters.set(slot, "blocked_ns", sum(w.blocked_ns for w in writers))

    def checkpoint(epoch: int, barrier: bool = True) -> None:
        started = time.monotonic_ns()
        state = None
        if ckpt_dir is not None:
            path = ckpt_dir / f"epoch-{epoch:020d}" / f"worker-{spec.index}.state"
            path.parent.mkdir(parents=True, exist_ok=True)
            state = snapshot_graph(graph, path, marks.emitted)
        if barrier:
            for w in writers:
                w.write_barrier(epoch)
        control.send(
            conn,
            control.Checkpointed(
                epoch,
                "worker",
                spec.index,
                state=state,
                watermark=marks.emitted,
                metrics={
                    "alignment_ms": aligner.alignment_ns / 1e6,
                    "snapshot_ms": (time.monotonic_ns() - started) / 1e6,
                    "state_bytes": float(state["bytes"]) if state else 0.0,
                },
            ),
        )
        faults.reached("worker.after_snapshot", epoch)

    epoch = [spec.first_epoch]  # the open epoch: the one after the last aligned barrier
    ports = spec.in_ports or [0] * len(spec.in_rings)

    def on_data(i: int, batch: pa.RecordBatch) -> None:
        emit(graph.process(batch, ports[i]))
        emit_late()
        counters.add(slot, "rows_in", batch.num_rows)
        counters.add(slot, "batches_in", 1)

    def on_epoch(done: int) -> None:
        checkpoint(done)
        epoch[0] = done + 1

    drive(inputs, marks, aligner, on_data=on_data, on_watermark=on_watermark,
          on_epoch=on_epoch, timeout=0.05 if idle else None)  # fmt: skip
    counters.set(slot, "late_rows", graph.late_rows)
    end = EOS_END
    if any(inputs.stopped) and ckpt_dir is not None:  # drained: open windows resume later
        checkpoint(epoch[0], barrier=False)
        end = EOS_STOPPED
    else:
        emit(graph.finish())
        emit_late()
    for w in writers:
        w.put(_EOS, b"", end)
        w.close()
    for r in out_rings:
        r.close()
    inputs.close()
