"""The Ring 1 source process: the runtime around one source instance (DESIGN.md §6).

Loop, one thread:

1. Control first: ``Barrier(N)`` → ``checkpoint()`` (the position after the
   last row already written), report it (``Checkpointed``), write BARRIER(N)
   into every ring — between two polls, so the barrier splits the stream
   exactly at that position. ``NotifyCommitted(N)`` → ``notify_committed``.
   ``Stop`` (drain) or SIGTERM → end-of-stream and exit cleanly.
2. ``poll_batch`` through the retry policy (exponential backoff with jitter;
   each failure marks health; ``RetriesExhaustedError`` names the connector).
3. Batching: polls accumulate up to ``batch_max_rows`` or ``batch_max_wait_ms``.
4. A batch is split by the partition key's hash into one batch per worker
   (``ring1.partition``; round-robin by batch for a global query) and written
   to the workers' rings (a full ring waits: backpressure), then a WATERMARK
   (max event time seen − ``max_out_of_orderness_ms``) into every ring.
5. ``finished()`` → report the final position, EOS into every ring. After a
   drain (``Stop``) of a source that has more, with checkpoints on, the EOS
   says ``EOS_STOPPED``: downstream keeps its state open for the next run
   instead of closing every window (``ring0.inputs``).

A connector that raises is reported with its name and traceback (the child
wrapper sends ``Failed``). Metrics go to the shared counters and, with the
connector's own ``metrics()``, into each ``Checkpointed`` report.
"""

from __future__ import annotations

import signal
import time

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import ConnectorConfig, SourceCheckpoint
from engine import control, faults
from engine.counters import Counters
from engine.errors import ConnectorError, RingstreamError, SchemaMismatchError
from engine.shm import FrameKind, Ring
from ring0.inputs import EOS_END, EOS_STOPPED
from ring1.batching import Batcher
from ring1.health import HealthTracker
from ring1.metrics import ConnectorMetrics
from ring1.partition import split
from ring1.retry import RetryPolicy, call_with_retry

_EOS = int(FrameKind.EOS)
_UNIT_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}


def max_event_ms(column: pa.Array) -> int | None:
    """The largest event time of a column in ms (int64 ms or any timestamp), None if all null."""
    if pa.types.is_timestamp(column.type):
        mul, div = _UNIT_MS[column.type.unit]
        top = pc.max(column.cast(pa.int64())).as_py()
        return None if top is None else top * mul // div
    top = pc.max(column).as_py()
    return None if top is None else int(top)


