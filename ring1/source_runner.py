"""The Ring 1 source process: poll the source, partition by key, write rings, watermark.

Per poll: one batch from the source → split by key hash into one batch per
worker → ``write_batch`` into each worker's input ring (waits on a full ring:
backpressure) → a WATERMARK (max event time seen − allowed out-of-orderness)
into every ring. On ``Stop`` from the coordinator, or when a bounded source
is exhausted: EOS into every ring.
"""

from __future__ import annotations

import numpy as np

from connectors.generator import GeneratorSource
from engine import control
from engine.counters import Counters
from engine.shm import Ring
from ring1.partition import split


def run_source(spec, pipeline, counters: Counters, conn) -> None:  # type: ignore[no-untyped-def]
    cfg = pipeline.source
    source = GeneratorSource(
        events=cfg.events,
        keys=cfg.keys,
        batch_rows=cfg.batch_rows,
        seed=cfg.seed,
        events_per_second=cfg.events_per_second,
        instance=spec.index,
        instances=cfg.parallelism,
    )
    rings = [Ring.attach(name) for name in spec.out_rings]
    writers = [r.writer() for r in rings]
    for w in writers:
        w.write_schema(source.schema())
    key, time_col, lag = pipeline.query.key, pipeline.query.time, cfg.max_out_of_orderness_ms
    slot = spec.slot
    max_ts = None
    while True:
        if conn.poll() and isinstance(control.recv(conn), control.Stop):
            break
        batch = source.poll_batch()
        if batch is None:
            break
        for w, part in zip(writers, split(batch, key, len(writers)), strict=True):
            if part.num_rows:
                w.write_batch(part)
        ts = batch.column(time_col).to_numpy()
        if len(ts):
            top = int(np.max(ts))
            max_ts = top if max_ts is None else max(max_ts, top)
            for w in writers:
                w.write_watermark(max_ts - lag)
            counters.set(slot, "watermark", max_ts - lag)
        counters.add(slot, "rows_out", batch.num_rows)
        counters.add(slot, "batches_out", 1)
        counters.add(slot, "bytes_out", batch.nbytes)
        counters.set(slot, "blocked_ns", sum(w.blocked_ns for w in writers))
    for w in writers:
        w.write_eos()
        w.close()
    for r in rings:
        r.close()
