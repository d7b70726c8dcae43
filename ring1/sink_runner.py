"""The Ring 1 sink process: drain every worker's output ring into the sink.

Batches are copied out of the ring by the Parquet writer (encoding), so each
frame is released right after its batch is written. The file is published
when every worker has sent EOS.
"""

from __future__ import annotations

import pyarrow as pa

from connectors.parquet_sink import ParquetFileSink
from engine.counters import Counters
from engine.shm import FrameKind
from ring0.inputs import InputSet

_DATA = int(FrameKind.DATA)


def run_sink(spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
    sink = ParquetFileSink(pipeline.sink.path)
    inputs = InputSet(spec.in_rings)
    slot = spec.slot
    schema: pa.Schema | None = None
    while (item := inputs.next()) is not None:
        i, frame = item
        reader = inputs.readers[i]
        if frame.kind == _DATA:
            batch = reader.batch(frame)
            sink.write_batch(batch)
            counters.add(slot, "rows_in", batch.num_rows)
            counters.add(slot, "batches_in", 1)
            del batch
        schema = schema or reader.schema
        reader.release(frame)
    sink.close(schema or pa.schema([]))
    inputs.close()
