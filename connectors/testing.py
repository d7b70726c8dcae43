"""Public testing helpers: a scripted source, a collecting sink, conformance checks.

``ScriptedSource`` (built-in type ``"scripted"``) plays ``options["script"]``,
a list whose items are batches — a list of row dicts or a ``pa.RecordBatch``
— or in-band markers (plain dicts, so a TOML pipeline can hold them)::

    {"marker": "end"}                      finished() from here on
    {"marker": "crash", "message": "boom"} raise ConnectorError once per process
        "always": true                     ... every time it is reached
        "flag": "/tmp/run/crashed"         ... once across processes: only if it
                                           can create this file (O_EXCL)
    {"marker": "stall", "seconds": 0.5}    poll_batch returns None for that long
    {"marker": "fail", "times": 2}         raise ConnectorError (transient) 2 times
                                           per instance, then go on: for retries

The schema is ``options["schema"]`` (type names, as for files) or that of the
first batch. Position: ``{"index": i, "row": r}`` (row ``r`` of script item
``i``); replayable. A crash marker that fired stays where it is: the rerun
after a restore reaches it again, which is why ``flag`` exists. With
``instances`` > 1 batch items are dealt round-robin; markers apply to all.

``CollectingSink`` (built-in type ``"collect"``) keeps, in memory,
``written`` (every batch) and ``committed`` (epoch -> batches made visible by
``commit_epoch`` in this process). With option ``path`` it is exactly-once:
``pre_commit(n)`` stages epoch ``n`` durably in ``<path>.epoch-<n>.staged``
and ``commit_epoch(n)`` appends one JSON line ``{"epoch": n, "rows": [...]}``
to ``path`` (idempotently: an epoch already in the file is not appended
again), so another process reads what was committed with ``read_committed``.
Values that JSON lacks (timestamps, decimals, bytes) are written as strings.
One sink process per ``path``.

``check_source`` and ``check_sink`` run a connector through its contract
(``connectors.base``) and raise ``ConformanceError`` naming the connector and
the broken rule.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import (
    ConnectorConfig,
    Sink,
    SinkCapabilities,
    Source,
    SourceBatch,
    SourceCheckpoint,
    WriteResult,
)
from connectors.options import Options
from engine.errors import CheckpointError, ConfigError, ConnectorError
from engine.typenames import parse_schema

MARKERS = ("end", "crash", "stall", "fail")
_CRASHED: set[tuple[str, int, int]] = set()  # (source name, instance, script index) that fired


class ConformanceError(ConnectorError):
    """A connector broke a rule of its contract (the message names the connector and the rule)."""


class ScriptedOptions(Options, frozen=True):
    script: list[Any]  # batches (lists of row tables, or RecordBatches) and markers
    schema: Any = None  # {column = "type"} or a pa.Schema; default: the first batch's


class CollectOptions(Options, frozen=True):
    path: str | None = None


class ScriptedSource(Source):
    """Plays a script of batches and markers; see the module docstring."""

    options_type = ScriptedOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        script = self.options.script
        where = f"sources.{config.name}.schema"
        schema = parse_schema(self.options.schema, where) if self.options.schema else None
        self.items: list[pa.RecordBatch | dict[str, Any]] = []
        dealt = 0
        self._mine: list[bool] = []
        for i, item in enumerate(script):
            where = f"scripted source {config.name!r}: script[{i}]"
            if isinstance(item, dict):
                if item.get("marker") not in MARKERS:
                    raise ConfigError(f"{where}={item!r} is not a marker {MARKERS}")
                self.items.append(item)
                self._mine.append(True)
                continue
            if isinstance(item, list):
                extra = {k for row in item for k in row} - set(schema.names if schema else ())
                if schema is not None and extra:
                    raise ConfigError(f"{where} has columns {sorted(extra)} not in {schema}")
                item = pa.RecordBatch.from_pylist(item, schema=schema)
            if not isinstance(item, pa.RecordBatch):
                raise ConfigError(f"{where} must be a list of rows, a RecordBatch or a marker")
            schema = schema or item.schema
            if not item.schema.equals(schema):
                raise ConfigError(f"{where} has schema {item.schema}, expected {schema}")
            self.items.append(item)
            self._mine.append(dealt % config.instances == config.instance)
            dealt += 1
        if schema is None:
            raise ConfigError(f"scripted source {config.name!r}: no batch and no schema option")
        self._schema = schema
        self.index, self.row = 0, 0
        self._stall_until: float | None = None
        self._fails: dict[int, int] = {}

    def schema(self) -> pa.Schema:
        return self._schema

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        while self.index < len(self.items):
            item, i = self.items[self.index], self.index
            if isinstance(item, pa.RecordBatch):
                if not self._mine[i]:
                    self.index, self.row = i + 1, 0
                    continue
                out = item.slice(self.row, max(1, max_records))
                self.row += out.num_rows
                if self.row >= item.num_rows:
                    self.index, self.row = i + 1, 0
                if out.num_rows:
                    return SourceBatch(out, offset=i)
                continue
            kind = item["marker"]
            if kind == "end":
                return None
            if kind == "stall":
                now = time.monotonic()
                if self._stall_until is None:
                    self._stall_until = now + float(item.get("seconds", 0))
                if now < self._stall_until:
                    return None
                self._stall_until = None
            elif kind == "crash" and self._fire(i, item):
                raise ConnectorError(
                    f"scripted source {self.config.name!r}: crash at script[{i}]: "
                    f"{item.get('message', 'crash marker')}"
                )
            elif kind == "fail" and self._fails.get(i, 0) < int(item.get("times", 1)):
                self._fails[i] = self._fails.get(i, 0) + 1
                raise ConnectorError(
                    f"scripted source {self.config.name!r}: transient failure "
                    f"{self._fails[i]} of {item.get('times', 1)} at script[{i}]"
                )
            self.index = i + 1
        return None

    def _fire(self, i: int, marker: dict[str, Any]) -> bool:
        """Whether crash marker ``i`` fires now (see the module docstring)."""
        if marker.get("always"):
            return True
        if "flag" in marker:
            try:
                os.close(os.open(marker["flag"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return False
            return True
        key = (self.config.name, self.config.instance, i)
        if key in _CRASHED:
            return False
        _CRASHED.add(key)
        return True

    def finished(self) -> bool:
        if self.index >= len(self.items):
            return True
        item = self.items[self.index]
        return isinstance(item, dict) and item["marker"] == "end"

    def data_ready(self, timeout_s: float) -> bool:
        if self._stall_until is None:
            return True
        left = self._stall_until - time.monotonic()
        time.sleep(max(0.0, min(left, timeout_s)))
        return left <= timeout_s

    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"index": self.index, "row": self.row})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        pos = checkpoint.position
        index, row = pos.get("index"), pos.get("row", 0)
        if (
            not isinstance(index, int)
            or not isinstance(row, int)
            or not (0 <= index <= len(self.items) and row >= 0)
        ):
            raise CheckpointError(f"scripted source {self.config.name!r}: bad position {pos!r}")
        self.index, self.row, self._stall_until = index, row, None

    def supports_replay(self) -> bool:
        return True


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


class _Checker:
    """Names the connector in every ConformanceError; wraps unexpected exceptions."""

    def __init__(self, cls: type, config: ConnectorConfig) -> None:
        self.who = f"{cls.__name__} {config.name!r}"

    def fail(self, rule: str, detail: str) -> ConformanceError:
        return ConformanceError(f"{self.who}: {rule}: {detail}")

    def call(self, rule: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except ConformanceError:
            raise
        except Exception as exc:
            raise self.fail(rule, f"{getattr(fn, '__name__', fn)} raised {exc!r}") from exc

    def json_round_trip(self, rule: str, value: Any) -> Any:
        try:
            loaded = json.loads(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise self.fail(rule, f"{value!r} is not JSON-serialisable ({exc})") from exc
        if loaded != value:
            raise self.fail(rule, f"{value!r} changes through JSON into {loaded!r}")
        return loaded


def _drain(
    ck: _Checker,
    src: Source,
    schema: pa.Schema,
    max_records: int,
    want_rows: int,
    deadline: float,
    checkpoints: list[SourceCheckpoint] | None,
) -> tuple[list[pa.RecordBatch], bool]:
    """Poll until finished, ``want_rows`` rows or the deadline; check every batch."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    while rows < want_rows and time.monotonic() < deadline:
        if ck.call("finished() returns a bool", src.finished):
            return batches, True
        got = ck.call("poll_batch works", src.poll_batch, max_records)
        if got is None:
            if ck.call("finished() returns a bool", src.finished):
                return batches, True
            ck.call("data_ready works", src.data_ready, min(0.05, deadline - time.monotonic()))
            continue
        if not isinstance(got, SourceBatch) or not isinstance(got.batch, pa.RecordBatch):
            raise ck.fail("poll_batch returns a SourceBatch of a RecordBatch or None", repr(got))
        if got.batch.num_rows > max_records:
            raise ck.fail(
                "poll_batch returns at most max_records rows",
                f"{got.batch.num_rows} rows for max_records={max_records}",
            )
        if not got.batch.schema.equals(schema):
            raise ck.fail("every batch has schema()", f"{got.batch.schema} != {schema}")
        if not ck.call("schema() is stable", src.schema).equals(schema):
            raise ck.fail("schema() is stable", "schema() changed while polling")
        batches.append(got.batch)
        rows += got.batch.num_rows
        if checkpoints is not None:
            cp = ck.call("checkpoint works between polls", src.checkpoint)
            pos = ck.json_round_trip("checkpoint position is JSON", cp.position)
            checkpoints.append(SourceCheckpoint(pos))
    return batches, False


