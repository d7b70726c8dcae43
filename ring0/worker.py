"""The Ring 0 worker process: run the operator over its key partition.

Inputs: one ring from each source instance (each carries this worker's key
partition). The worker's watermark is the minimum over its inputs (an input
that ended counts as +infinity); when it passes a window's end the window is
emitted into the output ring. At EOS on every input the remaining windows are
flushed and EOS is forwarded. The worker does no I/O but ring reads/writes.
"""

from __future__ import annotations

from engine.counters import Counters
from engine.shm import FrameKind, Ring
from ring0.inputs import InputSet
from ring0.operators.window import TumblingWindowAggregate

_DATA, _WATERMARK, _EOS = int(FrameKind.DATA), int(FrameKind.WATERMARK), int(FrameKind.EOS)
_NONE = -(2**63)
_DONE = 2**63 - 1


def run_worker(spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
    from connectors.generator import SCHEMA

    q = pipeline.query
    op = TumblingWindowAggregate(q.key, q.time, q.window.size_ms, q.parsed_aggregates(), SCHEMA)
    inputs = InputSet(spec.in_rings)
    out_ring = Ring.attach(spec.out_rings[0])
    out = out_ring.writer()
    out.write_schema(op.output_schema)  # up front: a sink of an empty result still has it
    slot = spec.slot
    marks = [_NONE] * len(spec.in_rings)

    def emit(batches) -> None:  # type: ignore[no-untyped-def]
        for b in batches:
            out.write_batch(b)
            counters.add(slot, "rows_out", b.num_rows)
            counters.add(slot, "batches_out", 1)
        counters.set(slot, "blocked_ns", out.blocked_ns)

    while (item := inputs.next()) is not None:
        i, frame = item
        reader = inputs.readers[i]
        kind = frame.kind
        if kind == _DATA:
            batch = reader.batch(frame)
            op.process(batch)  # partials are new buffers: the frame can go back at once
            counters.add(slot, "rows_in", batch.num_rows)
            counters.add(slot, "batches_in", 1)
            del batch
        elif kind in (_WATERMARK, _EOS):
            marks[i] = frame.value if kind == _WATERMARK else _DONE
            low = min(marks)
            if low > op.watermark and low != _DONE:
                emit(op.advance(low))
                counters.set(slot, "watermark", low)
        reader.release(frame)
    counters.set(slot, "late_rows", op.late_rows)
    emit(op.flush())
    out.write_eos()
    out.close()
    out_ring.close()
    inputs.close()
