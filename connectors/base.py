"""The connector contract: what a source or sink implements (see DESIGN.md §6).

Sync, not async: every connector runs in its own Ring 1 process, with its
own core and nothing else to do, so a blocking call costs nobody else
anything, and a plain method is the easiest thing to write, test and read
a traceback of. A connector written for asyncio wraps its coroutines with
``connectors.aio`` (one private event loop per process, each method run to
completion on it).

Source — call order, from one thread of the source process::

    open(config) → [restore(checkpoint)] → { poll_batch(n) | checkpoint() |
    notify_committed(epoch) | health_check() | metrics() }* → close()

* ``poll_batch(max_records)`` returns a ``SourceBatch`` of at most
  ``max_records`` rows (``max_records`` is a hint the runtime's batching
  uses; a source may return fewer), or ``None`` when nothing is available
  now. A bounded source that has nothing more returns ``None`` and then
  ``finished()`` is true. Must not block for long: at most the runtime's
  poll timeout (return ``None`` instead); ``data_ready()`` lets the runtime
  wait for data instead of polling on a timer.
* ``checkpoint()`` is called between polls, when the runtime injects a
  barrier: it returns the position *after* the last row returned by
  ``poll_batch`` (the runtime records it for that epoch). ``restore(cp)``
  makes the next ``poll_batch`` return the row right after that position —
  not that row again (beware off-by-one).
* ``notify_committed(epoch)``: every row up to that epoch's checkpoint is
  durable downstream (a CDC source acks its slot here). Not guaranteed to be
  called for every epoch: a later one implies the earlier ones.
* Not guaranteed: ``close`` is called on a graceful stop only, never after a
  crash or kill; rows returned after the last checkpoint may be replayed.

Sink — call order, from one thread of the sink process::

    open(config) → [commit_epoch(N, committable) → rollback_epoch(N + 1)]
    → { begin_epoch(n) → write_batch(b)* → pre_commit(n) → commit_epoch(n) }*
    → close()

* After a restart the runtime re-drives ``commit_epoch(N)`` with the
  committable recorded in manifest N (idempotent: committing twice changes
  nothing) and ``rollback_epoch(N + 1)``: discard anything staged for epoch
  N + 1 *or later* (idempotent; nothing staged is fine).
* ``pre_commit(n)``: make epoch ``n``'s rows durable but invisible (flush,
  stage, prepare a transaction); return the committable: JSON-serialisable,
  stored in the manifest. Default: ``flush()`` and no committable.
* ``commit_epoch(n, committable)``: make epoch ``n`` visible. It may be called
  for an epoch whose ``pre_commit`` ran in an earlier process.
* Rows written between ``begin_epoch(n)`` and ``pre_commit(n)`` belong to
  epoch ``n``; in at-least-once mode epochs still frame the writes.
* Not guaranteed: ``close`` after a crash; ``commit_epoch`` promptly (a
  crash between the manifest and the commit defers it to the next start).

Both: ``health_check()`` raises (or returns False) when the external system is
unreachable; ``metrics()`` returns a flat dict of numbers the runtime adds to
its own (records, bytes, errors, poll latency, last offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class ConnectorConfig:
    """What ``open`` receives: the connector's TOML table and where it runs.

    ``options`` holds the keys of its ``[[sources]]``/``[[sinks]]`` table other
    than ``name``, ``type`` and the runtime's own keys (after ``RINGSTREAM_``
    environment overrides). ``instance`` of ``instances``: a source with
    ``parallelism`` > 1 runs one process per instance, each reading its share.
    ``schema``: for a sink, the schema of the stream it receives.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    instance: int = 0
    instances: int = 1
    schema: pa.Schema | None = None


@dataclass(frozen=True)
class SourceCheckpoint:
    """A source's own position (file + row, LSN, Kafka offsets): JSON-serialisable."""

    position: dict[str, Any]


@dataclass
class SourceBatch:
    """Rows a source polled, with the partition they came from if the source has some."""

    batch: pa.RecordBatch
    partition: int | None = None
    offset: int | None = None  # the source's offset of the last row, for metrics


@dataclass(frozen=True)
class WriteResult:
    records: int
    bytes: int


@dataclass(frozen=True)
class SinkCapabilities:
    exactly_once: bool = False
    idempotent: bool = False
    upsert: bool = False
    changelog: bool = False
    two_phase_commit: bool = False
    schema_evolution: bool = False
    partitioned: bool = False


class Source:
    """Base class of sources: see the module docstring for call order and guarantees."""

    def open(self, config: ConnectorConfig) -> None:
        self.config = config

    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        raise NotImplementedError

    def finished(self) -> bool:
        """True once a bounded source has returned its last row."""
        return False

    def checkpoint(self) -> SourceCheckpoint:
        raise NotImplementedError(f"{type(self).__name__} cannot checkpoint")

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot restore")

    def supports_replay(self) -> bool:
        """True if ``restore`` + polls give exactly the rows after the checkpoint again."""
        return False

    def checkpoint_requested(self) -> bool:
        """True to ask the coordinator for an epoch now (e.g. after a large transaction)."""
        return False

    def data_ready(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for data; True if ``poll_batch`` may now return rows.

        The default sleeps a little and says yes: override it with a real wait.
        """
        import time

        time.sleep(min(timeout_s, 0.001))
        return True

    def notify_committed(self, epoch: int) -> None:
        pass

    def health_check(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


class Sink:
    """Base class of sinks: see the module docstring for call order and guarantees."""

    def open(self, config: ConnectorConfig) -> None:
        self.config = config

    def check_config(self, config: ConnectorConfig) -> None:
        """Raise ``ConfigError`` for bad options, with no side effect (``validate`` calls it)."""

    def schema(self) -> pa.Schema | None:
        """The schema this sink requires, or None to accept the pipeline's."""
        return None

    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        raise NotImplementedError

    def begin_epoch(self, epoch: int) -> None:
        pass

    def pre_commit(self, epoch: int) -> dict[str, Any] | None:
        self.flush()
        return None

    def commit_epoch(self, epoch: int, committable: dict[str, Any] | None = None) -> None:
        pass

    def rollback_epoch(self, epoch: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def capabilities(self) -> SinkCapabilities:
        """What this sink guarantees. Called at validate time too, before ``open``: it may
        read ``self.config`` (already set) but nothing ``open`` creates."""
        return SinkCapabilities()

    def health_check(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