def check_source(
    source_cls: type[Source],
    config: ConnectorConfig,
    *,
    max_records: int = 1000,
    max_rows: int = 100_000,
    timeout_s: float = 20.0,
) -> None:
    """Run ``source_cls`` through the source contract; raise ``ConformanceError`` if it fails.

    Rules: constructible without arguments; ``open`` → ``schema()`` is a
    schema that never changes; every polled batch is a ``SourceBatch`` of at
    most ``max_records`` rows with exactly ``schema()``; once ``finished()``
    is true, polls return None and it stays true; ``metrics()`` is a dict of
    numbers; and, if ``supports_replay()``: every checkpoint survives JSON, and
    restoring a fresh instance at the start and at a mid-point gives exactly
    the rows after that point. Reads up to ``max_rows`` rows of an unbounded
    source; a bounded one must finish within ``timeout_s``.
    """
    ck = _Checker(source_cls, config)
    src = ck.call("constructible without arguments", source_cls)
    ck.call("open works", src.open, config)
    schema = ck.call("schema() works after open", src.schema)
    if not isinstance(schema, pa.Schema):
        raise ck.fail("schema() returns a pyarrow.Schema", repr(schema))
    replay = ck.call("supports_replay works", src.supports_replay)
    checkpoints: list[SourceCheckpoint] | None = None
    if replay:
        start = ck.call("checkpoint works after open", src.checkpoint)
        checkpoints = [
            SourceCheckpoint(ck.json_round_trip("checkpoint position is JSON", start.position))
        ]
    deadline = time.monotonic() + timeout_s
    batches, finished = _drain(ck, src, schema, max_records, max_rows, deadline, checkpoints)
    if not batches and not finished:
        raise ck.fail("produces rows or finishes", f"nothing within {timeout_s} s")
    if finished and (
        ck.call("poll_batch works", src.poll_batch, max_records) is not None
        or not ck.call("finished() returns a bool", src.finished)
    ):
        raise ck.fail("finished() is final", "a poll after finished() returned rows")
    metrics = ck.call("metrics works", src.metrics)
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) for k, v in metrics.items()
    ):
        raise ck.fail("metrics() is a flat dict of numbers", repr(metrics))
    ck.call("close works", src.close)
    if checkpoints is None or not batches:
        return
    table = pa.Table.from_batches(batches, schema=schema)
    mid = len(batches) // 2
    for point in sorted({0, mid}):
        skip = sum(b.num_rows for b in batches[:point])
        expected = table.slice(skip)
        fresh = ck.call("constructible without arguments", source_cls)
        ck.call("open works", fresh.open, config)
        ck.call("restore works on a fresh instance", fresh.restore, checkpoints[point])
        deadline = time.monotonic() + timeout_s
        again, _ = _drain(ck, fresh, schema, max_records, expected.num_rows, deadline, None)
        ck.call("close works", fresh.close)
        replayed = pa.Table.from_batches(again, schema=schema)
        if finished and replayed.num_rows > expected.num_rows:
            raise ck.fail(
                "restore gives exactly the rows after the checkpoint",
                f"restored after {skip} rows: {replayed.num_rows} rows, expected "
                f"{expected.num_rows}",
            )
        if not replayed.slice(0, expected.num_rows).equals(expected):
            raise ck.fail(
                "restore gives exactly the rows after the checkpoint",
                f"restored after {skip} rows: the rows differ from the first run's "
                f"({replayed.num_rows} vs {expected.num_rows} rows)",
            )


