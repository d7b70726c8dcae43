"""Conformance checks: run a connector through its contract (``connectors.base``).

``check_source`` and ``check_sink`` run a connector through its contract
(``connectors.base``) and raise ``ConformanceError`` naming the connector and
the broken rule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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
from engine.errors import ConfigError, ConnectorError


class ConformanceError(ConnectorError):
    """A connector broke a rule of its contract (the message names the connector and the rule)."""


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
    fault: tuple[Callable[[], None], Callable[[], None]] | None = None,
    fault_after_rows: int = 0,
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

    With ``fault = (break_, repair)``, a replayable source must also survive a
    failure: after ``fault_after_rows`` rows ``break_()`` is called (it makes the
    next reads fail: a damaged file, a dropped connection); ``poll_batch`` must
    then raise; ``checkpoint()`` right after must still work, and once
    ``repair()`` is called both the same instance (polled again, as the runtime
    retries) and a fresh one restored from that checkpoint must give exactly
    the rows not yet returned — never skipping past rows it did not return.
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
    if fault is not None:
        _check_failure(ck, source_cls, config, schema, table, fault, fault_after_rows, timeout_s)
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


def _check_failure(
    ck: _Checker,
    source_cls: type[Source],
    config: ConnectorConfig,
    schema: pa.Schema,
    table: pa.Table,
    fault: tuple[Callable[[], None], Callable[[], None]],
    after: int,
    timeout_s: float,
) -> None:
    """The failure rule of ``check_source`` (see its docstring)."""
    rule = "after poll_batch raises, a replay gives exactly the rows not yet returned"
    src = ck.call("constructible without arguments", source_cls)
    ck.call("open works", src.open, config)
    deadline = time.monotonic() + timeout_s
    first, _ = _drain(ck, src, schema, max(1, min(after, 1000)), after, deadline, None)
    done = sum(b.num_rows for b in first)
    break_, repair = fault
    break_()
    raised = None
    while raised is None and time.monotonic() < deadline:
        try:
            got = src.poll_batch(1000)
        except Exception as exc:
            raised = exc
            break
        if got is None:
            if src.finished():
                break
            src.data_ready(0.01)
            continue
        first.append(got.batch)
        done += got.batch.num_rows
    if raised is None:
        raise ck.fail(rule, "poll_batch did not raise after the fault was injected")
    cp = ck.call("checkpoint works after poll_batch raised", src.checkpoint)
    repair()
    rest = table.slice(done)
    again, _ = _drain(ck, src, schema, 1000, rest.num_rows, time.monotonic() + timeout_s, None)
    ck.call("close works", src.close)
    fresh = ck.call("constructible without arguments", source_cls)
    ck.call("open works", fresh.open, config)
    ck.call("restore works on a fresh instance", fresh.restore, cp)
    replay, _ = _drain(ck, fresh, schema, 1000, rest.num_rows, time.monotonic() + timeout_s, None)
    ck.call("close works", fresh.close)
    for what, batches in (("the same instance, polled again", again), ("a fresh one", replay)):
        got_rows = pa.Table.from_batches(batches, schema=schema)
        if not got_rows.equals(rest):
            raise ck.fail(
                rule,
                f"{what} gave {got_rows.num_rows} rows after the failure, expected exactly the "
                f"{rest.num_rows} not yet returned (after {done}); raised: {raised!r}",
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
