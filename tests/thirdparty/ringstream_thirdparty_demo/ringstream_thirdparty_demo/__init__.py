"""A demo third-party source and sink: registered by name through entry points.

``CounterSource`` (``demo_counter``): rows ``n = 0 .. rows-1`` (option
``rows``, default 10), replayable by position ``{"next": n}``.
``MemorySink`` (``demo_memory``): counts the rows it is given.
"""

from __future__ import annotations

import pyarrow as pa

from connectors.base import (
    ConnectorConfig,
    Sink,
    Source,
    SourceBatch,
    SourceCheckpoint,
    WriteResult,
)

SCHEMA = pa.schema([("n", pa.int64())])


class CounterSource(Source):
    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        self.rows = int(config.options.get("rows", 10))
        self.next = 0

    def schema(self) -> pa.Schema:
        return SCHEMA

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        stop = min(self.rows, self.next + max_records)
        if stop <= self.next:
            return None
        batch = pa.RecordBatch.from_arrays(
            [pa.array(range(self.next, stop), pa.int64())], schema=SCHEMA
        )
        self.next = stop
        return SourceBatch(batch, offset=stop - 1)

    def finished(self) -> bool:
        return self.next >= self.rows

    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"next": self.next})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        self.next = int(checkpoint.position["next"])

    def supports_replay(self) -> bool:
        return True


class MemorySink(Sink):
    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        self.records = 0

    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        self.records += batch.num_rows
        return WriteResult(batch.num_rows, batch.nbytes)