def fitting(batch: pa.RecordBatch, max_payload: int) -> list[pa.RecordBatch]:
    """Zero-copy slices of ``batch`` whose frames fit a ring (at most half its payload each).

    A wide batch (long strings) may not fit the ring it goes to; it is cut by
    rows, never rejected. Empty batches are dropped.
    """
    rows = batch.num_rows
    if not rows:
        return []
    limit = max_payload // 2
    size = batch.nbytes + 4096  # IPC framing and padding
    if size <= limit:
        return [batch]
    step = max(1, rows * limit // size)
    return [batch.slice(i, step) for i in range(0, rows, step)]


def policy(cfg) -> RetryPolicy:  # type: ignore[no-untyped-def]
    r = cfg.retry
    return RetryPolicy(max_retries=r.max_retries, base_s=r.base_ms / 1000, cap_s=r.cap_ms / 1000)


def run_source(spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
    from connectors import registry

    cfg = pipeline.source_named(spec.name)
    plan = spec.plan(pipeline)
    label = f"source {cfg.name!r} ({cfg.type}) instance {spec.index}"
    source = registry.resolve_source(cfg.type)()
    source.open(ConnectorConfig(cfg.name, dict(cfg.options), spec.index, cfg.parallelism))
    restore = msgspec.json.decode(spec.restore)
    if restore is not None:
        source.restore(SourceCheckpoint(restore))
    schema = plan.source_schemas[cfg.name]
    rings = [Ring.attach(name) for name in spec.out_rings]
    writers = [r.writer() for r in rings]
    for w in writers:
        w.write_schema(schema)
    key = plan.partition_keys.get(cfg.name)
    retry = policy(cfg)
    health = HealthTracker(threshold=cfg.health_failures)
    metrics = ConnectorMetrics()
    batcher = Batcher(cfg.batch_max_rows, cfg.batch_max_wait_ms / 1000)
    slot, lag, time_col = spec.slot, cfg.max_out_of_orderness_ms, cfg.event_time
    state = {"max_ts": None, "rr": spec.index, "stop": False, "health": health.state}

    def on_term(_signum: int, _frame: object) -> None:
        state["stop"] = True

    signal.signal(signal.SIGTERM, on_term)

    def report_health() -> None:
        if health.state != state["health"]:
            state["health"] = health.state
            err = (
                f"{type(health.last_error).__name__}: {health.last_error}"
                if health.last_error
                else ""
            )
            control.send(conn, control.Health("source", spec.index, health.state, err))

    def write(batch: pa.RecordBatch) -> None:
        if batch.schema != schema:
            if not batch.schema.equals(schema, check_metadata=False):
                raise SchemaMismatchError(
                    f"{label}: a batch has schema {batch.schema} but the source declared {schema}"
                )
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        if key is None:  # round-robin by batch
            target = state["rr"] % len(writers)
            state["rr"] += 1
            for piece in fitting(batch, writers[target].max_payload):
                writers[target].write_batch(piece)
        else:
            for w, part in zip(writers, split(batch, key, len(writers)), strict=True):
                for piece in fitting(part, w.max_payload):
                    w.write_batch(piece)
        if time_col is not None:
            top = max_event_ms(batch.column(time_col))
            if top is not None and (state["max_ts"] is None or top > state["max_ts"]):
                state["max_ts"] = top
                for w in writers:
                    w.write_watermark(top - lag)
                counters.set(slot, "watermark", top - lag)
        counters.add(slot, "rows_out", batch.num_rows)
        counters.add(slot, "batches_out", 1)
        counters.add(slot, "bytes_out", batch.nbytes)
        counters.set(slot, "blocked_ns", sum(w.blocked_ns for w in writers))

    def flush_batcher() -> None:
        pending = batcher.take()
        if pending is not None and pending.num_rows:
            write(pending)

    def checkpointed(epoch: int, finished: bool) -> None:
        flush_batcher()  # the barrier must follow every row the position covers
        position = source.checkpoint().position if source.supports_replay() else None
        m = metrics.as_dict()
        m.update({f"connector_{k}": float(v) for k, v in source.metrics().items()})
        control.send(
            conn,
            control.Checkpointed(
                epoch,
                "source",
                spec.index,
                position=position,
                finished=finished,
                exhausted=finished and source.finished(),
                metrics=m,
            ),  # fmt: skip
        )
        faults.reached("source.after_checkpoint", epoch)
        if not finished:
            for w in writers:
                w.write_barrier(epoch)

    def poll() -> pa.RecordBatch | None:
        t0 = time.monotonic()
        try:
            got = call_with_retry(
                lambda: source.poll_batch(cfg.batch_max_rows),
                retry,
                what=label,
                on_retry=lambda _n, exc, _d: (health.record_failure(exc), report_health()),
            )
        except RingstreamError:
            raise
        except Exception as exc:
            raise ConnectorError(f"{label}: poll_batch failed: {exc}") from exc
        health.record_success()
        report_health()
        rows, size = (got.batch.num_rows, got.batch.nbytes) if got else (0, 0)
        metrics.record_poll(time.monotonic() - t0, rows, size, got.offset if got else None)
        return got.batch if got is not None else None

    last_epoch = spec.first_epoch - 1
    while True:
        while conn.poll():
            msg = control.recv(conn)
            if isinstance(msg, control.Barrier):
                checkpointed(msg.epoch, False)
                last_epoch = msg.epoch
            elif isinstance(msg, control.NotifyCommitted):
                source.notify_committed(msg.epoch)
            elif isinstance(msg, control.Stop):
                state["stop"] = True
        if state["stop"]:
            break
        if source.checkpoint_requested():
            control.send(conn, control.RequestCheckpoint("source", spec.index))
        batch = poll()
        if batch is None:
            if source.finished():
                break
            if batcher.due():
                flush_batcher()
            source.data_ready(min(0.05, max(cfg.batch_max_wait_ms / 1000, 0.001)))
            continue
        for ready in batcher.add(batch):
            write(ready)
        if batcher.due():
            flush_batcher()
    flush_batcher()
    checkpointed(last_epoch + 1, True)  # the final position: nothing after it
    # a drain with checkpoints on: the next run resumes here, so nothing downstream may close
    stopped = state["stop"] and not source.finished() and bool(spec.checkpoint_dir)
    for w in writers:
        w.put(_EOS, b"", EOS_STOPPED if stopped else EOS_END)
        w.close()
    for r in rings:
        r.close()
    source.close()
