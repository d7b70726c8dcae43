"""The collecting sink (built-in type ``"collect"``), for tests.

``CollectingSink`` (built-in type ``"collect"``) keeps, in memory,
``written`` (every batch) and ``committed`` (epoch -> batches made visible by
``commit_epoch`` in this process). With option ``path`` it is exactly-once:
``pre_commit(n)`` stages epoch ``n`` durably in ``<path>.epoch-<n>.staged``
and ``commit_epoch(n)`` appends one JSON line ``{"epoch": n, "rows": [...]}``
to ``path`` (idempotently: an epoch already in the file is not appended
again), so another process reads what was committed with ``read_committed``.
Values that JSON lacks (timestamps, decimals, bytes) are written as strings.
One sink process per ``path``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import (
    ConnectorConfig,
    Sink,
    SinkCapabilities,
    WriteResult,
)
from connectors.options import Options
from engine.errors import ConnectorError
from engine.shm.arrow_codec import copy_out


class CollectOptions(Options, frozen=True):
    path: str | None = None


class CollectingSink(Sink):
    """Collects batches in memory and, with ``path``, commits epochs to a JSON-lines file."""

    options_type = CollectOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        raw = self.options.path
        self.path = None if raw is None else Path(raw)
        self.written: list[pa.RecordBatch] = []
        self.committed: dict[int, list[pa.RecordBatch]] = {}
        self._open: list[pa.RecordBatch] = []
        self._staged: dict[int, list[pa.RecordBatch]] = {}
        self._file_epochs: set[int] = set()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():  # cut a line torn by a crash, then see what is committed
                data = self.path.read_bytes()
                if data and not data.endswith(b"\n"):
                    with open(self.path, "r+b") as f:
                        f.truncate(data.rfind(b"\n") + 1)
                self._file_epochs = set(read_committed(self.path))

    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        batch = copy_out(batch)  # a copy: the batch is a view of ring memory
        self.written.append(batch)
        self._open.append(batch)
        return WriteResult(batch.num_rows, batch.nbytes)

    def _staged_path(self, epoch: int) -> Path:
        assert self.path is not None
        return self.path.with_name(f"{self.path.name}.epoch-{epoch}.staged")

    def pre_commit(self, epoch: int) -> dict[str, Any] | None:
        batches, self._open = self._open, []
        self._staged[epoch] = batches
        rows = sum(b.num_rows for b in batches)
        if self.path is None:
            return {"rows": rows}
        staged = self._staged_path(epoch)
        tmp = staged.with_name(staged.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_epoch_line(epoch, batches))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, staged)
        return {"staged": staged.name, "rows": rows}

    def commit_epoch(self, epoch: int, committable: dict[str, Any] | None = None) -> None:
        if epoch in self._staged:
            self.committed.setdefault(epoch, self._staged.pop(epoch))
        if self.path is None or epoch in self._file_epochs:
            if self.path is not None:
                self._staged_path(epoch).unlink(missing_ok=True)
            return
        staged = self._staged_path(epoch)
        try:
            line = staged.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConnectorError(
                f"collect sink {self.config.name!r}: epoch {epoch} was never staged "
                f"({staged} is missing) and is not in {self.path}"
            ) from exc
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._file_epochs.add(epoch)
        staged.unlink()

    def rollback_epoch(self, epoch: int) -> None:
        self._open = []
        for e in [e for e in self._staged if e >= epoch]:
            del self._staged[e]
        if self.path is not None:
            for staged in self.path.parent.glob(f"{self.path.name}.epoch-*.staged"):
                number = staged.name[len(self.path.name) + len(".epoch-") : -len(".staged")]
                if number.isdigit() and int(number) >= epoch:
                    staged.unlink(missing_ok=True)

    def capabilities(self) -> SinkCapabilities:
        # may be called before open (validate time): read the option, not the opened state
        durable = bool(self.config.options.get("path"))
        return SinkCapabilities(exactly_once=durable, two_phase_commit=durable)

    def table(self) -> pa.Table:
        """The rows committed in this process, in epoch order."""
        batches = [b for e in sorted(self.committed) for b in self.committed[e]]
        schema = batches[0].schema if batches else self.config.schema
        return pa.Table.from_batches(batches, schema=schema)

    def metrics(self) -> dict[str, float]:
        return {
            "records": float(sum(b.num_rows for b in self.written)),
            "committed_epochs": float(
                len(self._file_epochs) if self.path is not None else len(self.committed)
            ),
        }


def _epoch_line(epoch: int, batches: list[pa.RecordBatch]) -> str:
    rows = [row for b in batches for row in b.to_pylist()]
    return json.dumps({"epoch": epoch, "rows": rows}, default=str) + "\n"


def read_committed(path: str | Path) -> dict[int, list[dict[str, Any]]]:
    """Epoch -> rows of a ``CollectingSink`` file, in commit order (a torn last line ignored)."""
    out: dict[int, list[dict[str, Any]]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        record = json.loads(line)
        out.setdefault(record["epoch"], record["rows"])
    return out


# -- conformance ----------------------------------------------------------------------------


