"""The connector contract: what a source or sink implements (docs/architecture.md, "Connectors").

Sync, not async: every connector runs in its own Ring 1 process, with its
own core and nothing else to do, so a blocking call costs nobody else
anything, and a plain method is the easiest thing to write, test and read
a traceback of. A connector written for asyncio wraps its coroutines with
``connectors.aio`` (one private event loop per process, each method run to
completion on it).

Source — call order, from one thread of the source process::

    open(config) → [restore(checkpoint)] → { poll_batch(n) | data_ready(t) |
    checkpoint() → position_recorded(epoch, cp) | notify_committed(epoch) |
    health_check() | metrics() }* → close()

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
* ``position_recorded(epoch, checkpoint)`` follows each ``checkpoint()`` the
  runtime records, with the epoch it belongs to (a source that acknowledges
  positions upstream keeps it until that epoch commits: ``PendingPositions``).
* ``notify_committed(epoch)``: every row up to that epoch's checkpoint is
  durable downstream (a CDC source acks its slot here: the position
  ``position_recorded`` gave for that epoch). Not guaranteed to be called for
  every epoch: a later one implies the earlier ones.
* A record the source cannot turn into a row (a value that does not parse, a
  malformed line) is never dropped silently. With ``config.on_error ==
  "fail"`` (the default) ``poll_batch`` raises ``BadRecordError`` naming it
  (where, which column and value, why) without moving past it. With
  ``"dead_letter"`` it goes into ``SourceBatch.bad`` as a ``BadRecord`` (with
  its raw text), the position moves past it like past a row, and the runtime
  sends it to the source's dead-letter output. A batch may carry bad records
  and no rows.
* When ``poll_batch`` raises, the position has not moved past any row it did
  not return: ``checkpoint()`` right after is still exact, and a retried
  ``poll_batch`` (the runtime retries transient errors, ``engine.errors``)
  returns the rows that one would have returned. Raise ``TransientError`` for
  a failure that may go away (a dropped connection); anything else is final.
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

* ``write_batch(b)``: ``b`` is ring memory, written over once the call returns:
  a sink keeping rows copies them (``engine.shm.arrow_codec.copy_out``).
* ``write_batch`` is not retried: a write that raised may have done part of
  its work, so the run restarts from the last checkpoint instead (the epoch is
  rolled back and replayed). ``commit_epoch`` and ``rollback_epoch`` are
  idempotent by contract and are retried on transient errors.

Both: options are declared once, as a typed struct (``options_type``, see
``connectors.options``); ``open`` parses them into ``self.options`` (a
connector without ``options_type`` reads ``config.options`` as it is).
``health_check()`` raises (or returns False) when the external system is
unreachable; ``metrics()`` returns a flat dict of numbers the runtime publishes
beside its own (records, bytes, errors, latency); a ``lag`` entry (messages,
bytes or files not yet read, in the source's own unit) is shown as the
connector's lag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from connectors.options import Options, parse_options
from engine.errors import ConfigError


@dataclass(frozen=True)
class ConnectorConfig:
    """What ``open`` receives: the connector's TOML table and where it runs.

    ``options`` holds the keys of its ``[[sources]]``/``[[sinks]]`` table other
    than ``name``, ``type`` and the runtime's own keys (after ``RINGSTREAM_``
    environment overrides). ``instance`` of ``instances``: a source with
    ``parallelism`` > 1 runs one process per instance, each reading its share.
    ``schema``: for a sink, the schema of the stream it receives. ``on_error``:
    for a source, what to do with a record it cannot read (module docstring).
    ``pipeline``: the pipeline's name (``[pipeline] name``), for names that must
    differ between pipelines (a sink's transaction ids); empty where not known.
    ``durable_dir``: a directory of this connector's own under the run's checkpoint
    directory (not yet created), for files that must outlive its process as long as
    the manifests that name them (a sink's staged records); empty without one.
    ``cpus``: the CPUs the Ring 1 processes share (the topology's ``connectors``),
    for the threads a client library starts of its own (``engine.affinity``);
    empty where not known.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    instance: int = 0
    instances: int = 1
    schema: pa.Schema | None = None
    on_error: str = "fail"  # a source's records it cannot read: "fail" or "dead_letter"
    pipeline: str = ""
    durable_dir: str = ""
    cpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class SourceCheckpoint:
    """A source's own position (file + row, LSN, Kafka offsets): JSON-serialisable."""

    position: dict[str, Any]


@dataclass(frozen=True)
class BadRecord:
    """One input record a source could not turn into a row.

    ``location`` names where it is (a file, a topic partition); ``line`` is its
    line (1-based) or offset there when the source knows it; ``column`` and
    ``value`` the field that failed, when one did; ``error`` why; ``raw`` the
    record as it was read (text or bytes), when the source has it.
    """

    location: str
    error: str
    line: int | None = None
    column: str | None = None
    value: str | None = None
    raw: str | bytes | None = None

    def describe(self) -> str:
        """``<location> line <n> column '<c>': value '<v>': <error>`` (the parts known)."""
        text = self.location
        if self.line is not None:
            text += f" line {self.line}"
        if self.column is not None:
            text += f" column {self.column!r}"
        if self.value is not None:
            shown = self.value if len(self.value) <= 80 else self.value[:77] + "..."
            text += f": value {shown!r}"
        return f"{text}: {self.error}"


DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # the [[sources]] name
        pa.field("location", pa.string(), nullable=False),  # file, topic/partition, table
        pa.field("line", pa.int64()),  # line or offset there, when known
        pa.field("column", pa.string()),  # the column that failed, when one did
        pa.field("value", pa.string()),  # its text, when known
        pa.field("error", pa.string(), nullable=False),  # why
        pa.field("raw", pa.string()),  # the record as read (bytes that are not UTF-8: \xNN)
    ]
)


def dead_letter_batch(source: str, records: list[BadRecord]) -> pa.RecordBatch:
    """The rows of a dead-letter output (``DEAD_LETTER_SCHEMA``) for ``records``."""

    def text(raw: str | bytes | None) -> str | None:
        if isinstance(raw, bytes):
            return raw.decode("utf-8", errors="backslashreplace")
        return raw

    return pa.RecordBatch.from_pydict(
        {
            "source": [source] * len(records),
            "location": [r.location for r in records],
            "line": [r.line for r in records],
            "column": [r.column for r in records],
            "value": [r.value for r in records],
            "error": [r.error for r in records],
            "raw": [text(r.raw) for r in records],
        },
        schema=DEAD_LETTER_SCHEMA,
    )


@dataclass
class SourceBatch:
    """Rows a source polled, with the partition they came from if the source has some.

    ``bad``: records that could not become rows (see the module docstring); the
    batch may have no rows when a poll found only bad records.
    """

    batch: pa.RecordBatch
    partition: int | None = None
    offset: int | None = None  # the source's offset of the last row, for metrics
    bad: list[BadRecord] = field(default_factory=list)


class PendingPositions:
    """Positions recorded per epoch until the epoch commits: what a source that acknowledges
    upstream keeps between ``position_recorded`` and ``notify_committed``.

    ``record(epoch, value)``; ``committed(epoch)`` forgets every epoch up to ``epoch`` and
    returns the value of the latest of them (None if none was recorded): a later epoch's
    commit implies the earlier ones'.
    """

    def __init__(self) -> None:
        self._by_epoch: dict[int, Any] = {}

    def record(self, epoch: int, value: Any) -> None:
        self._by_epoch[epoch] = value

    def committed(self, epoch: int) -> Any:
        done = sorted(e for e in self._by_epoch if e <= epoch)
        value = self._by_epoch[done[-1]] if done else None
        for e in done:
            del self._by_epoch[e]
        return value


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


class Connector:
    """What sources and sinks share: typed options, health, metrics, close.

    ``options_type`` (an ``Options`` struct) is parsed into ``self.options`` by
    ``open``; without one, ``config.options`` is read as it is.
    """

    options_type: ClassVar[type[Options] | None] = None
    section: ClassVar[str] = ""  # "sources" or "sinks": where its options are in a pipeline

    def health_check(self) -> bool:
        """False (or an exception) when the external system is unreachable."""
        return True

    def metrics(self) -> dict[str, float]:
        """A flat dict of numbers; ``lag`` is shown as the connector's lag."""
        return {}

    def close(self) -> None:
        pass


class Source(Connector):
    """Base class of sources: see the module docstring for call order and guarantees."""

    section = "sources"

    def open(self, config: ConnectorConfig) -> None:
        """Keep ``config``, check the instance, parse ``self.options`` (subclasses call this
        first)."""
        if config.instances < 1 or not 0 <= config.instance < config.instances:
            raise ConfigError(
                f"sources.{config.name}: instance={config.instance} must be in "
                f"[0, {config.instances})"
            )
        self.config = config
        self.options = _parse(self.options_type, config, "sources")

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

    def position_recorded(self, epoch: int, checkpoint: SourceCheckpoint) -> None:
        """``checkpoint`` (what ``checkpoint()`` just returned) is epoch ``epoch``'s position."""

    #: Columns that name the partition a row came from (Kafka: ``("_topic", "_partition")``):
    #: the runtime then keeps an event-time watermark per partition
    #: (``engine.stream.watermarks``). Empty: one watermark for the whole source.
    partition_columns: ClassVar[tuple[str, ...]] = ()

    def pending_partitions(self) -> set[tuple[Any, ...]]:
        """With ``partition_columns``: the partitions (their values, in that order) this
        instance reads that still have rows it has not returned; asked after each batch."""
        return set()

    def notify_committed(self, epoch: int) -> None:
        pass


class Sink(Connector):
    """Base class of sinks: see the module docstring for call order and guarantees."""

    section = "sinks"

    def open(self, config: ConnectorConfig) -> None:
        """Keep ``config`` and parse ``self.options`` (subclasses call this first)."""
        self.config = config
        self.options = _parse(self.options_type, config, "sinks")

    def check_config(self, config: ConnectorConfig) -> None:
        """Raise ``ConfigError`` for bad options, with no side effect (``validate`` calls it).

        The default parses the options; a sink with checks a type cannot express
        (a path that must be a directory) overrides it and calls this first.
        The coordinator calls it once, before any child starts; children and
        restarts do not, so a server that is briefly away later is ``open``'s or
        the epoch calls' failure. A sink that reaches its server here raises
        ``TransientError`` when it cannot connect.
        """
        _parse(self.options_type, config, "sinks")

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


def _parse(cls: type[Options] | None, config: ConnectorConfig, section: str) -> Any:
    if cls is None:
        return None
    return parse_options(cls, config.options, f"{section}.{config.name}")