def check_sink(
    sink_cls: type[Sink],
    config: ConnectorConfig,
    batches: list[pa.RecordBatch],
    *,
    read_back: Callable[[Sink], pa.Table | list[dict[str, Any]]] | None = None,
) -> None:
    """Run ``sink_cls`` through the sink contract with ``batches``; raise ``ConformanceError``.

    Epoch 1 (the first half of ``batches``, at least one) is committed twice;
    epoch 2 is staged and rolled back twice; epoch 3 (the rest) is committed —
    by a fresh instance, as after a crash, when ``capabilities().exactly_once``.
    ``rollback_epoch`` of nothing staged must work. Every ``write_batch``
    returns a ``WriteResult`` counting the batch's rows; committables survive
    JSON. ``read_back(sink)``, if given, returns what is visible after the run
    (``sink`` is the instance that committed last): it must be exactly the
    rows of epochs 1 and 3, in any order.
    """
    if not batches:
        raise ConfigError("check_sink needs at least one batch")
    ck = _Checker(sink_cls, config)
    sink = ck.call("constructible without arguments", sink_cls)
    ck.call("open works", sink.open, config)
    caps = ck.call("capabilities works", sink.capabilities)
    if not isinstance(caps, SinkCapabilities):
        raise ck.fail("capabilities() returns SinkCapabilities", repr(caps))
    required = ck.call("schema works", sink.schema)
    if required is not None and not isinstance(required, pa.Schema):
        raise ck.fail("schema() returns None or a pyarrow.Schema", repr(required))
    for _ in range(2):
        ck.call("rollback_epoch of nothing staged works", sink.rollback_epoch, 1)
    half = max(1, len(batches) // 2)

    def epoch(target: Sink, n: int, part: list[pa.RecordBatch]) -> Any:
        ck.call("begin_epoch works", target.begin_epoch, n)
        for b in part:
            result = ck.call("write_batch works", target.write_batch, b)
            if not isinstance(result, WriteResult) or result.records != b.num_rows:
                raise ck.fail("write_batch returns WriteResult(records=rows)", repr(result))
        committable = ck.call("pre_commit works", target.pre_commit, n)
        return ck.json_round_trip("committable is JSON", committable)

    c1 = epoch(sink, 1, batches[:half])
    for _ in range(2):
        ck.call("commit_epoch is idempotent", sink.commit_epoch, 1, c1)
    epoch(sink, 2, batches[:1])
    for _ in range(2):
        ck.call("rollback_epoch is idempotent", sink.rollback_epoch, 2)
    c3 = epoch(sink, 3, batches[half:])
    last = sink
    if caps.exactly_once:
        last = ck.call("constructible without arguments", sink_cls)
        ck.call("open works after a crash", last.open, config)
        for _ in range(2):
            ck.call("commit_epoch works in a later process", last.commit_epoch, 3, c3)
        ck.call("rollback_epoch after a restart works", last.rollback_epoch, 4)
    else:
        ck.call("commit_epoch works", sink.commit_epoch, 3, c3)
    for target in {id(sink): sink, id(last): last}.values():
        ck.call("flush works", target.flush)
        metrics = ck.call("metrics works", target.metrics)
        if not isinstance(metrics, dict):
            raise ck.fail("metrics() is a flat dict of numbers", repr(metrics))
    ck.call("close works", last.close)
    if last is not sink:
        ck.call("close works", sink.close)
    if read_back is None:
        return
    seen = ck.call("read_back works", read_back, last)
    if isinstance(seen, pa.Table):
        seen = seen.to_pylist()
    want = [r for b in batches[:half] + batches[half:] for r in b.to_pylist()]
    if _multiset(seen) != _multiset(want):
        raise ck.fail(
            "exactly the committed epochs are visible",
            f"{len(seen)} rows visible, expected {len(want)} (epochs 1 and 3, not 2)",
        )


def _multiset(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
