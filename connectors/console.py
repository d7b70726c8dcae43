"""Print batches as aligned text tables (built-in sink type ``"console"``).

Options: ``max_rows`` (default 20): rows printed per batch, the rest is
summarised as ``... N more rows``; ``stream``: ``"stdout"`` (default) or
``"stderr"``. Every row is counted (``metrics()["records"]``), printed or not.

Output, per batch::

    [sink-name] epoch 3: 2 rows
    key  count
    ---  -----
      7     12
     11      3

Numbers are right-aligned, everything else left-aligned; nulls print as
``null``. Rows are printed when written: there is nothing to stage, so epochs
only label the output and a replay prints rows again
(``capabilities()`` is the default: at-least-once).
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal, TextIO

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Sink, WriteResult
from connectors.options import Options


class ConsoleOptions(Options, frozen=True):
    max_rows: Annotated[int, Meta(ge=0)] = 20
    stream: Literal["stdout", "stderr"] = "stdout"


class ConsoleSink(Sink):
    options_type = ConsoleOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        self.max_rows = self.options.max_rows
        self.stream_name = self.options.stream
        self.epoch: int | None = None
        self.records = 0
        self.batches = 0
        self.bytes = 0

    def _stream(self) -> TextIO:
        # Looked up per write, so that a replaced sys.stdout (tests, redirection) is used.
        return sys.stdout if self.stream_name == "stdout" else sys.stderr

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        self.records += batch.num_rows
        self.batches += 1
        self.bytes += batch.nbytes
        where = "" if self.epoch is None else f" epoch {self.epoch}"
        noun = "row" if batch.num_rows == 1 else "rows"
        lines = [f"[{self.config.name}]{where}: {batch.num_rows} {noun}"]
        if batch.num_rows:
            lines += format_table(batch, self.max_rows)
        out = self._stream()
        out.write("\n".join(lines) + "\n")
        out.flush()
        return WriteResult(batch.num_rows, batch.nbytes)

    def flush(self) -> None:
        self._stream().flush()

    def metrics(self) -> dict[str, float]:
        return {
            "records": float(self.records),
            "batches": float(self.batches),
            "bytes": float(self.bytes),
        }


def format_table(batch: pa.RecordBatch, max_rows: int) -> list[str]:
    """The first ``max_rows`` rows of ``batch`` as aligned lines (header, rule, rows)."""
    shown = batch.slice(0, max_rows)
    cells = [
        ["null" if v is None else str(v) for v in column.to_pylist()] for column in shown.columns
    ]
    numeric = [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in batch.schema
    ]
    widths = [
        max([len(name), *map(len, col)])
        for name, col in zip(batch.schema.names, cells, strict=True)
    ]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(batch.schema.names)), line(["-" * w for w in widths])]
    out += [line([col[i] for col in cells]) for i in range(shown.num_rows)]
    if batch.num_rows > shown.num_rows:
        out.append(f"... {batch.num_rows - shown.num_rows} more rows")
    return out
