"""A bounded (or unbounded) synthetic event generator: ts, key, value.

Event ``i`` is a pure function of ``(seed, i)``, so any split of the index range
into batches or parallel instances yields the same events, and a replay from
an offset yields the same rows again:

* ``ts``    int64, event time in ms: ``start_ms + i * 1000 // events_per_second``
  (events are in event-time order; ``events_per_second`` is event-time density,
  not a rate limit)
* ``key``   int64 in ``[0, keys)``: splitmix64(seed, i) mod keys; with ``key_prefix``
  (e.g. ``"user-"``) a string instead: the prefix and the number in six digits at least
  (``"user-000123"``), the same keys as text (the string-key benchmark)
* ``value`` float64 in ``[0, 1)``: from a second splitmix64 draw

Parallel instances stride over batches: instance ``j`` of ``n`` produces
batches ``j, j + n, j + 2n, ...`` of ``batch_rows`` events each, so each
instance's event time only grows. Generation is vectorised (numpy uint64).

``GeneratorSource`` is a ``connectors.base.Source`` (built-in type
``"generator"``). Options (``GeneratorOptions``), all optional: ``events``
(default 20_000_000; 0 = unbounded), ``keys`` (10_000), ``batch_rows``
(65_536), ``seed`` (1), ``events_per_second`` (1_000_000), ``key_prefix`` (none),
``max_rate`` (0: as fast as it can; else at most that many events per wall-clock
second, all instances together, on average since each one's first poll, a stall
made up for by at most 0.1 s of rows at full speed: a stream that lasts as long on
any machine, for demos and for tests that must act while a run is going on).
``poll_batch(n)`` returns at most ``n`` rows: a batch index larger than ``n``
comes out in several slices. Position: ``{"batch": b, "row": r}`` — the next
row is row ``r`` of batch index ``b`` (``row`` is 0 except when a poll cut a
batch; a checkpoint without ``row`` means 0). ``SourceBatch.offset`` is the
batch index the rows came from. Replayable: any position can be restored.
Construct directly (tests, benchmarks) with ``GeneratorSource.create(**options)``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.options import Options
from engine.errors import CheckpointError

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64())])
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


class GeneratorOptions(Options, frozen=True):
    events: Annotated[int, Meta(ge=0)] = 20_000_000  # 0 = unbounded
    keys: Annotated[int, Meta(ge=1)] = 10_000
    batch_rows: Annotated[int, Meta(ge=1)] = 65_536
    seed: int = 1
    events_per_second: Annotated[int, Meta(ge=1)] = 1_000_000
    key_prefix: str | None = None  # string keys: prefix + the number, zero-padded to 6
    max_rate: Annotated[int, Meta(ge=0)] = 0  # events per wall-clock second at most; 0: no limit


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def generate(
    seed: int, start: int, stop: int, keys: int, events_per_second: int, start_ms: int = 0
) -> pa.RecordBatch:
    """Events ``[start, stop)`` of the stream ``seed`` as one batch."""
    i = np.arange(start, stop, dtype=np.uint64)
    with np.errstate(over="ignore"):
        a = _splitmix64(i ^ np.uint64(seed * 2 + 1))
        b = _splitmix64(i + np.uint64(seed) * _M1)
    ts = start_ms + (i.astype(np.int64) * 1000) // events_per_second
    key = (a % np.uint64(keys)).astype(np.int64)
    value = (b >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return pa.RecordBatch.from_arrays([pa.array(ts), pa.array(key), pa.array(value)], schema=SCHEMA)


STRING_SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.string()), ("value", pa.float64())])


def key_names(prefix: str, keys: int) -> pa.Array:
    """The string of each key number: ``prefix`` + the number, zero-padded to 6 digits."""
    return pa.array([f"{prefix}{k:06d}" for k in range(keys)], pa.string())


def with_string_keys(batch: pa.RecordBatch, names: pa.Array) -> pa.RecordBatch:
    """``batch`` with its int64 keys replaced by their names (one vectorised take)."""
    key = names.take(batch.column(1))
    return pa.RecordBatch.from_arrays([batch.column(0), key, batch.column(2)], schema=STRING_SCHEMA)


class GeneratorSource(Source):
    """One instance of the generator (see the module docstring for options and positions)."""

    options_type = GeneratorOptions

    @classmethod
    def create(
        cls, *, name: str = "generator", instance: int = 0, instances: int = 1, **options: Any
    ) -> GeneratorSource:
        """An opened generator, for tests and benchmarks: ``create(events=10, keys=3)``."""
        src = cls()
        src.open(ConnectorConfig(name, dict(options), instance=instance, instances=instances))
        return src

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        opts: GeneratorOptions = self.options
        self.events: int = opts.events  # 0 = unbounded
        self.keys: int = opts.keys
        self.batch_rows: int = opts.batch_rows
        self.seed: int = opts.seed
        self.events_per_second: int = opts.events_per_second
        self.key_names = None if opts.key_prefix is None else key_names(opts.key_prefix, self.keys)
        self.instance = config.instance
        self.instances = config.instances
        self.offset = config.instance  # the batch index of the next row
        self.row = 0  # the next row within that batch
        self.max_rate = opts.max_rate / config.instances  # (the source's, shared out)
        self._paced_from: float | None = None  # (the clock at the first poll, events then)
        self._paced = 0

    def _due(self) -> float:
        """Seconds until the next rows may go (``max_rate``); 0 when they may go now."""
        if not self.max_rate:
            return 0.0
        now = time.monotonic()
        if self._paced_from is None:
            self._paced_from = now
        due = self._paced_from + self._paced / self.max_rate
        if now - due > 0.1:  # behind (a stall): catch up by 0.1 s at most, not in one burst
            self._paced_from += now - due - 0.1
            due = now - 0.1
        return max(0.0, due - now)

    def data_ready(self, timeout_s: float) -> bool:
        wait = self._due()
        if not wait:
            return super().data_ready(timeout_s)
        time.sleep(min(timeout_s, wait))
        return wait <= timeout_s

    def schema(self) -> pa.Schema:
        return SCHEMA if self.key_names is None else STRING_SCHEMA

    def _bounds(self) -> tuple[int, int]:
        """Event indexes ``[start, stop)`` left in the current batch (empty when exhausted)."""
        start = self.offset * self.batch_rows
        stop = start + self.batch_rows
        if self.events:
            stop = min(stop, self.events)
        return start + self.row, stop

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        """Up to ``max_records`` events of the current batch index; None once exhausted."""
        start, stop = self._bounds()
        if start >= stop or self._due() > 0:
            return None
        stop = min(stop, start + max(1, max_records))
        self._paced += stop - start
        batch = generate(self.seed, start, stop, self.keys, self.events_per_second)
        if self.key_names is not None:
            batch = with_string_keys(batch, self.key_names)
        offset = self.offset
        self.row += stop - start
        if self.row >= self.batch_rows or (self.events and stop >= self.events):
            self.offset += self.instances
            self.row = 0
        return SourceBatch(batch, offset=offset)

    def finished(self) -> bool:
        start, stop = self._bounds()
        return start >= stop

    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"batch": self.offset, "row": self.row})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        pos = checkpoint.position
        batch, row = pos.get("batch"), pos.get("row", 0)
        if not isinstance(batch, int) or not isinstance(row, int) or row < 0 or batch < 0:
            raise CheckpointError(f"generator {self.config.name!r}: bad position {pos!r}")
        if batch % self.instances != self.instance:
            raise CheckpointError(
                f"generator {self.config.name!r}: position {pos!r} is not a batch of instance "
                f"{self.instance} of {self.instances}"
            )
        self.offset, self.row = batch, row

    def supports_replay(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        out = {"last_offset": float(self.offset)}
        if self.events:  # bounded: how much of this instance's share is done (for progress)
            batches = -(-self.events // self.batch_rows)
            mine = len(range(self.instance, batches, self.instances))
            passed = (self.offset - self.instance) // self.instances
            out["progress_total"] = float(mine * self.batch_rows)
            out["progress_done"] = float(min(mine, passed) * self.batch_rows + self.row)
        return out
