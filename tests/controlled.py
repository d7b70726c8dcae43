"""A source a test steers through files in a directory, for watching a run from outside.

``type = "tests.controlled:ControlledSource"`` with ``control = "<dir>"``. Each
poll (every ``every_ms``) emits ``rows`` rows (``key`` 0..9, ``value`` 1,
``ts`` = now in ms), unless a file in the control directory says otherwise:

* ``fail``: every poll raises ``TransientError`` (the guard retries; the
  connector's health goes degraded, then unhealthy) until the file is removed;
* ``crash``: the next poll removes the file and raises ``ConnectorError`` (the
  run restarts from its last checkpoint);
* ``lag``: ``metrics()`` reports its number as ``lag_messages``;
* ``end``: the source is finished.

Position: the number of polls that emitted rows (replay emits new timestamps:
fine for watching, not for comparing outputs).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.options import Options
from engine.errors import ConnectorError, TransientError

SCHEMA = pa.schema([("key", pa.int64()), ("value", pa.int64()), ("ts", pa.timestamp("ms"))])


class ControlledOptions(Options, frozen=True):
    control: str
    rows: int = 100
    every_ms: int = 20


class ControlledSource(Source):
    options_type = ControlledOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        self.dir = Path(self.options.control)
        self.polls = 0
        self.next_at = 0.0

    def schema(self) -> pa.Schema:
        return SCHEMA

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        if (self.dir / "fail").exists():
            raise TransientError("controlled source: told to fail (the 'fail' file)")
        crash = self.dir / "crash"
        if crash.exists():
            crash.unlink(missing_ok=True)
            raise ConnectorError("controlled source: told to crash (the 'crash' file)")
        now = time.monotonic()
        if now < self.next_at:
            return None
        self.next_at = now + self.options.every_ms / 1000
        n = self.options.rows
        ts = pa.array([int(time.time() * 1000)] * n, pa.int64()).cast(pa.timestamp("ms"))
        batch = pa.record_batch(
            [pa.array([i % 10 for i in range(n)], pa.int64()), pa.array([1] * n, pa.int64()), ts],
            schema=SCHEMA,
        )
        self.polls += 1
        return SourceBatch(batch, offset=self.polls)

    def finished(self) -> bool:
        return (self.dir / "end").exists()

    def data_ready(self, timeout_s: float) -> bool:
        time.sleep(max(0.0, min(timeout_s, self.next_at - time.monotonic())))
        return True

    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"polls": self.polls})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        self.polls = int(checkpoint.position.get("polls", 0))

    def supports_replay(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        try:
            lag = float((self.dir / "lag").read_text())
        except (OSError, ValueError):
            return {"polls": float(self.polls)}
        return {"polls": float(self.polls), "lag_messages": lag}
