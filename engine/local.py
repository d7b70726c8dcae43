"""Run a pipeline in this one process: no rings, no children — the no-IPC baseline.

``run_local(pipeline)`` reads each source (one instance), runs the same
operator graph a worker runs and the same final stage a sink runs, and
writes to the same sinks, one step after the other. Watermarks are computed
as the Ring 1 runtime computes them (max event time − allowed
out-of-orderness, minimum over sources); two sources are read in event-time
order (the one whose watermark is behind is polled next). The sinks commit
one epoch at the end. Benchmarks use it as the baseline every engine figure
is compared with; it is also a quick way to try a pipeline on a small input.

Not for production: no checkpoints, no recovery, one core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa

from connectors import registry
from connectors.base import ConnectorConfig
from engine.pipeline import Pipeline
from engine.plan import Plan, open_source
from engine.stream.watermarks import SourceWatermark


@dataclass
class LocalResult:
    events: int
    output_rows: int
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_local(pipeline: Pipeline, plan: Plan | None = None) -> LocalResult:
    from engine import memory

    memory.tune()  # as every engine child does: a fair baseline
    plan = plan or Plan.build(pipeline, 1)
    graph = plan.worker_graph()
    graph.skip = [0] * len(graph.pre)  # one process: it runs the sources' steps too
    final = plan.final_graph()
    sinks = []
    for k in pipeline.sinks:
        sink = registry.resolve_sink(k.type)()
        sink.open(ConnectorConfig(k.name, dict(k.options), 0, 1, plan.sink_schema(k.input),
                                  pipeline=pipeline.pipeline.name))
        sink.rollback_epoch(1)
        sink.begin_epoch(1)
        sinks.append((k.input, sink))
    cfgs = [pipeline.source_named(n) for n in plan.inputs]
    sources = [open_source(c) for c in cfgs]
    marks: list[int | None] = [None] * len(sources)
    made = [SourceWatermark(c.event_time, c.max_out_of_orderness_ms, tuple(s.partition_columns))
            for c, s in zip(cfgs, sources, strict=True)]  # fmt: skip
    done = [False] * len(sources)
    events = rows = 0
    emitted = -(2**63)

    def deliver(batches: list[pa.RecordBatch], stream: str = "main") -> None:
        """Batches that passed the final stage (if any) to the sinks reading ``stream``."""
        nonlocal rows
        for out in batches:
            if out.num_rows:
                for name, sink in sinks:
                    if name == stream:
                        sink.write_batch(out)
                rows += out.num_rows if stream == "main" else 0

    def write(batches: list[pa.RecordBatch], stream: str = "main") -> None:
        for b in batches:
            deliver(final.process(b, 0) if stream == "main" else [b], stream)

    def late() -> None:
        for name, batches in graph.take_late().items():
            write(batches, name)

    started = time.perf_counter()
    while not all(done):
        live = [i for i in range(len(sources)) if not done[i]]
        port = min(live, key=lambda i: marks[i] if marks[i] is not None else -(2**63))
        got = sources[port].poll_batch(cfgs[port].batch_max_rows)
        if got is None:
            if sources[port].finished():
                done[port] = True
                continue
            sources[port].data_ready(0.01)
            # no row: a partition found at its end may still let the watermark move
            wm = made[port].refresh(sources[port].pending_partitions())
        else:
            batch = got.batch
            events += batch.num_rows
            write(graph.process(batch, port))
            late()
            pending = sources[port].pending_partitions() if made[port].split else None
            wm = made[port].advance(batch, pending)
        if wm is not None:
            marks[port] = wm
        alive = [marks[i] for i in range(len(sources)) if not done[i]]
        if alive and all(m is not None for m in alive):
            low = min(alive)  # type: ignore[type-var]
            if low > emitted:
                emitted = low  # type: ignore[assignment]
                write(graph.on_watermark(low))  # type: ignore[arg-type]
                late()
                deliver(final.on_watermark(low))  # type: ignore[arg-type]
    write(graph.finish())
    late()
    deliver(final.finish())
    for _name, sink in sinks:
        sink.commit_epoch(1, sink.pre_commit(1))
        sink.close()
    for s in sources:
        s.close()
    return LocalResult(events, rows, time.perf_counter() - started)
