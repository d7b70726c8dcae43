"""The Ring 1 sink process: drain every worker's ring into one sink, with two-phase commit.

Start: open the sink; if the last manifest recorded an epoch N, re-drive
``commit_epoch(N, committable)`` (idempotent) and ``rollback_epoch(N + 1)``
(discard anything staged later), both through the retry policy, and confirm
``Committed(N)`` (the coordinator then marks manifest N committed); on a
fresh start (no manifest) ``rollback_epoch(1)``. Then restore the final
stage's state and ``begin_epoch(N + 1)``.

Per frame from the workers' rings (``InputSet``, aligned like a worker):

* DATA → the final stage (``[[query.final]]``, if any) → ``write_batch``
  (through the retry policy).
* WATERMARK → minimum over workers → the final stage emits what closes.
* BARRIER(N) on every input (DESIGN.md §5 step 4) → ``pre_commit(N)``;
  report the committable and the final stage's state (``Checkpointed``);
  ``begin_epoch(N + 1)``; go on reading — the commit comes later, as a
  ``Commit(N)`` message, once the coordinator has written manifest N
  (step 5): then ``commit_epoch(N)`` and ``Committed(N)``.
* EOS on every input → the final stage finishes; ``pre_commit`` of the last
  epoch, report it, and wait for its ``Commit`` before closing: a bounded run
  ends with everything committed. After a drain (``EOS_STOPPED`` from a
  worker) the final stage does not finish: its state goes into the last
  epoch's report and the next run resumes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pyarrow as pa

from connectors.base import ConnectorConfig
from engine import control, faults
from engine.counters import Counters
from engine.errors import ConnectorError, RingstreamError
from ring0.alignment import Aligner, Watermarks, drive
from ring0.graph import WorkerGraph
from ring0.inputs import InputSet
from ring0.worker import restore_graph, snapshot_graph
from ring1.health import HealthTracker
from ring1.retry import call_with_retry
from ring1.source_runner import policy


def run_sink(spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
    from connectors import registry

    cfg = next(s for s in pipeline.sinks if s.name == spec.name)
    plan = spec.plan(pipeline)
    label = f"sink {cfg.name!r} ({cfg.type})"
    final = WorkerGraph([plan.final_chain()], None, None) if cfg.input == "main" else None
    schema = plan.sink_schema(cfg.input)
    sink = registry.resolve_sink(cfg.type)()
    sink.open(ConnectorConfig(cfg.name, dict(cfg.options), spec.index, 1, schema))
    retry = policy(cfg)
    health = HealthTracker(threshold=cfg.health_failures)

    def call(what: str, fn):  # type: ignore[no-untyped-def]
        try:
            out = call_with_retry(
                fn,
                retry,
                what=f"{label}: {what}",
                on_retry=lambda _n, exc, _d: health.record_failure(exc),
            )
        except RingstreamError:
            raise
        except Exception as exc:
            raise ConnectorError(f"{label}: {what} failed: {exc}") from exc
        health.record_success()
        return out

    restore = msgspec.json.decode(spec.restore) or {}
    if restore.get("epoch") is not None:  # re-drive the last manifest's commit, drop what's newer
        n = restore["epoch"]
        call("commit_epoch", lambda: sink.commit_epoch(n, restore.get("committable")))
        call("rollback_epoch", lambda: sink.rollback_epoch(n + 1))
        control.send(conn, control.Committed(n, "sink", spec.index))
    elif spec.first_epoch == 1:  # a fresh start: nothing staged by an earlier run survives
        call("rollback_epoch", lambda: sink.rollback_epoch(1))
    marks = Watermarks([0.0] * len(spec.in_rings))
    if final is not None:
        marks.emitted = restore_graph(final, restore.get("state"))
    inputs = InputSet(spec.in_rings)
    aligner = Aligner(inputs)
    slot = spec.slot
    ckpt_dir = Path(spec.checkpoint_dir) if spec.checkpoint_dir else None
    sink.begin_epoch(spec.first_epoch)

    def write(batches: list[pa.RecordBatch]) -> None:
        for b in batches:
            if b.num_rows:
                call("write_batch", lambda b=b: sink.write_batch(b))
                counters.add(slot, "rows_in", b.num_rows)
                counters.add(slot, "batches_in", 1)

    def handle_control(block_for: int | None = None) -> None:
        """Apply Commit messages; with ``block_for``, wait until that epoch is committed."""
        while True:
            if not conn.poll(0.05 if block_for is not None else 0):
                if block_for is None:
                    return
                continue
            msg = control.recv(conn)
            if isinstance(msg, control.Commit):
                call("commit_epoch", lambda m=msg: sink.commit_epoch(m.epoch, m.committable))
                faults.reached("sink.after_commit", msg.epoch)
                control.send(conn, control.Committed(msg.epoch, "sink", spec.index))
                if block_for is not None and msg.epoch >= block_for:
                    return

    def pre_commit(n: int) -> None:
        started = time.monotonic_ns()
        committable = call("pre_commit", lambda: sink.pre_commit(n))
        state = None
        if final is not None and ckpt_dir is not None and final.pre[0].ops:
            path = ckpt_dir / f"epoch-{n:020d}" / f"sink-{spec.index}.state"
            path.parent.mkdir(parents=True, exist_ok=True)
            state = snapshot_graph(final, path, marks.emitted)
        control.send(
            conn,
            control.Checkpointed(
                n, "sink", spec.index, committable=committable, state=state,
                metrics={"alignment_ms": aligner.alignment_ns / 1e6,
                         "pre_commit_ms": (time.monotonic_ns() - started) / 1e6},
            ),
        )  # fmt: skip
        faults.reached("sink.after_pre_commit", n)

    epoch = [spec.first_epoch]
    last_control = [time.monotonic()]

    def on_tick() -> None:
        now = time.monotonic()
        if now - last_control[0] > 0.01:
            handle_control()
            last_control[0] = now

    def on_data(_i: int, batch: pa.RecordBatch) -> None:
        write(final.process(batch, 0) if final is not None else [batch])

    def on_watermark(wm: int) -> None:
        if final is not None:
            write(final.on_watermark(wm))
        counters.set(slot, "watermark", wm)

    def on_epoch(done: int) -> None:
        pre_commit(done)
        epoch[0] = done + 1
        sink.begin_epoch(epoch[0])

    drive(inputs, marks, aligner, on_data=on_data, on_watermark=on_watermark,
          on_epoch=on_epoch, timeout=0.05, on_tick=on_tick)  # fmt: skip
    if final is not None and not (any(inputs.stopped) and ckpt_dir is not None):
        write(final.finish())
    pre_commit(epoch[0])  # the last epoch: everything after the last barrier
    handle_control(block_for=epoch[0])
    inputs.close()
    sink.close()
