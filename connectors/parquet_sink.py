"""Parquet file sink: rows appear under the final name only once the file is complete.

Writes go to ``<path>.inprogress-<pid>`` in the same directory; ``close``
renames it to ``<path>`` (atomic on POSIX). A run that dies leaves only an
in-progress file, never a truncated ``<path>``; the next sink to open the same
path removes in-progress files of processes that no longer exist.
(Exactly-once epochs — staged files per epoch, rename on commit — come with
the checkpoint issue.)
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq


class ParquetFileSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(self.path.name + ".inprogress-*"):
            pid = stale.name.rpartition("-")[2]
            if not pid.isdigit() or not psutil.pid_exists(int(pid)):
                stale.unlink(missing_ok=True)
        self._tmp = self.path.with_name(f"{self.path.name}.inprogress-{os.getpid()}")
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, batch.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self, schema: pa.Schema) -> Path:
        """Finish the file (an empty one with ``schema`` if no rows came) and publish it."""
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, schema)
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path
